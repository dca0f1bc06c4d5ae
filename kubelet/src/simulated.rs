//! Simulated nodes, in the manner of KWOK: Node objects that report Ready and keep
//! their heartbeat, and pods bound to them that become Running and Ready with an IP
//! from the node's pod CIDR, without any process, namespace or network behind them.
//!
//! One watch over all bound pods serves every simulated node, and status writes run
//! with bounded concurrency, so thousands of pods start in seconds. A pod waits until
//! node IPAM gave its node a pod CIDR; its address is the lowest free one of that CIDR
//! (the network address, the gateway `.1` and the broadcast address excluded) and is
//! free again once the pod is gone. A pod being deleted is stopped after a short
//! simulated shutdown and then deleted with a grace period of 0, as a kubelet finishes
//! graceful deletion. Host-network pods get the node's address.
//!
//! Not here: probes, restarts, container exits, pod phases other than Running,
//! resource accounting, node leases, events.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStatus,
    DaemonEndpoint, HostIP, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec,
    NodeStatus, NodeSystemInfo, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use serde_json::json;
use thiserror::Error;
use tokio::sync::Semaphore;

/// The kubelet version simulated nodes report.
pub const KUBELET_VERSION: &str = "v1.33.0";
/// The container runtime simulated nodes report; container IDs use its scheme.
pub const CONTAINER_RUNTIME: &str = "kubesim://simulated";

const HEARTBEAT: Duration = Duration::from_secs(10);
/// How long a simulated pod takes to stop once its deletion started.
const STOP_DELAY: Duration = Duration::from_millis(100);
const CONCURRENT_WRITES: usize = 64;
const FIELD_MANAGER: &str = "kubelet";

/// Which nodes to simulate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimulatedOptions {
    /// How many nodes: `{name_prefix}1` … `{name_prefix}{nodes}`.
    pub nodes: usize,
    pub name_prefix: String,
    /// The first node's InternalIP; the next nodes take the following addresses.
    pub first_ip: Ipv4Addr,
    /// Every node's `capacity.pods`.
    pub max_pods: u32,
}

impl Default for SimulatedOptions {
    fn default() -> Self {
        SimulatedOptions {
            nodes: 3,
            name_prefix: "kubesim-node-".into(),
            first_ip: Ipv4Addr::new(192, 168, 1, 11),
            max_pods: DEFAULT_MAX_PODS,
        }
    }
}

#[derive(Debug, Error)]
pub enum Error {
    #[error("{nodes} nodes from {first_ip} run past the end of the IPv4 address space")]
    Addresses { nodes: usize, first_ip: Ipv4Addr },
    #[error("registering node {node}: {source}")]
    Register { node: String, source: kube::Error },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The simulated nodes' names and InternalIPs.
pub fn node_addresses(opts: &SimulatedOptions) -> Result<Vec<(String, Ipv4Addr)>> {
    let first = u32::from(opts.first_ip);
    (0..opts.nodes)
        .map(|i| {
            let ip = u32::try_from(i)
                .ok()
                .and_then(|i| first.checked_add(i))
                .ok_or(Error::Addresses {
                    nodes: opts.nodes,
                    first_ip: opts.first_ip,
                })?;
            Ok((format!("{}{}", opts.name_prefix, i + 1), Ipv4Addr::from(ip)))
        })
        .collect()
}

/// The kubelet's default `--max-pods`.
pub const DEFAULT_MAX_PODS: u32 = 110;

/// What kind of node a kubelet runs, as its Node object tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flavor {
    /// The value of the `kubesim.io/node` annotation.
    pub kind: &'static str,
    pub kernel_version: String,
    pub os_image: &'static str,
    /// The container runtime the node reports (`nodeInfo.containerRuntimeVersion`).
    pub runtime: &'static str,
    /// The pods the node takes (`capacity.pods`, the kubelet's `--max-pods`).
    pub max_pods: u32,
}

impl Flavor {
    /// A node that only reports status.
    pub fn simulated() -> Flavor {
        Flavor {
            kind: "simulated",
            kernel_version: "simulated".into(),
            os_image: "kubesim simulated node",
            runtime: CONTAINER_RUNTIME,
            max_pods: DEFAULT_MAX_PODS,
        }
    }
}

/// The Node a kubelet registers.
pub fn node_object(name: &str, flavor: &Flavor) -> Node {
    let labels = [
        ("beta.kubernetes.io/arch", "amd64"),
        ("beta.kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", "amd64"),
        ("kubernetes.io/hostname", name),
        ("kubernetes.io/os", "linux"),
    ];
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            annotations: Some([("kubesim.io/node".to_string(), flavor.kind.to_string())].into()),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            provider_id: Some(format!("kubesim://{name}")),
            ..Default::default()
        }),
        status: None,
    }
}

/// The status a node reports: Ready since `since`, heartbeat `now`.
pub fn node_status(
    name: &str,
    ip: Ipv4Addr,
    since: &Time,
    now: &Time,
    flavor: &Flavor,
) -> NodeStatus {
    let pods = flavor.max_pods.to_string();
    let resources: std::collections::BTreeMap<String, Quantity> =
        [("cpu", "8"), ("memory", "32Gi"), ("pods", pods.as_str())]
            .iter()
            .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
            .collect();
    let id = |salt: &str| digest(&format!("{salt}/{name}"))[..32].to_string();
    NodeStatus {
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: ip.to_string(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: name.into(),
            },
        ]),
        allocatable: Some(resources.clone()),
        capacity: Some(resources),
        conditions: Some(node_conditions(since, now)),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint { port: 10250 }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: "amd64".into(),
            boot_id: id("boot"),
            container_runtime_version: flavor.runtime.into(),
            kernel_version: flavor.kernel_version.clone(),
            kube_proxy_version: String::new(),
            kubelet_version: KUBELET_VERSION.into(),
            machine_id: id("machine"),
            operating_system: "linux".into(),
            os_image: flavor.os_image.into(),
            system_uuid: id("system"),
            swap: None,
        }),
        ..Default::default()
    }
}

fn node_conditions(since: &Time, now: &Time) -> Vec<NodeCondition> {
    [
        (
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
        (
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure",
        ),
        (
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
        ),
        (
            "Ready",
            "True",
            "KubeletReady",
            "kubelet is posting ready status",
        ),
    ]
    .iter()
    .map(|(type_, status, reason, message)| NodeCondition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(since.clone()),
    })
    .collect()
}

/// 64 hex digits derived from `text`: stable fake digests and IDs.
fn digest(text: &str) -> String {
    (0u8..4)
        .map(|salt| {
            let mut h = DefaultHasher::new();
            (salt, text).hash(&mut h);
            format!("{:016x}", h.finish())
        })
        .collect()
}

/// The image reference a container runtime reports for `image`, and its image ID:
/// `nginx` → (`docker.io/library/nginx:latest`, `docker.io/library/nginx@sha256:…`).
pub fn resolve_image(image: &str) -> (String, String) {
    let (name, digest_part) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    let (first, rest) = name.split_once('/').unwrap_or(("", name));
    let is_registry = first.contains('.') || first.contains(':') || first == "localhost";
    let full = match (first.is_empty(), is_registry) {
        (true, _) => format!("docker.io/library/{rest}"),
        (false, true) => name.to_string(),
        (false, false) => format!("docker.io/{name}"),
    };
    let last = full.rsplit('/').next().unwrap_or_default();
    let (repo, tagged) = match last.split_once(':') {
        Some(_) => (
            full.rsplit_once(':')
                .map_or(full.as_str(), |(r, _)| r)
                .to_string(),
            full.clone(),
        ),
        None => (full.clone(), format!("{full}:latest")),
    };
    match digest_part {
        Some(d) => (image.to_string(), format!("{repo}@{d}")),
        None => {
            let id = format!("{repo}@sha256:{}", digest(&tagged));
            (tagged, id)
        }
    }
}

/// The addresses of one node's pod CIDR that pods may get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodIps {
    network: u32,
    used: Vec<bool>,
}

impl PodIps {
    /// `None` unless `cidr` is an IPv4 CIDR with room for at least one pod.
    pub fn new(cidr: &str) -> Option<PodIps> {
        let (ip, prefix) = cidr.split_once('/')?;
        let ip: Ipv4Addr = ip.parse().ok()?;
        let prefix: u32 = prefix.parse().ok().filter(|p| *p <= 30)?;
        let size = 1u64 << (32 - prefix);
        let network = u32::from(ip) & !((size - 1) as u32);
        Some(PodIps {
            network,
            used: vec![false; (size - 3) as usize],
        })
    }

    fn index(&self, ip: Ipv4Addr) -> Option<usize> {
        let offset = u32::from(ip).checked_sub(self.network)?;
        let i = usize::try_from(offset.checked_sub(2)?).ok()?;
        (i < self.used.len()).then_some(i)
    }

    /// The lowest free address, now taken.
    pub fn allocate(&mut self) -> Option<Ipv4Addr> {
        let i = self.used.iter().position(|u| !u)?;
        self.used[i] = true;
        Some(Ipv4Addr::from(self.network + 2 + i as u32))
    }

    /// Takes `ip` for a pod that already has it; false if outside the range or taken.
    pub fn reserve(&mut self, ip: Ipv4Addr) -> bool {
        match self.index(ip) {
            Some(i) if !self.used[i] => {
                self.used[i] = true;
                true
            }
            _ => false,
        }
    }

    pub fn release(&mut self, ip: Ipv4Addr) {
        if let Some(i) = self.index(ip) {
            self.used[i] = false;
        }
    }
}

/// Where the kubelet is with one pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waits for its node's pod CIDR.
    Waiting,
    Starting,
    Running,
    Stopping,
}

/// What a pod event asks of the kubelet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Nothing,
    Start,
    /// Already running with this address (the kubelet restarted): take it over.
    Adopt(Ipv4Addr),
    Stop,
}

/// The step for `pod`, bound to one of our nodes, given where the kubelet is with it.
pub fn plan(pod: &Pod, known: Option<Phase>) -> Step {
    let status = pod.status.as_ref();
    if pod.metadata.deletion_timestamp.is_some() {
        return if known == Some(Phase::Stopping) {
            Step::Nothing
        } else {
            Step::Stop
        };
    }
    let phase = status.and_then(|s| s.phase.as_deref());
    if known.is_some() || matches!(phase, Some("Succeeded" | "Failed")) {
        return Step::Nothing;
    }
    let ip = status
        .and_then(|s| s.pod_ip.as_deref())
        .and_then(|ip| ip.parse().ok());
    match (phase, ip) {
        (Some("Running"), Some(ip)) => Step::Adopt(ip),
        _ => Step::Start,
    }
}

/// The status of `pod` running on a node at `host_ip` with address `pod_ip`, started
/// `now`; `container_id` names each container's (simulated) container.
pub fn running_status(
    pod: &Pod,
    host_ip: Ipv4Addr,
    pod_ip: Ipv4Addr,
    now: &Time,
    mut container_id: impl FnMut() -> String,
) -> PodStatus {
    let condition = |type_: &str| PodCondition {
        type_: type_.into(),
        status: "True".into(),
        last_transition_time: Some(now.clone()),
        ..Default::default()
    };
    let scheduled = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.type_ == "PodScheduled" && c.status == "True")
        })
        .cloned()
        .unwrap_or_else(|| condition("PodScheduled"));
    let conditions = vec![
        condition("PodReadyToStartContainers"),
        condition("Initialized"),
        condition("Ready"),
        condition("ContainersReady"),
        scheduled,
    ];
    let spec = pod.spec.as_ref();
    let status_of =
        |c: &Container, state: ContainerState, ready: bool, started: bool, id: String| {
            let (image, image_id) = resolve_image(c.image.as_deref().unwrap_or_default());
            ContainerStatus {
                name: c.name.clone(),
                image,
                image_id,
                container_id: Some(id),
                ready,
                started: Some(started),
                restart_count: 0,
                state: Some(state),
                last_state: Some(ContainerState::default()),
                ..Default::default()
            }
        };
    let init: Vec<ContainerStatus> = spec
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or_default()
        .iter()
        .map(|c| {
            let id = container_id();
            let done = ContainerState {
                terminated: Some(ContainerStateTerminated {
                    container_id: Some(id.clone()),
                    exit_code: 0,
                    reason: Some("Completed".into()),
                    started_at: Some(now.clone()),
                    finished_at: Some(now.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            };
            status_of(c, done, true, false, id)
        })
        .collect();
    let mut containers: Vec<ContainerStatus> = spec
        .map(|s| s.containers.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|c| {
            let running = ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(now.clone()),
                }),
                ..Default::default()
            };
            status_of(c, running, true, true, container_id())
        })
        .collect();
    containers.sort_by(|a, b| a.name.cmp(&b.name));
    PodStatus {
        phase: Some("Running".into()),
        conditions: Some(conditions),
        host_ip: Some(host_ip.to_string()),
        host_ips: Some(vec![HostIP {
            ip: host_ip.to_string(),
        }]),
        pod_ip: Some(pod_ip.to_string()),
        pod_ips: Some(vec![PodIP {
            ip: pod_ip.to_string(),
        }]),
        start_time: Some(now.clone()),
        container_statuses: Some(containers),
        init_container_statuses: (!init.is_empty()).then_some(init),
        ..Default::default()
    }
}

pub(crate) fn new_container_id() -> String {
    let hex: String = (0..4)
        .map(|_| format!("{:016x}", rand::random::<u64>()))
        .collect();
    format!("kubesim://{hex}")
}

pub(crate) fn now() -> Time {
    Time(Timestamp::now())
}

fn bound_node(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

fn host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

struct SimNode {
    ip: Ipv4Addr,
    pod_ips: Option<PodIps>,
}

struct Tracked {
    node: String,
    ip: Option<Ipv4Addr>,
    phase: Phase,
}

/// The pods of every simulated node, driven by one pod watch and one node watch.
struct Kubelet {
    client: Client,
    nodes: HashMap<String, SimNode>,
    pods: HashMap<String, Tracked>,
    waiting: HashMap<String, Vec<Pod>>,
    relist: Option<HashSet<String>>,
    writes: Arc<Semaphore>,
}

impl Kubelet {
    fn on_pod(&mut self, event: watcher::Event<Pod>) {
        match event {
            watcher::Event::Apply(pod) => self.apply(pod),
            watcher::Event::Delete(pod) => self.forget(&pod.uid().unwrap_or_default()),
            watcher::Event::Init => self.relist = Some(HashSet::new()),
            watcher::Event::InitApply(pod) => {
                if let Some(seen) = self.relist.as_mut() {
                    seen.insert(pod.uid().unwrap_or_default());
                }
                self.apply(pod);
            }
            watcher::Event::InitDone => {
                let seen = self.relist.take().unwrap_or_default();
                let gone: Vec<String> = self
                    .pods
                    .keys()
                    .filter(|uid| !seen.contains(*uid))
                    .cloned()
                    .collect();
                for uid in gone {
                    self.forget(&uid);
                }
            }
        }
    }

    #[tracing::instrument(skip_all, fields(pod = %format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())))]
    fn apply(&mut self, pod: Pod) {
        let Some(node) = bound_node(&pod).filter(|n| self.nodes.contains_key(*n)) else {
            return;
        };
        let node = node.to_string();
        let uid = pod.uid().unwrap_or_default();
        let known = self.pods.get(&uid).map(|t| t.phase);
        match plan(&pod, known) {
            Step::Nothing => {}
            Step::Adopt(ip) => {
                // An address the node's range does not hold for this pod is never released.
                let held = !host_network(&pod)
                    && self
                        .nodes
                        .get_mut(&node)
                        .and_then(|n| n.pod_ips.as_mut())
                        .is_none_or(|ips| ips.reserve(ip));
                let tracked = Tracked {
                    node,
                    ip: held.then_some(ip),
                    phase: Phase::Running,
                };
                self.pods.insert(uid, tracked);
            }
            Step::Start => {
                self.pods.insert(
                    uid,
                    Tracked {
                        node: node.clone(),
                        ip: None,
                        phase: Phase::Waiting,
                    },
                );
                self.waiting.entry(node.clone()).or_default().push(pod);
                self.start_waiting(&node);
            }
            Step::Stop => {
                if known == Some(Phase::Waiting) {
                    if let Some(list) = self.waiting.get_mut(&node) {
                        list.retain(|p| p.uid().as_deref() != Some(uid.as_str()));
                    }
                }
                let tracked = self.pods.entry(uid).or_insert(Tracked {
                    node,
                    ip: None,
                    phase: Phase::Stopping,
                });
                tracked.phase = Phase::Stopping;
                tokio::spawn(stop(self.client.clone(), pod, self.writes.clone()));
            }
        }
    }

    /// Starts the pods waiting on `node` if it has its pod CIDR.
    fn start_waiting(&mut self, node: &str) {
        let Some(sim) = self.nodes.get_mut(node) else {
            return;
        };
        let host_ip = sim.ip;
        let waiting = self.waiting.remove(node).unwrap_or_default();
        let mut still = Vec::new();
        for pod in waiting {
            let uid = pod.uid().unwrap_or_default();
            let ip = if host_network(&pod) {
                Some(host_ip)
            } else {
                sim.pod_ips.as_mut().and_then(PodIps::allocate)
            };
            let Some(ip) = ip else {
                if sim.pod_ips.is_some() {
                    tracing::warn!(node, pod = %pod.name_any(), "no pod IP left on the node");
                }
                still.push(pod);
                continue;
            };
            if let Some(t) = self.pods.get_mut(&uid) {
                t.phase = Phase::Starting;
                t.ip = (!host_network(&pod)).then_some(ip);
            }
            tokio::spawn(start(
                self.client.clone(),
                pod,
                host_ip,
                ip,
                self.writes.clone(),
            ));
        }
        if !still.is_empty() {
            self.waiting.insert(node.to_string(), still);
        }
    }

    fn forget(&mut self, uid: &str) {
        let Some(tracked) = self.pods.remove(uid) else {
            return;
        };
        if let Some(list) = self.waiting.get_mut(&tracked.node) {
            list.retain(|p| p.uid().as_deref() != Some(uid));
        }
        let ips = self
            .nodes
            .get_mut(&tracked.node)
            .and_then(|n| n.pod_ips.as_mut());
        if let (Some(ips), Some(ip)) = (ips, tracked.ip) {
            ips.release(ip);
        }
    }

    fn on_node(&mut self, node: &Node) {
        let name = node.name_any();
        let cidr = node
            .spec
            .as_ref()
            .and_then(|s| s.pod_cidr.as_deref())
            .filter(|c| !c.is_empty());
        let Some(sim) = self.nodes.get_mut(&name) else {
            return;
        };
        let (Some(cidr), None) = (cidr, sim.pod_ips.as_ref()) else {
            return;
        };
        let Some(mut ips) = PodIps::new(cidr) else {
            tracing::warn!(node = %name, %cidr, "unusable pod CIDR");
            return;
        };
        for t in self.pods.values_mut().filter(|t| t.node == name) {
            if t.ip.is_some_and(|ip| !ips.reserve(ip)) {
                t.ip = None;
            }
        }
        tracing::info!(node = %name, %cidr, "pod CIDR assigned");
        sim.pod_ips = Some(ips);
        self.start_waiting(&name);
    }
}

/// Retries `write` until it succeeds or the object is gone, backing off up to 5s.
pub(crate) async fn persist<F, Fut>(what: &str, mut write: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), kube::Error>>,
{
    let mut delay = Duration::from_millis(100);
    loop {
        match write().await {
            Ok(()) => return,
            Err(kube::Error::Api(s)) if s.code == 404 => return,
            Err(err) => {
                tracing::warn!(error = %err, what, "retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn start(
    client: Client,
    pod: Pod,
    host_ip: Ipv4Addr,
    pod_ip: Ipv4Addr,
    writes: Arc<Semaphore>,
) {
    let Ok(_permit) = writes.acquire_owned().await else {
        return;
    };
    let (namespace, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
    let status = running_status(&pod, host_ip, pod_ip, &now(), new_container_id);
    let patch = json!({ "status": status });
    let api: Api<Pod> = Api::namespaced(client, &namespace);
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    persist("pod status", || async {
        api.patch_status(&name, &params, &Patch::Merge(&patch))
            .await
            .map(|_| ())
    })
    .await;
    tracing::debug!(pod = %name, %pod_ip, "running");
}

async fn stop(client: Client, pod: Pod, writes: Arc<Semaphore>) {
    tokio::time::sleep(STOP_DELAY).await;
    let Ok(_permit) = writes.acquire_owned().await else {
        return;
    };
    delete_stopped(client, &pod).await;
    tracing::debug!(pod = %pod.name_any(), "stopped");
}

/// Finishes a graceful deletion once the pod's processes are gone: the kubelet deletes
/// the object with a grace period of 0 (only this incarnation of it: uid precondition).
pub(crate) async fn delete_stopped(client: Client, pod: &Pod) {
    let api: Api<Pod> = Api::namespaced(client, &pod.namespace().unwrap_or_default());
    let name = pod.name_any();
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.uid(),
            resource_version: None,
        }),
        ..Default::default()
    };
    persist("pod deletion", || async {
        match api.delete(&name, &params).await {
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            other => other.map(|_| ()),
        }
    })
    .await;
}

/// Creates the Node (or keeps the one there) and reports its status; retries while the
/// apiserver cannot answer, as a kubelet keeps trying to register, but a refusal (4xx)
/// is final.
pub(crate) async fn register(
    client: &Client,
    name: &str,
    ip: Ipv4Addr,
    since: &Time,
    flavor: &Flavor,
) -> Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let mut delay = Duration::from_millis(200);
    loop {
        let attempt = async {
            match api
                .create(&PostParams::default(), &node_object(name, flavor))
                .await
            {
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                other => {
                    other?;
                }
            }
            let patch = json!({"status": node_status(name, ip, since, &now(), flavor)});
            api.patch_status(name, &status_params(), &Patch::Merge(&patch))
                .await
        };
        match attempt.await {
            Ok(_) => {
                tracing::info!(node = %name, %ip, "registered");
                return Ok(());
            }
            Err(kube::Error::Api(s)) if (400..500).contains(&s.code) && s.code != 429 => {
                return Err(Error::Register {
                    node: name.to_string(),
                    source: kube::Error::Api(s),
                });
            }
            Err(err) => {
                tracing::warn!(node = %name, error = %err, "registering, retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}

fn status_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

/// Refreshes every node's conditions each [`HEARTBEAT`].
pub(crate) async fn heartbeat(client: Client, nodes: Vec<String>, since: Time) {
    let api: Api<Node> = Api::all(client);
    loop {
        tokio::time::sleep(HEARTBEAT).await;
        let now = now();
        futures::stream::iter(nodes.clone())
            .for_each_concurrent(16, |name| {
                let api = api.clone();
                let patch = json!({"status": {"conditions": node_conditions(&since, &now)}});
                async move {
                    let params = status_params();
                    if let Err(err) = api
                        .patch_status(&name, &params, &Patch::Merge(&patch))
                        .await
                    {
                        tracing::warn!(node = %name, error = %err, "node heartbeat");
                    }
                }
            })
            .await;
    }
}

/// Registers the simulated nodes and runs the pods bound to them until a watch ends.
pub async fn run(client: Client, opts: SimulatedOptions) -> Result<(), Error> {
    let addresses = node_addresses(&opts)?;
    let since = now();
    futures::stream::iter(addresses.clone())
        .map(|(name, ip)| {
            let (client, since) = (client.clone(), since.clone());
            let flavor = Flavor {
                max_pods: opts.max_pods,
                ..Flavor::simulated()
            };
            async move { register(&client, &name, ip, &since, &flavor).await }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await?;
    let mut kubelet = Kubelet {
        client: client.clone(),
        nodes: addresses
            .iter()
            .map(|(name, ip)| {
                let sim = SimNode {
                    ip: *ip,
                    pod_ips: None,
                };
                (name.clone(), sim)
            })
            .collect(),
        pods: HashMap::new(),
        waiting: HashMap::new(),
        relist: None,
        writes: Arc::new(Semaphore::new(CONCURRENT_WRITES)),
    };
    let names: Vec<String> = addresses.into_iter().map(|(name, _)| name).collect();
    let beats = heartbeat(client.clone(), names, since);
    let mut node_events = watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    let bound = watcher::Config::default()
        .fields("spec.nodeName!=")
        .streaming_lists();
    let mut pod_events = watcher(Api::<Pod>::all(client), bound)
        .default_backoff()
        .boxed();
    let events = async {
        loop {
            tokio::select! {
                event = node_events.next() => match event {
                    Some(Ok(node)) => kubelet.on_node(&node),
                    Some(Err(err)) => tracing::warn!(error = %err, "watching nodes"),
                    None => return "node",
                },
                event = pod_events.next() => match event {
                    Some(Ok(event)) => kubelet.on_pod(event),
                    Some(Err(err)) => tracing::warn!(error = %err, "watching pods"),
                    None => return "pod",
                },
            }
        }
    };
    tokio::select! {
        () = beats => {}
        watch = events => tracing::warn!(watch, "watch ended"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_ips(cidr: &str, ops: &str, expect: &str) {
        let mut got = Vec::new();
        match PodIps::new(cidr) {
            None => got.push("invalid".to_string()),
            Some(mut ips) => {
                for op in ops.split_whitespace() {
                    let out = match op.split_once(':') {
                        Some(("reserve", ip)) => ips.reserve(ip.parse().expect("ip")).to_string(),
                        Some(("release", ip)) => {
                            ips.release(ip.parse().expect("ip"));
                            "-".into()
                        }
                        _ => ips
                            .allocate()
                            .map_or("none".to_string(), |ip| ip.to_string()),
                    };
                    got.push(out);
                }
            }
        }
        assert_eq!(got.join(" "), expect, "{cidr}: {ops}");
    }

    #[test]
    fn pod_ips_skip_network_gateway_and_broadcast_and_are_reused() {
        check_ips("10.244.1.0/24", "alloc alloc", "10.244.1.2 10.244.1.3");
        check_ips(
            "10.244.1.0/24",
            "alloc alloc release:10.244.1.2 alloc alloc",
            "10.244.1.2 10.244.1.3 - 10.244.1.2 10.244.1.4",
        );
        check_ips(
            "10.244.1.0/24",
            "reserve:10.244.1.2 reserve:10.244.1.2 alloc reserve:10.244.1.255 reserve:10.244.1.1 reserve:10.244.2.9",
            "true false 10.244.1.3 false false false",
        );
        check_ips("10.244.1.0/30", "alloc alloc", "10.244.1.2 none");
        check_ips("10.244.1.0/31", "alloc", "invalid");
        check_ips("fd00::/64", "alloc", "invalid");
    }

    fn check_image(image: &str, expect_image: &str, expect_repo: &str) {
        let (got, id) = resolve_image(image);
        assert_eq!(got, expect_image, "{image}");
        let (repo, digest) = id.split_once('@').expect("digest");
        assert_eq!(repo, expect_repo, "{image}");
        assert!(digest.starts_with("sha256:"), "{id}");
    }

    #[test]
    fn images_are_reported_fully_qualified() {
        check_image(
            "nginx",
            "docker.io/library/nginx:latest",
            "docker.io/library/nginx",
        );
        check_image(
            "nginx:1.25",
            "docker.io/library/nginx:1.25",
            "docker.io/library/nginx",
        );
        check_image(
            "user/app",
            "docker.io/user/app:latest",
            "docker.io/user/app",
        );
        check_image(
            "registry.k8s.io/e2e-test-images/agnhost:2.45",
            "registry.k8s.io/e2e-test-images/agnhost:2.45",
            "registry.k8s.io/e2e-test-images/agnhost",
        );
        check_image(
            "localhost:5000/app",
            "localhost:5000/app:latest",
            "localhost:5000/app",
        );
        check_image(
            "nginx@sha256:abcd",
            "nginx@sha256:abcd",
            "docker.io/library/nginx",
        );
        assert_eq!(
            resolve_image("nginx").1,
            resolve_image("nginx:latest").1,
            "same image, same ID"
        );
    }

    fn pod(status: serde_json::Value, deleting: bool) -> Pod {
        let mut pod = json!({"metadata": {"name": "p", "namespace": "default", "uid": "u"},
            "spec": {"nodeName": "n1", "containers": [{"name": "b", "image": "busybox"}, {"name": "a", "image": "nginx"}],
                     "initContainers": [{"name": "init", "image": "busybox"}]},
            "status": status});
        if deleting {
            pod["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:00Z");
        }
        serde_json::from_value(pod).expect("pod")
    }

    #[test]
    fn each_pod_event_maps_to_one_step() {
        let pending = pod(json!({"phase": "Pending"}), false);
        let running = pod(json!({"phase": "Running", "podIP": "10.244.1.7"}), false);
        let cases = [
            (pending.clone(), None, Step::Start),
            (pending.clone(), Some(Phase::Waiting), Step::Nothing),
            (pending, Some(Phase::Starting), Step::Nothing),
            (
                running.clone(),
                None,
                Step::Adopt(Ipv4Addr::new(10, 244, 1, 7)),
            ),
            (running, Some(Phase::Starting), Step::Nothing),
            (
                pod(json!({"phase": "Succeeded"}), false),
                None,
                Step::Nothing,
            ),
            (
                pod(json!({"phase": "Running"}), true),
                Some(Phase::Running),
                Step::Stop,
            ),
            (pod(json!({"phase": "Pending"}), true), None, Step::Stop),
            (
                pod(json!({"phase": "Running"}), true),
                Some(Phase::Stopping),
                Step::Nothing,
            ),
        ];
        for (pod, known, expect) in cases {
            assert_eq!(
                plan(&pod, known),
                expect,
                "{:?} known {known:?}",
                pod.status
            );
        }
    }

    #[test]
    fn a_started_pod_reports_running_ready_containers() {
        let scheduled = json!({"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2025-01-01T00:00:00Z"}]});
        let now = Time("2025-01-01T00:00:05Z".parse().expect("time"));
        let mut n = 0;
        let status = running_status(
            &pod(scheduled, false),
            Ipv4Addr::new(192, 168, 1, 11),
            Ipv4Addr::new(10, 244, 0, 2),
            &now,
            || {
                n += 1;
                format!("kubesim://{n}")
            },
        );
        let v = serde_json::to_value(&status).expect("status");
        assert_eq!(v["phase"], "Running");
        assert_eq!(v["podIP"], "10.244.0.2");
        assert_eq!(v["podIPs"], json!([{"ip": "10.244.0.2"}]));
        assert_eq!(v["hostIPs"], json!([{"ip": "192.168.1.11"}]));
        let conditions: Vec<String> = v["conditions"]
            .as_array()
            .expect("conditions")
            .iter()
            .map(|c| {
                format!(
                    "{}={} {}",
                    c["type"].as_str().unwrap_or_default(),
                    c["status"].as_str().unwrap_or_default(),
                    c["lastTransitionTime"].as_str().unwrap_or_default()
                )
            })
            .collect();
        assert_eq!(
            conditions,
            [
                "PodReadyToStartContainers=True 2025-01-01T00:00:05Z",
                "Initialized=True 2025-01-01T00:00:05Z",
                "Ready=True 2025-01-01T00:00:05Z",
                "ContainersReady=True 2025-01-01T00:00:05Z",
                "PodScheduled=True 2025-01-01T00:00:00Z",
            ]
        );
        assert_eq!(
            v["containerStatuses"][0],
            json!({
                "containerID": "kubesim://3",
                "image": "docker.io/library/nginx:latest",
                "imageID": resolve_image("nginx").1,
                "lastState": {},
                "name": "a",
                "ready": true,
                "restartCount": 0,
                "started": true,
                "state": {"running": {"startedAt": "2025-01-01T00:00:05Z"}},
            })
        );
        assert_eq!(v["containerStatuses"][1]["name"], "b");
        assert_eq!(
            v["initContainerStatuses"][0]["state"]["terminated"]["reason"],
            "Completed"
        );
    }

    #[test]
    fn nodes_are_numbered_from_the_first_address() {
        let opts = SimulatedOptions::default();
        let got = node_addresses(&opts).expect("addresses");
        assert_eq!(
            got,
            [
                ("kubesim-node-1".to_string(), Ipv4Addr::new(192, 168, 1, 11)),
                ("kubesim-node-2".to_string(), Ipv4Addr::new(192, 168, 1, 12)),
                ("kubesim-node-3".to_string(), Ipv4Addr::new(192, 168, 1, 13)),
            ]
        );
        let past = SimulatedOptions {
            nodes: 2,
            first_ip: Ipv4Addr::new(255, 255, 255, 255),
            ..SimulatedOptions::default()
        };
        assert_eq!(
            node_addresses(&past).map_err(|e| e.to_string()),
            Err(
                "2 nodes from 255.255.255.255 run past the end of the IPv4 address space"
                    .to_string()
            )
        );
    }

    #[test]
    fn a_node_reports_ready_with_its_addresses_and_capacity() {
        let since = Time("2025-01-01T00:00:00Z".parse().expect("time"));
        let now = Time("2025-01-01T00:00:10Z".parse().expect("time"));
        let v = serde_json::to_value(node_status(
            "n1",
            Ipv4Addr::new(192, 168, 1, 11),
            &since,
            &now,
            &Flavor::simulated(),
        ))
        .expect("status");
        assert_eq!(
            v["addresses"],
            json!([{"type": "InternalIP", "address": "192.168.1.11"}, {"type": "Hostname", "address": "n1"}])
        );
        assert_eq!(
            v["allocatable"],
            json!({"cpu": "8", "memory": "32Gi", "pods": "110"})
        );
        assert_eq!(v["nodeInfo"]["kubeletVersion"], "v1.33.0");
        assert_eq!(
            v["nodeInfo"]["containerRuntimeVersion"],
            "kubesim://simulated"
        );
        let ready = &v["conditions"][3];
        assert_eq!(
            (
                &ready["type"],
                &ready["status"],
                &ready["lastHeartbeatTime"],
                &ready["lastTransitionTime"]
            ),
            (
                &json!("Ready"),
                &json!("True"),
                &json!("2025-01-01T00:00:10Z"),
                &json!("2025-01-01T00:00:00Z")
            )
        );
    }
}
