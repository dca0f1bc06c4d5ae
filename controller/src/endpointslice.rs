//! The EndpointSlice controller, as kube-controller-manager's: for every Service with a
//! selector it keeps EndpointSlices (`generateName: <service>-`, owned by the Service,
//! labelled `kubernetes.io/service-name` and `endpointslice.kubernetes.io/managed-by:
//! endpointslice-controller.k8s.io`) holding one endpoint per selected pod with an IP, its
//! `ready`, `serving` and `terminating` conditions, grouped by the set of ports the pod
//! resolves and at most [`MAX_ENDPOINTS_PER_SLICE`] to a slice. A Service selecting no pod
//! keeps one empty placeholder slice.
//!
//! The decision is the pure [`reconcile_slices`], a port of upstream's reconciler: it
//! keeps endpoints where they are, rewrites only slices whose content changed, fills
//! slices it touches anyway before others, and turns a create plus a delete into an
//! update. [`run`] drives it from reflector stores and remembers its own writes until
//! their watch events come back, so that it never plans from a cache that lags behind it.
//!
//! Slices of a deleted Service go with it through their ownerReference (the garbage
//! collector's job); those of a Service that lost its selector are deleted here. The
//! [`mirroring`] submodule publishes the hand-written Endpoints of selector-less Services.

pub mod mirroring;

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::mpsc;
use k8s_openapi::api::core::v1::{ObjectReference, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::runtime::controller::{self, Action};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use crate::endpoints::{
    find_port, is_headless, is_pod_ready, node_name, pod_hostname, pod_ips, pod_reference,
    publishes_not_ready, selects, service_families, service_ports, service_selector,
    services_for_pod, should_publish, Family, TriggerTimes, HEADLESS_LABEL,
    LAST_CHANGE_TRIGGER_TIME, WORKERS,
};
use crate::runtime::{drive, enqueue, lock, queue, report, retry_after, Seen};

/// Label naming the Service a slice belongs to.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// Label naming the controller that manages a slice.
pub const LABEL_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's `managed-by` value.
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
/// The field manager of this controller's writes.
pub const FIELD_MANAGER: &str = "endpointslice-controller";
/// Upstream's default `--max-endpoints-per-slice`.
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;

/// How long a reconcile waits for the cache to catch up with this controller's writes.
const STALE_CACHE_RETRY: Duration = Duration::from_millis(200);

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

/// The writes that bring a Service's (or an Endpoints') slices to the desired state.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SlicePlan {
    /// New slices (named by `generateName`).
    pub create: Vec<EndpointSlice>,
    /// Existing slices, rewritten whole (name and resourceVersion of the stored one).
    pub update: Vec<EndpointSlice>,
    pub delete: Vec<EndpointSlice>,
}

impl SlicePlan {
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.update.is_empty() && self.delete.is_empty()
    }

    fn extend(&mut self, other: SlicePlan) {
        self.create.extend(other.create);
        self.update.extend(other.update);
        self.delete.extend(other.delete);
    }

    /// Turns creates into updates of slices that would otherwise be deleted, as long as
    /// `reusable` allows (same address type, and owned by the right object).
    fn recycle(&mut self, reusable: impl Fn(&EndpointSlice) -> bool) {
        let mut kept = Vec::new();
        for old in std::mem::take(&mut self.delete) {
            let Some(mut new) = self
                .create
                .pop_if(|new| new.address_type == old.address_type && reusable(&old))
            else {
                kept.push(old);
                continue;
            };
            new.metadata.name = old.metadata.name;
            new.metadata.resource_version = old.metadata.resource_version;
            self.update.push(new);
        }
        self.delete = kept;
    }
}

// ---------------------------------------------------------------------------------------
// Endpoint identity and comparison
// ---------------------------------------------------------------------------------------

/// What identifies an endpoint across slices: its addresses, hostname and target pod.
/// Conditions, node and zone may change in place.
type EndpointKey = (Vec<String>, String, String, String);

pub(crate) fn endpoint_key(ep: &Endpoint) -> EndpointKey {
    let mut addresses = ep.addresses.clone();
    addresses.sort();
    let target = ep.target_ref.as_ref();
    let field = |f: fn(&ObjectReference) -> &Option<String>| {
        target.and_then(|t| f(t).clone()).unwrap_or_default()
    };
    (
        addresses,
        ep.hostname.clone().unwrap_or_default(),
        field(|t| &t.namespace),
        field(|t| &t.name),
    )
}

/// Whether two endpoints with the same key also agree on everything else published
/// (the target's resourceVersion aside).
pub(crate) fn same_endpoint(a: &Endpoint, b: &Endpoint) -> bool {
    let target = |e: &Endpoint| {
        e.target_ref.clone().map(|mut t| {
            t.resource_version = None;
            t
        })
    };
    let conditions = |e: &Endpoint| e.conditions.clone().unwrap_or_default();
    a.node_name == b.node_name
        && a.zone == b.zone
        && conditions(a) == conditions(b)
        && target(a) == target(b)
}

/// A set of slice ports in canonical order, for grouping.
type PortsKey = Vec<(String, Option<i32>, String, Option<String>)>;

pub(crate) fn ports_key(ports: Option<&[EndpointPort]>) -> PortsKey {
    let mut key: PortsKey = ports
        .unwrap_or_default()
        .iter()
        .map(|p| {
            (
                p.name.clone().unwrap_or_default(),
                p.port,
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                p.app_protocol.clone(),
            )
        })
        .collect();
    key.sort();
    key
}

fn slice_family(slice: &EndpointSlice) -> Option<Family> {
    Family::named(&slice.address_type)
}

/// An IP in the canonical text form, if it is one.
pub(crate) fn canonical_ip(ip: &str) -> Option<(Family, String)> {
    let parsed: IpAddr = ip.parse().ok()?;
    let family = if parsed.is_ipv4() {
        Family::V4
    } else {
        Family::V6
    };
    Some((family, parsed.to_string()))
}

// ---------------------------------------------------------------------------------------
// The desired slices of a Service
// ---------------------------------------------------------------------------------------

/// The endpoint of `pod` in `svc`'s slices of `family`; no addresses if it has no IP of
/// that family. A terminating pod is never ready (unless the Service publishes not-ready
/// addresses) but stays `serving` while its Ready condition holds.
fn pod_endpoint(svc: &Service, pod: &Pod, family: Family) -> Endpoint {
    let serving = is_pod_ready(pod);
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let ready = publishes_not_ready(svc) || (serving && !terminating);
    Endpoint {
        addresses: pod_ips(pod)
            .into_iter()
            .filter_map(canonical_ip)
            .filter(|(f, _)| *f == family)
            .map(|(_, ip)| ip)
            .collect(),
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        target_ref: Some(pod_reference(pod)),
        node_name: node_name(pod),
        hostname: pod_hostname(pod, svc).map(str::to_string),
        ..Endpoint::default()
    }
}

/// The Service's ports as `pod` resolves them (ports it cannot resolve are left out).
fn endpoint_ports(svc: &Service, pod: &Pod) -> Vec<EndpointPort> {
    service_ports(svc)
        .iter()
        .filter_map(|p| {
            find_port(pod, p).map(|n| EndpointPort {
                name: Some(p.name.clone().unwrap_or_default()),
                port: Some(n),
                protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: p.app_protocol.clone(),
            })
        })
        .collect()
}

fn is_reserved_label(key: &str) -> bool {
    [LABEL_SERVICE_NAME, LABEL_MANAGED_BY, HEADLESS_LABEL].contains(&key)
}

/// The labels a slice of `svc` carries (the Service's own, the headless mark, service
/// name and manager), and whether `current` differs from them in the Service's part.
fn slice_labels(
    current: &BTreeMap<String, String>,
    svc: &Service,
) -> (BTreeMap<String, String>, bool) {
    let own = |labels: &BTreeMap<String, String>| -> BTreeMap<String, String> {
        labels
            .iter()
            .filter(|(k, _)| !is_reserved_label(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let mut labels = own(svc.labels());
    let changed = own(current) != labels;
    if is_headless(svc) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    }
    labels.insert(LABEL_SERVICE_NAME.into(), svc.name_any());
    labels.insert(LABEL_MANAGED_BY.into(), CONTROLLER_NAME.into());
    (labels, changed)
}

fn owner_reference(svc: &Service) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: svc.name_any(),
        uid: svc.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn owned_by(slice: &EndpointSlice, svc: &Service) -> bool {
    slice.owner_references().iter().any(|o| {
        o.kind == "Service" && o.api_version == "v1" && Some(&o.uid) == svc.metadata.uid.as_ref()
    })
}

/// A new, empty slice of `svc` for `ports` and `family`.
fn new_slice(svc: &Service, ports: &[EndpointPort], family: Family) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", svc.name_any())),
            namespace: svc.metadata.namespace.clone(),
            labels: Some(slice_labels(&BTreeMap::new(), svc).0),
            owner_references: Some(vec![owner_reference(svc)]),
            ..ObjectMeta::default()
        },
        address_type: family.address_type().into(),
        endpoints: Vec::new(),
        ports: Some(ports.to_vec()),
    }
}

/// Whether `slice` is already the placeholder a Service without endpoints keeps.
fn is_placeholder(slice: &EndpointSlice, placeholder: &EndpointSlice) -> bool {
    slice.metadata.namespace == placeholder.metadata.namespace
        && slice.labels() == placeholder.labels()
        && slice.address_type == placeholder.address_type
        && slice.endpoints.is_empty()
        && slice.ports.as_deref().unwrap_or_default().is_empty()
}

/// The slices `svc` should have given `pods` (any pods; those it does not select are
/// ignored) and its `existing` slices: the smallest set of creates, updates and deletes
/// that gets there, never rewriting a slice whose content is already right.
pub fn reconcile_slices<P: Borrow<Pod>, S: Borrow<EndpointSlice>>(
    svc: &Service,
    pods: &[P],
    existing: &[S],
    max_per_slice: usize,
) -> SlicePlan {
    let max = max_per_slice.max(1);
    let families = service_families(svc);
    let existing: Vec<&EndpointSlice> = existing.iter().map(Borrow::borrow).collect();
    let pods: Vec<&Pod> = pods
        .iter()
        .map(Borrow::borrow)
        .filter(|pod| selects(svc, pod) && should_publish(pod, true))
        .collect();
    let mut plan = SlicePlan::default();
    for slice in &existing {
        if !slice_family(slice).is_some_and(|f| families.contains(&f)) {
            plan.delete.push((*slice).clone());
        }
    }
    for family in families {
        let of_family: Vec<&EndpointSlice> = existing
            .iter()
            .copied()
            .filter(|s| slice_family(s) == Some(family))
            .collect();
        plan.extend(plan_family(svc, &pods, &of_family, family, max));
    }
    plan
}

fn plan_family(
    svc: &Service,
    pods: &[&Pod],
    existing: &[&EndpointSlice],
    family: Family,
    max: usize,
) -> SlicePlan {
    let mut plan = SlicePlan::default();
    let mut by_ports: BTreeMap<PortsKey, Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in existing {
        if owned_by(slice, svc) {
            by_ports
                .entry(ports_key(slice.ports.as_deref()))
                .or_default()
                .push(slice);
        } else {
            plan.delete.push((*slice).clone());
        }
    }
    let mut desired: BTreeMap<PortsKey, (Vec<EndpointPort>, BTreeMap<EndpointKey, Endpoint>)> =
        BTreeMap::new();
    for pod in pods {
        let ports = endpoint_ports(svc, pod);
        let group = desired
            .entry(ports_key(Some(&ports)))
            .or_insert_with(|| (ports, BTreeMap::new()));
        let endpoint = pod_endpoint(svc, pod, family);
        if !endpoint.addresses.is_empty() {
            group.1.insert(endpoint_key(&endpoint), endpoint);
        }
    }
    for (key, (ports, mut endpoints)) in desired {
        let slices = by_ports.remove(&key).unwrap_or_default();
        plan.extend(plan_group(
            svc,
            &slices,
            &mut endpoints,
            &ports,
            family,
            max,
        ));
    }
    for slices in by_ports.into_values() {
        plan.delete.extend(slices.into_iter().cloned());
    }
    if existing.len() == plan.delete.len() && plan.create.is_empty() {
        let placeholder = new_slice(svc, &[], family);
        match plan.delete.as_slice() {
            [only] if is_placeholder(only, &placeholder) => plan.delete.clear(),
            _ => plan.create.push(placeholder),
        }
    }
    plan.recycle(|old| owned_by(old, svc));
    plan
}

/// Upstream's per-port-set step: keep wanted endpoints where they are (updating changed
/// ones), drop unwanted ones, top up the slices being rewritten anyway (fullest first),
/// then put the rest into the untouched slice they fill best, or into new slices.
fn plan_group(
    svc: &Service,
    existing: &[&EndpointSlice],
    wanted: &mut BTreeMap<EndpointKey, Endpoint>,
    ports: &[EndpointPort],
    family: Family,
    max: usize,
) -> SlicePlan {
    let mut plan = SlicePlan::default();
    let mut changed: BTreeMap<String, EndpointSlice> = BTreeMap::new();
    let mut unchanged: BTreeMap<String, &EndpointSlice> = BTreeMap::new();
    for slice in existing {
        let name = slice.name_any();
        let mut kept = Vec::new();
        let mut modified = false;
        for endpoint in &slice.endpoints {
            if let Some(want) = wanted.remove(&endpoint_key(endpoint)) {
                modified |= !same_endpoint(&want, endpoint);
                kept.push(want);
            }
        }
        let (labels, relabelled) = slice_labels(slice.labels(), svc);
        if modified || kept.len() != slice.endpoints.len() {
            if kept.is_empty() {
                plan.delete.push((*slice).clone());
                continue;
            }
            let mut slice = (*slice).clone();
            slice.endpoints = kept;
            slice.metadata.labels = Some(labels);
            changed.insert(name, slice);
        } else if relabelled {
            let mut slice = (*slice).clone();
            slice.metadata.labels = Some(labels);
            changed.insert(name, slice);
        } else {
            unchanged.insert(name, slice);
        }
    }
    let mut fullest_first: Vec<&mut EndpointSlice> = changed.values_mut().collect();
    fullest_first.sort_by_key(|s| std::cmp::Reverse(s.endpoints.len()));
    for slice in fullest_first {
        fill(slice, wanted, max);
    }
    while !wanted.is_empty() {
        let best = if wanted.len() < max {
            best_fit(&unchanged, wanted.len(), max)
        } else {
            None
        };
        let mut slice = match best.and_then(|name| unchanged.remove(&name)) {
            Some(slice) => slice.clone(),
            None => new_slice(svc, ports, family),
        };
        fill(&mut slice, wanted, max);
        match slice.metadata.name.clone() {
            Some(name) => {
                changed.insert(name, slice);
            }
            None => plan.create.push(slice),
        }
    }
    plan.update.extend(changed.into_values());
    plan
}

fn fill(slice: &mut EndpointSlice, wanted: &mut BTreeMap<EndpointKey, Endpoint>, max: usize) {
    while slice.endpoints.len() < max {
        let Some((_, endpoint)) = wanted.pop_first() else {
            return;
        };
        slice.endpoints.push(endpoint);
    }
}

/// The untouched slice that `adding` more endpoints leave closest to full, if any fits.
fn best_fit(
    slices: &BTreeMap<String, &EndpointSlice>,
    adding: usize,
    max: usize,
) -> Option<String> {
    let mut best: Option<(usize, &String)> = None;
    for (name, slice) in slices {
        let Some(room) = max.checked_sub(adding + slice.endpoints.len()) else {
            continue;
        };
        if room < best.map_or(max, |(r, _)| r) {
            best = Some((room, name));
            if room == 0 {
                break;
            }
        }
    }
    best.map(|(_, name)| name.clone())
}

/// Sets (or, with no trigger, removes) the last-change trigger time on what gets written.
fn stamp(plan: &mut SlicePlan, trigger: Option<Timestamp>) {
    for slice in plan.create.iter_mut().chain(plan.update.iter_mut()) {
        let mut annotations = slice.metadata.annotations.take().unwrap_or_default();
        match trigger {
            Some(t) => annotations.insert(LAST_CHANGE_TRIGGER_TIME.into(), t.to_string()),
            None => annotations.remove(LAST_CHANGE_TRIGGER_TIME),
        };
        slice.metadata.annotations = Some(annotations).filter(|a| !a.is_empty());
    }
}

// ---------------------------------------------------------------------------------------
// Writes, and remembering them until the cache has caught up
// ---------------------------------------------------------------------------------------

/// Slices written by a controller whose watch events have not reached its cache yet,
/// keyed by namespace and slice name. While any is pending for an owner, its cache is
/// stale and planning from it could, say, create a slice twice.
#[derive(Debug, Default)]
pub(crate) struct Expectations {
    pending: Mutex<HashMap<(String, String), Expected>>,
}

#[derive(Debug)]
struct Expected {
    owner: String,
    /// The resourceVersion written, or `None` for a deletion.
    version: Option<String>,
}

impl Expectations {
    /// Remembers a write unless `store` reflects it already. The lock is held while
    /// looking, so an event arriving meanwhile is matched afterwards, not missed.
    fn wrote(
        &self,
        store: &Store<EndpointSlice>,
        ns: &str,
        name: &str,
        owner: &str,
        version: Option<String>,
    ) {
        let mut pending = lock(&self.pending);
        let cached = store.get(&ObjectRef::new(name).within(ns));
        let reflected = match &version {
            Some(v) => cached.is_some_and(|c| c.metadata.resource_version.as_ref() == Some(v)),
            None => cached.is_none(),
        };
        let key = (ns.to_string(), name.to_string());
        if reflected {
            pending.remove(&key);
        } else {
            pending.insert(
                key,
                Expected {
                    owner: owner.to_string(),
                    version,
                },
            );
        }
    }

    /// Where a watch event of the controller's own slices (already in the store) leads:
    /// nowhere for the echo of a pending write, to the slice's owner otherwise, and to
    /// every owner after a re-list, when the store is authoritative again.
    pub(crate) fn route<K: kube::Resource<DynamicType = ()>>(
        &self,
        seen: Seen<'_, EndpointSlice>,
    ) -> SliceRoute<K> {
        let (slice, deleted) = match seen {
            Seen::Applied { new, .. } => (new, false),
            Seen::Deleted(slice) => (slice, true),
            Seen::Listed => {
                lock(&self.pending).clear();
                return SliceRoute::Everything;
            }
        };
        if self.echo(slice, deleted) {
            return SliceRoute::Echo;
        }
        slice_owner(slice).map_or(SliceRoute::Echo, SliceRoute::Owner)
    }

    /// Matches a watch event (already in the store) against the pending writes; true
    /// when it is the echo of one, which needs no reconcile.
    fn echo(&self, slice: &EndpointSlice, deleted: bool) -> bool {
        let key = (slice.namespace().unwrap_or_default(), slice.name_any());
        let mut pending = lock(&self.pending);
        let Some(expected) = pending.get(&key) else {
            return false;
        };
        let echo = match &expected.version {
            Some(v) => !deleted && slice.metadata.resource_version.as_ref() == Some(v),
            None => deleted,
        };
        if echo || deleted {
            pending.remove(&key);
        }
        echo
    }

    /// Whether writes for `owner` in `ns` are still on their way to the cache.
    pub(crate) fn waiting(&self, ns: &str, owner: &str) -> bool {
        lock(&self.pending)
            .iter()
            .any(|((n, _), e)| n == ns && e.owner == owner)
    }
}

/// What a slice watch event asks of its controller (see [`Expectations::route`]).
pub(crate) enum SliceRoute<K: kube::Resource> {
    /// The echo of its own write, or a slice with no owner to name: nothing.
    Echo,
    /// Reconcile this owner.
    Owner(ObjectRef<K>),
    /// Reconcile every owner.
    Everything,
}

/// Where a controller's slice writes go and how they are remembered.
pub(crate) struct SliceWriter<'a> {
    pub(crate) api: Api<EndpointSlice>,
    pub(crate) store: &'a Store<EndpointSlice>,
    pub(crate) expectations: &'a Expectations,
    pub(crate) owner: &'a str,
    pub(crate) field_manager: &'static str,
}

impl SliceWriter<'_> {
    /// Creates (unless `may_create` is false, as for an owner being deleted), updates
    /// and deletes as planned.
    pub(crate) async fn write(&self, plan: SlicePlan, may_create: bool) -> Result<(), kube::Error> {
        let ns = self.api.namespace().unwrap_or_default().to_string();
        let params = PostParams {
            field_manager: Some(self.field_manager.into()),
            ..PostParams::default()
        };
        for slice in plan.create.iter().filter(|_| may_create) {
            let made = self.api.create(&params, slice).await?;
            tracing::debug!(
                slice = made.name_any(),
                endpoints = made.endpoints.len(),
                "created endpointslice"
            );
            self.remember(&ns, &made);
        }
        for slice in &plan.update {
            let made = self.api.replace(&slice.name_any(), &params, slice).await?;
            tracing::debug!(
                slice = made.name_any(),
                endpoints = made.endpoints.len(),
                "updated endpointslice"
            );
            self.remember(&ns, &made);
        }
        for slice in &plan.delete {
            let name = slice.name_any();
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: slice.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match self.api.delete(&name, &params).await {
                Ok(_) => tracing::debug!(slice = name, "deleted endpointslice"),
                Err(kube::Error::Api(status)) if status.is_not_found() => {}
                Err(err) => return Err(err),
            }
            self.expectations
                .wrote(self.store, &ns, &name, self.owner, None);
        }
        Ok(())
    }

    fn remember(&self, ns: &str, slice: &EndpointSlice) {
        let version = slice.metadata.resource_version.clone();
        self.expectations
            .wrote(self.store, ns, &slice.name_any(), self.owner, version);
    }
}

/// The slices in `store` labelled for `owner` in `ns` and managed by `manager`, less
/// those being deleted.
pub(crate) fn slices_of(
    store: &Store<EndpointSlice>,
    ns: &str,
    owner: &str,
    manager: &str,
) -> Vec<Arc<EndpointSlice>> {
    store
        .state()
        .into_iter()
        .filter(|s| {
            s.metadata.namespace.as_deref() == Some(ns)
                && s.labels().get(LABEL_SERVICE_NAME).map(String::as_str) == Some(owner)
                && s.labels().get(LABEL_MANAGED_BY).map(String::as_str) == Some(manager)
                && s.metadata.deletion_timestamp.is_none()
        })
        .collect()
}

/// The object of kind `K` a slice belongs to: named by its service-name label.
fn slice_owner<K: kube::Resource<DynamicType = ()>>(slice: &EndpointSlice) -> Option<ObjectRef<K>> {
    let name = slice.labels().get(LABEL_SERVICE_NAME)?;
    Some(ObjectRef::new(name).within(&slice.namespace()?))
}

// ---------------------------------------------------------------------------------------
// The controller
// ---------------------------------------------------------------------------------------

/// Settings of the controller.
#[derive(Clone, Debug)]
pub struct Options {
    /// Endpoints per slice before another slice is started (`--max-endpoints-per-slice`).
    pub max_endpoints_per_slice: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_endpoints_per_slice: MAX_ENDPOINTS_PER_SLICE,
        }
    }
}

struct Context {
    client: Client,
    services: Store<Service>,
    pods: Store<Pod>,
    slices: Store<EndpointSlice>,
    triggers: Mutex<TriggerTimes>,
    expectations: Expectations,
    options: Options,
}

/// Runs the EndpointSlice controller with upstream's defaults.
pub async fn run(client: Client) -> Result<()> {
    run_with(client, Options::default()).await
}

/// Runs the EndpointSlice controller until a watch or the reconciler stops.
pub async fn run_with(client: Client, options: Options) -> Result<()> {
    let (services, services_writer) = reflector::store();
    let (pods, pods_writer) = reflector::store();
    let (slices, slices_writer) = reflector::store();
    let ctx = Arc::new(Context {
        client: client.clone(),
        services,
        pods,
        slices,
        triggers: Mutex::new(TriggerTimes::default()),
        expectations: Expectations::default(),
        options,
    });
    let (tx, rx) = mpsc::unbounded::<ObjectRef<Service>>();
    let everything = |ctx: &Context, tx: &mpsc::UnboundedSender<ObjectRef<Service>>| {
        for svc in ctx.services.state() {
            enqueue(tx, ObjectRef::from_obj(svc.as_ref()));
        }
    };

    let watch_services = drive(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
        services_writer,
        {
            let (ctx, tx) = (ctx.clone(), tx.clone());
            move |seen| match seen {
                Seen::Applied { new, .. } => enqueue(&tx, ObjectRef::from_obj(new)),
                Seen::Deleted(svc) => lock(&ctx.triggers).forget(svc),
                Seen::Listed => everything(&ctx, &tx),
            }
        },
    );
    let watch_pods = drive(
        Api::<Pod>::all(client.clone()),
        watcher::Config::default(),
        pods_writer,
        {
            let (ctx, tx) = (ctx.clone(), tx.clone());
            move |seen| match services_for_pod(&ctx.services, seen) {
                Some(services) => services.into_iter().for_each(|svc| enqueue(&tx, svc)),
                None => everything(&ctx, &tx),
            }
        },
    );
    let managed =
        watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={CONTROLLER_NAME}"));
    let watch_slices = drive(Api::<EndpointSlice>::all(client), managed, slices_writer, {
        let ctx = ctx.clone();
        move |seen| match ctx.expectations.route(seen) {
            SliceRoute::Echo => {}
            SliceRoute::Owner(svc) => enqueue(&tx, svc),
            SliceRoute::Everything => everything(&ctx, &tx),
        }
    });

    let syncs = controller::applier(
        |svc, ctx| Box::pin(sync_service(svc, ctx)),
        |_, err, _| error_policy(err),
        ctx.clone(),
        ctx.services.clone(),
        queue(rx),
        controller::Config::default().concurrency(WORKERS),
    );
    tokio::select! {
        () = watch_services => Err(Error::WatchEnded("services")),
        () = watch_pods => Err(Error::WatchEnded("pods")),
        () = watch_slices => Err(Error::WatchEnded("endpointslices")),
        () = report("endpointslice", syncs) => Err(Error::Stopped("endpointslice")),
    }
}

pub(crate) fn error_policy(err: &Error) -> Action {
    match err {
        Error::Kube(err) => retry_after(err),
        _ => Action::requeue(Duration::from_secs(5)),
    }
}

/// Brings the slices of one Service in line with its pods.
#[tracing::instrument(
    skip_all,
    fields(namespace = %svc.namespace().unwrap_or_default(), service = %svc.name_any())
)]
async fn sync_service(svc: Arc<Service>, ctx: Arc<Context>) -> Result<Action> {
    ctx.pods
        .wait_until_ready()
        .await
        .map_err(|_| Error::CacheGone("pods"))?;
    ctx.slices
        .wait_until_ready()
        .await
        .map_err(|_| Error::CacheGone("endpointslices"))?;
    let Some(ns) = svc.namespace() else {
        return Ok(Action::await_change());
    };
    let name = svc.name_any();
    if ctx.expectations.waiting(&ns, &name) {
        tracing::trace!("waiting for the cache to see earlier writes");
        return Ok(Action::requeue(STALE_CACHE_RETRY));
    }
    let existing = slices_of(&ctx.slices, &ns, &name, CONTROLLER_NAME);
    let (plan, observed) = if service_selector(&svc).is_some() {
        let pods: Vec<Arc<Pod>> = ctx
            .pods
            .state()
            .into_iter()
            .filter(|p| selects(&svc, p))
            .collect();
        let observed = lock(&ctx.triggers).observe(&svc, &pods);
        let mut plan =
            reconcile_slices(&svc, &pods, &existing, ctx.options.max_endpoints_per_slice);
        stamp(&mut plan, observed.time);
        (plan, Some(observed))
    } else {
        let delete = existing.iter().map(|s| s.as_ref().clone()).collect();
        (
            SlicePlan {
                delete,
                ..SlicePlan::default()
            },
            None,
        )
    };
    if !plan.is_empty() {
        let writer = SliceWriter {
            api: Api::namespaced(ctx.client.clone(), &ns),
            store: &ctx.slices,
            expectations: &ctx.expectations,
            owner: &name,
            field_manager: FIELD_MANAGER,
        };
        writer
            .write(plan, svc.metadata.deletion_timestamp.is_none())
            .await?;
    }
    if let Some(observed) = observed {
        lock(&ctx.triggers).commit(observed);
    }
    Ok(Action::await_change())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::endpoints::tests::{pod, service};
    use serde_json::json;

    /// One line per slice: name (if it has one yet), address type, ports, then each
    /// endpoint as `ip(pod)` with its conditions (Ready, Serving, Terminating).
    pub(crate) fn render_slice(s: &EndpointSlice) -> String {
        let ports: Vec<String> = s
            .ports
            .iter()
            .flatten()
            .map(|p| {
                let name = p.name.clone().unwrap_or_default();
                let protocol = p.protocol.clone().unwrap_or_default();
                format!("{name}:{}/{protocol}", p.port.unwrap_or_default())
            })
            .collect();
        let endpoints: Vec<String> = s
            .endpoints
            .iter()
            .map(|e| {
                let c = e.conditions.clone().unwrap_or_default();
                let flag = |v: Option<bool>, f: char| if v == Some(true) { f } else { '-' };
                let pod = e
                    .target_ref
                    .as_ref()
                    .and_then(|t| t.name.clone())
                    .unwrap_or_default();
                let (r, sv, t) = (
                    flag(c.ready, 'R'),
                    flag(c.serving, 'S'),
                    flag(c.terminating, 'T'),
                );
                format!("{}({pod}):{r}{sv}{t}", e.addresses.join(","))
            })
            .collect();
        let name = s
            .metadata
            .name
            .clone()
            .map(|n| format!("{n} "))
            .unwrap_or_default();
        format!(
            "{name}{} [{}] {}",
            s.address_type,
            ports.join(" "),
            endpoints.join(" ")
        )
        .trim_end()
        .to_string()
    }

    pub(crate) fn render_plan(plan: &SlicePlan) -> String {
        let mut lines = Vec::new();
        for (verb, slices) in [
            ("create", &plan.create),
            ("update", &plan.update),
            ("delete", &plan.delete),
        ] {
            for s in slices {
                lines.push(format!("{verb} {}", render_slice(s)));
            }
        }
        lines.join("\n")
    }

    /// What the apiserver would store after `plan`: names for new slices, new versions.
    pub(crate) fn apply(stored: &mut Vec<EndpointSlice>, plan: &SlicePlan) {
        let mut version = stored.len() * 100;
        let mut bump = |s: &mut EndpointSlice| {
            version += 1;
            s.metadata.resource_version = Some(version.to_string());
        };
        stored.retain(|s| {
            !plan
                .delete
                .iter()
                .any(|d| d.metadata.name == s.metadata.name)
        });
        for update in &plan.update {
            let mut update = update.clone();
            bump(&mut update);
            stored.retain(|s| s.metadata.name != update.metadata.name);
            stored.push(update);
        }
        for create in &plan.create {
            let mut create = create.clone();
            let prefix = create.metadata.generate_name.clone().unwrap_or_default();
            create.metadata.name = Some(format!("{prefix}{}", stored.len() + 1000));
            bump(&mut create);
            stored.push(create);
        }
        stored.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    }

    /// The slices stored after planning `svc` from scratch.
    fn fresh(svc: &Service, pods: &[Pod], max: usize) -> Vec<EndpointSlice> {
        let mut stored = Vec::new();
        apply(
            &mut stored,
            &reconcile_slices(svc, pods, &[] as &[EndpointSlice], max),
        );
        stored
    }

    fn web() -> Service {
        service(
            json!({"selector": {"app": "web"}, "clusterIP": "10.96.0.10", "ipFamilies": ["IPv4"],
                       "ports": [{"name": "http", "port": 80, "targetPort": "web", "protocol": "TCP"}]}),
        )
    }

    #[track_caller]
    fn check(svc: &Service, pods: &[Pod], existing: &[EndpointSlice], max: usize, expected: &str) {
        let plan = reconcile_slices(svc, pods, existing, max);
        assert_eq!(render_plan(&plan), expected.trim());
    }

    fn ready_pods(n: usize) -> Vec<Pod> {
        (0..n)
            .map(|i| {
                pod(
                    &format!("p{i:03}"),
                    &format!("10.244.{}.{}", i / 200, i % 200 + 1),
                    true,
                    json!({}),
                )
            })
            .collect()
    }

    #[test]
    fn every_pod_with_an_ip_is_an_endpoint_with_its_conditions() {
        let leaving = json!({"metadata": {"deletionTimestamp": "2024-01-01T00:05:00Z"}});
        let pods = [
            pod("a", "10.244.0.1", true, json!({})),
            pod("b", "10.244.0.2", false, json!({})),
            pod("c", "10.244.0.3", true, leaving.clone()),
            pod("d", "10.244.0.4", false, leaving),
            pod("pending", "", false, json!({"status": {"podIPs": []}})),
            pod(
                "done",
                "10.244.0.5",
                false,
                json!({"status": {"phase": "Failed"}}),
            ),
        ];
        check(
            &web(),
            &pods,
            &[],
            100,
            "create IPv4 [http:8080/TCP] 10.244.0.1(a):RS- 10.244.0.2(b):--- 10.244.0.3(c):-ST 10.244.0.4(d):--T",
        );
    }

    #[test]
    fn new_slices_carry_the_service_labels_owner_and_name_prefix() {
        let plan = reconcile_slices(&web(), &ready_pods(1), &[] as &[EndpointSlice], 100);
        let slice = serde_json::to_value(&plan.create[0]).expect("json");
        assert_eq!(
            slice["metadata"],
            json!({
                "generateName": "web-",
                "namespace": "default",
                "labels": {"app": "web", LABEL_SERVICE_NAME: "web", LABEL_MANAGED_BY: CONTROLLER_NAME},
                "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": "web",
                                     "uid": "svc-uid", "controller": true, "blockOwnerDeletion": true}],
            })
        );
        assert_eq!(
            slice["endpoints"][0],
            json!({"addresses": ["10.244.0.1"], "nodeName": "node-1",
                   "conditions": {"ready": true, "serving": true, "terminating": false},
                   "targetRef": {"kind": "Pod", "namespace": "default", "name": "p000", "uid": "uid-p000"}})
        );
    }

    #[test]
    fn publish_not_ready_addresses_makes_every_endpoint_ready() {
        let svc = service(
            json!({"selector": {"app": "web"}, "clusterIP": "None", "ipFamilies": ["IPv4"],
                                 "publishNotReadyAddresses": true}),
        );
        let leaving = json!({"metadata": {"deletionTimestamp": "2024-01-01T00:05:00Z"}});
        let pods = [
            pod("a", "10.244.0.1", false, json!({})),
            pod("b", "10.244.0.2", true, leaving),
        ];
        let plan = reconcile_slices(&svc, &pods, &[] as &[EndpointSlice], 100);
        assert_eq!(
            render_plan(&plan),
            "create IPv4 [] 10.244.0.1(a):R-- 10.244.0.2(b):RST"
        );
        assert_eq!(
            plan.create[0]
                .labels()
                .get(HEADLESS_LABEL)
                .map(String::as_str),
            Some("")
        );
    }

    #[test]
    fn pods_resolving_a_named_port_differently_get_separate_slices() {
        let other_port = json!({"spec": {"containers": [
            {"name": "c", "image": "nginx", "ports": [{"name": "web", "containerPort": 9090}]}]}});
        let no_port = json!({"spec": {"containers": [{"name": "c", "image": "nginx"}]}});
        let pods = [
            pod("a", "10.244.0.1", true, json!({})),
            pod("b", "10.244.0.2", true, other_port),
            pod("c", "10.244.0.3", true, no_port),
        ];
        check(
            &web(),
            &pods,
            &[],
            100,
            "
create IPv4 [] 10.244.0.3(c):RS-
create IPv4 [http:8080/TCP] 10.244.0.1(a):RS-
create IPv4 [http:9090/TCP] 10.244.0.2(b):RS-",
        );
    }

    #[test]
    fn at_most_max_endpoints_go_in_a_slice() {
        let plan = reconcile_slices(&web(), &ready_pods(250), &[] as &[EndpointSlice], 100);
        let sizes: Vec<usize> = plan.create.iter().map(|s| s.endpoints.len()).collect();
        assert_eq!(sizes, [100, 100, 50]);
        assert!(plan.update.is_empty() && plan.delete.is_empty());
        check(
            &web(),
            &ready_pods(3),
            &[],
            2,
            "
create IPv4 [http:8080/TCP] 10.244.0.1(p000):RS- 10.244.0.2(p001):RS-
create IPv4 [http:8080/TCP] 10.244.0.3(p002):RS-",
        );
    }

    #[test]
    fn a_service_without_pods_keeps_one_placeholder_slice() {
        check(&web(), &[], &[], 100, "create IPv4 []");
        let stored = fresh(&web(), &[], 100);
        check(&web(), &[], &stored, 100, "");
        // The first pod turns the placeholder into its slice instead of replacing it.
        check(
            &web(),
            &ready_pods(1),
            &stored,
            100,
            "update web-1000 IPv4 [http:8080/TCP] 10.244.0.1(p000):RS-",
        );
        // And when the last pod goes, its slice becomes the placeholder again.
        let stored = fresh(&web(), &ready_pods(1), 100);
        check(&web(), &[], &stored, 100, "update web-1000 IPv4 []");
    }

    #[test]
    fn nothing_is_written_when_nothing_changed() {
        let pods = ready_pods(250);
        let stored = fresh(&web(), &pods, 100);
        assert_eq!(stored.len(), 3);
        assert!(reconcile_slices(&web(), &pods, &stored, 100).is_empty());
        // A pod's annotations or an extra non-matching pod change nothing either.
        let mut more = pods.clone();
        more[0] = pod(
            "p000",
            "10.244.0.1",
            true,
            json!({"metadata": {"annotations": {"x": "y"}}}),
        );
        more.push(pod(
            "other",
            "10.244.9.9",
            true,
            json!({"metadata": {"labels": {"app": "db"}}}),
        ));
        assert!(reconcile_slices(&web(), &more, &stored, 100).is_empty());
    }

    #[test]
    fn a_change_rewrites_only_the_slice_holding_it() {
        let mut pods = ready_pods(250);
        let stored = fresh(&web(), &pods, 100);
        let holder = |ip: &str| {
            stored
                .iter()
                .find(|s| s.endpoints.iter().any(|e| e.addresses == [ip]))
                .and_then(|s| s.metadata.name.clone())
        };
        pods[120] = pod("p120", "10.244.0.121", false, json!({}));
        let plan = reconcile_slices(&web(), &pods, &stored, 100);
        assert!(
            plan.create.is_empty() && plan.delete.is_empty(),
            "{}",
            render_plan(&plan)
        );
        assert_eq!(plan.update.len(), 1);
        assert_eq!(plan.update[0].metadata.name, holder("10.244.0.121"));
        assert_eq!(plan.update[0].endpoints.len(), 100);
        // Removing a pod and adding another: the new one takes the freed place.
        pods.retain(|p| p.metadata.name.as_deref() != Some("p240"));
        pods.push(pod("new", "10.244.5.5", true, json!({})));
        let plan = reconcile_slices(&web(), &pods, &stored, 100);
        assert!(
            plan.create.is_empty() && plan.delete.is_empty(),
            "{}",
            render_plan(&plan)
        );
        let mut updated: Vec<_> = plan
            .update
            .iter()
            .map(|s| (s.metadata.name.clone(), s.endpoints.len()))
            .collect();
        updated.sort();
        let mut expected = vec![(holder("10.244.0.121"), 100), (holder("10.244.1.41"), 50)];
        expected.sort();
        assert_eq!(updated, expected);
    }

    #[test]
    fn a_relabelled_service_relabels_its_slices_only() {
        let pods = ready_pods(2);
        let stored = fresh(&web(), &pods, 100);
        let mut svc = web();
        svc.metadata.labels = Some(BTreeMap::from([("tier".into(), "front".into())]));
        let plan = reconcile_slices(&svc, &pods, &stored, 100);
        assert_eq!(plan.update.len(), 1);
        let labels = plan.update[0].labels();
        assert_eq!(labels.get("tier").map(String::as_str), Some("front"));
        assert_eq!(labels.get("app"), None);
        assert_eq!(plan.update[0].endpoints, stored[0].endpoints);
    }

    #[test]
    fn slices_of_another_owner_or_address_type_are_deleted() {
        let pods = ready_pods(1);
        let mut stored = fresh(&web(), &pods, 100);
        let mut foreign = stored[0].clone();
        foreign.metadata.name = Some("web-old".into());
        foreign.metadata.owner_references = Some(vec![OwnerReference {
            uid: "an-earlier-service".into(),
            ..owner_reference(&web())
        }]);
        let mut v6 = stored[0].clone();
        v6.metadata.name = Some("web-v6".into());
        v6.address_type = "IPv6".into();
        v6.endpoints.clear();
        stored.extend([foreign, v6]);
        check(
            &web(),
            &pods,
            &stored,
            100,
            "
delete web-v6 IPv6 [http:8080/TCP]
delete web-old IPv4 [http:8080/TCP] 10.244.0.1(p000):RS-",
        );
    }

    #[test]
    fn a_dual_stack_service_gets_slices_per_family() {
        let svc = service(
            json!({"selector": {"app": "web"}, "clusterIP": "10.96.0.10",
            "ipFamilies": ["IPv4", "IPv6"], "ports": [{"port": 80, "targetPort": 80, "protocol": "TCP"}]}),
        );
        let dual = json!({"status": {"podIPs": [{"ip": "10.244.0.1"}, {"ip": "fd00::0001"}]}});
        check(
            &svc,
            &[pod("a", "10.244.0.1", true, dual)],
            &[],
            100,
            "
create IPv4 [:80/TCP] 10.244.0.1(a):RS-
create IPv6 [:80/TCP] fd00::1(a):RS-",
        );
    }

    #[test]
    fn expectations_hold_until_the_write_is_seen() {
        let (store, mut writer) = reflector::store::<EndpointSlice>();
        let expectations = Expectations::default();
        let mut slice = new_slice(&web(), &[], Family::V4);
        slice.metadata.name = Some("web-1".into());
        slice.metadata.resource_version = Some("5".into());
        expectations.wrote(&store, "default", "web-1", "web", Some("5".into()));
        assert!(expectations.waiting("default", "web"));
        assert!(!expectations.waiting("default", "other"));
        writer.apply_watcher_event(&watcher::Event::Apply(slice.clone()));
        assert!(expectations.echo(&slice, false));
        assert!(!expectations.waiting("default", "web"));
        // A write the cache already shows is not awaited at all.
        expectations.wrote(&store, "default", "web-1", "web", Some("5".into()));
        assert!(!expectations.waiting("default", "web"));
        // Someone else's change is not an echo.
        slice.metadata.resource_version = Some("6".into());
        assert!(!expectations.echo(&slice, false));
        // A deletion is awaited until the delete event.
        expectations.wrote(&store, "default", "web-1", "web", None);
        assert!(expectations.waiting("default", "web"));
        assert!(expectations.echo(&slice, true));
        assert!(!expectations.waiting("default", "web"));
    }
}
