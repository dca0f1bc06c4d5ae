//! Which Ingresses this controller serves, decided as ingress-nginx decides it.
//!
//! An Ingress is ours when `spec.ingressClassName` names an IngressClass whose
//! `spec.controller` is our controller class; else, when it has no class name but the
//! deprecated annotation `kubernetes.io/ingress.class`, when that equals our
//! `--ingress-class`; else (no class at all) when one of our IngressClasses is marked
//! `ingressclass.kubernetes.io/is-default-class: "true"` or
//! `--watch-ingress-without-class` is set.

use std::collections::HashSet;

use k8s_openapi::api::networking::v1::{Ingress, IngressClass};

/// The deprecated annotation naming an Ingress's class.
pub const CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
/// The annotation marking the cluster's default IngressClass.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
/// ingress-nginx's `--controller-class` default.
pub const DEFAULT_CONTROLLER: &str = "k8s.io/ingress-nginx";
/// ingress-nginx's `--ingress-class` default.
pub const DEFAULT_INGRESS_CLASS: &str = "nginx";

/// The class flags of the controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Class {
    /// `--controller-class`: the `spec.controller` of our IngressClasses.
    pub controller: String,
    /// `--ingress-class`: the value of the deprecated annotation we accept.
    pub ingress_class: String,
    /// `--watch-ingress-without-class`.
    pub watch_without_class: bool,
}

impl Default for Class {
    fn default() -> Class {
        Class {
            controller: DEFAULT_CONTROLLER.to_string(),
            ingress_class: DEFAULT_INGRESS_CLASS.to_string(),
            watch_without_class: false,
        }
    }
}

/// The class flags with the IngressClasses of the cluster: decides per Ingress.
#[derive(Debug, Clone)]
pub struct Selector {
    class: Class,
    /// The names of the IngressClasses whose controller is ours.
    ours: HashSet<String>,
    /// Whether one of those is the cluster's default class.
    default_is_ours: bool,
}

impl Selector {
    pub fn new<'a>(class: &Class, classes: impl IntoIterator<Item = &'a IngressClass>) -> Selector {
        let mut ours = HashSet::new();
        let mut default_is_ours = false;
        for ic in classes {
            let controller = ic.spec.as_ref().and_then(|s| s.controller.as_deref());
            if controller != Some(class.controller.as_str()) {
                continue;
            }
            let Some(name) = ic.metadata.name.clone() else {
                continue;
            };
            default_is_ours |= ic
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
                .is_some_and(|v| v == "true");
            ours.insert(name);
        }
        Selector {
            class: class.clone(),
            ours,
            default_is_ours,
        }
    }

    /// Whether `ingress` is served by this controller.
    pub fn selects(&self, ingress: &Ingress) -> bool {
        if let Some(name) = ingress
            .spec
            .as_ref()
            .and_then(|s| s.ingress_class_name.as_deref())
        {
            return self.ours.contains(name);
        }
        if let Some(annotation) = ingress
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(CLASS_ANNOTATION))
        {
            return *annotation == self.class.ingress_class;
        }
        self.default_is_ours || self.class.watch_without_class
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::networking::v1::{IngressClassSpec, IngressSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn ingress_class(name: &str, controller: &str, default: bool) -> IngressClass {
        IngressClass {
            metadata: ObjectMeta {
                name: Some(name.into()),
                annotations: default.then(|| {
                    BTreeMap::from([(DEFAULT_CLASS_ANNOTATION.to_string(), "true".to_string())])
                }),
                ..ObjectMeta::default()
            },
            spec: Some(IngressClassSpec {
                controller: Some(controller.into()),
                ..IngressClassSpec::default()
            }),
        }
    }

    fn ingress(class_name: Option<&str>, annotation: Option<&str>) -> Ingress {
        Ingress {
            metadata: ObjectMeta {
                name: Some("i".into()),
                annotations: annotation
                    .map(|a| BTreeMap::from([(CLASS_ANNOTATION.to_string(), a.to_string())])),
                ..ObjectMeta::default()
            },
            spec: Some(IngressSpec {
                ingress_class_name: class_name.map(str::to_string),
                ..IngressSpec::default()
            }),
            status: None,
        }
    }

    #[track_caller]
    fn check(class: &Class, classes: &[IngressClass], ingress: &Ingress, expected: bool) {
        assert_eq!(
            Selector::new(class, classes).selects(ingress),
            expected,
            "class {:?}, annotation {:?}",
            ingress
                .spec
                .as_ref()
                .and_then(|s| s.ingress_class_name.as_deref()),
            ingress.metadata.annotations
        );
    }

    #[test]
    fn ingress_class_name_decides_by_the_class_controller() {
        let class = Class::default();
        let classes = [
            ingress_class("nginx", DEFAULT_CONTROLLER, false),
            ingress_class("internal", DEFAULT_CONTROLLER, false),
            ingress_class("traefik", "traefik.io/ingress-controller", false),
        ];
        check(&class, &classes, &ingress(Some("nginx"), None), true);
        check(&class, &classes, &ingress(Some("internal"), None), true);
        check(&class, &classes, &ingress(Some("traefik"), None), false);
        check(&class, &classes, &ingress(Some("missing"), None), false);
        // The class name wins over the annotation.
        check(
            &class,
            &classes,
            &ingress(Some("traefik"), Some("nginx")),
            false,
        );
    }

    #[test]
    fn the_deprecated_annotation_must_equal_the_ingress_class_flag() {
        let class = Class {
            ingress_class: "public".into(),
            ..Class::default()
        };
        check(&class, &[], &ingress(None, Some("public")), true);
        check(&class, &[], &ingress(None, Some("nginx")), false);
        let watching = Class {
            watch_without_class: true,
            ..Class::default()
        };
        check(&watching, &[], &ingress(None, Some("other")), false);
    }

    #[test]
    fn classless_ingresses_need_a_default_class_of_ours_or_the_flag() {
        let class = Class::default();
        let none = ingress(None, None);
        check(&class, &[], &none, false);
        check(
            &class,
            &[ingress_class("nginx", DEFAULT_CONTROLLER, false)],
            &none,
            false,
        );
        check(
            &class,
            &[ingress_class("nginx", DEFAULT_CONTROLLER, true)],
            &none,
            true,
        );
        check(
            &class,
            &[ingress_class("other", "example.com/other", true)],
            &none,
            false,
        );
        let watching = Class {
            watch_without_class: true,
            ..Class::default()
        };
        check(&watching, &[], &none, true);
        let custom = Class {
            controller: "example.com/mine".into(),
            ..Class::default()
        };
        check(
            &custom,
            &[ingress_class("mine", "example.com/mine", false)],
            &ingress(Some("mine"), None),
            true,
        );
        check(
            &custom,
            &[ingress_class("nginx", DEFAULT_CONTROLLER, false)],
            &ingress(Some("nginx"), None),
            false,
        );
    }
}
