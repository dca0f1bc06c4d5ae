//! The endpoints controller, as kube-controller-manager's `endpoint-controller`: for every
//! Service with a selector it keeps an `Endpoints` object of the same name listing the
//! selected pods (ready ones under `addresses`, the others under `notReadyAddresses`),
//! one subset per distinct set of resolved ports, packed like upstream's `RepackSubsets`.
//!
//! The decision is the pure [`desired_endpoints`]; [`run`] drives it from reflector
//! stores of Services, Pods and Endpoints and writes only when the result differs from
//! what is stored. It also deletes the Endpoints it manages once their Service is gone or
//! has lost its selector; Endpoints written by anyone else (those of selector-less
//! Services) are never touched.
//!
//! The module also holds what the endpointslice controllers share with this one: which
//! pods a Service selects, how a Service port resolves against a pod, readiness, the
//! last-change trigger time and the watch plumbing.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::mpsc;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
    ServicePort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::runtime::controller::{self, Action};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use crate::runtime::{drive, enqueue, lock, queue, report, retry_after, same_name, Seen};

/// Annotation with the time of the pod or Service change the last write reflects.
pub const LAST_CHANGE_TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";
/// Annotation set to `truncated` when more than [`MAX_CAPACITY`] addresses were selected.
pub const OVER_CAPACITY: &str = "endpoints.kubernetes.io/over-capacity";
/// Label marking the Endpoints (and EndpointSlices) of a Service without a cluster IP.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// The most addresses an Endpoints object carries, as upstream.
pub const MAX_CAPACITY: usize = 1000;
/// The field manager of this controller's writes; it also marks the Endpoints it manages.
pub const FIELD_MANAGER: &str = "endpoint-controller";

/// Reconciles running at once, as kube-controller-manager's `--concurrent-endpoint-syncs`.
pub(crate) const WORKERS: u16 = 5;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes api: {0}")]
    Kube(#[from] kube::Error),
    #[error("the {0} cache stopped")]
    CacheGone(&'static str),
    #[error("the {0} watch ended")]
    WatchEnded(&'static str),
    #[error("the {0} reconciler stopped")]
    Stopped(&'static str),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

// ---------------------------------------------------------------------------------------
// What a Service selects and how its ports resolve (shared with the endpointslice module)
// ---------------------------------------------------------------------------------------

/// The selector whose pods the controllers publish for `svc`: none for a Service without
/// one (its endpoints are written by hand) or of type ExternalName. An empty selector
/// counts as none, as the apiserver stores `{}` and an absent selector alike.
pub(crate) fn service_selector(svc: &Service) -> Option<&BTreeMap<String, String>> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    spec.selector.as_ref().filter(|s| !s.is_empty())
}

/// Whether `pod` is in `svc`'s namespace and matches its selector.
pub(crate) fn selects(svc: &Service, pod: &Pod) -> bool {
    service_selector(svc).is_some_and(|selector| {
        pod.metadata.namespace == svc.metadata.namespace && labels_match(selector, pod.labels())
    })
}

fn labels_match(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// A Service without a cluster IP (headless, or not allocated yet).
pub(crate) fn is_headless(svc: &Service) -> bool {
    let ip = svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref());
    matches!(ip, None | Some("" | "None"))
}

pub(crate) fn publishes_not_ready(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false)
}

pub(crate) fn service_ports(svc: &Service) -> &[ServicePort] {
    svc.spec
        .as_ref()
        .and_then(|s| s.ports.as_deref())
        .unwrap_or_default()
}

/// The pod's Ready condition is True.
pub(crate) fn is_pod_ready(pod: &Pod) -> bool {
    ready_condition(pod).is_some_and(|c| c.status == "True")
}

fn ready_condition(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

/// Whether `pod` belongs in a Service's endpoints at all: it has an IP, has not finished
/// (Succeeded or Failed) and, unless `include_terminating`, is not being deleted.
pub(crate) fn should_publish(pod: &Pod, include_terminating: bool) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) || pod_ips(pod).is_empty() {
        return false;
    }
    include_terminating || pod.metadata.deletion_timestamp.is_none()
}

/// The pod's IPs: `status.podIPs`, or `status.podIP` when the list is empty.
pub(crate) fn pod_ips(pod: &Pod) -> Vec<&str> {
    let Some(status) = pod.status.as_ref() else {
        return Vec::new();
    };
    let listed: Vec<&str> = status
        .pod_ips
        .iter()
        .flatten()
        .map(|ip| ip.ip.as_str())
        .filter(|ip| !ip.is_empty())
        .collect();
    if !listed.is_empty() {
        return listed;
    }
    status
        .pod_ip
        .as_deref()
        .filter(|ip| !ip.is_empty())
        .into_iter()
        .collect()
}

/// An IP family, as Services name them in `spec.ipFamilies`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Family {
    V4,
    V6,
}

impl Family {
    pub(crate) fn of(ip: &str) -> Option<Family> {
        match ip.parse::<IpAddr>().ok()? {
            IpAddr::V4(_) => Some(Family::V4),
            IpAddr::V6(_) => Some(Family::V6),
        }
    }

    pub(crate) fn named(name: &str) -> Option<Family> {
        match name {
            "IPv4" => Some(Family::V4),
            "IPv6" => Some(Family::V6),
            _ => None,
        }
    }

    /// The EndpointSlice `addressType` of this family.
    pub(crate) fn address_type(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// The families a Service publishes: `spec.ipFamilies`, else that of its cluster IP, else
/// (headless and not defaulted) both.
pub(crate) fn service_families(svc: &Service) -> Vec<Family> {
    let spec = svc.spec.as_ref();
    let mut families: Vec<Family> = spec
        .and_then(|s| s.ip_families.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|f| Family::named(f))
        .collect();
    families.dedup();
    if !families.is_empty() {
        return families;
    }
    match spec
        .and_then(|s| s.cluster_ip.as_deref())
        .and_then(Family::of)
    {
        Some(family) => vec![family],
        None => vec![Family::V4, Family::V6],
    }
}

/// The container port a Service port reaches on `pod`: a numeric `targetPort` as is, a
/// named one looked up among the pod's container (and sidecar) ports of the same
/// protocol. `None` when the pod has no such named port.
pub(crate) fn find_port(pod: &Pod, port: &ServicePort) -> Option<i32> {
    let name = match &port.target_port {
        None => return Some(port.port),
        Some(IntOrString::Int(n)) => return Some(*n),
        Some(IntOrString::String(name)) => name,
    };
    let protocol = port.protocol.as_deref().unwrap_or("TCP");
    let spec = pod.spec.as_ref()?;
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
    spec.containers
        .iter()
        .chain(sidecars)
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| {
            p.name.as_deref() == Some(name.as_str())
                && p.protocol.as_deref().unwrap_or("TCP") == protocol
        })
        .map(|p| p.container_port)
}

/// Whether the pod's `spec.hostname` is published: only for the Service named by its
/// `spec.subdomain`.
pub(crate) fn pod_hostname<'a>(pod: &'a Pod, svc: &Service) -> Option<&'a str> {
    let spec = pod.spec.as_ref()?;
    let hostname = spec.hostname.as_deref().filter(|h| !h.is_empty())?;
    let same_service = spec.subdomain.as_deref() == svc.metadata.name.as_deref()
        && pod.metadata.namespace == svc.metadata.namespace;
    same_service.then_some(hostname)
}

pub(crate) fn node_name(pod: &Pod) -> Option<String> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .filter(|n| !n.is_empty())
}

/// The `targetRef` every endpoint carries: kind, namespace, name and uid of the pod.
pub(crate) fn pod_reference(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        ..ObjectReference::default()
    }
}

/// Whether a pod update can change any Service's endpoints: membership (labels,
/// hostname, subdomain), readiness, deletion, phase, IPs or node.
pub(crate) fn pod_changed(old: &Pod, new: &Pod) -> bool {
    let spec = |p: &Pod| {
        let s = p.spec.as_ref();
        (
            s.and_then(|s| s.hostname.clone()),
            s.and_then(|s| s.subdomain.clone()),
            s.and_then(|s| s.node_name.clone()),
        )
    };
    let phase = |p: &Pod| p.status.as_ref().and_then(|s| s.phase.clone());
    old.labels() != new.labels()
        || old.metadata.deletion_timestamp != new.metadata.deletion_timestamp
        || is_pod_ready(old) != is_pod_ready(new)
        || pod_ips(old) != pod_ips(new)
        || phase(old) != phase(new)
        || spec(old) != spec(new)
}

/// The Services of `pod`'s namespace whose selector matches any of the given states of
/// the pod (before and after a change).
pub(crate) fn services_selecting<'a>(
    services: &Store<Service>,
    pods: impl IntoIterator<Item = Option<&'a Pod>>,
) -> Vec<ObjectRef<Service>> {
    let pods: Vec<&Pod> = pods.into_iter().flatten().collect();
    services
        .state()
        .iter()
        .filter(|svc| pods.iter().any(|pod| selects(svc, pod)))
        .map(|svc| ObjectRef::from_obj(svc.as_ref()))
        .collect()
}

/// The Services a pod event concerns: those selecting the pod before or after a change
/// that can move endpoints; `None` after a re-list, when every Service needs a look.
pub(crate) fn services_for_pod(
    services: &Store<Service>,
    seen: Seen<'_, Pod>,
) -> Option<Vec<ObjectRef<Service>>> {
    match seen {
        Seen::Applied { old, new } => {
            Some(if old.as_deref().is_none_or(|old| pod_changed(old, new)) {
                services_selecting(services, [old.as_deref(), Some(new)])
            } else {
                Vec::new()
            })
        }
        Seen::Deleted(pod) => Some(services_selecting(services, [Some(pod)])),
        Seen::Listed => None,
    }
}

// ---------------------------------------------------------------------------------------
// Last-change trigger time
// ---------------------------------------------------------------------------------------

/// Computes `endpoints.kubernetes.io/last-change-trigger-time` as upstream's
/// TriggerTimeTracker: the earliest pod readiness transition or Service creation seen
/// since the previous sync of that Service, or its creation time on the first sync.
/// A sync's observation only counts once committed, after its write went through, so a
/// failed write does not lose the trigger time for the retry.
#[derive(Debug, Default)]
pub(crate) struct TriggerTimes {
    services: HashMap<(String, String), SeenTimes>,
}

#[derive(Clone, Debug, Default)]
struct SeenTimes {
    service: Option<Timestamp>,
    pods: HashMap<String, Timestamp>,
}

/// What one sync saw; [`TriggerTimes::commit`] it once the sync succeeded.
#[derive(Debug)]
pub(crate) struct Observation {
    key: (String, String),
    seen: SeenTimes,
    /// The time to publish, or `None` when nothing newer happened (the annotation is
    /// then dropped on the next write).
    pub(crate) time: Option<Timestamp>,
}

impl TriggerTimes {
    /// Compares the current state of `svc` and its selected `pods` with the last
    /// committed one.
    pub(crate) fn observe<P: Borrow<Pod>>(&self, svc: &Service, pods: &[P]) -> Observation {
        let key = (svc.namespace().unwrap_or_default(), svc.name_any());
        let before = self.services.get(&key);
        let mut earliest: Option<Timestamp> = None;
        let mut changed = |t: Timestamp| earliest = Some(earliest.map_or(t, |e| e.min(t)));
        let mut seen = SeenTimes::default();
        for pod in pods.iter().map(Borrow::borrow) {
            let Some(t) = ready_condition(pod).and_then(|c| c.last_transition_time.as_ref()) else {
                continue;
            };
            let name = pod.name_any();
            if before
                .and_then(|b| b.pods.get(&name))
                .is_none_or(|b| t.0 > *b)
            {
                changed(t.0);
            }
            seen.pods.insert(name, t.0);
        }
        seen.service = svc.metadata.creation_timestamp.as_ref().map(|t| t.0);
        if let Some(t) = seen
            .service
            .filter(|t| before.and_then(|b| b.service).is_none_or(|b| *t > b))
        {
            changed(t);
        }
        let time = if before.is_some() {
            earliest
        } else {
            seen.service
        };
        Observation { key, seen, time }
    }

    pub(crate) fn commit(&mut self, observation: Observation) {
        self.services.insert(observation.key, observation.seen);
    }

    pub(crate) fn forget(&mut self, svc: &Service) {
        self.services
            .remove(&(svc.namespace().unwrap_or_default(), svc.name_any()));
    }
}

// ---------------------------------------------------------------------------------------
// The desired Endpoints
// ---------------------------------------------------------------------------------------

/// One Service port resolved for one pod.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct PortKey {
    name: String,
    port: i32,
    protocol: String,
    app_protocol: Option<String>,
}

impl PortKey {
    fn new(svc_port: &ServicePort, port: i32) -> PortKey {
        PortKey {
            name: svc_port.name.clone().unwrap_or_default(),
            port,
            protocol: svc_port.protocol.clone().unwrap_or_else(|| "TCP".into()),
            app_protocol: svc_port.app_protocol.clone(),
        }
    }

    fn endpoint_port(&self) -> EndpointPort {
        EndpointPort {
            name: Some(self.name.clone()).filter(|n| !n.is_empty()),
            port: self.port,
            protocol: Some(self.protocol.clone()),
            app_protocol: self.app_protocol.clone(),
        }
    }
}

/// Addresses are told apart by IP and pod uid, and sorted that way.
type AddressKey = (String, String);

fn address_key(a: &EndpointAddress) -> AddressKey {
    let uid = a.target_ref.as_ref().and_then(|r| r.uid.clone());
    (a.ip.clone(), uid.unwrap_or_default())
}

/// The address of `pod` for `svc`: its first IP of the Service's primary family.
fn endpoint_address(svc: &Service, pod: &Pod) -> Option<EndpointAddress> {
    let ips = pod_ips(pod);
    let primary = svc
        .spec
        .as_ref()
        .and_then(|s| s.ip_families.as_ref())
        .and_then(|f| f.first());
    let family = match primary {
        Some(name) => Family::named(name),
        None => svc
            .spec
            .as_ref()
            .and_then(|s| s.cluster_ip.as_deref())
            .and_then(Family::of)
            .or_else(|| ips.first().and_then(|ip| Family::of(ip))),
    }?;
    let ip = ips.into_iter().find(|ip| Family::of(ip) == Some(family))?;
    Some(EndpointAddress {
        ip: ip.to_string(),
        hostname: pod_hostname(pod, svc).map(str::to_string),
        node_name: node_name(pod),
        target_ref: Some(pod_reference(pod)),
    })
}

/// The Endpoints `svc` should have given `pods` (any pods; those it does not select are
/// ignored): name, namespace and labels of the Service (plus the headless label when it
/// has no cluster IP), and the subsets of the ready and not-ready pod addresses per set
/// of resolved ports. Trigger-time annotation aside, this is what the controller writes.
pub fn desired_endpoints<P: Borrow<Pod>>(svc: &Service, pods: &[P]) -> Endpoints {
    let publish_not_ready = publishes_not_ready(svc);
    let ports = service_ports(svc);
    let headless = is_headless(svc);
    let mut addresses: BTreeMap<AddressKey, EndpointAddress> = BTreeMap::new();
    // For each resolved port (none: a headless Service without ports), the addresses
    // offering it and whether each is ready there; not ready wins over ready.
    let mut by_port: BTreeMap<Option<PortKey>, BTreeMap<AddressKey, bool>> = BTreeMap::new();
    for pod in pods.iter().map(Borrow::borrow) {
        if !selects(svc, pod) || !should_publish(pod, publish_not_ready) {
            continue;
        }
        let Some(address) = endpoint_address(svc, pod) else {
            continue;
        };
        let ready = publish_not_ready || is_pod_ready(pod);
        let key = address_key(&address);
        let resolved: Vec<Option<PortKey>> = if ports.is_empty() {
            if headless {
                vec![None]
            } else {
                Vec::new()
            }
        } else {
            ports
                .iter()
                .filter_map(|p| find_port(pod, p).map(|n| Some(PortKey::new(p, n))))
                .collect()
        };
        for port in resolved {
            let was = by_port
                .entry(port)
                .or_default()
                .entry(key.clone())
                .or_insert(ready);
            *was = *was && ready;
        }
        addresses.entry(key).or_insert(address);
    }
    // Ports offered by exactly the same addresses (with the same readiness) share a subset.
    let mut groups: BTreeMap<Vec<(AddressKey, bool)>, Vec<Option<PortKey>>> = BTreeMap::new();
    for (port, offered) in by_port {
        groups
            .entry(offered.into_iter().collect())
            .or_default()
            .push(port);
    }
    let mut subsets: Vec<EndpointSubset> = groups
        .into_iter()
        .map(|(offered, ports)| {
            let pick = |want: bool| {
                offered
                    .iter()
                    .filter(|(_, ready)| *ready == want)
                    .filter_map(|(key, _)| addresses.get(key).cloned())
                    .collect::<Vec<_>>()
            };
            EndpointSubset {
                addresses: non_empty(pick(true)),
                not_ready_addresses: non_empty(pick(false)),
                ports: non_empty(ports.iter().flatten().map(PortKey::endpoint_port).collect()),
            }
        })
        .collect();
    let truncated = truncate(&mut subsets, MAX_CAPACITY);
    let mut labels = svc.labels().clone();
    if headless {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    } else {
        labels.remove(HEADLESS_LABEL);
    }
    Endpoints {
        metadata: ObjectMeta {
            name: svc.metadata.name.clone(),
            namespace: svc.metadata.namespace.clone(),
            labels: Some(labels).filter(|l| !l.is_empty()),
            annotations: truncated
                .then(|| BTreeMap::from([(OVER_CAPACITY.to_string(), "truncated".to_string())])),
            ..ObjectMeta::default()
        },
        subsets: non_empty(subsets),
    }
}

fn non_empty<T>(v: Vec<T>) -> Option<Vec<T>> {
    Some(v).filter(|v| !v.is_empty())
}

fn count(list: &Option<Vec<EndpointAddress>>) -> usize {
    list.as_ref().map_or(0, Vec::len)
}

/// Cuts the subsets down to `max` addresses as upstream: not-ready addresses go first;
/// what is kept is shared among subsets in proportion to their size. Returns whether
/// anything was cut.
fn truncate(subsets: &mut Vec<EndpointSubset>, max: usize) -> bool {
    let ready: usize = subsets.iter().map(|s| count(&s.addresses)).sum();
    let not_ready: usize = subsets.iter().map(|s| count(&s.not_ready_addresses)).sum();
    if ready + not_ready <= max {
        return false;
    }
    let cut_ready = ready > max;
    let (budget, total) = if cut_ready {
        (max, ready)
    } else {
        (max - ready, not_ready)
    };
    let mut left = budget;
    for subset in subsets.iter_mut() {
        let list = if cut_ready {
            subset.not_ready_addresses = None;
            &mut subset.addresses
        } else {
            &mut subset.not_ready_addresses
        };
        let share = (count(list) * budget).div_ceil(total).min(left);
        if let Some(addresses) = list.as_mut() {
            addresses.truncate(share);
        }
        left -= count(list);
        if count(list) == 0 {
            *list = None;
        }
    }
    subsets.retain(|s| count(&s.addresses) + count(&s.not_ready_addresses) > 0);
    true
}

/// The subsets with absent lists as empty ones and without target resourceVersions, so
/// that what the apiserver returns compares equal to what was written.
fn normalized(subsets: &Option<Vec<EndpointSubset>>) -> Vec<EndpointSubset> {
    let addresses = |list: &Option<Vec<EndpointAddress>>| {
        let mut list = list.clone().unwrap_or_default();
        for a in &mut list {
            if let Some(r) = a.target_ref.as_mut() {
                r.resource_version = None;
            }
        }
        Some(list)
    };
    subsets
        .iter()
        .flatten()
        .map(|s| EndpointSubset {
            addresses: addresses(&s.addresses),
            not_ready_addresses: addresses(&s.not_ready_addresses),
            ports: Some(s.ports.clone().unwrap_or_default()),
        })
        .collect()
}

/// Whether `current` already says what `desired` says (subsets, labels, capacity mark).
fn up_to_date(current: &Endpoints, desired: &Endpoints) -> bool {
    normalized(&current.subsets) == normalized(&desired.subsets)
        && current.labels() == desired.labels()
        && current.annotations().get(OVER_CAPACITY) == desired.annotations().get(OVER_CAPACITY)
}

/// Whether this controller wrote `ep` (its field manager appears in the managed fields).
pub fn managed_by_controller(ep: &Endpoints) -> bool {
    ep.metadata
        .managed_fields
        .iter()
        .flatten()
        .any(|f| f.manager.as_deref() == Some(FIELD_MANAGER))
}

// ---------------------------------------------------------------------------------------
// The controller
// ---------------------------------------------------------------------------------------

struct Context {
    client: Client,
    services: Store<Service>,
    pods: Store<Pod>,
    endpoints: Store<Endpoints>,
    triggers: Mutex<TriggerTimes>,
}

/// Runs the endpoints controller until a watch or the reconciler stops.
pub async fn run(client: Client) -> Result<()> {
    let (services, services_writer) = reflector::store();
    let (pods, pods_writer) = reflector::store();
    let (endpoints, endpoints_writer) = reflector::store();
    let ctx = Arc::new(Context {
        client: client.clone(),
        services,
        pods,
        endpoints,
        triggers: Mutex::new(TriggerTimes::default()),
    });
    let (sync_tx, sync_rx) = mpsc::unbounded::<ObjectRef<Service>>();
    let (clean_tx, clean_rx) = mpsc::unbounded::<ObjectRef<Endpoints>>();
    let all_services = |ctx: &Context, tx: &mpsc::UnboundedSender<ObjectRef<Service>>| {
        for svc in ctx.services.state() {
            enqueue(tx, ObjectRef::from_obj(svc.as_ref()));
        }
    };
    let all_endpoints = |ctx: &Context, tx: &mpsc::UnboundedSender<ObjectRef<Endpoints>>| {
        for ep in ctx.endpoints.state() {
            enqueue(tx, ObjectRef::from_obj(ep.as_ref()));
        }
    };

    let watch_services = drive(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
        services_writer,
        {
            let (ctx, sync, clean) = (ctx.clone(), sync_tx.clone(), clean_tx.clone());
            move |seen| match seen {
                Seen::Applied { new, .. } => enqueue(&sync, ObjectRef::from_obj(new)),
                Seen::Deleted(svc) => {
                    lock(&ctx.triggers).forget(svc);
                    enqueue(&clean, same_name(svc));
                }
                Seen::Listed => {
                    all_services(&ctx, &sync);
                    all_endpoints(&ctx, &clean);
                }
            }
        },
    );
    let watch_pods = drive(
        Api::<Pod>::all(client.clone()),
        watcher::Config::default(),
        pods_writer,
        {
            let (ctx, sync) = (ctx.clone(), sync_tx.clone());
            move |seen| match services_for_pod(&ctx.services, seen) {
                Some(services) => services.into_iter().for_each(|svc| enqueue(&sync, svc)),
                None => all_services(&ctx, &sync),
            }
        },
    );
    let watch_endpoints = drive(
        Api::<Endpoints>::all(client),
        watcher::Config::default(),
        endpoints_writer,
        {
            let ctx = ctx.clone();
            move |seen| match seen {
                Seen::Applied { new, .. } => enqueue(&clean_tx, ObjectRef::from_obj(new)),
                Seen::Deleted(ep) => enqueue(&sync_tx, same_name(ep)),
                Seen::Listed => {
                    all_endpoints(&ctx, &clean_tx);
                    all_services(&ctx, &sync_tx);
                }
            }
        },
    );

    let config = controller::Config::default().concurrency(WORKERS);
    let syncs = controller::applier(
        |svc, ctx| Box::pin(sync_service(svc, ctx)),
        |_, err, _| error_policy(err),
        ctx.clone(),
        ctx.services.clone(),
        queue(sync_rx),
        config.clone(),
    );
    let cleanups = controller::applier(
        |ep, ctx| Box::pin(clean_up(ep, ctx)),
        |_, err, _| error_policy(err),
        ctx.clone(),
        ctx.endpoints.clone(),
        queue(clean_rx),
        config,
    );
    tokio::select! {
        () = watch_services => Err(Error::WatchEnded("services")),
        () = watch_pods => Err(Error::WatchEnded("pods")),
        () = watch_endpoints => Err(Error::WatchEnded("endpoints")),
        () = report("endpoints", syncs) => Err(Error::Stopped("endpoints")),
        () = report("endpoints cleanup", cleanups) => Err(Error::Stopped("endpoints cleanup")),
    }
}

fn error_policy(err: &Error) -> Action {
    match err {
        Error::Kube(err) => retry_after(err),
        _ => Action::requeue(Duration::from_secs(5)),
    }
}

fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    }
}

/// Brings the Endpoints of one Service in line with its pods.
#[tracing::instrument(
    skip_all,
    fields(namespace = %svc.namespace().unwrap_or_default(), service = %svc.name_any())
)]
async fn sync_service(svc: Arc<Service>, ctx: Arc<Context>) -> Result<Action> {
    ctx.pods
        .wait_until_ready()
        .await
        .map_err(|_| Error::CacheGone("pods"))?;
    ctx.endpoints
        .wait_until_ready()
        .await
        .map_err(|_| Error::CacheGone("endpoints"))?;
    let Some(ns) = svc.namespace() else {
        return Ok(Action::await_change());
    };
    let name = svc.name_any();
    let api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &ns);
    let current = ctx.endpoints.get(&ObjectRef::new(&name).within(&ns));
    if service_selector(&svc).is_none() {
        if let Some(ep) = current.filter(|ep| managed_by_controller(ep)) {
            delete(&api, &ep).await?;
        }
        return Ok(Action::await_change());
    }
    let pods: Vec<Arc<Pod>> = ctx
        .pods
        .state()
        .into_iter()
        .filter(|p| selects(&svc, p))
        .collect();
    let observed = lock(&ctx.triggers).observe(&svc, &pods);
    let desired = desired_endpoints(&svc, &pods);
    if current
        .as_deref()
        .is_some_and(|cur| up_to_date(cur, &desired))
    {
        tracing::trace!("endpoints up to date");
        lock(&ctx.triggers).commit(observed);
        return Ok(Action::await_change());
    }
    let mut next = match &current {
        Some(cur) => cur.as_ref().clone(),
        None => Endpoints {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                ..ObjectMeta::default()
            },
            ..Endpoints::default()
        },
    };
    next.metadata.labels = desired.metadata.labels.clone();
    next.subsets = desired.subsets.clone();
    let mut annotations = next.metadata.annotations.take().unwrap_or_default();
    match observed.time {
        Some(t) => annotations.insert(LAST_CHANGE_TRIGGER_TIME.into(), t.to_string()),
        None => annotations.remove(LAST_CHANGE_TRIGGER_TIME),
    };
    match desired.annotations().get(OVER_CAPACITY) {
        Some(v) => annotations.insert(OVER_CAPACITY.into(), v.clone()),
        None => annotations.remove(OVER_CAPACITY),
    };
    next.metadata.annotations = Some(annotations).filter(|a| !a.is_empty());
    if current.is_some() {
        api.replace(&name, &post_params(), &next).await?;
        tracing::debug!("updated endpoints");
    } else {
        api.create(&post_params(), &next).await?;
        tracing::debug!("created endpoints");
    }
    lock(&ctx.triggers).commit(observed);
    Ok(Action::await_change())
}

/// Deletes Endpoints this controller wrote whose Service is gone or no longer selects.
#[tracing::instrument(
    skip_all,
    fields(namespace = %ep.namespace().unwrap_or_default(), endpoints = %ep.name_any())
)]
async fn clean_up(ep: Arc<Endpoints>, ctx: Arc<Context>) -> Result<Action> {
    ctx.services
        .wait_until_ready()
        .await
        .map_err(|_| Error::CacheGone("services"))?;
    if !managed_by_controller(&ep) {
        return Ok(Action::await_change());
    }
    let svc = ctx.services.get(&same_name(ep.as_ref()));
    if svc.as_deref().and_then(service_selector).is_some() {
        return Ok(Action::await_change());
    }
    if let Some(ns) = ep.namespace() {
        delete(&Api::namespaced(ctx.client.clone(), &ns), &ep).await?;
    }
    Ok(Action::await_change())
}

/// Deletes exactly the version of `ep` that was looked at; gone already is fine.
async fn delete(api: &Api<Endpoints>, ep: &Endpoints) -> Result<()> {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: ep.metadata.uid.clone(),
            resource_version: ep.metadata.resource_version.clone(),
        }),
        ..DeleteParams::default()
    };
    match api.delete(&ep.name_any(), &params).await {
        Ok(_) => {
            tracing::debug!("deleted endpoints");
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
        Err(err) => Err(err.into()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// The Service `default/web` (labelled `app=web`) with the given spec.
    pub(crate) fn service(spec: Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "svc-uid",
                         "labels": {"app": "web"}, "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": spec,
        }))
        .expect("service")
    }

    /// A pod in `default` labelled `app=web`, on node-1, with container port `web: 8080`;
    /// `extra` is merged into it.
    pub(crate) fn pod(name: &str, ip: &str, ready: bool, extra: Value) -> Pod {
        let mut pod = json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
                         "labels": {"app": "web"}},
            "spec": {"nodeName": "node-1", "containers": [
                {"name": "c", "image": "nginx", "ports": [{"name": "web", "containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                       "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" },
                                       "lastTransitionTime": "2024-01-01T00:01:00Z"}]},
        });
        merge(&mut pod, extra);
        serde_json::from_value(pod).expect("pod")
    }

    fn merge(base: &mut Value, patch: Value) {
        match (base, patch) {
            (Value::Object(base), Value::Object(patch)) => {
                for (k, v) in patch {
                    merge(base.entry(k).or_insert(Value::Null), v);
                }
            }
            (base, patch) => *base = patch,
        }
    }

    /// One line per subset: ready addresses, not-ready addresses, ports.
    fn render(ep: &Endpoints) -> String {
        let addresses = |list: &Option<Vec<EndpointAddress>>| {
            list.iter()
                .flatten()
                .map(|a| {
                    let pod = a.target_ref.as_ref().and_then(|r| r.name.clone());
                    format!("{}({})", a.ip, pod.unwrap_or_default())
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
        let mut lines = Vec::new();
        for s in ep.subsets.iter().flatten() {
            let ports: Vec<String> = s
                .ports
                .iter()
                .flatten()
                .map(|p| {
                    let name = p.name.clone().unwrap_or_default();
                    format!(
                        "{name}:{}/{}",
                        p.port,
                        p.protocol.clone().unwrap_or_default()
                    )
                })
                .collect();
            lines.push(format!(
                "ready [{}] not-ready [{}] ports [{}]",
                addresses(&s.addresses),
                addresses(&s.not_ready_addresses),
                ports.join(" ")
            ));
        }
        lines.join("\n")
    }

    #[track_caller]
    fn check(svc: Service, pods: &[Pod], expected: &str) {
        assert_eq!(render(&desired_endpoints(&svc, pods)), expected.trim());
    }

    fn web_service() -> Service {
        service(
            json!({"selector": {"app": "web"}, "clusterIP": "10.96.0.10", "ipFamilies": ["IPv4"],
                       "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]}),
        )
    }

    #[test]
    fn ready_pods_are_addresses_and_the_others_not_ready() {
        let terminating = json!({"metadata": {"deletionTimestamp": "2024-01-01T00:05:00Z"}});
        let pods = [
            pod("b", "10.244.0.2", false, json!({})),
            pod("a", "10.244.0.1", true, json!({})),
            pod("no-ip", "", true, json!({"status": {"podIPs": []}})),
            pod("leaving", "10.244.0.3", true, terminating),
            pod(
                "other",
                "10.244.0.4",
                true,
                json!({"metadata": {"labels": {"app": "db"}}}),
            ),
            pod(
                "done",
                "10.244.0.5",
                false,
                json!({"status": {"phase": "Succeeded"}}),
            ),
            pod(
                "elsewhere",
                "10.244.0.6",
                true,
                json!({"metadata": {"namespace": "kube-system"}}),
            ),
        ];
        check(
            web_service(),
            &pods,
            "ready [10.244.0.1(a)] not-ready [10.244.0.2(b)] ports [:8080/TCP]",
        );
    }

    #[test]
    fn every_address_names_its_pod_and_node() {
        let ep = desired_endpoints(&web_service(), &[pod("a", "10.244.0.1", true, json!({}))]);
        let address =
            serde_json::to_value(&ep.subsets.as_ref().expect("subsets")[0]).expect("json");
        assert_eq!(
            address,
            json!({
                "addresses": [{"ip": "10.244.0.1", "nodeName": "node-1", "targetRef":
                    {"kind": "Pod", "namespace": "default", "name": "a", "uid": "uid-a"}}],
                "ports": [{"port": 8080, "protocol": "TCP"}],
            })
        );
        assert_eq!(ep.metadata.name.as_deref(), Some("web"));
        assert_eq!(ep.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(ep.labels(), &BTreeMap::from([("app".into(), "web".into())]));
    }

    #[test]
    fn a_named_target_port_resolves_per_pod_into_separate_subsets() {
        let svc = service(
            json!({"selector": {"app": "web"}, "clusterIP": "10.96.0.10",
            "ports": [{"name": "http", "port": 80, "targetPort": "web", "protocol": "TCP"}]}),
        );
        let other_port = json!({"spec": {"containers": [
            {"name": "c", "image": "nginx", "ports": [{"name": "web", "containerPort": 9090}]}]}});
        let no_port =
            json!({"spec": {"containers": [{"name": "c", "image": "nginx", "ports": []}]}});
        let udp = json!({"spec": {"containers": [{"name": "c", "image": "dns",
            "ports": [{"name": "web", "containerPort": 53, "protocol": "UDP"}]}]}});
        let pods = [
            pod("a", "10.244.0.1", true, json!({})),
            pod("b", "10.244.0.2", true, other_port),
            pod("c", "10.244.0.3", false, json!({})),
            pod("d", "10.244.0.4", true, no_port),
            pod("e", "10.244.0.5", true, udp),
        ];
        check(
            svc,
            &pods,
            "
ready [10.244.0.1(a)] not-ready [10.244.0.3(c)] ports [http:8080/TCP]
ready [10.244.0.2(b)] not-ready [] ports [http:9090/TCP]",
        );
    }

    #[test]
    fn ports_offered_by_the_same_pods_share_a_subset() {
        let svc = service(
            json!({"selector": {"app": "web"}, "clusterIP": "10.96.0.10", "ports": [
            {"name": "http", "port": 80, "targetPort": "web", "protocol": "TCP"},
            {"name": "metrics", "port": 9100, "targetPort": 9100, "protocol": "TCP"}]}),
        );
        let no_web = json!({"spec": {"containers": [{"name": "c", "image": "nginx"}]}});
        let pods = [
            pod("a", "10.244.0.1", true, json!({})),
            pod("b", "10.244.0.2", true, json!({})),
            pod("c", "10.244.0.3", true, no_web),
        ];
        check(
            svc,
            &pods,
            "
ready [10.244.0.1(a) 10.244.0.2(b)] not-ready [] ports [http:8080/TCP]
ready [10.244.0.1(a) 10.244.0.2(b) 10.244.0.3(c)] not-ready [] ports [metrics:9100/TCP]",
        );
    }

    #[test]
    fn publish_not_ready_addresses_lists_every_pod_as_ready() {
        let svc = service(json!({"selector": {"app": "web"}, "clusterIP": "None",
            "publishNotReadyAddresses": true,
            "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]}));
        let pods = [
            pod("a", "10.244.0.1", false, json!({})),
            pod(
                "b",
                "10.244.0.2",
                true,
                json!({"metadata": {"deletionTimestamp": "2024-01-01T00:05:00Z"}}),
            ),
        ];
        check(
            svc,
            &pods,
            "ready [10.244.0.1(a) 10.244.0.2(b)] not-ready [] ports [:8080/TCP]",
        );
    }

    #[test]
    fn a_headless_service_without_ports_lists_addresses_alone() {
        let svc = service(json!({"selector": {"app": "web"}, "clusterIP": "None"}));
        let ep = desired_endpoints(&svc, &[pod("a", "10.244.0.1", true, json!({}))]);
        assert_eq!(render(&ep), "ready [10.244.0.1(a)] not-ready [] ports []");
        assert_eq!(
            ep.labels().get(HEADLESS_LABEL).map(String::as_str),
            Some("")
        );
        // A Service with a cluster IP and no ports publishes nothing.
        let svc = service(json!({"selector": {"app": "web"}, "clusterIP": "10.96.0.10"}));
        check(svc, &[pod("a", "10.244.0.1", true, json!({}))], "");
    }

    #[test]
    fn hostname_is_published_for_the_pods_subdomain_service_only() {
        let named = json!({"spec": {"hostname": "h", "subdomain": "web"}});
        let ep = desired_endpoints(&web_service(), &[pod("a", "10.244.0.1", true, named)]);
        let subsets = ep.subsets.expect("subsets");
        let address = &subsets[0].addresses.as_ref().expect("addresses")[0];
        assert_eq!(address.hostname.as_deref(), Some("h"));
        let elsewhere = json!({"spec": {"hostname": "h", "subdomain": "other"}});
        let ep = desired_endpoints(&web_service(), &[pod("a", "10.244.0.1", true, elsewhere)]);
        let subsets = ep.subsets.expect("subsets");
        assert_eq!(
            subsets[0].addresses.as_ref().expect("addresses")[0].hostname,
            None
        );
    }

    #[test]
    fn selector_less_and_external_name_services_select_nothing() {
        let a = pod("a", "10.244.0.1", true, json!({}));
        assert!(selects(&web_service(), &a));
        let bare = service(json!({"clusterIP": "10.96.0.10", "selector": {}}));
        assert!(!selects(&bare, &a));
        let external = service(
            json!({"type": "ExternalName", "externalName": "example.com",
                                      "selector": {"app": "web"}}),
        );
        assert!(!selects(&external, &a));
    }

    #[test]
    fn more_than_a_thousand_addresses_are_truncated_and_marked() {
        let pods: Vec<Pod> = (0..1100)
            .map(|i| {
                let ip = format!("10.244.{}.{}", i / 250, i % 250 + 1);
                pod(&format!("p{i}"), &ip, i % 2 == 0, json!({}))
            })
            .collect();
        let ep = desired_endpoints(&web_service(), &pods);
        let subsets = ep.subsets.as_ref().expect("subsets");
        let ready: usize = subsets.iter().map(|s| count(&s.addresses)).sum();
        let not_ready: usize = subsets.iter().map(|s| count(&s.not_ready_addresses)).sum();
        assert_eq!((ready, not_ready), (550, 450));
        assert_eq!(
            ep.annotations().get(OVER_CAPACITY).map(String::as_str),
            Some("truncated")
        );
        let few = desired_endpoints(&web_service(), &pods[..10]);
        assert_eq!(few.annotations().get(OVER_CAPACITY), None);
    }

    #[test]
    fn stored_endpoints_compare_equal_to_the_desired_ones() {
        let pods = [
            pod("a", "10.244.0.1", true, json!({})),
            pod("b", "10.244.0.2", false, json!({})),
        ];
        let desired = desired_endpoints(&web_service(), &pods);
        // As the apiserver returns it: explicit empty lists, a target resourceVersion,
        // bookkeeping metadata and the trigger-time annotation.
        let mut stored = serde_json::to_value(&desired).expect("json");
        stored["subsets"][0]["addresses"][0]["targetRef"]["resourceVersion"] = json!("7");
        stored["metadata"]["resourceVersion"] = json!("42");
        stored["metadata"]["annotations"] =
            json!({LAST_CHANGE_TRIGGER_TIME: "2024-01-01T00:00:00Z"});
        let stored: Endpoints = serde_json::from_value(stored).expect("endpoints");
        assert!(up_to_date(&stored, &desired));

        let mut relabelled = stored.clone();
        relabelled.metadata.labels = None;
        assert!(!up_to_date(&relabelled, &desired));
        let fewer = desired_endpoints(&web_service(), &pods[..1]);
        assert!(!up_to_date(&stored, &fewer));
    }

    #[test]
    fn trigger_time_is_creation_first_then_only_newer_changes() {
        let svc = web_service();
        let mut times = TriggerTimes::default();
        let mut sync = |pods: &[Pod]| {
            let observed = times.observe(&svc, pods);
            let time = observed.time;
            times.commit(observed);
            time
        };
        let a = pod("a", "10.244.0.1", true, json!({}));
        let created: Timestamp = "2024-01-01T00:00:00Z".parse().expect("time");
        assert_eq!(sync(std::slice::from_ref(&a)), Some(created));
        assert_eq!(sync(std::slice::from_ref(&a)), None);
        let later = json!({"status": {"conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": "2024-01-01T00:09:00Z"}]}});
        let b = pod("b", "10.244.0.2", true, later);
        let nine: Timestamp = "2024-01-01T00:09:00Z".parse().expect("time");
        // Until a sync commits, the change is reported again.
        assert_eq!(
            times.observe(&svc, &[a.clone(), b.clone()]).time,
            Some(nine)
        );
        let mut sync = |pods: &[Pod]| {
            let observed = times.observe(&svc, pods);
            let time = observed.time;
            times.commit(observed);
            time
        };
        assert_eq!(sync(&[a.clone(), b.clone()]), Some(nine));
        assert_eq!(sync(&[a.clone(), b]), None);
        times.forget(&svc);
        assert_eq!(times.observe(&svc, &[a]).time, Some(created));
    }

    #[test]
    fn only_changes_that_matter_to_endpoints_count() {
        let a = pod("a", "10.244.0.1", true, json!({}));
        let annotated = pod(
            "a",
            "10.244.0.1",
            true,
            json!({"metadata": {"annotations": {"x": "y"}}}),
        );
        assert!(!pod_changed(&a, &annotated));
        assert!(pod_changed(&a, &pod("a", "10.244.0.1", false, json!({}))));
        assert!(pod_changed(&a, &pod("a", "10.244.0.9", true, json!({}))));
        assert!(pod_changed(
            &a,
            &pod(
                "a",
                "10.244.0.1",
                true,
                json!({"metadata": {"labels": {"v": "2"}}})
            )
        ));
    }

    #[test]
    fn endpoints_are_managed_when_this_controller_wrote_them() {
        let written = |manager: &str| -> Endpoints {
            serde_json::from_value(json!({"metadata": {"name": "web",
                "managedFields": [{"manager": manager, "operation": "Update", "apiVersion": "v1"}]}}))
            .expect("endpoints")
        };
        assert!(managed_by_controller(&written(FIELD_MANAGER)));
        assert!(!managed_by_controller(&written(
            "kubectl-client-side-apply"
        )));
    }
}
