//! The patch metadata of the built-in kinds, as a table from type to field: which lists
//! merge (strategic merge patch `patchStrategy:"merge"` and its `patchMergeKey`), and
//! how server-side apply sees each list and struct (`+listType=map|set|atomic`,
//! `+listMapKey`, `+structType=atomic`, `+mapType=atomic`), transcribed from the struct
//! tags and markers of k8s.io/api core/v1, apps/v1, discovery/v1, networking/v1 and
//! metav1 `ObjectMeta`.
//!
//! Only fields that differ from the defaults are listed; a field not in the table is
//! untyped: objects merge key by key, lists are replaced (strategic merge) or atomic
//! (apply). `PodSpec` is one entry shared by Pods and by the templates of Deployments
//! and ReplicaSets.
//!
//! The `retainKeys` strategy (`PodSpec.volumes`, `PodSpec.resourceClaims`,
//! `DeploymentSpec.strategy`) is not listed: it only tells clients to send a
//! `$retainKeys` directive, which the server honours wherever it appears.

use serde_json::{json, Value};

/// The fields of one struct type that do not follow the defaults.
pub(crate) struct TypeDef {
    fields: &'static [Field],
}

/// What is known of a value's type.
#[derive(Clone, Copy)]
pub(crate) enum Ty {
    /// Nothing: objects are granular maps, lists atomic.
    Untyped,
    /// An atomic struct or map (`+structType=atomic`, `+mapType=atomic`).
    Atomic,
    /// A struct with fields in the table.
    Struct(&'static TypeDef),
}

/// How strategic merge patch combines a list field.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Strategy {
    /// The patch's list replaces the original one.
    Replace,
    /// Items are maps merged by the value of this key.
    MergeByKey(&'static str),
    /// Items are scalars, merged as a set.
    MergeScalars,
}

/// How server-side apply sees a list field.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum ListType {
    Atomic,
    Set,
    Map(&'static [ListKey]),
}

/// One key of an associative list, with the default the apiserver's schema declares.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct ListKey {
    pub name: &'static str,
    pub default: Option<&'static str>,
}

/// The metadata of one field: the type of its value (of its items, for lists), its
/// strategic merge strategy and its apply list type.
#[derive(Clone, Copy)]
pub(crate) struct Field {
    name: &'static str,
    pub ty: Ty,
    pub strategy: Strategy,
    pub list: ListType,
}

impl Field {
    const fn new(name: &'static str, ty: Ty, strategy: Strategy, list: ListType) -> Field {
        Field {
            name,
            ty,
            strategy,
            list,
        }
    }

    /// A nested struct whose own fields have metadata.
    const fn object(name: &'static str, ty: &'static TypeDef) -> Field {
        Field::new(name, Ty::Struct(ty), Strategy::Replace, ListType::Atomic)
    }

    /// An atomic struct or map: applied and owned as a whole.
    const fn atomic(name: &'static str) -> Field {
        Field::new(name, Ty::Atomic, Strategy::Replace, ListType::Atomic)
    }

    /// A list of maps merged by `key`, associative for apply by `keys`.
    const fn merge_list(
        name: &'static str,
        items: Ty,
        key: &'static str,
        keys: &'static [ListKey],
    ) -> Field {
        Field::new(name, items, Strategy::MergeByKey(key), ListType::Map(keys))
    }

    /// A list of scalars merged as a set, a set for apply too.
    const fn merge_set(name: &'static str) -> Field {
        Field::new(name, Ty::Untyped, Strategy::MergeScalars, ListType::Set)
    }

    /// A list of maps merged by `key` that apply treats as atomic.
    const fn merge_atomic_list(name: &'static str, key: &'static str) -> Field {
        Field::new(
            name,
            Ty::Untyped,
            Strategy::MergeByKey(key),
            ListType::Atomic,
        )
    }

    /// A list strategic merge replaces and apply keys by `keys`.
    const fn keyed_list(name: &'static str, items: Ty, keys: &'static [ListKey]) -> Field {
        Field::new(name, items, Strategy::Replace, ListType::Map(keys))
    }

    /// A list of scalars strategic merge replaces and apply treats as a set.
    const fn set(name: &'static str) -> Field {
        Field::new(name, Ty::Untyped, Strategy::Replace, ListType::Set)
    }

    const UNTYPED: Field = Field::new("", Ty::Untyped, Strategy::Replace, ListType::Atomic);
}

impl Ty {
    /// The metadata of a field of a value of this type.
    pub(crate) fn field(self, name: &str) -> Field {
        match self {
            Ty::Struct(def) => def
                .fields
                .iter()
                .find(|f| f.name == name)
                .copied()
                .unwrap_or(Field::UNTYPED),
            Ty::Untyped | Ty::Atomic => Field::UNTYPED,
        }
    }

    pub(crate) fn is_atomic(self) -> bool {
        matches!(self, Ty::Atomic)
    }
}

const fn key(name: &'static str) -> ListKey {
    ListKey {
        name,
        default: None,
    }
}

const fn key_or(name: &'static str, default: &'static str) -> ListKey {
    ListKey {
        name,
        default: Some(default),
    }
}

const NAME: &[ListKey] = &[key("name")];
const TYPE: &[ListKey] = &[key("type")];

static OBJECT_META: TypeDef = TypeDef {
    fields: &[
        Field::merge_list("ownerReferences", Ty::Atomic, "uid", &[key("uid")]),
        Field::merge_set("finalizers"),
        Field::atomic("managedFields"),
    ],
};

static POD_TEMPLATE_SPEC: TypeDef = TypeDef {
    fields: &[
        Field::object("metadata", &OBJECT_META),
        Field::object("spec", &POD_SPEC),
    ],
};

static POD_SPEC: TypeDef = TypeDef {
    fields: &[
        Field::merge_list("volumes", Ty::Struct(&VOLUME), "name", NAME),
        Field::merge_list("initContainers", Ty::Struct(&CONTAINER), "name", NAME),
        Field::merge_list("containers", Ty::Struct(&CONTAINER), "name", NAME),
        Field::merge_list("ephemeralContainers", Ty::Struct(&CONTAINER), "name", NAME),
        Field::atomic("nodeSelector"),
        Field::merge_list("imagePullSecrets", Ty::Atomic, "name", NAME),
        Field::merge_list("hostAliases", Ty::Untyped, "ip", &[key("ip")]),
        Field::merge_list(
            "topologySpreadConstraints",
            Ty::Struct(&TOPOLOGY_SPREAD_CONSTRAINT),
            "topologyKey",
            &[key("topologyKey"), key("whenUnsatisfiable")],
        ),
        Field::merge_list("schedulingGates", Ty::Untyped, "name", NAME),
        Field::merge_list("resourceClaims", Ty::Untyped, "name", NAME),
        Field::merge_list("evictionResponders", Ty::Atomic, "name", NAME),
        Field::object("affinity", &AFFINITY),
        Field::object("resources", &RESOURCE_REQUIREMENTS),
    ],
};

static AFFINITY: TypeDef = TypeDef {
    fields: &[Field::object("nodeAffinity", &NODE_AFFINITY)],
};

static NODE_AFFINITY: TypeDef = TypeDef {
    fields: &[Field::atomic(
        "requiredDuringSchedulingIgnoredDuringExecution",
    )],
};

static TOPOLOGY_SPREAD_CONSTRAINT: TypeDef = TypeDef {
    fields: &[Field::atomic("labelSelector")],
};

/// `Volume` with its inlined `VolumeSource`.
static VOLUME: TypeDef = TypeDef {
    fields: &[
        Field::object("iscsi", &WITH_SECRET_REF),
        Field::object("rbd", &WITH_SECRET_REF),
        Field::object("flexVolume", &WITH_SECRET_REF),
        Field::object("cinder", &WITH_SECRET_REF),
        Field::object("cephfs", &WITH_SECRET_REF),
        Field::object("scaleIO", &WITH_SECRET_REF),
        Field::object("storageos", &WITH_SECRET_REF),
        Field::object("csi", &CSI_VOLUME_SOURCE),
        Field::object("ephemeral", &EPHEMERAL_VOLUME_SOURCE),
    ],
};

/// The volume sources whose `secretRef` is an atomic `LocalObjectReference`.
static WITH_SECRET_REF: TypeDef = TypeDef {
    fields: &[Field::atomic("secretRef")],
};

static CSI_VOLUME_SOURCE: TypeDef = TypeDef {
    fields: &[Field::atomic("nodePublishSecretRef")],
};

static EPHEMERAL_VOLUME_SOURCE: TypeDef = TypeDef {
    fields: &[Field::object("volumeClaimTemplate", &PVC_TEMPLATE)],
};

static PVC_TEMPLATE: TypeDef = TypeDef {
    fields: &[
        Field::object("metadata", &OBJECT_META),
        Field::object("spec", &PVC_SPEC),
    ],
};

static PVC_SPEC: TypeDef = TypeDef {
    fields: &[Field::atomic("selector"), Field::atomic("dataSource")],
};

/// `Container`, and `EphemeralContainer` with its inlined `EphemeralContainerCommon`.
static CONTAINER: TypeDef = TypeDef {
    fields: &[
        Field::merge_list(
            "ports",
            Ty::Untyped,
            "containerPort",
            &[key("containerPort"), key_or("protocol", "TCP")],
        ),
        Field::merge_list("env", Ty::Struct(&ENV_VAR), "name", NAME),
        Field::merge_list(
            "volumeMounts",
            Ty::Struct(&VOLUME_MOUNT),
            "mountPath",
            &[key("mountPath")],
        ),
        Field::merge_list(
            "volumeDevices",
            Ty::Untyped,
            "devicePath",
            &[key("devicePath")],
        ),
        Field::object("resources", &RESOURCE_REQUIREMENTS),
    ],
};

static ENV_VAR: TypeDef = TypeDef {
    fields: &[Field::object("valueFrom", &ENV_VAR_SOURCE)],
};

static ENV_VAR_SOURCE: TypeDef = TypeDef {
    fields: &[
        Field::atomic("fieldRef"),
        Field::atomic("resourceFieldRef"),
        Field::atomic("configMapKeyRef"),
        Field::atomic("secretKeyRef"),
        Field::atomic("fileKeyRef"),
    ],
};

static VOLUME_MOUNT: TypeDef = TypeDef {
    fields: &[Field::set("bindMountOptions")],
};

static RESOURCE_REQUIREMENTS: TypeDef = TypeDef {
    fields: &[Field::keyed_list("claims", Ty::Untyped, NAME)],
};

static POD: TypeDef = TypeDef {
    fields: &[
        Field::object("metadata", &OBJECT_META),
        Field::object("spec", &POD_SPEC),
        Field::object("status", &POD_STATUS),
    ],
};

static POD_STATUS: TypeDef = TypeDef {
    fields: &[
        Field::merge_list("conditions", Ty::Untyped, "type", TYPE),
        Field::merge_atomic_list("hostIPs", "ip"),
        Field::merge_list("podIPs", Ty::Untyped, "ip", &[key("ip")]),
        Field::merge_list("resourceClaimStatuses", Ty::Untyped, "name", NAME),
        Field::keyed_list("volumeHealth", Ty::Struct(&POD_VOLUME_HEALTH), NAME),
    ],
};

static POD_VOLUME_HEALTH: TypeDef = TypeDef {
    fields: &[Field::merge_list(
        "healthConditions",
        Ty::Untyped,
        "status",
        &[key("status"), key("reason")],
    )],
};

/// Deployments and ReplicaSets.
static WORKLOAD: TypeDef = TypeDef {
    fields: &[
        Field::object("metadata", &OBJECT_META),
        Field::object("spec", &WORKLOAD_SPEC),
        Field::object("status", &WITH_CONDITIONS),
    ],
};

/// `DeploymentSpec` and `ReplicaSetSpec`: an atomic selector and a pod template.
static WORKLOAD_SPEC: TypeDef = TypeDef {
    fields: &[
        Field::atomic("selector"),
        Field::object("template", &POD_TEMPLATE_SPEC),
    ],
};

/// The statuses whose only metadata is `conditions` merged by `type`.
static WITH_CONDITIONS: TypeDef = TypeDef {
    fields: &[Field::merge_list("conditions", Ty::Untyped, "type", TYPE)],
};

static SERVICE: TypeDef = TypeDef {
    fields: &[
        Field::object("metadata", &OBJECT_META),
        Field::object("spec", &SERVICE_SPEC),
        Field::object("status", &WITH_CONDITIONS),
    ],
};

static SERVICE_SPEC: TypeDef = TypeDef {
    fields: &[
        Field::merge_list(
            "ports",
            Ty::Untyped,
            "port",
            &[key("port"), key_or("protocol", "TCP")],
        ),
        Field::atomic("selector"),
    ],
};

static NAMESPACE: TypeDef = TypeDef {
    fields: &[
        Field::object("metadata", &OBJECT_META),
        Field::object("status", &WITH_CONDITIONS),
    ],
};

static NODE: TypeDef = TypeDef {
    fields: &[
        Field::object("metadata", &OBJECT_META),
        Field::object("spec", &NODE_SPEC),
        Field::object("status", &NODE_STATUS),
    ],
};

static NODE_SPEC: TypeDef = TypeDef {
    fields: &[Field::merge_set("podCIDRs")],
};

static NODE_STATUS: TypeDef = TypeDef {
    fields: &[
        Field::merge_list("conditions", Ty::Untyped, "type", TYPE),
        Field::merge_list("addresses", Ty::Untyped, "type", TYPE),
    ],
};

static EVENT: TypeDef = TypeDef {
    fields: &[
        Field::object("metadata", &OBJECT_META),
        Field::atomic("involvedObject"),
        Field::atomic("related"),
    ],
};

static INGRESS: TypeDef = TypeDef {
    fields: &[
        Field::object("metadata", &OBJECT_META),
        Field::object("spec", &INGRESS_SPEC),
    ],
};

static INGRESS_SPEC: TypeDef = TypeDef {
    fields: &[Field::object("defaultBackend", &INGRESS_BACKEND)],
};

static INGRESS_BACKEND: TypeDef = TypeDef {
    fields: &[
        Field::atomic("resource"),
        Field::object("service", &INGRESS_SERVICE_BACKEND),
    ],
};

static INGRESS_SERVICE_BACKEND: TypeDef = TypeDef {
    fields: &[Field::atomic("port")],
};

static NETWORK_POLICY: TypeDef = TypeDef {
    fields: &[
        Field::object("metadata", &OBJECT_META),
        Field::object("spec", &NETWORK_POLICY_SPEC),
    ],
};

static NETWORK_POLICY_SPEC: TypeDef = TypeDef {
    fields: &[Field::atomic("podSelector")],
};

/// Kinds with nothing but `ObjectMeta` to describe: ConfigMap and Secret (whose maps
/// merge by key), Endpoints and EndpointSlice (whose lists are atomic), IngressClass, and
/// every kind this table does not know.
static METADATA_ONLY: TypeDef = TypeDef {
    fields: &[Field::object("metadata", &OBJECT_META)],
};

/// The root type of an object of `kind`.
pub(crate) fn root(kind: &str) -> Ty {
    Ty::Struct(match kind {
        "Pod" => &POD,
        "Deployment" | "ReplicaSet" => &WORKLOAD,
        "Service" => &SERVICE,
        "Namespace" => &NAMESPACE,
        "Node" => &NODE,
        "Event" => &EVENT,
        "Ingress" => &INGRESS,
        "NetworkPolicy" => &NETWORK_POLICY,
        _ => &METADATA_ONLY,
    })
}

/// Whether `kind` has a `status` subresource, whose field the main resource's writes
/// neither change nor own.
pub(crate) fn has_status_subresource(kind: &str) -> bool {
    matches!(
        kind,
        "Pod" | "Deployment" | "ReplicaSet" | "Service" | "Namespace" | "Node" | "Ingress"
    )
}

/// The fields a write through the `status` subresource of `kind` may not change, and so
/// never owns (the status strategies' reset fields).
pub(crate) fn status_reset_fields(kind: &str) -> &'static [&'static str] {
    match kind {
        "Deployment" => &["spec", "metadata.labels"],
        "Pod" => &[
            "spec",
            "metadata.deletionTimestamp",
            "metadata.ownerReferences",
        ],
        _ => &["spec"],
    }
}

/// An empty object of `kind` as the apiserver serializes a freshly allocated Go struct:
/// struct-valued fields are present (empty), timestamps and non-optional lists null.
/// Comparing a created object against it tells which fields the creation added.
pub(crate) fn empty_object(kind: &str) -> Value {
    let template = json!({"metadata": {"creationTimestamp": null}, "spec": {"containers": null}});
    let mut object = match kind {
        "Deployment" => json!({"spec": {"template": template, "strategy": {}}, "status": {}}),
        "ReplicaSet" => json!({"spec": {"template": template}, "status": {"replicas": 0}}),
        "Pod" => json!({"spec": {"containers": null}, "status": {}}),
        "Service" | "Ingress" => json!({"spec": {}, "status": {"loadBalancer": {}}}),
        "Namespace" | "Node" => json!({"spec": {}, "status": {}}),
        "IngressClass" => json!({"spec": {}}),
        "NetworkPolicy" => json!({"spec": {"podSelector": {}}}),
        "EndpointSlice" => json!({"addressType": "", "endpoints": null}),
        "Event" => json!({
            "involvedObject": {}, "source": {}, "firstTimestamp": null, "lastTimestamp": null,
            "eventTime": null, "reportingComponent": "", "reportingInstance": ""
        }),
        _ => json!({}),
    };
    if let Value::Object(map) = &mut object {
        map.insert("metadata".to_string(), json!({"creationTimestamp": null}));
    }
    object
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTAINER_PORT: &[ListKey] = &[key("containerPort"), key_or("protocol", "TCP")];
    const SERVICE_PORT: &[ListKey] = &[key("port"), key_or("protocol", "TCP")];
    const MOUNT_PATH: &[ListKey] = &[key("mountPath")];
    const UID: &[ListKey] = &[key("uid")];

    fn path(kind: &str, path: &str) -> Field {
        let mut field = Field::UNTYPED;
        let mut ty = root(kind);
        for name in path.split('.') {
            field = ty.field(name);
            ty = field.ty;
        }
        field
    }

    fn check(kind: &str, field: &str, strategy: Strategy, list: ListType) {
        let got = path(kind, field);
        assert_eq!((got.strategy, got.list), (strategy, list), "{kind}:{field}");
    }

    #[test]
    fn pod_spec_is_shared_by_pods_and_templates() {
        let name = ListType::Map(NAME);
        check("Pod", "spec.containers", Strategy::MergeByKey("name"), name);
        check(
            "Deployment",
            "spec.template.spec.containers",
            Strategy::MergeByKey("name"),
            name,
        );
        check(
            "ReplicaSet",
            "spec.template.spec.volumes",
            Strategy::MergeByKey("name"),
            name,
        );
        check(
            "Deployment",
            "spec.template.spec.containers.ports",
            Strategy::MergeByKey("containerPort"),
            ListType::Map(CONTAINER_PORT),
        );
        check(
            "Pod",
            "spec.initContainers.volumeMounts",
            Strategy::MergeByKey("mountPath"),
            ListType::Map(MOUNT_PATH),
        );
        check(
            "Pod",
            "spec.containers.env",
            Strategy::MergeByKey("name"),
            name,
        );
        check(
            "Pod",
            "spec.tolerations",
            Strategy::Replace,
            ListType::Atomic,
        );
        check(
            "Pod",
            "spec.containers.args",
            Strategy::Replace,
            ListType::Atomic,
        );
    }

    #[test]
    fn metadata_status_and_service_fields() {
        check(
            "ConfigMap",
            "metadata.finalizers",
            Strategy::MergeScalars,
            ListType::Set,
        );
        check(
            "Widget",
            "metadata.ownerReferences",
            Strategy::MergeByKey("uid"),
            ListType::Map(UID),
        );
        check(
            "Pod",
            "status.conditions",
            Strategy::MergeByKey("type"),
            ListType::Map(TYPE),
        );
        check(
            "Pod",
            "status.hostIPs",
            Strategy::MergeByKey("ip"),
            ListType::Atomic,
        );
        check(
            "Node",
            "status.addresses",
            Strategy::MergeByKey("type"),
            ListType::Map(TYPE),
        );
        check(
            "Node",
            "spec.podCIDRs",
            Strategy::MergeScalars,
            ListType::Set,
        );
        check(
            "Service",
            "spec.ports",
            Strategy::MergeByKey("port"),
            ListType::Map(SERVICE_PORT),
        );
        check(
            "EndpointSlice",
            "endpoints",
            Strategy::Replace,
            ListType::Atomic,
        );
        check(
            "Pod",
            "spec.containers.volumeMounts.bindMountOptions",
            Strategy::Replace,
            ListType::Set,
        );
        check("Widget", "spec.items", Strategy::Replace, ListType::Atomic);
    }

    #[test]
    fn atomic_structs() {
        assert!(path("Deployment", "spec.selector").ty.is_atomic());
        assert!(path("Service", "spec.selector").ty.is_atomic());
        assert!(path("Event", "involvedObject").ty.is_atomic());
        assert!(path("NetworkPolicy", "spec.podSelector").ty.is_atomic());
        assert!(!path("Deployment", "spec.template").ty.is_atomic());
        assert!(!path("ConfigMap", "data").ty.is_atomic());
    }

    #[test]
    fn empty_objects_and_status_subresources() {
        assert_eq!(
            empty_object("Deployment")["spec"]["template"]["spec"],
            json!({"containers": null})
        );
        assert_eq!(
            empty_object("ConfigMap"),
            json!({"metadata": {"creationTimestamp": null}})
        );
        assert!(has_status_subresource("Deployment"));
        assert!(!has_status_subresource("ConfigMap"));
        assert_eq!(
            status_reset_fields("Deployment"),
            ["spec", "metadata.labels"]
        );
        assert_eq!(status_reset_fields("Node"), ["spec"]);
    }
}
