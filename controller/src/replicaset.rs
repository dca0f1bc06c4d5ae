//! The ReplicaSet controller, as kube-controller-manager's `replicaset` controller: it
//! keeps `spec.replicas` active pods matching a ReplicaSet's selector. It creates pods
//! from the template (generateName `<rs>-`, a controlling ownerReference), adopts matching
//! orphans, releases owned pods that stopped matching, deletes the surplus in upstream's
//! order of preference, and reports `replicas`, `fullyLabeledReplicas`, `readyReplicas`,
//! `availableReplicas` and `observedGeneration` in the status.
//!
//! The decisions are pure functions over objects from reflector stores ([`claim_pods`],
//! [`plan_replicas`], [`pods_to_delete`], [`calculate_status`]); [`run`] drives them with
//! kube-rs's `applier`, the engine behind `Controller`, fed by the reflectors' own event
//! streams so that a reconcile never starts before the stores hold the change that
//! triggered it. Like upstream, the controller keeps *expectations*: after creating or
//! deleting pods it does not create or delete again for that ReplicaSet until its pod
//! store has seen those changes (or five minutes passed), so a lagging cache never causes
//! a second round of writes.
//!
//! It is not the pod garbage collector: pods of a deleted ReplicaSet are left to `gc`.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::join_all;
use futures::{stream, StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, ObjectMeta, OwnerReference, Time,
};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Config};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::{applier, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use serde_json::{json, Map, Value};
use tracing::{debug, info, instrument, warn};

use crate::runtime::{lock, report};

/// Upstream's `BurstReplicas`: at most this many pods are created or deleted per sync.
const BURST_REPLICAS: usize = 500;
/// How long unobserved creations or deletions hold back further ones (upstream's value).
const EXPECTATIONS_TTL: Duration = Duration::from_secs(5 * 60);
/// The annotation a user sets to make some pods cheaper to delete than others.
const DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes api: {0}")]
    Kube(#[from] kube::Error),
    #[error("invalid selector of {object}: {reason}")]
    Selector { object: String, reason: String },
    #[error("{0} has no namespace")]
    NoNamespace(String),
    #[error("{0} has no pod template")]
    NoTemplate(String),
    #[error("unable to create pods for {0}, no labels")]
    NoLabels(String),
    #[error("the store's writer was dropped before the cache synced")]
    StoreClosed,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A write that lost a race with another writer or with the cache (409 Conflict or
    /// AlreadyExists): retried soon, and not worth a warning.
    fn is_stale(&self) -> bool {
        matches!(self, Error::Kube(kube::Error::Api(status)) if status.code == 409)
    }
}

// ---------------------------------------------------------------------------------------
// Object helpers shared with the deployment controller.

/// A `metav1.LabelSelector` parsed once: `{}` selects everything.
#[derive(Debug, Clone)]
pub struct Selector(api::selector::LabelSelector);

impl Selector {
    pub fn parse(selector: &LabelSelector) -> Result<Self, String> {
        let value = serde_json::to_value(selector).map_err(|e| e.to_string())?;
        api::selector::LabelSelector::from_object(&value)
            .map(Selector)
            .map_err(|e| e.to_string())
    }

    pub fn matches(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        let labels: Map<String, Value> = labels
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        self.0.matches(&labels)
    }

    /// True for `{}`, which upstream refuses to act on for Deployments.
    pub fn selects_everything(&self) -> bool {
        self.0.is_empty()
    }
}

/// The ownerReference marked `controller: true`, if any.
pub(crate) fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_deref()?
        .iter()
        .find(|r| r.controller == Some(true))
}

/// Whether `meta` is controlled by the object with `uid`.
pub(crate) fn controlled_by(meta: &ObjectMeta, uid: Option<&str>) -> bool {
    uid.is_some() && controller_of(meta).map(|r| r.uid.as_str()) == uid
}

/// The ownerReference a controller puts on what it creates or adopts:
/// `controller: true, blockOwnerDeletion: true`.
pub(crate) fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    let meta = owner.meta();
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The strategic merge patch upstream's ControllerRefManager sends to adopt an object.
pub(crate) fn adopt_patch(owner: OwnerReference, uid: Option<&str>) -> Value {
    json!({"metadata": {"ownerReferences": [owner], "uid": uid}})
}

/// The strategic merge patch that removes the ownerReference to `owner_uid`.
pub(crate) fn release_patch(owner_uid: Option<&str>, uid: Option<&str>) -> Value {
    json!({"metadata": {"ownerReferences": [{"$patch": "delete", "uid": owner_uid}], "uid": uid}})
}

/// Whether a kube error is the apiserver's NotFound.
pub(crate) fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 404)
}

/// Now, to the second: the precision the API stores times with, so that a status
/// written and read back compares equal.
pub(crate) fn now() -> Timestamp {
    let now = Timestamp::now();
    Timestamp::from_second(now.as_second()).unwrap_or(now)
}

/// Per-object retry delays for failed reconciles: 50 ms doubling up to 30 s, reset by
/// the next success (upstream's work queue backs off exponentially per item too).
#[derive(Default)]
pub(crate) struct Retries(Mutex<HashMap<String, u32>>);

impl Retries {
    fn next_delay(&self, key: &str) -> Duration {
        let mut failures = lock(&self.0);
        let n = failures.entry(key.to_string()).or_default();
        let delay = Duration::from_millis(50u64 << (*n).min(10));
        *n = n.saturating_add(1);
        delay.min(Duration::from_secs(30))
    }

    pub(crate) fn reset(&self, key: &str) {
        lock(&self.0).remove(key);
    }

    /// The requeue after a failed sync of `key`, with backoff; a conflict from a stale
    /// cache is expected and logged quietly, anything else as a warning.
    pub(crate) fn after_failure(
        &self,
        kind: &'static str,
        key: &str,
        err: &dyn std::fmt::Display,
        stale: bool,
    ) -> Action {
        let delay = self.next_delay(key);
        if stale {
            debug!(controller = kind, object = %key, %err, ?delay, "stale cache, retrying");
        } else {
            warn!(controller = kind, object = %key, %err, ?delay, "sync failed, retrying");
        }
        Action::requeue(delay)
    }
}

/// `namespace/name`, how logs and retry keys name an object.
pub(crate) fn key_of(meta: &ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

// ---------------------------------------------------------------------------------------
// Pod state, as upstream's podutil reads it.

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

/// Not finished (Succeeded or Failed) and not being deleted.
pub fn is_pod_active(pod: &Pod) -> bool {
    !is_pod_terminal(pod) && pod.metadata.deletion_timestamp.is_none()
}

/// Succeeded or Failed: its containers have stopped for good.
pub(crate) fn is_pod_terminal(pod: &Pod) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

fn ready_condition_since(pod: &Pod) -> Option<Option<Timestamp>> {
    pod.status
        .as_ref()?
        .conditions
        .as_deref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")
        .map(|c| c.last_transition_time.as_ref().map(|t| t.0))
}

/// The pod's Ready condition is True.
pub fn is_pod_ready(pod: &Pod) -> bool {
    ready_condition_since(pod).is_some()
}

/// Ready for at least `min_ready_seconds` at `now` (upstream's `IsPodAvailable`).
pub fn is_pod_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    match ready_condition_since(pod) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(since) => {
            since.is_some_and(|t| t.as_second() + i64::from(min_ready_seconds) < now.as_second())
        }
    }
}

// ---------------------------------------------------------------------------------------
// Claiming pods: adoption and release, as upstream's ControllerRefManager.

/// What a ReplicaSet does with the active pods of its namespace.
#[derive(Debug, Default)]
pub struct Claims {
    /// Controlled by the ReplicaSet and matching its selector.
    pub owned: Vec<Arc<Pod>>,
    /// Orphans matching the selector, to adopt.
    pub adopt: Vec<Arc<Pod>>,
    /// Controlled by the ReplicaSet but no longer matching, to release.
    pub release: Vec<Arc<Pod>>,
}

/// Sorts `pods` (active pods of the ReplicaSet's namespace) into owned, to adopt and to
/// release. A ReplicaSet being deleted neither adopts nor releases.
pub fn claim_pods(rs: &ReplicaSet, selector: &Selector, pods: &[Arc<Pod>]) -> Claims {
    let uid = rs.metadata.uid.as_deref();
    let deleting = rs.metadata.deletion_timestamp.is_some();
    let mut claims = Claims::default();
    for pod in pods {
        let matches = selector.matches(pod.metadata.labels.as_ref());
        match controller_of(&pod.metadata) {
            Some(owner) if Some(owner.uid.as_str()) == uid => {
                if matches {
                    claims.owned.push(pod.clone());
                } else if !deleting {
                    claims.release.push(pod.clone());
                }
            }
            Some(_) => {}
            None => {
                if matches && !deleting && pod.metadata.deletion_timestamp.is_none() {
                    claims.adopt.push(pod.clone());
                }
            }
        }
    }
    claims
}

// ---------------------------------------------------------------------------------------
// Scaling decisions.

/// What a sync does about the number of pods.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplicaPlan {
    Steady,
    /// Create this many pods from the template.
    Create(usize),
    /// Delete these pods, the ones upstream's ranking prefers.
    Delete(Vec<Arc<Pod>>),
}

/// Compares `spec.replicas` with the active owned pods. `related` are the pods of every
/// ReplicaSet with the same controller (the Deployment's other ReplicaSets), whose
/// placement ranks pods for deletion.
pub fn plan_replicas(rs: &ReplicaSet, owned: &[Arc<Pod>], related: &[Arc<Pod>]) -> ReplicaPlan {
    let desired = spec_replicas(rs).max(0) as usize;
    match owned.len().cmp(&desired) {
        Ordering::Equal => ReplicaPlan::Steady,
        Ordering::Less => ReplicaPlan::Create((desired - owned.len()).min(BURST_REPLICAS)),
        Ordering::Greater => {
            let diff = (owned.len() - desired).min(BURST_REPLICAS);
            ReplicaPlan::Delete(pods_to_delete(owned, related, diff))
        }
    }
}

pub(crate) fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// The `diff` pods to delete first: unscheduled before scheduled, Pending before Unknown
/// before Running, not ready before ready, lower `pod-deletion-cost` first, more pods of
/// the same family on the node first, ready more recently first, more restarts first,
/// created more recently first.
pub fn pods_to_delete(pods: &[Arc<Pod>], related: &[Arc<Pod>], diff: usize) -> Vec<Arc<Pod>> {
    let mut ranked: Vec<(Arc<Pod>, usize)> = {
        let mut on_node: HashMap<&str, usize> = HashMap::new();
        for pod in related.iter().filter(|p| is_pod_active(p)) {
            *on_node.entry(node_name(pod)).or_default() += 1;
        }
        pods.iter()
            .map(|p| (p.clone(), on_node.get(node_name(p)).copied().unwrap_or(0)))
            .collect()
    };
    if diff < ranked.len() {
        ranked.sort_by(|(a, ra), (b, rb)| deletion_order(a, *ra, b, *rb));
    }
    ranked.into_iter().take(diff).map(|(p, _)| p).collect()
}

fn node_name(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or_default()
}

fn phase_ordinal(pod: &Pod) -> u8 {
    match phase(pod) {
        "Unknown" => 1,
        "Running" => 2,
        _ => 0,
    }
}

fn deletion_cost(pod: &Pod) -> i32 {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DELETION_COST))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn max_restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_deref())
        .into_iter()
        .flatten()
        .map(|c| c.restart_count)
        .max()
        .unwrap_or(0)
}

/// `Less` when `a` is the later time; a missing time sorts first.
fn later_first(a: Option<Timestamp>, b: Option<Timestamp>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(a), Some(b)) => b.cmp(&a),
    }
}

/// `Less` when `a` should be deleted before `b`.
fn deletion_order(a: &Pod, rank_a: usize, b: &Pod, rank_b: usize) -> Ordering {
    let unassigned = |p: &Pod| node_name(p).is_empty();
    let both_ready = is_pod_ready(a) && is_pod_ready(b);
    let ready_since = |p: &Pod| ready_condition_since(p).flatten();
    let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    unassigned(b)
        .cmp(&unassigned(a))
        .then_with(|| phase_ordinal(a).cmp(&phase_ordinal(b)))
        .then_with(|| is_pod_ready(a).cmp(&is_pod_ready(b)))
        .then_with(|| deletion_cost(a).cmp(&deletion_cost(b)))
        .then_with(|| rank_b.cmp(&rank_a))
        .then_with(|| {
            if both_ready {
                later_first(ready_since(a), ready_since(b))
            } else {
                Ordering::Equal
            }
        })
        .then_with(|| max_restarts(b).cmp(&max_restarts(a)))
        .then_with(|| later_first(created(a), created(b)))
}

/// The pod a ReplicaSet creates: the template's labels, annotations, finalizers and
/// spec, generateName `<rs>-` and a controlling ownerReference.
pub fn pod_from_template(rs: &ReplicaSet) -> Result<Pod> {
    let name = rs.name_any();
    let template = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .ok_or_else(|| Error::NoTemplate(name.clone()))?;
    let meta = template.metadata.clone().unwrap_or_default();
    if meta.labels.as_ref().is_none_or(BTreeMap::is_empty) {
        return Err(Error::NoLabels(name));
    }
    Ok(Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-")),
            namespace: rs.namespace(),
            labels: meta.labels,
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![controller_ref(rs)]),
            ..ObjectMeta::default()
        },
        spec: template.spec.clone(),
        status: None,
    })
}

// ---------------------------------------------------------------------------------------
// Status.

/// The status upstream's `calculateStatus` derives from the owned active pods, with the
/// `ReplicaFailure` condition set while creating or deleting fails.
pub fn calculate_status(
    rs: &ReplicaSet,
    owned: &[Arc<Pod>],
    manage_error: Option<&str>,
    now: Timestamp,
) -> ReplicaSetStatus {
    let mut status = rs.status.clone().unwrap_or_default();
    let spec = rs.spec.as_ref();
    let min_ready = spec.and_then(|s| s.min_ready_seconds).unwrap_or(0);
    let template_labels = spec
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let fully_labeled = owned
        .iter()
        .filter(|p| {
            let labels = p.metadata.labels.as_ref();
            template_labels
                .iter()
                .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
        })
        .count();
    let ready = owned.iter().filter(|p| is_pod_ready(p)).count();
    let available = owned
        .iter()
        .filter(|p| is_pod_available(p, min_ready, now))
        .count();

    let mut conditions = status.conditions.take().unwrap_or_default();
    let failing = conditions.iter().any(|c| c.type_ == "ReplicaFailure");
    match manage_error {
        Some(message) if !failing => {
            let desired = spec_replicas(rs).max(0) as usize;
            let reason = match owned.len().cmp(&desired) {
                Ordering::Less => "FailedCreate",
                Ordering::Greater => "FailedDelete",
                Ordering::Equal => "",
            };
            conditions.push(ReplicaSetCondition {
                type_: "ReplicaFailure".into(),
                status: "True".into(),
                reason: Some(reason.into()),
                message: Some(message.into()),
                last_transition_time: Some(Time(now)),
            });
        }
        None if failing => conditions.retain(|c| c.type_ != "ReplicaFailure"),
        _ => {}
    }
    status.conditions = (!conditions.is_empty()).then_some(conditions);
    status.replicas = count(owned.len());
    status.fully_labeled_replicas = Some(count(fully_labeled));
    status.ready_replicas = Some(count(ready));
    status.available_replicas = Some(count(available));
    status.observed_generation = rs.metadata.generation;
    status
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Whether writing `new` would change what is stored (absent counts read as zero).
pub fn status_changed(old: Option<&ReplicaSetStatus>, new: &ReplicaSetStatus) -> bool {
    let default = ReplicaSetStatus::default();
    let old = old.unwrap_or(&default);
    let n = |v: Option<i32>| v.unwrap_or(0);
    let conditions = |s: &ReplicaSetStatus| s.conditions.clone().unwrap_or_default();
    old.replicas != new.replicas
        || n(old.fully_labeled_replicas) != n(new.fully_labeled_replicas)
        || n(old.ready_replicas) != n(new.ready_replicas)
        || n(old.available_replicas) != n(new.available_replicas)
        || old.observed_generation != new.observed_generation
        || conditions(old) != conditions(new)
}

/// When the next ready pod becomes available (ready for `minReadySeconds`), if any is
/// still waiting: the moment to look again.
pub fn next_availability_check(
    rs: &ReplicaSet,
    owned: &[Arc<Pod>],
    now: Timestamp,
) -> Option<Duration> {
    let min_ready = rs
        .spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0);
    if min_ready <= 0 {
        return None;
    }
    owned
        .iter()
        .filter(|p| !is_pod_available(p, min_ready, now))
        .filter_map(|p| ready_condition_since(p))
        .map(|since| {
            let at = since.map_or(now.as_second(), |t| t.as_second()) + i64::from(min_ready) + 1;
            Duration::from_secs(u64::try_from(at - now.as_second()).unwrap_or(0).max(1))
        })
        .min()
}

// ---------------------------------------------------------------------------------------
// Expectations: what the pod store has yet to show of this controller's own writes.

#[derive(Default)]
struct Tracker(Mutex<TrackerState>);

#[derive(Default)]
struct TrackerState {
    /// Pods in the store with their controlling ReplicaSet: tells a creation from an
    /// update, and finds the previous owner when the controller changes.
    seen: HashMap<ObjectRef<Pod>, Seen>,
    expectations: HashMap<ObjectRef<ReplicaSet>, Expectation>,
}

#[derive(Clone, PartialEq)]
struct Seen {
    uid: Option<String>,
    owner: Option<ObjectRef<ReplicaSet>>,
}

struct Expectation {
    adds: usize,
    deletes: HashSet<String>,
    since: Instant,
}

impl TrackerState {
    fn creation_observed(&mut self, rs: &ObjectRef<ReplicaSet>) {
        if let Some(e) = self.expectations.get_mut(rs) {
            e.adds = e.adds.saturating_sub(1);
        }
    }

    fn deletion_observed(&mut self, rs: &ObjectRef<ReplicaSet>, pod: &str) {
        if let Some(e) = self.expectations.get_mut(rs) {
            e.deletes.remove(pod);
        }
    }
}

impl Tracker {
    /// `Ok` when the ReplicaSet may create or delete, otherwise how long until its
    /// expectations expire.
    fn satisfied(&self, rs: &ObjectRef<ReplicaSet>) -> Result<(), Duration> {
        let state = lock(&self.0);
        match state.expectations.get(rs) {
            Some(e) if e.adds > 0 || !e.deletes.is_empty() => {
                match EXPECTATIONS_TTL.checked_sub(e.since.elapsed()) {
                    Some(left) if !left.is_zero() => Err(left),
                    _ => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }

    fn expect(&self, rs: &ObjectRef<ReplicaSet>, adds: usize, deletes: HashSet<String>) {
        let expectation = Expectation {
            adds,
            deletes,
            since: Instant::now(),
        };
        lock(&self.0).expectations.insert(rs.clone(), expectation);
    }

    fn creation_observed(&self, rs: &ObjectRef<ReplicaSet>) {
        lock(&self.0).creation_observed(rs);
    }

    fn deletion_observed(&self, rs: &ObjectRef<ReplicaSet>, pod: &str) {
        lock(&self.0).deletion_observed(rs, pod);
    }

    fn forget(&self, rs: &ObjectRef<ReplicaSet>) {
        lock(&self.0).expectations.remove(rs);
    }

    /// Records a pod event the store has applied; returns the ReplicaSets it concerns:
    /// the controller (and the previous one when it changed), or for an orphan every
    /// ReplicaSet whose selector matches it.
    fn observe(
        &self,
        event: &Event<Pod>,
        pods: &Store<Pod>,
        rss: &Store<ReplicaSet>,
    ) -> Vec<ObjectRef<ReplicaSet>> {
        let mut state = lock(&self.0);
        let mut touched = Vec::new();
        match event {
            Event::Apply(pod) => {
                let key = ObjectRef::from_obj(pod);
                let now = Seen {
                    uid: pod.metadata.uid.clone(),
                    owner: owning_replica_set(pod),
                };
                let before = state.seen.insert(key, now.clone());
                if let Some(owner) = &now.owner {
                    let created = before.as_ref().is_none_or(|b| b.uid != now.uid);
                    if pod.metadata.deletion_timestamp.is_some() {
                        state.deletion_observed(owner, &pod.name_any());
                    } else if created {
                        state.creation_observed(owner);
                    }
                    touched.push(owner.clone());
                } else {
                    touched.extend(matching_replica_sets(pod, rss));
                }
                if let Some(previous) = before.and_then(|b| b.owner) {
                    if Some(&previous) != now.owner.as_ref() {
                        touched.push(previous);
                    }
                }
            }
            Event::Delete(pod) => {
                state.seen.remove(&ObjectRef::from_obj(pod));
                match owning_replica_set(pod) {
                    Some(owner) => {
                        state.deletion_observed(&owner, &pod.name_any());
                        touched.push(owner);
                    }
                    None => touched.extend(matching_replica_sets(pod, rss)),
                }
            }
            Event::InitDone => {
                // A relist replaced the store: account for what changed while unwatched.
                let current: HashMap<ObjectRef<Pod>, (Seen, bool, String)> = pods
                    .state()
                    .iter()
                    .map(|p| {
                        let seen = Seen {
                            uid: p.metadata.uid.clone(),
                            owner: owning_replica_set(p),
                        };
                        let deleting = p.metadata.deletion_timestamp.is_some();
                        (ObjectRef::from_obj(&**p), (seen, deleting, p.name_any()))
                    })
                    .collect();
                let previous = std::mem::take(&mut state.seen);
                for (key, before) in &previous {
                    let gone = current
                        .get(key)
                        .is_none_or(|(now, deleting, _)| now.uid != before.uid || *deleting);
                    if let (true, Some(owner)) = (gone, &before.owner) {
                        state.deletion_observed(owner, &key.name);
                    }
                }
                for (key, (now, deleting, name)) in &current {
                    let created = previous.get(key).is_none_or(|b| b.uid != now.uid);
                    if let Some(owner) = &now.owner {
                        if *deleting {
                            state.deletion_observed(owner, name);
                        } else if created {
                            state.creation_observed(owner);
                        }
                    }
                    state.seen.insert(key.clone(), now.clone());
                }
                touched.extend(rss.state().iter().map(|rs| ObjectRef::from_obj(&**rs)));
            }
            Event::Init | Event::InitApply(_) => {}
        }
        touched
    }
}

fn owning_replica_set(pod: &Pod) -> Option<ObjectRef<ReplicaSet>> {
    let owner = controller_of(&pod.metadata)?;
    ObjectRef::from_owner_ref(pod.namespace().as_deref(), owner, ())
}

fn matching_replica_sets(pod: &Pod, rss: &Store<ReplicaSet>) -> Vec<ObjectRef<ReplicaSet>> {
    let namespace = pod.namespace();
    rss.state()
        .iter()
        .filter(|rs| rs.namespace() == namespace)
        .filter(|rs| {
            rs.spec
                .as_ref()
                .and_then(|s| Selector::parse(&s.selector).ok())
                .is_some_and(|sel| sel.matches(pod.metadata.labels.as_ref()))
        })
        .map(|rs| ObjectRef::from_obj(&**rs))
        .collect()
}

// ---------------------------------------------------------------------------------------
// The reconciler.

struct Context {
    client: Client,
    rss: Store<ReplicaSet>,
    pods: Store<Pod>,
    tracker: Tracker,
    retries: Retries,
}

/// Runs the ReplicaSet controller until its watch streams end.
pub async fn run(client: Client) -> Result<()> {
    let (rss, rs_writer) = reflector::store::<ReplicaSet>();
    let (pods, pod_writer) = reflector::store::<Pod>();
    let ctx = Arc::new(Context {
        client: client.clone(),
        rss: rss.clone(),
        pods,
        tracker: Tracker::default(),
        retries: Retries::default(),
    });

    let rs_ctx = ctx.clone();
    let rs_triggers = watcher(
        Api::<ReplicaSet>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(rs_writer)
    .map_ok(move |event| match event {
        Event::Apply(rs) => vec![ObjectRef::from_obj(&rs)],
        Event::Delete(rs) => {
            rs_ctx.tracker.forget(&ObjectRef::from_obj(&rs));
            rs_ctx.retries.reset(&key_of(&rs.metadata));
            Vec::new()
        }
        Event::InitDone => rs_ctx
            .rss
            .state()
            .iter()
            .map(|rs| ObjectRef::from_obj(&**rs))
            .collect(),
        Event::Init | Event::InitApply(_) => Vec::new(),
    });
    let pod_ctx = ctx.clone();
    let pod_triggers = watcher(Api::<Pod>::all(client), watcher::Config::default())
        .default_backoff()
        .reflect(pod_writer)
        .map_ok(move |event| pod_ctx.tracker.observe(&event, &pod_ctx.pods, &pod_ctx.rss));
    let queue = stream::select(rs_triggers, pod_triggers)
        .map_ok(|refs| stream::iter(refs).map(Ok::<_, watcher::Error>))
        .try_flatten();

    report(
        "replicaset",
        applier(
            |rs, ctx| Box::pin(reconcile(rs, ctx)),
            error_policy,
            ctx,
            rss,
            queue,
            Config::default(),
        ),
    )
    .await;
    Ok(())
}

fn error_policy(rs: Arc<ReplicaSet>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.retries
        .after_failure("replicaset", &key_of(&rs.metadata), err, err.is_stale())
}

#[instrument(skip_all, fields(replicaset = %key_of(&rs.metadata)))]
async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<Context>) -> Result<Action> {
    ctx.pods
        .wait_until_ready()
        .await
        .map_err(|_| Error::StoreClosed)?;
    let key = key_of(&rs.metadata);
    let name = rs.name_any();
    let namespace = rs
        .namespace()
        .ok_or_else(|| Error::NoNamespace(key.clone()))?;
    let selector = rs
        .spec
        .as_ref()
        .map(|s| Selector::parse(&s.selector))
        .transpose()
        .map_err(|reason| Error::Selector {
            object: key.clone(),
            reason,
        })?
        .ok_or_else(|| Error::NoTemplate(key.clone()))?;
    let now = now();
    let in_namespace: Vec<Arc<Pod>> = ctx
        .pods
        .state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(namespace.as_str()))
        .collect();
    let active: Vec<Arc<Pod>> = in_namespace
        .iter()
        .filter(|p| is_pod_active(p))
        .cloned()
        .collect();

    let pods_api = Api::<Pod>::namespaced(ctx.client.clone(), &namespace);
    let claims = claim_pods(&rs, &selector, &active);
    let mut owned = claims.owned;
    let mut claim_error = None;
    let patch_params = PatchParams::default();
    for pod in claims.adopt {
        let patch = adopt_patch(controller_ref(&*rs), pod.metadata.uid.as_deref());
        match pods_api
            .patch(&pod.name_any(), &patch_params, &Patch::Strategic(patch))
            .await
        {
            Ok(adopted) => {
                info!(pod = %adopted.name_any(), "adopted orphan pod");
                owned.push(Arc::new(adopted));
            }
            Err(err) if is_not_found(&err) => {}
            Err(err) => claim_error = Some(err),
        }
    }
    for pod in claims.release {
        let patch = release_patch(rs.metadata.uid.as_deref(), pod.metadata.uid.as_deref());
        match pods_api
            .patch(&pod.name_any(), &patch_params, &Patch::Strategic(patch))
            .await
        {
            Ok(released) => info!(pod = %released.name_any(), "released pod"),
            Err(err) if is_not_found(&err) => {}
            Err(err) => claim_error = Some(err),
        }
    }
    if let Some(err) = claim_error {
        return Err(err.into());
    }

    let rs_ref = ObjectRef::from_obj(&*rs);
    let expectations = ctx.tracker.satisfied(&rs_ref);
    let mut manage_error = None;
    if expectations.is_ok() && rs.metadata.deletion_timestamp.is_none() {
        let related = related_pods(&rs, &ctx.rss, &in_namespace);
        if let Err(err) = manage_replicas(&ctx, &rs, &rs_ref, &pods_api, &owned, &related).await {
            manage_error = Some(err);
        }
    }

    let status = calculate_status(
        &rs,
        &owned,
        manage_error.as_ref().map(ToString::to_string).as_deref(),
        now,
    );
    if status_changed(rs.status.as_ref(), &status) {
        let mut updated = (*rs).clone();
        updated.status = Some(status);
        Api::<ReplicaSet>::namespaced(ctx.client.clone(), &namespace)
            .replace_status(&name, &PostParams::default(), &updated)
            .await?;
        debug!("status updated");
    }
    if let Some(err) = manage_error {
        return Err(err);
    }
    ctx.retries.reset(&key);
    Ok(match expectations {
        Err(left) => Action::requeue(left),
        Ok(()) => next_availability_check(&rs, &owned, now)
            .map_or_else(Action::await_change, Action::requeue),
    })
}

/// Pods selected by the ReplicaSets that share this one's controller (upstream's
/// indirectly related pods); none for a ReplicaSet without controller.
fn related_pods(rs: &ReplicaSet, rss: &Store<ReplicaSet>, pods: &[Arc<Pod>]) -> Vec<Arc<Pod>> {
    let Some(controller) = controller_of(&rs.metadata) else {
        return Vec::new();
    };
    let siblings: Vec<Selector> = rss
        .state()
        .iter()
        .filter(|other| other.namespace() == rs.namespace())
        .filter(|other| controlled_by(&other.metadata, Some(&controller.uid)))
        .filter_map(|other| Selector::parse(&other.spec.as_ref()?.selector).ok())
        .collect();
    pods.iter()
        .filter(|p| {
            siblings
                .iter()
                .any(|s| s.matches(p.metadata.labels.as_ref()))
        })
        .cloned()
        .collect()
}

async fn manage_replicas(
    ctx: &Context,
    rs: &ReplicaSet,
    rs_ref: &ObjectRef<ReplicaSet>,
    pods_api: &Api<Pod>,
    owned: &[Arc<Pod>],
    related: &[Arc<Pod>],
) -> Result<()> {
    match plan_replicas(rs, owned, related) {
        ReplicaPlan::Steady => Ok(()),
        ReplicaPlan::Create(n) => {
            let pod = pod_from_template(rs)?;
            ctx.tracker.expect(rs_ref, n, HashSet::new());
            let params = PostParams::default();
            let (created, err) = slow_start_batch(n, || async {
                pods_api.create(&params, &pod).await.map(drop)
            })
            .await;
            for _ in created..n {
                ctx.tracker.creation_observed(rs_ref);
            }
            info!(created, wanted = n, "created pods");
            err.map_or(Ok(()), |e| Err(e.into()))
        }
        ReplicaPlan::Delete(pods) => {
            let names: HashSet<String> = pods.iter().map(|p| p.name_any()).collect();
            ctx.tracker.expect(rs_ref, 0, names);
            let params = DeleteParams::default();
            let results = join_all(pods.iter().map(|pod| async {
                let name = pod.name_any();
                (pods_api.delete(&name, &params).await, name)
            }))
            .await;
            let mut first_error = None;
            for (result, name) in results {
                if let Err(err) = result {
                    ctx.tracker.deletion_observed(rs_ref, &name);
                    if !is_not_found(&err) && first_error.is_none() {
                        first_error = Some(err);
                    }
                }
            }
            info!(deleted = pods.len(), "deleted surplus pods");
            first_error.map_or(Ok(()), |e| Err(e.into()))
        }
    }
}

/// Calls `create` `count` times in batches of 1, 2, 4, …, stopping after the first
/// batch with a failure, like upstream's `slowStartBatch`; returns the successes and
/// the first error.
async fn slow_start_batch<F, Fut>(count: usize, create: F) -> (usize, Option<kube::Error>)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), kube::Error>>,
{
    let mut successes = 0;
    let mut remaining = count;
    let mut batch = remaining.min(1);
    while batch > 0 {
        let mut first_error = None;
        for result in join_all((0..batch).map(|_| create())).await {
            match result {
                Ok(()) => successes += 1,
                Err(err) => {
                    first_error.get_or_insert(err);
                }
            }
        }
        if first_error.is_some() {
            return (successes, first_error);
        }
        remaining -= batch;
        batch = (batch * 2).min(remaining);
    }
    (successes, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::ReplicaSetSpec;
    use k8s_openapi::api::core::v1::{
        ContainerStatus, PodCondition, PodSpec, PodStatus, PodTemplateSpec,
    };

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + second).expect("valid time")
    }

    /// A pod described as `name key=value…`: `node=n`, `phase=Running`, `ready=<second>`
    /// (Ready since then), `created=<second>`, `restarts=<n>`, `cost=<n>`, `owner=<uid>`,
    /// `app=<label>`.
    fn pod(text: &str) -> Arc<Pod> {
        let mut words = text.split_whitespace();
        let mut pod = Pod {
            metadata: ObjectMeta {
                name: words.next().map(str::to_string),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{text}")),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec::default()),
            status: Some(PodStatus::default()),
        };
        for word in words {
            let (key, value) = word.split_once('=').expect("key=value");
            let status = pod.status.get_or_insert_with(Default::default);
            let second = || value.parse::<i64>().expect("a number");
            match key {
                "node" => {
                    pod.spec.get_or_insert_with(Default::default).node_name = Some(value.into())
                }
                "phase" => status.phase = Some(value.into()),
                "ready" => {
                    status.conditions = Some(vec![PodCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        last_transition_time: Some(Time(at(second()))),
                        ..PodCondition::default()
                    }])
                }
                "created" => pod.metadata.creation_timestamp = Some(Time(at(second()))),
                "restarts" => {
                    status.container_statuses = Some(vec![ContainerStatus {
                        restart_count: value.parse().expect("a number"),
                        ..ContainerStatus::default()
                    }])
                }
                "cost" => {
                    pod.metadata
                        .annotations
                        .get_or_insert_with(Default::default)
                        .insert(DELETION_COST.into(), value.into());
                }
                "owner" => {
                    pod.metadata.owner_references = Some(vec![OwnerReference {
                        api_version: "apps/v1".into(),
                        kind: "ReplicaSet".into(),
                        name: value.into(),
                        uid: value.into(),
                        controller: Some(true),
                        block_owner_deletion: Some(true),
                    }])
                }
                "deleting" => pod.metadata.deletion_timestamp = Some(Time(at(second()))),
                label => {
                    pod.metadata
                        .labels
                        .get_or_insert_with(Default::default)
                        .insert(label.into(), value.into());
                }
            }
        }
        Arc::new(pod)
    }

    fn replica_set(replicas: i32, min_ready: i32) -> ReplicaSet {
        let labels = BTreeMap::from([("app".to_string(), "web".to_string())]);
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("rs".into()),
                generation: Some(3),
                ..ObjectMeta::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                min_ready_seconds: Some(min_ready),
                selector: LabelSelector {
                    match_labels: Some(labels.clone()),
                    ..LabelSelector::default()
                },
                template: Some(PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels),
                        ..ObjectMeta::default()
                    }),
                    spec: Some(PodSpec::default()),
                }),
            }),
            status: None,
        }
    }

    fn names(pods: &[Arc<Pod>]) -> Vec<String> {
        pods.iter().map(|p| p.name_any()).collect()
    }

    fn check_deletion_order(pods: &[&str], related: &[&str], expect: &[&str]) {
        let pods: Vec<_> = pods.iter().map(|p| pod(p)).collect();
        let related: Vec<_> = related.iter().map(|p| pod(p)).collect();
        let chosen = pods_to_delete(&pods, &related, expect.len());
        assert_eq!(names(&chosen), expect, "deleting from {:?}", names(&pods));
    }

    #[test]
    fn deletion_prefers_upstream_ranking() {
        // Unscheduled before scheduled.
        check_deletion_order(
            &["a node=n1 phase=Running ready=1", "b phase=Running ready=1"],
            &[],
            &["b"],
        );
        // Pending before Unknown before Running.
        check_deletion_order(
            &[
                "run node=n phase=Running",
                "unk node=n phase=Unknown",
                "pend node=n phase=Pending",
            ],
            &[],
            &["pend", "unk"],
        );
        // Not ready before ready.
        check_deletion_order(
            &["r node=n phase=Running ready=5", "nr node=n phase=Running"],
            &[],
            &["nr"],
        );
        // Lower deletion cost first.
        check_deletion_order(
            &[
                "hi node=n phase=Running ready=5 cost=10",
                "lo node=n phase=Running ready=5 cost=-1",
            ],
            &[],
            &["lo"],
        );
        // More pods of the family on the same node first.
        check_deletion_order(
            &[
                "alone node=n1 phase=Running ready=5",
                "crowded node=n2 phase=Running ready=5",
            ],
            &[
                "x node=n2 phase=Running",
                "y node=n2 phase=Running",
                "z node=n1 phase=Running",
            ],
            &["crowded"],
        );
        // Ready more recently first.
        check_deletion_order(
            &[
                "old node=n phase=Running ready=10",
                "new node=n phase=Running ready=20",
            ],
            &[],
            &["new"],
        );
        // More restarts first.
        check_deletion_order(
            &[
                "calm node=n phase=Running ready=10 restarts=0",
                "flaky node=n phase=Running ready=10 restarts=4",
            ],
            &[],
            &["flaky"],
        );
        // Created more recently first, missing creation time before any.
        check_deletion_order(
            &[
                "first node=n created=1",
                "second node=n created=2",
                "unknown node=n",
            ],
            &[],
            &["unknown", "second"],
        );
    }

    fn check_plan(replicas: i32, owned: &[&str], expect: ReplicaPlanText) {
        let rs = replica_set(replicas, 0);
        let owned: Vec<_> = owned.iter().map(|p| pod(p)).collect();
        let got = match plan_replicas(&rs, &owned, &[]) {
            ReplicaPlan::Steady => ReplicaPlanText::Steady,
            ReplicaPlan::Create(n) => ReplicaPlanText::Create(n),
            ReplicaPlan::Delete(pods) => ReplicaPlanText::Delete(names(&pods)),
        };
        assert_eq!(got, expect, "{replicas} replicas over {owned:?}");
    }

    #[derive(Debug, PartialEq)]
    enum ReplicaPlanText {
        Steady,
        Create(usize),
        Delete(Vec<String>),
    }

    #[test]
    fn plan_creates_and_deletes_the_difference() {
        check_plan(2, &["a", "b"], ReplicaPlanText::Steady);
        check_plan(3, &["a"], ReplicaPlanText::Create(2));
        check_plan(0, &[], ReplicaPlanText::Steady);
        check_plan(
            1,
            &[
                "a node=n phase=Running ready=1",
                "b node=n phase=Pending",
                "c phase=Pending",
            ],
            ReplicaPlanText::Delete(vec!["c".into(), "b".into()]),
        );
        check_plan(900, &[], ReplicaPlanText::Create(BURST_REPLICAS));
    }

    fn check_claims(rs_deleting: bool, pods: &[&str], expect: (&[&str], &[&str], &[&str])) {
        let mut rs = replica_set(1, 0);
        if rs_deleting {
            rs.metadata.deletion_timestamp = Some(Time(at(0)));
        }
        let selector =
            Selector::parse(&rs.spec.as_ref().expect("spec").selector).expect("selector");
        let pods: Vec<_> = pods.iter().map(|p| pod(p)).collect();
        let claims = claim_pods(&rs, &selector, &pods);
        let got = (
            names(&claims.owned),
            names(&claims.adopt),
            names(&claims.release),
        );
        let want = (
            expect.0.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            expect.1.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            expect.2.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        );
        assert_eq!(got, want);
    }

    #[test]
    fn claims_adopt_orphans_and_release_strays() {
        check_claims(
            false,
            &[
                "mine app=web owner=rs",
                "orphan app=web",
                "stray app=db owner=rs",
                "other app=web owner=x",
                "db app=db",
            ],
            (&["mine"], &["orphan"], &["stray"]),
        );
        // A ReplicaSet being deleted keeps what it has but adopts and releases nothing.
        check_claims(
            true,
            &[
                "mine app=web owner=rs",
                "orphan app=web",
                "stray app=db owner=rs",
            ],
            (&["mine"], &[], &[]),
        );
        // An orphan being deleted is not adopted.
        check_claims(false, &["going app=web deleting=1"], (&[], &[], &[]));
    }

    fn check_status(
        min_ready: i32,
        now: i64,
        owned: &[&str],
        error: Option<&str>,
        expect: (i32, i32, i32, i32, Option<&str>),
    ) {
        let rs = replica_set(3, min_ready);
        let owned: Vec<_> = owned.iter().map(|p| pod(p)).collect();
        let status = calculate_status(&rs, &owned, error, at(now));
        let failure = status
            .conditions
            .as_deref()
            .and_then(|c| c.iter().find(|c| c.type_ == "ReplicaFailure"))
            .and_then(|c| c.reason.as_deref());
        let got = (
            status.replicas,
            status.fully_labeled_replicas.unwrap_or(0),
            status.ready_replicas.unwrap_or(0),
            status.available_replicas.unwrap_or(0),
            failure,
        );
        assert_eq!(got, expect);
        assert_eq!(status.observed_generation, Some(3));
    }

    #[test]
    fn status_counts_ready_and_available_pods() {
        check_status(
            0,
            100,
            &["a app=web ready=1", "b app=web", "c"],
            None,
            (3, 2, 1, 1, None),
        );
        // Available only after minReadySeconds of readiness (strictly more).
        check_status(
            10,
            100,
            &[
                "a app=web ready=80",
                "b app=web ready=90",
                "c app=web ready=95",
            ],
            None,
            (3, 3, 3, 1, None),
        );
        check_status(
            0,
            100,
            &["a app=web"],
            Some("quota exceeded"),
            (1, 1, 0, 0, Some("FailedCreate")),
        );
    }

    #[test]
    fn status_is_unchanged_when_only_absent_zeros_differ() {
        let rs = replica_set(0, 0);
        let status = calculate_status(&rs, &[], None, at(0));
        let stored = ReplicaSetStatus {
            replicas: 0,
            observed_generation: Some(3),
            ..ReplicaSetStatus::default()
        };
        assert!(!status_changed(Some(&stored), &status));
        assert!(status_changed(None, &status), "observedGeneration is new");
    }

    #[test]
    fn availability_is_rechecked_when_the_next_pod_gets_there() {
        let rs = replica_set(2, 10);
        let owned = [pod("a app=web ready=95"), pod("b app=web ready=98")];
        assert_eq!(
            next_availability_check(&rs, &owned, at(100)),
            Some(Duration::from_secs(6))
        );
        assert_eq!(
            next_availability_check(&replica_set(2, 0), &owned, at(100)),
            None
        );
    }

    #[test]
    fn pods_come_from_the_template_with_a_controller_ref() {
        let pod = pod_from_template(&replica_set(1, 0)).expect("pod");
        assert_eq!(pod.metadata.generate_name.as_deref(), Some("web-"));
        assert_eq!(pod.metadata.name, None);
        let owner = &pod.metadata.owner_references.expect("owner")[0];
        assert_eq!(
            (
                owner.kind.as_str(),
                owner.api_version.as_str(),
                owner.uid.as_str()
            ),
            ("ReplicaSet", "apps/v1", "rs")
        );
        assert_eq!(
            (owner.controller, owner.block_owner_deletion),
            (Some(true), Some(true))
        );
    }

    #[tokio::test]
    async fn slow_start_stops_after_a_failing_batch() {
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let (ok, err) = slow_start_batch(10, || {
            let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                if n == 4 {
                    Err(kube::Error::LinesCodecMaxLineLengthExceeded)
                } else {
                    Ok(())
                }
            }
        })
        .await;
        // Batches of 1, 2 and 4: the fifth call fails, so the batch of 4 ends the run.
        assert_eq!((ok, err.is_some(), calls.into_inner()), (6, true, 7));
    }
}
