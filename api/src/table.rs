//! The rows of the server-side `Table` (meta.k8s.io/v1) that `kubectl get` prints: for each
//! kind the same columns, priorities and cell texts as the real apiserver's printers
//! (`pkg/printers/internalversion`), so `kubectl get` and `kubectl get -o wide` look alike.
//!
//! Cells are always produced for every column, wide ones included, as the apiserver does;
//! kubectl hides priority-1 columns unless asked for `-o wide`. Kinds without a printer
//! here get `Name` and `Age`, the layout custom resources get. Fields the real apiserver
//! defaults before storing (`spec.type`, port `protocol`, `spec.replicas`) read as their
//! default when absent. Time is passed in, never read from a clock.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Map, Value};

use crate::selector::LabelSelector;

/// One `columnDefinitions` entry of a Table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    pub type_: &'static str,
    pub format: &'static str,
    pub description: &'static str,
    /// 0 for default output, 1 for columns shown only with `-o wide`.
    pub priority: i32,
}

const NAME_DESC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const AGE_DESC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";
const CONTAINERS_DESC: &str = "Names of each container in the template.";
const IMAGES_DESC: &str = "Images referenced by each container in the template.";
const NODE_ADDRESSES_DESC: &str = "List of addresses reachable to the node. Queried from cloud provider, if available. More info: https://kubernetes.io/docs/reference/node/node-status/#addresses Note: This field is declared as mergeable, but the merge key is not sufficiently unique, which can cause data corruption when it is merged. Callers should instead use a full-replacement patch. See https://pr.k8s.io/79391 for an example. Consumers should assume that addresses can change during the lifetime of a Node. However, there are some exceptions where this may not be possible, such as Pods that inherit a Node's address in its own status or consumers of the downward API (status.hostIP).";

const NAME: Column = Column {
    name: "Name",
    type_: "string",
    format: "name",
    description: NAME_DESC,
    priority: 0,
};
const AGE: Column = col("Age", "string", AGE_DESC);

const fn col(name: &'static str, type_: &'static str, description: &'static str) -> Column {
    Column {
        name,
        type_,
        format: "",
        description,
        priority: 0,
    }
}

const fn wide(name: &'static str, type_: &'static str, description: &'static str) -> Column {
    Column {
        name,
        type_,
        format: "",
        description,
        priority: 1,
    }
}

/// The columns `kind`'s printer declares, in order; `Name` and `Age` for other kinds.
pub fn columns(kind: &str) -> Vec<Column> {
    match kind {
        "Namespace" => vec![NAME, col("Status", "string", "The status of the namespace"), AGE],
        "Node" => vec![
            NAME,
            col("Status", "string", "The status of the node"),
            col("Roles", "string", "The roles of the node"),
            AGE,
            col("Version", "string", "Kubelet Version reported by the node."),
            wide("Internal-IP", "string", NODE_ADDRESSES_DESC),
            wide("External-IP", "string", NODE_ADDRESSES_DESC),
            wide("OS-Image", "string", "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy))."),
            wide("Kernel-Version", "string", "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64)."),
            wide("Container-Runtime", "string", "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2)."),
        ],
        "Pod" => vec![
            NAME,
            col("Ready", "string", "The aggregate readiness state of this pod for accepting traffic."),
            col("Status", "string", "The aggregate status of the containers in this pod."),
            col("Restarts", "string", "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."),
            AGE,
            wide("IP", "string", "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated."),
            wide("Node", "string", "NodeName indicates in which node this pod is scheduled. If empty, this pod is a candidate for scheduling by the scheduler defined in schedulerName. Once this field is set, the kubelet for this node becomes responsible for the lifecycle of this pod. This field should not be used to express a desire for the pod to be scheduled on a specific node. https://kubernetes.io/docs/concepts/scheduling-eviction/assign-pod-node/#nodename"),
            wide("Nominated Node", "string", "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods. This field does not guarantee that the pod will be scheduled on this node. Scheduler may decide to place the pod elsewhere if other nodes become available sooner. Scheduler may also decide to give the resources on this node to a higher priority pod that is created after preemption. As a result, this field may be different than PodSpec.nodeName when the pod is scheduled."),
            wide("Readiness Gates", "string", "If specified, all readiness gates will be evaluated for pod readiness. A pod is ready when all its containers are ready AND all conditions specified in the readiness gates have status equal to \"True\" More info: https://git.k8s.io/enhancements/keps/sig-network/580-pod-readiness-gates"),
        ],
        "Service" => vec![
            NAME,
            col("Type", "string", "type determines how the Service is exposed. Defaults to ClusterIP. Valid options are ExternalName, ClusterIP, NodePort, and LoadBalancer. \"ClusterIP\" allocates a cluster-internal IP address for load-balancing to endpoints. Endpoints are determined by the selector or if that is not specified, by manual construction of an Endpoints object or EndpointSlice objects. If clusterIP is \"None\", no virtual IP is allocated and the endpoints are published as a set of endpoints rather than a virtual IP. \"NodePort\" builds on ClusterIP and allocates a port on every node which routes to the same endpoints as the clusterIP. \"LoadBalancer\" builds on NodePort and creates an external load-balancer (if supported in the current cloud) which routes to the same endpoints as the clusterIP. \"ExternalName\" aliases this service to the specified externalName. Several other fields do not apply to ExternalName services. More info: https://kubernetes.io/docs/concepts/services-networking/service/#publishing-services-service-types"),
            col("Cluster-IP", "string", "clusterIP is the IP address of the service and is usually assigned randomly. If an address is specified manually, is in-range (as per system configuration), and is not in use, it will be allocated to the service; otherwise creation of the service will fail. This field may not be changed through updates unless the type field is also being changed to ExternalName (which requires this field to be blank) or the type field is being changed from ExternalName (in which case this field may optionally be specified, as describe above).  Valid values are \"None\", empty string (\"\"), or a valid IP address. Setting this to \"None\" makes a \"headless service\" (no virtual IP), which is useful when direct endpoint connections are preferred and proxying is not required.  Only applies to types ClusterIP, NodePort, and LoadBalancer. If this field is specified when creating a Service of type ExternalName, creation will fail. This field will be wiped when updating a Service to type ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies"),
            col("External-IP", "string", "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.  These IPs are not managed by Kubernetes.  The user is responsible for ensuring that traffic arrives at a node with this IP.  A common example is external load-balancers that are not part of the Kubernetes system."),
            col("Port(s)", "string", "The list of ports that are exposed by this service. More info: https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies"),
            AGE,
            wide("Selector", "string", "Route service traffic to pods with label keys and values matching this selector. If empty or not present, the service is assumed to have an external process managing its endpoints, which Kubernetes will not modify. Only applies to types ClusterIP, NodePort, and LoadBalancer. Ignored if type is ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/"),
        ],
        "Endpoints" => vec![
            NAME,
            col("Endpoints", "string", "The set of all endpoints is the union of all subsets. Addresses are placed into subsets according to the IPs they share. A single address with multiple ports, some of which are ready and some of which are not (because they come from different containers) will result in the address being displayed in different subsets for the different ports. No address will appear in both Addresses and NotReadyAddresses in the same subset. Sets of addresses and ports that comprise a service."),
            AGE,
        ],
        "EndpointSlice" => vec![
            NAME,
            col("AddressType", "string", "addressType specifies the type of address carried by this EndpointSlice. All addresses in this slice must be the same type. This field is immutable after creation. The following address types are currently supported: * IPv4: Represents an IPv4 Address. * IPv6: Represents an IPv6 Address. * FQDN: Represents a Fully Qualified Domain Name."),
            col("Ports", "string", "ports specifies the list of network ports exposed by each endpoint in this slice. Each port must have a unique name. When ports is empty, it indicates that there are no defined ports. When a port is defined with a nil port value, it indicates \"all ports\". Each slice may include a maximum of 100 ports."),
            col("Endpoints", "string", "endpoints is a list of unique endpoints in this slice. Each slice may include a maximum of 1000 endpoints."),
            AGE,
        ],
        "ConfigMap" => vec![
            NAME,
            col("Data", "string", "Data contains the configuration data. Each key must consist of alphanumeric characters, '-', '_' or '.'. Values with non-UTF-8 byte sequences must use the BinaryData field. The keys stored in Data must not overlap with the keys in the BinaryData field, this is enforced during validation process."),
            AGE,
        ],
        "Secret" => vec![
            NAME,
            col("Type", "string", "Used to facilitate programmatic handling of secret data. More info: https://kubernetes.io/docs/concepts/configuration/secret/#secret-types"),
            col("Data", "string", "Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'. The serialized form of the secret data is a base64 encoded string, representing the arbitrary (possibly non-string) data value here. Described in https://tools.ietf.org/html/rfc4648#section-4"),
            AGE,
        ],
        "ServiceAccount" => vec![
            NAME,
            col("Secrets", "string", "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use. Pods are only limited to this list if this service account has a \"kubernetes.io/enforce-mountable-secrets\" annotation set to \"true\". The \"kubernetes.io/enforce-mountable-secrets\" annotation is deprecated since v1.32. Prefer separate namespaces to isolate access to mounted secrets. This field should not be used to find auto-generated service account token secrets for use outside of pods. Instead, tokens can be requested directly using the TokenRequest API, or service account token secrets can be manually created. More info: https://kubernetes.io/docs/concepts/configuration/secret"),
            AGE,
        ],
        "Event" => vec![
            col("Last Seen", "string", "The time at which the most recent occurrence of this event was recorded."),
            col("Type", "string", "Type of this event (Normal, Warning), new types could be added in the future"),
            col("Reason", "string", "This should be a short, machine understandable string that gives the reason for the transition into the object's current status."),
            col("Object", "string", "The object that this event is about."),
            wide("Subobject", "string", "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement, such as desiredState.manifest.containers[2]. For example, if the object reference is to a container within a pod, this would take on a value like: \"spec.containers{name}\" (where \"name\" refers to the name of the container that triggered the event) or if no container name is specified \"spec.containers[2]\" (container with index 2 in this pod). This syntax is chosen only to have some well-defined way of referencing a part of an object."),
            wide("Source", "string", "The component reporting this event. Should be a short machine understandable string."),
            col("Message", "string", "A human-readable description of the status of this operation."),
            wide("First Seen", "string", "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)"),
            wide("Count", "string", "The number of times this event has occurred."),
            Column { priority: 1, ..NAME },
        ],
        "Deployment" => vec![
            NAME,
            col("Ready", "string", "Number of the pod with ready state"),
            col("Up-to-date", "string", "Total number of non-terminating pods targeted by this deployment that have the desired template spec."),
            col("Available", "string", "Total number of available non-terminating pods (ready for at least minReadySeconds) targeted by this deployment."),
            AGE,
            wide("Containers", "string", CONTAINERS_DESC),
            wide("Images", "string", IMAGES_DESC),
            wide("Selector", "string", "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment."),
        ],
        "ReplicaSet" => vec![
            NAME,
            col("Desired", "integer", "Replicas is the number of desired pods. This is a pointer to distinguish between explicit zero and unspecified. Defaults to 1. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicaset"),
            col("Current", "integer", "Replicas is the most recently observed number of non-terminating pods. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicaset"),
            col("Ready", "integer", "The number of non-terminating pods targeted by this ReplicaSet with a Ready Condition."),
            AGE,
            wide("Containers", "string", CONTAINERS_DESC),
            wide("Images", "string", IMAGES_DESC),
            wide("Selector", "string", "Selector is a label query over pods that should match the replica count. If the selector is empty, it is defaulted to the labels present on the pod template. Label keys and values that must match in order to be controlled by this replica set. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors"),
        ],
        "Ingress" => vec![
            NAME,
            col("Class", "string", "The name of the IngressClass resource that should be used for additional configuration"),
            col("Hosts", "string", "Hosts that incoming requests are matched against before the ingress rule"),
            col("Address", "string", "Address is a list containing ingress points for the load-balancer"),
            col("Ports", "string", "Ports of TLS configurations that open"),
            AGE,
        ],
        "IngressClass" => vec![
            NAME,
            col("Controller", "string", "Controller that is responsible for handling this class"),
            col("Parameters", "string", "A reference to a resource with additional parameters"),
            AGE,
        ],
        "NetworkPolicy" => vec![
            NAME,
            col("Pod-Selector", "string", "Selects the pods to which this NetworkPolicy object applies.  The array of ingress rules is applied to any pods selected by this field. Multiple network policies can select the same set of pods.  In this case, the ingress rules for each are combined additively. This field is NOT optional and follows standard label selector semantics. An empty podSelector matches all pods in this namespace."),
            AGE,
        ],
        _ => vec![NAME, col("Age", "date", AGE_DESC)],
    }
}

/// `columns(kind)` as the JSON objects of a Table's `columnDefinitions`.
pub fn column_definitions(kind: &str) -> Vec<Value> {
    columns(kind)
        .into_iter()
        .map(|c| {
            json!({
                "name": c.name,
                "type": c.type_,
                "format": c.format,
                "description": c.description,
                "priority": c.priority,
            })
        })
        .collect()
}

/// The cells of `obj`'s row, one per column of `columns(kind)`; `now` dates the ages.
pub fn cells(kind: &str, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let ctx = Row { obj, now };
    match kind {
        "Namespace" => vec![ctx.name(), text(obj, "/status/phase").into(), ctx.age()],
        "Node" => node_cells(&ctx),
        "Pod" => pod_cells(&ctx),
        "Service" => service_cells(&ctx),
        "Endpoints" => vec![ctx.name(), format_endpoints(obj).into(), ctx.age()],
        "EndpointSlice" => endpoint_slice_cells(&ctx),
        "ConfigMap" => {
            let data = keys(obj, "/data") + keys(obj, "/binaryData");
            vec![ctx.name(), data.into(), ctx.age()]
        }
        "Secret" => vec![
            ctx.name(),
            text(obj, "/type").into(),
            keys(obj, "/data").into(),
            ctx.age(),
        ],
        "ServiceAccount" => vec![ctx.name(), list(obj, "/secrets").len().into(), ctx.age()],
        "Event" => event_cells(&ctx),
        "Deployment" => deployment_cells(&ctx),
        "ReplicaSet" => replica_set_cells(&ctx),
        "Ingress" => ingress_cells(&ctx),
        "IngressClass" => ingress_class_cells(&ctx),
        "NetworkPolicy" => {
            let selector =
                format_label_selector(obj.pointer("/spec/podSelector").unwrap_or(&Value::Null));
            vec![ctx.name(), selector.into(), ctx.age()]
        }
        _ => vec![ctx.name(), ctx.age()],
    }
}

/// apimachinery's `duration.HumanDuration`: two significant units at most, coarser with age.
pub fn human_duration(d: Duration) -> String {
    let seconds = d.num_seconds();
    if seconds < -1 {
        return "<invalid>".to_string();
    }
    if seconds < 0 {
        return "0s".to_string();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = d.num_minutes();
    if minutes < 10 {
        return match seconds % 60 {
            0 => format!("{minutes}m"),
            s => format!("{minutes}m{s}s"),
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = d.num_hours();
    if hours < 8 {
        return match minutes % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        return match hours % 24 {
            0 => format!("{}d", hours / 24),
            h => format!("{}d{h}h", hours / 24),
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        return match (hours / 24) % 365 {
            0 => format!("{}y", hours / 24 / 365),
            dy => format!("{}y{dy}d", hours / 24 / 365),
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// The object being printed and the instant its ages are measured against.
struct Row<'a> {
    obj: &'a Value,
    now: DateTime<Utc>,
}

impl Row<'_> {
    fn name(&self) -> Value {
        text(self.obj, "/metadata/name").into()
    }

    fn since(&self, t: Option<DateTime<Utc>>) -> String {
        t.map_or_else(|| "<unknown>".to_string(), |t| human_duration(self.now - t))
    }

    fn age(&self) -> Value {
        self.since(time_at(self.obj, "/metadata/creationTimestamp"))
            .into()
    }
}

fn text<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn int(v: &Value, pointer: &str) -> i64 {
    v.pointer(pointer)
        .and_then(Value::as_i64)
        .unwrap_or_default()
}

fn flag(v: &Value, pointer: &str) -> bool {
    v.pointer(pointer)
        .and_then(Value::as_bool)
        .unwrap_or_default()
}

fn list<'a>(v: &'a Value, pointer: &str) -> &'a [Value] {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn keys(v: &Value, pointer: &str) -> usize {
    v.pointer(pointer)
        .and_then(Value::as_object)
        .map_or(0, Map::len)
}

fn time_at(v: &Value, pointer: &str) -> Option<DateTime<Utc>> {
    let s = v.pointer(pointer).and_then(Value::as_str)?;
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn or_none(s: &str) -> String {
    if s.is_empty() { "<none>" } else { s }.to_string()
}

/// `labels.FormatLabels`: `k=v` pairs in sorted order, `<none>` when empty.
fn format_labels(m: Option<&Map<String, Value>>) -> String {
    let mut pairs: Vec<String> = m
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    pairs.sort();
    or_none(&pairs.join(","))
}

/// `metav1.FormatLabelSelector`: the selector text, `<none>` when empty, `<error>` when invalid.
fn format_label_selector(sel: &Value) -> String {
    match LabelSelector::from_object(sel) {
        Ok(s) => or_none(&s.to_string()),
        Err(_) => "<error>".to_string(),
    }
}

/// Container names and images of a pod template, each joined by commas.
fn container_cells(obj: &Value) -> (Value, Value) {
    let containers = list(obj, "/spec/template/spec/containers");
    let join = |field: &str| {
        containers
            .iter()
            .map(|c| text(c, field))
            .collect::<Vec<_>>()
            .join(",")
    };
    (join("/name").into(), join("/image").into())
}

/// The addresses of a load balancer status, IP preferred over hostname, sorted and unique.
fn load_balancer_ingress(obj: &Value) -> String {
    let set: BTreeSet<&str> = list(obj, "/status/loadBalancer/ingress")
        .iter()
        .map(|i| {
            Some(text(i, "/ip"))
                .filter(|ip| !ip.is_empty())
                .unwrap_or_else(|| text(i, "/hostname"))
        })
        .filter(|s| !s.is_empty())
        .collect();
    set.into_iter().collect::<Vec<_>>().join(",")
}

fn node_cells(row: &Row<'_>) -> Vec<Value> {
    let node = row.obj;
    let conditions: BTreeMap<&str, &str> = list(node, "/status/conditions")
        .iter()
        .map(|c| (text(c, "/type"), text(c, "/status")))
        .collect();
    let mut status = vec![match conditions.get("Ready") {
        Some(&"True") => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    }];
    if flag(node, "/spec/unschedulable") {
        status.push("SchedulingDisabled");
    }
    let roles: BTreeSet<&str> = node
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| match k.strip_prefix("node-role.kubernetes.io/") {
            Some(role) => Some(role).filter(|r| !r.is_empty()),
            None if k == "kubernetes.io/role" => v.as_str().filter(|r| !r.is_empty()),
            None => None,
        })
        .collect();
    let address = |kind: &str| {
        let found = list(node, "/status/addresses")
            .iter()
            .find(|a| text(a, "/type") == kind);
        or_none(found.map_or("", |a| text(a, "/address")))
    };
    let info = |field: &str| {
        let v = text(node, &format!("/status/nodeInfo/{field}"));
        if v.is_empty() { "<unknown>" } else { v }.to_string()
    };
    vec![
        row.name(),
        status.join(",").into(),
        or_none(&roles.into_iter().collect::<Vec<_>>().join(",")).into(),
        row.age(),
        text(node, "/status/nodeInfo/kubeletVersion").into(),
        address("InternalIP").into(),
        address("ExternalIP").into(),
        info("osImage").into(),
        info("kernelVersion").into(),
        info("containerRuntimeVersion").into(),
    ]
}

/// Keeps the later of two instants, as the printer tracks the last restart.
fn keep_latest(latest: &mut Option<DateTime<Utc>>, t: Option<DateTime<Utc>>) {
    if t > *latest {
        *latest = t;
    }
}

fn pod_cells(row: &Row<'_>) -> Vec<Value> {
    let pod = row.obj;
    let init_specs = list(pod, "/spec/initContainers");
    let is_sidecar = |spec: &Value| text(spec, "/restartPolicy") == "Always";
    let sidecar_named = |name: &str| {
        init_specs
            .iter()
            .rev()
            .find(|c| text(c, "/name") == name)
            .is_some_and(is_sidecar)
    };
    let total =
        list(pod, "/spec/containers").len() + init_specs.iter().filter(|c| is_sidecar(c)).count();
    let conditions = list(pod, "/status/conditions");
    let condition_true = |kind: &str| {
        conditions
            .iter()
            .find(|c| text(c, "/type") == kind)
            .is_some_and(|c| text(c, "/status") == "True")
    };

    let phase = text(pod, "/status/phase");
    let mut reason = Some(text(pod, "/status/reason"))
        .filter(|r| !r.is_empty())
        .unwrap_or(phase)
        .to_string();
    if conditions
        .iter()
        .any(|c| text(c, "/type") == "PodScheduled" && text(c, "/reason") == "SchedulingGated")
    {
        reason = "SchedulingGated".to_string();
    }

    let mut restarts = 0;
    let mut sidecar_restarts = 0;
    let mut last_restart = None;
    let mut last_sidecar_restart = None;
    let mut ready = 0;
    let mut initializing = false;
    for (i, status) in list(pod, "/status/initContainerStatuses")
        .iter()
        .enumerate()
    {
        let count = int(status, "/restartCount");
        let finished = time_at(status, "/lastState/terminated/finishedAt");
        restarts += count;
        keep_latest(&mut last_restart, finished);
        let sidecar = sidecar_named(text(status, "/name"));
        if sidecar {
            sidecar_restarts += count;
            keep_latest(&mut last_sidecar_restart, finished);
        }
        let terminated = status.pointer("/state/terminated");
        if terminated.is_some_and(|t| int(t, "/exitCode") == 0) {
            continue;
        }
        if sidecar && flag(status, "/started") {
            if flag(status, "/ready") {
                ready += 1;
            }
            continue;
        }
        let waiting = text(status, "/state/waiting/reason");
        reason = match terminated {
            Some(t) if !text(t, "/reason").is_empty() => format!("Init:{}", text(t, "/reason")),
            Some(t) if int(t, "/signal") != 0 => format!("Init:Signal:{}", int(t, "/signal")),
            Some(t) => format!("Init:ExitCode:{}", int(t, "/exitCode")),
            None if !waiting.is_empty() && waiting != "PodInitializing" => {
                format!("Init:{waiting}")
            }
            None => format!("Init:{i}/{}", init_specs.len()),
        };
        initializing = true;
        break;
    }

    if !initializing || condition_true("Initialized") {
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        for status in list(pod, "/status/containerStatuses").iter().rev() {
            restarts += int(status, "/restartCount");
            keep_latest(
                &mut last_restart,
                time_at(status, "/lastState/terminated/finishedAt"),
            );
            let waiting = text(status, "/state/waiting/reason");
            let terminated = status.pointer("/state/terminated");
            match terminated {
                _ if !waiting.is_empty() => reason = waiting.to_string(),
                Some(t) if !text(t, "/reason").is_empty() => {
                    reason = text(t, "/reason").to_string()
                }
                Some(t) if int(t, "/signal") != 0 => {
                    reason = format!("Signal:{}", int(t, "/signal"))
                }
                Some(t) => reason = format!("ExitCode:{}", int(t, "/exitCode")),
                None => {
                    if flag(status, "/ready") && status.pointer("/state/running").is_some() {
                        has_running = true;
                        ready += 1;
                    }
                }
            }
        }
        if reason == "Completed" && has_running {
            reason = if condition_true("Ready") {
                "Running"
            } else {
                "NotReady"
            }
            .to_string();
        }
    }

    let deleting = pod
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null());
    if deleting && text(pod, "/status/reason") == "NodeLost" {
        reason = "Unknown".to_string();
    } else if deleting && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".to_string();
    }

    let restarts_cell = match last_restart {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", row.since(Some(t))),
        _ => restarts.to_string(),
    };

    let gates = list(pod, "/spec/readinessGates");
    let readiness_gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let passed = gates
            .iter()
            .filter(|g| condition_true(text(g, "/conditionType")))
            .count();
        format!("{passed}/{}", gates.len())
    };
    vec![
        row.name(),
        format!("{ready}/{total}").into(),
        reason.into(),
        restarts_cell.into(),
        row.age(),
        or_none(pod_ip(pod)).into(),
        or_none(text(pod, "/spec/nodeName")).into(),
        or_none(text(pod, "/status/nominatedNodeName")).into(),
        readiness_gates.into(),
    ]
}

/// The primary pod IP: `status.podIP`, which wins over `status.podIPs` when both are set.
fn pod_ip(pod: &Value) -> &str {
    Some(text(pod, "/status/podIP"))
        .filter(|ip| !ip.is_empty())
        .unwrap_or_else(|| text(pod, "/status/podIPs/0/ip"))
}

fn service_cells(row: &Row<'_>) -> Vec<Value> {
    let svc = row.obj;
    let svc_type = Some(text(svc, "/spec/type"))
        .filter(|t| !t.is_empty())
        .unwrap_or("ClusterIP");
    let cluster_ip = Some(text(svc, "/spec/clusterIP"))
        .filter(|ip| !ip.is_empty())
        .unwrap_or_else(|| text(svc, "/spec/clusterIPs/0"));
    let external_ips: Vec<&str> = list(svc, "/spec/externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let external = match svc_type {
        "ClusterIP" | "NodePort" => or_none(&external_ips.join(",")),
        "LoadBalancer" => {
            let lb = load_balancer_ingress(svc);
            if !external_ips.is_empty() {
                lb.split(',')
                    .filter(|s| !s.is_empty())
                    .chain(external_ips.iter().copied())
                    .collect::<Vec<_>>()
                    .join(",")
            } else if !lb.is_empty() {
                lb
            } else {
                "<pending>".to_string()
            }
        }
        "ExternalName" => text(svc, "/spec/externalName").to_string(),
        _ => "<unknown>".to_string(),
    };
    let ports: Vec<String> = list(svc, "/spec/ports")
        .iter()
        .map(|p| {
            let protocol = Some(text(p, "/protocol"))
                .filter(|s| !s.is_empty())
                .unwrap_or("TCP");
            match int(p, "/nodePort") {
                n if n > 0 => format!("{}:{n}/{protocol}", int(p, "/port")),
                _ => format!("{}/{protocol}", int(p, "/port")),
            }
        })
        .collect();
    vec![
        row.name(),
        svc_type.into(),
        or_none(cluster_ip).into(),
        external.into(),
        or_none(&ports.join(",")).into(),
        row.age(),
        format_labels(svc.pointer("/spec/selector").and_then(Value::as_object)).into(),
    ]
}

/// `ip:port` for every ready address and port, three at most, then `+ N more...`.
fn format_endpoints(obj: &Value) -> String {
    const MAX: usize = 3;
    let subsets = list(obj, "/subsets");
    if subsets.is_empty() {
        return "<none>".to_string();
    }
    let mut shown = Vec::new();
    let mut count = 0;
    let mut more = false;
    for subset in subsets {
        let addresses = list(subset, "/addresses");
        let ports = list(subset, "/ports");
        let mut add = |entries: &mut dyn Iterator<Item = String>| {
            count += addresses.len();
            for entry in entries {
                if shown.len() == MAX {
                    more = true;
                    break;
                }
                shown.push(entry);
            }
        };
        if ports.is_empty() {
            add(&mut addresses.iter().map(|a| text(a, "/ip").to_string()));
            continue;
        }
        for port in ports {
            let number = int(port, "/port");
            add(&mut addresses
                .iter()
                .map(|a| join_host_port(text(a, "/ip"), number)));
        }
    }
    let joined = shown.join(",");
    if more {
        format!("{joined} + {} more...", count - MAX)
    } else {
        joined
    }
}

fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Up to three entries joined by commas, `+ N more...` past them, `<unset>` when none.
fn list_with_more(items: Vec<String>) -> String {
    const MAX: usize = 3;
    match items.len() {
        0 => "<unset>".to_string(),
        n if n > MAX => format!("{} + {} more...", items[..MAX].join(","), n - MAX),
        _ => items.join(","),
    }
}

fn endpoint_slice_cells(row: &Row<'_>) -> Vec<Value> {
    let slice = row.obj;
    let ports = list(slice, "/ports")
        .iter()
        .map(|p| {
            match (
                p.get("port").and_then(Value::as_i64),
                p.get("name").and_then(Value::as_str),
            ) {
                (Some(n), _) => n.to_string(),
                (None, Some(name)) => name.to_string(),
                (None, None) => "*".to_string(),
            }
        })
        .collect();
    let addresses = list(slice, "/endpoints")
        .iter()
        .flat_map(|e| {
            list(e, "/addresses")
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
        })
        .collect();
    vec![
        row.name(),
        text(slice, "/addressType").into(),
        list_with_more(ports).into(),
        list_with_more(addresses).into(),
        row.age(),
    ]
}

fn event_cells(row: &Row<'_>) -> Vec<Value> {
    let ev = row.obj;
    let first_seen = match time_at(ev, "/firstTimestamp") {
        Some(t) => row.since(Some(t)),
        None => row.since(time_at(ev, "/eventTime")),
    };
    let mut last_seen = match time_at(ev, "/lastTimestamp") {
        Some(t) => row.since(Some(t)),
        None => first_seen.clone(),
    };
    let mut count = int(ev, "/count");
    match ev.get("series").filter(|s| !s.is_null()) {
        Some(series) => {
            last_seen = row.since(time_at(series, "/lastObservedTime"));
            count = int(series, "/count");
        }
        None if count == 0 => count = 1,
        None => {}
    }
    let kind = text(ev, "/involvedObject/kind").to_lowercase();
    let target = match text(ev, "/involvedObject/name") {
        "" => kind,
        name => format!("{kind}/{name}"),
    };
    let first_non_empty = |a: &str, b: &str| if a.is_empty() { b } else { a }.to_string();
    let component = first_non_empty(
        text(ev, "/source/component"),
        text(ev, "/reportingComponent"),
    );
    let instance = first_non_empty(text(ev, "/source/host"), text(ev, "/reportingInstance"));
    let source = if instance.is_empty() {
        component
    } else {
        format!("{component}, {instance}")
    };
    vec![
        last_seen.into(),
        text(ev, "/type").into(),
        text(ev, "/reason").into(),
        target.into(),
        text(ev, "/involvedObject/fieldPath").into(),
        source.into(),
        text(ev, "/message").trim().into(),
        first_seen.into(),
        count.into(),
        row.name(),
    ]
}

/// `spec.replicas`, read as its default of 1 when absent.
fn desired_replicas(obj: &Value) -> i64 {
    obj.pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

fn deployment_cells(row: &Row<'_>) -> Vec<Value> {
    let d = row.obj;
    let selector =
        match LabelSelector::from_object(d.pointer("/spec/selector").unwrap_or(&Value::Null)) {
            Ok(s) => s.to_string(),
            Err(_) => "<invalid>".to_string(),
        };
    let (names, images) = container_cells(d);
    vec![
        row.name(),
        format!(
            "{}/{}",
            int(d, "/status/readyReplicas"),
            desired_replicas(d)
        )
        .into(),
        int(d, "/status/updatedReplicas").into(),
        int(d, "/status/availableReplicas").into(),
        row.age(),
        names,
        images,
        selector.into(),
    ]
}

fn replica_set_cells(row: &Row<'_>) -> Vec<Value> {
    let rs = row.obj;
    let (names, images) = container_cells(rs);
    vec![
        row.name(),
        desired_replicas(rs).into(),
        int(rs, "/status/replicas").into(),
        int(rs, "/status/readyReplicas").into(),
        row.age(),
        names,
        images,
        format_label_selector(rs.pointer("/spec/selector").unwrap_or(&Value::Null)).into(),
    ]
}

fn ingress_cells(row: &Row<'_>) -> Vec<Value> {
    const MAX: usize = 3;
    let ing = row.obj;
    let class = or_none(text(ing, "/spec/ingressClassName"));
    let rules = list(ing, "/spec/rules");
    let mut hosts = Vec::new();
    let mut more = false;
    for rule in rules {
        more |= hosts.len() == MAX;
        let host = text(rule, "/host");
        if !more && !host.is_empty() {
            hosts.push(host);
        }
    }
    let hosts = match (hosts.is_empty(), more) {
        (true, _) => "*".to_string(),
        (false, true) => format!("{} + {} more...", hosts.join(","), rules.len() - MAX),
        (false, false) => hosts.join(","),
    };
    let ports = if list(ing, "/spec/tls").is_empty() {
        "80"
    } else {
        "80, 443"
    };
    vec![
        row.name(),
        class.into(),
        hosts.into(),
        load_balancer_ingress(ing).into(),
        ports.into(),
        row.age(),
    ]
}

fn ingress_class_cells(row: &Row<'_>) -> Vec<Value> {
    let ic = row.obj;
    let parameters = match ic.pointer("/spec/parameters").filter(|p| !p.is_null()) {
        None => "<none>".to_string(),
        Some(p) => match p.get("apiGroup").and_then(Value::as_str) {
            Some(group) => format!("{}.{group}/{}", text(p, "/kind"), text(p, "/name")),
            None => format!("{}/{}", text(p, "/kind"), text(p, "/name")),
        },
    };
    vec![
        row.name(),
        text(ic, "/spec/controller").into(),
        parameters.into(),
        row.age(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2025-06-01T12:00:00Z")
            .map_or_else(|e| panic!("{e}"), |t| t.with_timezone(&Utc))
    }

    /// RFC 3339 text of the instant `secs` seconds before `now()`.
    fn ago(secs: i64) -> String {
        (now() - Duration::seconds(secs)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }

    /// Checks the column names and priorities of `kind`, then the row printed for `obj`.
    fn check(kind: &str, header: &[(&str, i32)], obj: Value, expected: Value) {
        let cols: Vec<(&str, i32)> = columns(kind).iter().map(|c| (c.name, c.priority)).collect();
        assert_eq!(cols, header, "columns of {kind}");
        let row = cells(kind, &obj, now());
        assert_eq!(row.len(), header.len(), "one cell per column for {kind}");
        assert_eq!(Value::Array(row), expected, "{kind} row for {obj}");
    }

    const POD_HEADER: &[(&str, i32)] = &[
        ("Name", 0),
        ("Ready", 0),
        ("Status", 0),
        ("Restarts", 0),
        ("Age", 0),
        ("IP", 1),
        ("Node", 1),
        ("Nominated Node", 1),
        ("Readiness Gates", 1),
    ];

    fn pod(status: Value) -> Value {
        json!({
            "metadata": {"name": "web-1", "creationTimestamp": ago(2 * 86400 + 3 * 3600)},
            "spec": {"nodeName": "node-a", "containers": [{"name": "web"}]},
            "status": status
        })
    }

    #[test]
    fn pod_running_with_restarts() {
        let obj = pod(json!({
            "phase": "Running",
            "podIP": "10.244.1.5",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{
                "name": "web", "ready": true, "restartCount": 3,
                "state": {"running": {"startedAt": ago(300)}},
                "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(300)}}
            }]
        }));
        let expected = json!([
            "web-1",
            "1/1",
            "Running",
            "3 (5m ago)",
            "2d3h",
            "10.244.1.5",
            "node-a",
            "<none>",
            "<none>"
        ]);
        check("Pod", POD_HEADER, obj, expected);
    }

    #[test]
    fn pod_status_reasons() {
        let crash = pod(json!({
            "phase": "Running",
            "containerStatuses": [{
                "name": "web", "ready": false, "restartCount": 4,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(40)}}
            }]
        }));
        let mut terminating = pod(json!({
            "phase": "Running",
            "containerStatuses": [{"name": "web", "ready": true, "state": {"running": {}}}]
        }));
        terminating["metadata"]["deletionTimestamp"] = json!(ago(1));
        let init = json!({
            "metadata": {"name": "init"},
            "spec": {"initContainers": [{"name": "setup"}], "containers": [{"name": "web"}]},
            "status": {
                "phase": "Pending",
                "podIPs": [{"ip": "fd00::5"}],
                "initContainerStatuses": [{"name": "setup", "state": {"running": {}}}],
                "containerStatuses": [{"name": "web", "state": {"waiting": {"reason": "PodInitializing"}}}]
            }
        });
        let exited = pod(json!({
            "phase": "Failed",
            "containerStatuses": [{"name": "web", "state": {"terminated": {"exitCode": 137}}}]
        }));
        let sidecar = json!({
            "metadata": {"name": "mesh"},
            "spec": {
                "initContainers": [{"name": "proxy", "restartPolicy": "Always"}],
                "containers": [{"name": "job"}],
                "readinessGates": [{"conditionType": "example.com/lb"}]
            },
            "status": {
                "phase": "Running",
                "conditions": [{"type": "Initialized", "status": "True"}, {"type": "example.com/lb", "status": "False"}],
                "initContainerStatuses": [{"name": "proxy", "started": true, "ready": true, "restartCount": 1, "state": {"running": {}}}],
                "containerStatuses": [{"name": "job", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]
            }
        });
        let cases = [
            (
                crash,
                json!([
                    "web-1",
                    "0/1",
                    "CrashLoopBackOff",
                    "4 (40s ago)",
                    "2d3h",
                    "<none>",
                    "node-a",
                    "<none>",
                    "<none>"
                ]),
            ),
            (
                terminating,
                json!([
                    "web-1",
                    "1/1",
                    "Terminating",
                    "0",
                    "2d3h",
                    "<none>",
                    "node-a",
                    "<none>",
                    "<none>"
                ]),
            ),
            (
                init,
                json!([
                    "init",
                    "0/1",
                    "Init:0/1",
                    "0",
                    "<unknown>",
                    "fd00::5",
                    "<none>",
                    "<none>",
                    "<none>"
                ]),
            ),
            (
                exited,
                json!([
                    "web-1",
                    "0/1",
                    "ExitCode:137",
                    "0",
                    "2d3h",
                    "<none>",
                    "node-a",
                    "<none>",
                    "<none>"
                ]),
            ),
            (
                sidecar,
                json!([
                    "mesh",
                    "1/2",
                    "Completed",
                    "1",
                    "<unknown>",
                    "<none>",
                    "<none>",
                    "<none>",
                    "0/1"
                ]),
            ),
        ];
        for (obj, expected) in cases {
            check("Pod", POD_HEADER, obj, expected);
        }
    }

    const SERVICE_HEADER: &[(&str, i32)] = &[
        ("Name", 0),
        ("Type", 0),
        ("Cluster-IP", 0),
        ("External-IP", 0),
        ("Port(s)", 0),
        ("Age", 0),
        ("Selector", 1),
    ];

    #[test]
    fn service_rows() {
        let node_port = json!({
            "metadata": {"name": "web", "creationTimestamp": ago(200)},
            "spec": {
                "type": "NodePort", "clusterIP": "10.96.0.20", "selector": {"app": "web", "a-b": "1"},
                "ports": [{"port": 8080, "nodePort": 30000, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]
            }
        });
        let pending = json!({
            "metadata": {"name": "lb"},
            "spec": {"type": "LoadBalancer", "clusterIPs": ["10.96.0.21"], "ports": [{"port": 80, "nodePort": 31000}]}
        });
        let balanced = json!({
            "metadata": {"name": "lb2"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.22", "externalIPs": ["192.0.2.9"], "ports": []},
            "status": {"loadBalancer": {"ingress": [{"hostname": "lb.example.com"}, {"ip": "203.0.113.7"}]}}
        });
        let external = json!({"metadata": {"name": "db"}, "spec": {"type": "ExternalName", "externalName": "db.example.com"}});
        let headless = json!({
            "metadata": {"name": "peers"},
            "spec": {"clusterIP": "None", "externalIPs": ["192.0.2.1", "192.0.2.2"], "ports": [{"port": 7000}]}
        });
        let cases = [
            (
                node_port,
                json!([
                    "web",
                    "NodePort",
                    "10.96.0.20",
                    "<none>",
                    "8080:30000/TCP,53/UDP",
                    "3m20s",
                    "a-b=1,app=web"
                ]),
            ),
            (
                pending,
                json!([
                    "lb",
                    "LoadBalancer",
                    "10.96.0.21",
                    "<pending>",
                    "80:31000/TCP",
                    "<unknown>",
                    "<none>"
                ]),
            ),
            (
                balanced,
                json!([
                    "lb2",
                    "LoadBalancer",
                    "10.96.0.22",
                    "203.0.113.7,lb.example.com,192.0.2.9",
                    "<none>",
                    "<unknown>",
                    "<none>"
                ]),
            ),
            (
                external,
                json!([
                    "db",
                    "ExternalName",
                    "<none>",
                    "db.example.com",
                    "<none>",
                    "<unknown>",
                    "<none>"
                ]),
            ),
            (
                headless,
                json!([
                    "peers",
                    "ClusterIP",
                    "None",
                    "192.0.2.1,192.0.2.2",
                    "7000/TCP",
                    "<unknown>",
                    "<none>"
                ]),
            ),
        ];
        for (obj, expected) in cases {
            check("Service", SERVICE_HEADER, obj, expected);
        }
    }

    #[test]
    fn endpoints_rows_truncate_after_three() {
        let header = &[("Name", 0), ("Endpoints", 0), ("Age", 0)];
        let addresses: Vec<Value> = [
            "10.244.1.5",
            "10.244.2.3",
            "10.244.1.6",
            "10.244.2.4",
            "10.244.3.2",
        ]
        .iter()
        .map(|ip| json!({"ip": ip}))
        .collect();
        let five = json!({
            "metadata": {"name": "web", "creationTimestamp": ago(7200)},
            "subsets": [{"addresses": addresses, "ports": [{"port": 80}]}]
        });
        let two_ports = json!({
            "metadata": {"name": "dns"},
            "subsets": [{"addresses": [{"ip": "fd00::a"}, {"ip": "10.0.0.10"}], "ports": [{"port": 53}, {"port": 9153}]}]
        });
        let headless =
            json!({"metadata": {"name": "h"}, "subsets": [{"addresses": [{"ip": "10.0.0.1"}]}]});
        let empty = json!({"metadata": {"name": "none"}});
        let cases = [
            (
                five,
                json!([
                    "web",
                    "10.244.1.5:80,10.244.2.3:80,10.244.1.6:80 + 2 more...",
                    "120m"
                ]),
            ),
            (
                two_ports,
                json!([
                    "dns",
                    "[fd00::a]:53,10.0.0.10:53,[fd00::a]:9153 + 1 more...",
                    "<unknown>"
                ]),
            ),
            (headless, json!(["h", "10.0.0.1", "<unknown>"])),
            (empty, json!(["none", "<none>", "<unknown>"])),
        ];
        for (obj, expected) in cases {
            check("Endpoints", header, obj, expected);
        }
    }

    #[test]
    fn endpoint_slice_row() {
        let header = &[
            ("Name", 0),
            ("AddressType", 0),
            ("Ports", 0),
            ("Endpoints", 0),
            ("Age", 0),
        ];
        let endpoints: Vec<Value> = (1..=5)
            .map(|i| json!({"addresses": [format!("10.244.0.{i}")]}))
            .collect();
        let slice = json!({
            "metadata": {"name": "web-abc12"},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 80}, {"name": "metrics"}, {}],
            "endpoints": endpoints
        });
        let expected = json!([
            "web-abc12",
            "IPv4",
            "80,metrics,*",
            "10.244.0.1,10.244.0.2,10.244.0.3 + 2 more...",
            "<unknown>"
        ]);
        check("EndpointSlice", header, slice, expected);
        let empty = json!({"metadata": {"name": "e"}, "addressType": "IPv6"});
        check(
            "EndpointSlice",
            header,
            empty,
            json!(["e", "IPv6", "<unset>", "<unset>", "<unknown>"]),
        );
    }

    #[test]
    fn node_rows() {
        let header = &[
            ("Name", 0),
            ("Status", 0),
            ("Roles", 0),
            ("Age", 0),
            ("Version", 0),
            ("Internal-IP", 1),
            ("External-IP", 1),
            ("OS-Image", 1),
            ("Kernel-Version", 1),
            ("Container-Runtime", 1),
        ];
        let ready = json!({
            "metadata": {
                "name": "cp", "creationTimestamp": ago(10 * 86400),
                "labels": {"node-role.kubernetes.io/control-plane": "", "kubernetes.io/role": "infra", "node-role.kubernetes.io/": ""}
            },
            "status": {
                "conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
                "addresses": [{"type": "Hostname", "address": "cp"}, {"type": "InternalIP", "address": "172.18.0.2"}],
                "nodeInfo": {"kubeletVersion": "v1.33.0", "osImage": "Debian GNU/Linux 12 (bookworm)", "kernelVersion": "6.1.0", "containerRuntimeVersion": "containerd://1.7.0"}
            }
        });
        let cordoned = json!({
            "metadata": {"name": "w"},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}
        });
        let bare = json!({"metadata": {"name": "new"}});
        let cases = [
            (
                ready,
                json!([
                    "cp",
                    "Ready",
                    "control-plane,infra",
                    "10d",
                    "v1.33.0",
                    "172.18.0.2",
                    "<none>",
                    "Debian GNU/Linux 12 (bookworm)",
                    "6.1.0",
                    "containerd://1.7.0"
                ]),
            ),
            (
                cordoned,
                json!([
                    "w",
                    "NotReady,SchedulingDisabled",
                    "<none>",
                    "<unknown>",
                    "",
                    "<none>",
                    "<none>",
                    "<unknown>",
                    "<unknown>",
                    "<unknown>"
                ]),
            ),
            (
                bare,
                json!([
                    "new",
                    "Unknown",
                    "<none>",
                    "<unknown>",
                    "",
                    "<none>",
                    "<none>",
                    "<unknown>",
                    "<unknown>",
                    "<unknown>"
                ]),
            ),
        ];
        for (obj, expected) in cases {
            check("Node", header, obj, expected);
        }
    }

    #[test]
    fn event_rows() {
        let header = &[
            ("Last Seen", 0),
            ("Type", 0),
            ("Reason", 0),
            ("Object", 0),
            ("Subobject", 1),
            ("Source", 1),
            ("Message", 0),
            ("First Seen", 1),
            ("Count", 1),
            ("Name", 1),
        ];
        let core = json!({
            "metadata": {"name": "web-1.17f"},
            "type": "Warning", "reason": "BackOff", "message": " Back-off restarting failed container\n",
            "involvedObject": {"kind": "Pod", "name": "web-1", "fieldPath": "spec.containers{web}"},
            "source": {"component": "kubelet", "host": "node-a"},
            "firstTimestamp": ago(600), "lastTimestamp": ago(30), "count": 7
        });
        let new_style = json!({
            "metadata": {"name": "ns.1"},
            "type": "Normal", "reason": "Scheduled", "message": "assigned",
            "involvedObject": {"kind": "Namespace"},
            "reportingComponent": "default-scheduler",
            "eventTime": "2025-06-01T11:59:00.000000Z"
        });
        let series = json!({
            "metadata": {"name": "s"},
            "involvedObject": {"kind": "Node", "name": "n"},
            "eventTime": ago(3600),
            "series": {"count": 12, "lastObservedTime": ago(5)},
            "reportingComponent": "kubelet", "reportingInstance": "n"
        });
        let cases = [
            (
                core,
                json!([
                    "30s",
                    "Warning",
                    "BackOff",
                    "pod/web-1",
                    "spec.containers{web}",
                    "kubelet, node-a",
                    "Back-off restarting failed container",
                    "10m",
                    7,
                    "web-1.17f"
                ]),
            ),
            (
                new_style,
                json!([
                    "60s",
                    "Normal",
                    "Scheduled",
                    "namespace",
                    "",
                    "default-scheduler",
                    "assigned",
                    "60s",
                    1,
                    "ns.1"
                ]),
            ),
            (
                series,
                json!(["5s", "", "", "node/n", "", "kubelet, n", "", "60m", 12, "s"]),
            ),
        ];
        for (obj, expected) in cases {
            check("Event", header, obj, expected);
        }
    }

    #[test]
    fn workload_rows() {
        let template = json!({"spec": {"containers": [{"name": "web", "image": "nginx:1.27"}, {"name": "log", "image": "busybox"}]}});
        let deployment = json!({
            "metadata": {"name": "web", "creationTimestamp": ago(90)},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": template},
            "status": {"readyReplicas": 3, "updatedReplicas": 3, "availableReplicas": 3}
        });
        check(
            "Deployment",
            &[
                ("Name", 0),
                ("Ready", 0),
                ("Up-to-date", 0),
                ("Available", 0),
                ("Age", 0),
                ("Containers", 1),
                ("Images", 1),
                ("Selector", 1),
            ],
            deployment,
            json!([
                "web",
                "3/3",
                3,
                3,
                "90s",
                "web,log",
                "nginx:1.27,busybox",
                "app=web"
            ]),
        );
        let rs_header: &[(&str, i32)] = &[
            ("Name", 0),
            ("Desired", 0),
            ("Current", 0),
            ("Ready", 0),
            ("Age", 0),
            ("Containers", 1),
            ("Images", 1),
            ("Selector", 1),
        ];
        let rs = json!({
            "metadata": {"name": "web-5d4f"},
            "spec": {
                "replicas": 2, "template": template,
                "selector": {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "pod-template-hash", "operator": "In", "values": ["5d4f"]}]}
            },
            "status": {"replicas": 2, "readyReplicas": 1}
        });
        check(
            "ReplicaSet",
            rs_header,
            rs,
            json!([
                "web-5d4f",
                2,
                2,
                1,
                "<unknown>",
                "web,log",
                "nginx:1.27,busybox",
                "app=web,pod-template-hash in (5d4f)"
            ]),
        );
        let defaulted = json!({"metadata": {"name": "bare"}, "spec": {"selector": {"matchExpressions": [{"key": "a", "operator": "Bogus"}]}}});
        check(
            "ReplicaSet",
            rs_header,
            defaulted,
            json!(["bare", 1, 0, 0, "<unknown>", "", "", "<error>"]),
        );
    }

    #[test]
    fn networking_rows() {
        let ingress_header: &[(&str, i32)] = &[
            ("Name", 0),
            ("Class", 0),
            ("Hosts", 0),
            ("Address", 0),
            ("Ports", 0),
            ("Age", 0),
        ];
        let rules: Vec<Value> = [
            "a.example.com",
            "",
            "b.example.com",
            "c.example.com",
            "d.example.com",
        ]
        .iter()
        .map(|h| {
            if h.is_empty() {
                json!({})
            } else {
                json!({"host": h})
            }
        })
        .collect();
        let many = json!({
            "metadata": {"name": "site"},
            "spec": {"ingressClassName": "nginx", "rules": rules, "tls": [{"hosts": ["a.example.com"]}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "172.18.0.5"}, {"ip": "172.18.0.4"}]}}
        });
        check(
            "Ingress",
            ingress_header,
            many,
            json!([
                "site",
                "nginx",
                "a.example.com,b.example.com,c.example.com + 2 more...",
                "172.18.0.4,172.18.0.5",
                "80, 443",
                "<unknown>"
            ]),
        );
        let catch_all = json!({"metadata": {"name": "all"}, "spec": {"defaultBackend": {}}});
        check(
            "Ingress",
            ingress_header,
            catch_all,
            json!(["all", "<none>", "*", "", "80", "<unknown>"]),
        );

        let class_header: &[(&str, i32)] = &[
            ("Name", 0),
            ("Controller", 0),
            ("Parameters", 0),
            ("Age", 0),
        ];
        let class = json!({
            "metadata": {"name": "nginx"},
            "spec": {"controller": "k8s.io/ingress-nginx", "parameters": {"apiGroup": "k8s.example.com", "kind": "IngressParameters", "name": "external-lb"}}
        });
        check(
            "IngressClass",
            class_header,
            class,
            json!([
                "nginx",
                "k8s.io/ingress-nginx",
                "IngressParameters.k8s.example.com/external-lb",
                "<unknown>"
            ]),
        );
        let plain = json!({"metadata": {"name": "c"}, "spec": {"controller": "x/y"}});
        check(
            "IngressClass",
            class_header,
            plain,
            json!(["c", "x/y", "<none>", "<unknown>"]),
        );

        let np_header: &[(&str, i32)] = &[("Name", 0), ("Pod-Selector", 0), ("Age", 0)];
        let deny_all = json!({"metadata": {"name": "deny"}, "spec": {"podSelector": {}}});
        check(
            "NetworkPolicy",
            np_header,
            deny_all,
            json!(["deny", "<none>", "<unknown>"]),
        );
        let web = json!({"metadata": {"name": "web"}, "spec": {"podSelector": {"matchLabels": {"role": "db"}}}});
        check(
            "NetworkPolicy",
            np_header,
            web,
            json!(["web", "role=db", "<unknown>"]),
        );
    }

    #[test]
    fn simple_rows() {
        let ns = json!({"metadata": {"name": "kube-system", "creationTimestamp": ago(400 * 86400)}, "status": {"phase": "Active"}});
        check(
            "Namespace",
            &[("Name", 0), ("Status", 0), ("Age", 0)],
            ns,
            json!(["kube-system", "Active", "400d"]),
        );
        let cm = json!({"metadata": {"name": "cfg"}, "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}});
        check(
            "ConfigMap",
            &[("Name", 0), ("Data", 0), ("Age", 0)],
            cm,
            json!(["cfg", 3, "<unknown>"]),
        );
        let secret = json!({"metadata": {"name": "tls"}, "type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}});
        check(
            "Secret",
            &[("Name", 0), ("Type", 0), ("Data", 0), ("Age", 0)],
            secret,
            json!(["tls", "kubernetes.io/tls", 2, "<unknown>"]),
        );
        let sa = json!({"metadata": {"name": "default"}});
        check(
            "ServiceAccount",
            &[("Name", 0), ("Secrets", 0), ("Age", 0)],
            sa,
            json!(["default", 0, "<unknown>"]),
        );
        let custom =
            json!({"metadata": {"name": "thing", "creationTimestamp": ago(3 * 365 * 86400)}});
        check(
            "Widget",
            &[("Name", 0), ("Age", 0)],
            custom,
            json!(["thing", "3y"]),
        );
    }

    #[test]
    fn column_definitions_are_table_json() {
        let defs = column_definitions("Pod");
        assert_eq!(defs.len(), 9);
        assert_eq!(defs[0]["name"], "Name");
        assert_eq!(defs[0]["format"], "name");
        assert_eq!(defs[3]["type"], "string");
        assert_eq!(
            defs[7],
            json!({
                "name": "Nominated Node",
                "type": "string",
                "format": "",
                "description": columns("Pod")[7].description,
                "priority": 1
            })
        );
        assert_eq!(column_definitions("Widget")[1]["type"], "date");
        assert!(columns("Deployment")[0]
            .description
            .starts_with("Name must be unique"));
    }

    #[test]
    fn human_durations() {
        let cases = [
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (5, "5s"),
            (119, "119s"),
            (120, "2m"),
            (200, "3m20s"),
            (599, "9m59s"),
            (600, "10m"),
            (179 * 60, "179m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 300, "3h5m"),
            (8 * 3600, "8h"),
            (47 * 3600, "47h"),
            (48 * 3600, "2d"),
            (51 * 3600, "2d3h"),
            (8 * 86400, "8d"),
            (729 * 86400, "729d"),
            (2 * 365 * 86400, "2y"),
            (2 * 365 * 86400 + 10 * 86400, "2y10d"),
            (9 * 365 * 86400, "9y"),
        ];
        for (secs, expected) in cases {
            assert_eq!(human_duration(Duration::seconds(secs)), expected, "{secs}s");
        }
    }
}
