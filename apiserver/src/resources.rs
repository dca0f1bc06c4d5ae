//! The resources this apiserver serves: one static table that routing, discovery,
//! OpenAPI, storage keys and the per-kind rules all read.

/// One served resource (a REST collection) of one group-version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Subresources served besides the object itself (`status`, `scale`, …).
    pub subresources: &'static [&'static str],
}

impl Resource {
    /// `v1` for the core group, `apps/v1` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `services`, `deployments.apps`: how kubectl and error messages name the resource.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    pub fn has_status(&self) -> bool {
        self.subresources.contains(&"status")
    }

    /// Where objects of this resource live in the store, like the etcd registry:
    /// `/registry/<group>/<plural>/<namespace>/<name>`.
    pub fn key_prefix(&self, namespace: Option<&str>) -> String {
        let group = if self.group.is_empty() {
            "core"
        } else {
            self.group
        };
        match namespace {
            Some(ns) if self.namespaced => format!("/registry/{group}/{}/{ns}/", self.plural),
            _ => format!("/registry/{group}/{}/", self.plural),
        }
    }

    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        format!("{}{name}", self.key_prefix(namespace))
    }

    /// Whether `metadata.generation` tracks changes of this kind's spec.
    pub fn tracks_generation(&self) -> bool {
        matches!(
            self.kind,
            "Deployment" | "ReplicaSet" | "Pod" | "Ingress" | "IngressClass" | "NetworkPolicy"
        )
    }
}

const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// The verbs every served resource supports.
pub fn verbs() -> &'static [&'static str] {
    VERBS
}

/// `(group, version, kind)`, `(plural, singular)`, scope and the discovery details.
const fn res(
    gvk: (&'static str, &'static str, &'static str),
    names: (&'static str, &'static str),
    namespaced: bool,
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
    subresources: &'static [&'static str],
) -> Resource {
    let (group, version, kind) = gvk;
    let (plural, singular) = names;
    Resource {
        group,
        version,
        kind,
        plural,
        singular,
        namespaced,
        short_names,
        categories,
        subresources,
    }
}

/// Every resource, in discovery order.
pub static RESOURCES: &[Resource] = &[
    res(
        ("", "v1", "ConfigMap"),
        ("configmaps", "configmap"),
        true,
        &["cm"],
        &[],
        &[],
    ),
    res(
        ("", "v1", "Endpoints"),
        ("endpoints", "endpoints"),
        true,
        &["ep"],
        &[],
        &[],
    ),
    res(
        ("", "v1", "Event"),
        ("events", "event"),
        true,
        &["ev"],
        &[],
        &[],
    ),
    res(
        ("", "v1", "Namespace"),
        ("namespaces", "namespace"),
        false,
        &["ns"],
        &[],
        &["status", "finalize"],
    ),
    res(
        ("", "v1", "Node"),
        ("nodes", "node"),
        false,
        &["no"],
        &[],
        &["status"],
    ),
    res(
        ("", "v1", "Pod"),
        ("pods", "pod"),
        true,
        &["po"],
        &["all"],
        &["status", "binding", "exec", "log"],
    ),
    res(
        ("", "v1", "Secret"),
        ("secrets", "secret"),
        true,
        &[],
        &[],
        &[],
    ),
    res(
        ("", "v1", "Service"),
        ("services", "service"),
        true,
        &["svc"],
        &["all"],
        &["status"],
    ),
    res(
        ("apps", "v1", "Deployment"),
        ("deployments", "deployment"),
        true,
        &["deploy"],
        &["all"],
        &["status", "scale"],
    ),
    res(
        ("apps", "v1", "ReplicaSet"),
        ("replicasets", "replicaset"),
        true,
        &["rs"],
        &["all"],
        &["status", "scale"],
    ),
    res(
        ("discovery.k8s.io", "v1", "EndpointSlice"),
        ("endpointslices", "endpointslice"),
        true,
        &[],
        &[],
        &[],
    ),
    res(
        ("networking.k8s.io", "v1", "IngressClass"),
        ("ingressclasses", "ingressclass"),
        false,
        &[],
        &[],
        &[],
    ),
    res(
        ("networking.k8s.io", "v1", "Ingress"),
        ("ingresses", "ingress"),
        true,
        &["ing"],
        &[],
        &["status"],
    ),
    res(
        ("networking.k8s.io", "v1", "NetworkPolicy"),
        ("networkpolicies", "networkpolicy"),
        true,
        &["netpol"],
        &[],
        &[],
    ),
];

/// The API groups served, each with its one version, in discovery order.
pub static GROUPS: &[(&str, &str)] = &[
    ("apps", "v1"),
    ("discovery.k8s.io", "v1"),
    ("networking.k8s.io", "v1"),
];

pub fn by_plural(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

pub fn by_kind(kind: &str) -> Option<&'static Resource> {
    RESOURCES.iter().find(|r| r.kind == kind)
}

/// The resources of one group-version.
pub fn of_group_version<'a>(
    group: &'a str,
    version: &'a str,
) -> impl Iterator<Item = &'static Resource> + 'a {
    RESOURCES
        .iter()
        .filter(move |r| r.group == group && r.version == version)
}

pub fn serves_group_version(group: &str, version: &str) -> bool {
    (group.is_empty() && version == "v1") || GROUPS.contains(&(group, version))
}
