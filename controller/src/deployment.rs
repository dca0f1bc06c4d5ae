//! The Deployment controller, as kube-controller-manager's `deployment` controller: it
//! owns one ReplicaSet per pod template, named `<deployment>-<pod-template-hash>`, and
//! moves replicas from the old ones to the new one with the RollingUpdate (`maxSurge`,
//! `maxUnavailable`) or Recreate strategy. It numbers revisions
//! (`deployment.kubernetes.io/revision`, reusing an old ReplicaSet when the template
//! returns to it, as after `kubectl rollout undo`), scales proportionally when replicas
//! change mid-rollout, keeps `revisionHistoryLimit` old ReplicaSets, honours `paused`,
//! `minReadySeconds` and `progressDeadlineSeconds`, and reports the status fields and
//! `Progressing`/`Available` conditions `kubectl rollout status` reads.
//!
//! [`sync_deployment`] is upstream's `syncDeployment` as a pure function: it plays the
//! sync against an in-memory copy of the Deployment and its ReplicaSets and returns the
//! writes it made, in order ([`Plan`]); [`run`] feeds it from reflector stores through
//! kube-rs's `applier` and performs the writes. Every ReplicaSet write carries the
//! resourceVersion it was decided on, so a decision taken on a stale cache fails with a
//! conflict and is retried instead of being applied.
//!
//! The pod-template-hash is FNV-32a over a canonical JSON of the template (and the
//! collision count), encoded with upstream's safe alphabet: the same shape of value as
//! upstream's, not the same digits. The deprecated `rollbackTo` annotation is not
//! supported; `kubectl rollout undo` patches the template client-side instead.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{stream, StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Config};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::{applier, WatchStreamExt};
use kube::{Client, ResourceExt};
use serde_json::{json, Value};
use tracing::{debug, info, instrument};

use crate::replicaset::{
    adopt_patch, controlled_by, controller_of, controller_ref, is_not_found, is_pod_terminal,
    key_of, now, release_patch, spec_replicas, Retries, Selector,
};
use crate::runtime::{lock, report};

/// The revision of a ReplicaSet (and, copied, of its Deployment).
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// Earlier revisions a reused ReplicaSet served.
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// `spec.replicas` of the Deployment when it last sized the ReplicaSet.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// `spec.replicas + maxSurge` of the Deployment when it last sized the ReplicaSet.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
/// The label that tells the ReplicaSets of one Deployment apart.
pub const HASH_LABEL: &str = "pod-template-hash";
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
const ROLLBACK_TO: &str = "deprecated.deployment.rollback.to";
/// Annotations a Deployment does not copy to its ReplicaSets.
const NOT_COPIED: &[&str] = &[
    LAST_APPLIED,
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    ROLLBACK_TO,
];
/// Upstream keeps the revision history annotation under this many characters.
const MAX_REVISION_HISTORY_CHARS: usize = 2000;
/// rand.SafeEncodeString's alphabet: no vowels, no look-alike digits.
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

const PROGRESSING: &str = "Progressing";
const AVAILABLE: &str = "Available";
const REPLICA_FAILURE: &str = "ReplicaFailure";
const RS_UPDATED: &str = "ReplicaSetUpdated";
const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
const TIMED_OUT: &str = "ProgressDeadlineExceeded";
const PAUSED: &str = "DeploymentPaused";
const RESUMED: &str = "DeploymentResumed";
const MIN_AVAILABLE: &str = "MinimumReplicasAvailable";
const MIN_UNAVAILABLE: &str = "MinimumReplicasUnavailable";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes api: {0}")]
    Kube(#[from] kube::Error),
    #[error("invalid selector of {object}: {reason}")]
    Selector { object: String, reason: String },
    #[error("invalid strategy of {object}: {reason}")]
    Strategy { object: String, reason: String },
    #[error("{0} has no spec")]
    NoSpec(String),
    #[error("{0} has no namespace")]
    NoNamespace(String),
    #[error("encoding the pod template: {0}")]
    Encode(#[from] serde_json::Error),
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
// The pod-template-hash.

/// The template's JSON with object keys sorted and nulls, empty lists and empty objects
/// left out, so that `labels: {}` and no labels hash (and compare) alike.
fn canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().filter(|(_, v)| !is_empty(v)).collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                canonical(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(v, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(items) => items.is_empty(),
        Value::Object(map) => map.values().all(is_empty),
        _ => false,
    }
}

fn canonical_template(
    template: &PodTemplateSpec,
    without_hash: bool,
) -> Result<String, serde_json::Error> {
    let mut value = serde_json::to_value(template)?;
    if without_hash {
        if let Some(labels) = value
            .pointer_mut("/metadata/labels")
            .and_then(Value::as_object_mut)
        {
            labels.remove(HASH_LABEL);
        }
    }
    let mut out = String::new();
    canonical(&value, &mut out);
    Ok(out)
}

/// Upstream's `rand.SafeEncodeString`: each byte mapped into the safe alphabet.
pub fn safe_encode(text: &str) -> String {
    text.bytes()
        .map(|b| char::from(SAFE_ALPHABET[usize::from(b) % SAFE_ALPHABET.len()]))
        .collect()
}

/// The pod-template-hash of `template`: FNV-32a over its canonical JSON, then over the
/// collision count as 8 little-endian bytes when there is one, printed in decimal and
/// safe-encoded, like upstream's `ComputeHash`.
pub fn compute_hash(
    template: &PodTemplateSpec,
    collision_count: Option<i32>,
) -> Result<String, serde_json::Error> {
    let mut hash: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u32::from(*b);
            hash = hash.wrapping_mul(0x0100_0193);
        }
    };
    feed(canonical_template(template, false)?.as_bytes());
    if let Some(count) = collision_count {
        let mut bytes = [0u8; 8];
        bytes[..4].copy_from_slice(&count.to_le_bytes());
        feed(&bytes);
    }
    Ok(safe_encode(&hash.to_string()))
}

/// Whether two templates are the same but for their `pod-template-hash` label.
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    match (canonical_template(a, true), canonical_template(b, true)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------
// maxSurge and maxUnavailable.

/// An int, or a percentage of `total` rounded up or down (upstream's
/// `GetScaledValueFromIntOrPercent`).
pub fn int_or_percent(value: &IntOrString, total: i32, round_up: bool) -> Result<i32, String> {
    match value {
        IntOrString::Int(n) => Ok(*n),
        IntOrString::String(text) => {
            let Some(number) = text.strip_suffix('%') else {
                return Err(format!(
                    "invalid value for IntOrString {text:?}: string is not a percentage"
                ));
            };
            let percent: i32 = number
                .parse()
                .map_err(|e| format!("invalid value for IntOrString {text:?}: {e}"))?;
            let scaled = f64::from(percent) * f64::from(total) / 100.0;
            let rounded = if round_up {
                scaled.ceil()
            } else {
                scaled.floor()
            };
            Ok(rounded as i32)
        }
    }
}

/// `(maxSurge, maxUnavailable)` for `desired` replicas: surge rounds up, unavailable
/// rounds down, and when both come to zero unavailable becomes one (upstream's
/// `ResolveFenceposts`). Absent values are the API defaults, 25%.
pub fn resolve_fenceposts(
    max_surge: Option<&IntOrString>,
    max_unavailable: Option<&IntOrString>,
    desired: i32,
) -> Result<(i32, i32), String> {
    let quarter = IntOrString::String("25%".into());
    let surge = int_or_percent(max_surge.unwrap_or(&quarter), desired, true)?;
    let unavailable = int_or_percent(max_unavailable.unwrap_or(&quarter), desired, false)?;
    Ok(if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    })
}

// ---------------------------------------------------------------------------------------
// ReplicaSet accessors and orderings.

fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

fn rs_status(rs: &ReplicaSet) -> (i32, i32, i32) {
    rs.status.as_ref().map_or((0, 0, 0), |s| {
        (
            s.replicas,
            s.ready_replicas.unwrap_or(0),
            s.available_replicas.unwrap_or(0),
        )
    })
}

fn actual_replicas(rs: &ReplicaSet) -> i32 {
    rs_status(rs).0
}

fn available_replicas(rs: &ReplicaSet) -> i32 {
    rs_status(rs).2
}

fn template_of(rs: &ReplicaSet) -> Option<&PodTemplateSpec> {
    rs.spec.as_ref()?.template.as_ref()
}

fn int_annotation(rs: &ReplicaSet, key: &str) -> Option<i32> {
    annotation(&rs.metadata, key)?.parse().ok()
}

/// The revision annotation: 0 when absent, an error when not a number.
fn revision(meta: &ObjectMeta) -> Result<i64, std::num::ParseIntError> {
    annotation(meta, REVISION).map_or(Ok(0), str::parse)
}

fn max_revision<'a>(rss: impl IntoIterator<Item = &'a ReplicaSet>) -> i64 {
    rss.into_iter()
        .filter_map(|rs| revision(&rs.metadata).ok())
        .max()
        .unwrap_or(0)
        .max(0)
}

fn created(rs: &ReplicaSet) -> Option<Timestamp> {
    rs.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

/// Oldest first, then by name (upstream's `ReplicaSetsByCreationTimestamp`).
fn by_creation(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    created(a)
        .cmp(&created(b))
        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
}

/// Largest first; among equals the oldest first.
fn by_size_older(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    spec_replicas(b)
        .cmp(&spec_replicas(a))
        .then_with(|| by_creation(a, b))
}

/// Largest first; among equals the newest first.
fn by_size_newer(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    spec_replicas(b)
        .cmp(&spec_replicas(a))
        .then_with(|| by_creation(b, a))
}

/// Lowest revision first; unparsable or equal revisions by creation.
fn by_revision(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    match (revision(&a.metadata), revision(&b.metadata)) {
        (Ok(ra), Ok(rb)) if ra != rb => ra.cmp(&rb),
        _ => by_creation(a, b),
    }
}

fn set_annotation(meta: &mut ObjectMeta, key: &str, value: String) {
    meta.annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(key.into(), value);
}

/// Records `desired` and `max` replicas on the ReplicaSet; true when that changed it.
fn set_replicas_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) -> bool {
    let mut updated = false;
    for (key, value) in [(DESIRED_REPLICAS, desired), (MAX_REPLICAS, max)] {
        if annotation(&rs.metadata, key) != Some(value.to_string().as_str()) {
            set_annotation(&mut rs.metadata, key, value.to_string());
            updated = true;
        }
    }
    updated
}

fn replicas_annotations_need_update(rs: &ReplicaSet, desired: i32, max: i32) -> bool {
    annotation(&rs.metadata, DESIRED_REPLICAS) != Some(desired.to_string().as_str())
        || annotation(&rs.metadata, MAX_REPLICAS) != Some(max.to_string().as_str())
}

// ---------------------------------------------------------------------------------------
// Conditions.

fn condition<'a>(
    status: Option<&'a DeploymentStatus>,
    type_: &str,
) -> Option<&'a DeploymentCondition> {
    status?
        .conditions
        .as_deref()?
        .iter()
        .find(|c| c.type_ == type_)
}

fn new_condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: Timestamp,
) -> DeploymentCondition {
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// Upstream's `SetDeploymentCondition`: nothing happens when a condition of that type
/// already has this status and reason; the transition time survives a reason change.
fn set_condition(status: &mut DeploymentStatus, mut cond: DeploymentCondition) {
    if let Some(current) = condition(Some(status), &cond.type_) {
        if current.status == cond.status && current.reason == cond.reason {
            return;
        }
        if current.status == cond.status {
            cond.last_transition_time = current.last_transition_time.clone();
        }
    }
    remove_condition(status, &cond.type_);
    status.conditions.get_or_insert_with(Vec::new).push(cond);
}

fn remove_condition(status: &mut DeploymentStatus, type_: &str) {
    if let Some(conditions) = status.conditions.as_mut() {
        conditions.retain(|c| c.type_ != type_);
        if conditions.is_empty() {
            status.conditions = None;
        }
    }
}

/// The status with absent counts as zero and no conditions as none, the way a Go
/// client sees it: two statuses that normalise alike are the same status.
fn normalized(status: Option<&DeploymentStatus>) -> DeploymentStatus {
    let mut s = status.cloned().unwrap_or_default();
    for field in [
        &mut s.replicas,
        &mut s.updated_replicas,
        &mut s.ready_replicas,
        &mut s.available_replicas,
        &mut s.unavailable_replicas,
    ] {
        field.get_or_insert(0);
    }
    s.observed_generation.get_or_insert(0);
    if s.conditions.as_ref().is_some_and(Vec::is_empty) {
        s.conditions = None;
    }
    s
}

fn count(status: &DeploymentStatus, field: fn(&DeploymentStatus) -> Option<i32>) -> i32 {
    field(status).unwrap_or(0)
}

// ---------------------------------------------------------------------------------------
// The sync, played in memory.

/// A write the sync made, in the order it made it.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// Add the Deployment as controller of this orphan ReplicaSet.
    AdoptReplicaSet {
        name: String,
        uid: Option<String>,
    },
    /// Drop the Deployment's ownerReference from a ReplicaSet that stopped matching.
    ReleaseReplicaSet {
        name: String,
        uid: Option<String>,
    },
    CreateReplicaSet(Box<ReplicaSet>),
    /// Replace the ReplicaSet (replicas, annotations, minReadySeconds).
    UpdateReplicaSet(Box<ReplicaSet>),
    /// Delete an old ReplicaSet beyond `revisionHistoryLimit`.
    DeleteReplicaSet {
        name: String,
    },
    /// Set the Deployment's revision annotation.
    SetRevision(String),
    /// Replace the Deployment's status.
    Status(Box<DeploymentStatus>),
}

/// What one sync of a Deployment decided.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub writes: Vec<Write>,
    /// Sync again after this long even if nothing changes (progress deadline checks).
    pub requeue_after: Option<Duration>,
}

/// The sync stopped early (a hash collision): what was decided so far is the plan.
struct Halt;

#[derive(Clone, Copy, PartialEq)]
enum Strategy {
    RollingUpdate,
    Recreate,
}

struct Sync<'a> {
    /// The Deployment as the sync mutates it (status, revision annotation).
    d: Deployment,
    stored_status: Option<DeploymentStatus>,
    in_namespace: &'a [Arc<ReplicaSet>],
    pods: &'a [Arc<Pod>],
    template: PodTemplateSpec,
    selector: Selector,
    strategy: Strategy,
    replicas: i32,
    max_surge: i32,
    max_unavailable: i32,
    now: Timestamp,
    /// The Deployment's ReplicaSets; indexes stay valid, new ones are appended.
    rss: Vec<ReplicaSet>,
    writes: Vec<Write>,
    requeue_after: Option<Duration>,
}

/// Upstream's `syncDeployment`, against `replica_sets` and `pods` of the Deployment's
/// namespace as the caches hold them at `now`.
pub fn sync_deployment(
    d: &Deployment,
    replica_sets: &[Arc<ReplicaSet>],
    pods: &[Arc<Pod>],
    now: Timestamp,
) -> Result<Plan> {
    let key = key_of(&d.metadata);
    let spec = d.spec.as_ref().ok_or_else(|| Error::NoSpec(key.clone()))?;
    let selector = Selector::parse(&spec.selector).map_err(|reason| Error::Selector {
        object: key.clone(),
        reason,
    })?;
    let strategy_error = |reason: String| Error::Strategy {
        object: key.clone(),
        reason,
    };
    let strategy = match spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) {
        None | Some("RollingUpdate") => Strategy::RollingUpdate,
        Some("Recreate") => Strategy::Recreate,
        Some(other) => {
            return Err(strategy_error(format!(
                "unexpected deployment strategy type: {other}"
            )))
        }
    };
    let replicas = spec.replicas.unwrap_or(1);
    let (max_surge, max_unavailable) = match strategy {
        Strategy::Recreate => (0, 0),
        Strategy::RollingUpdate => {
            let rolling = spec
                .strategy
                .as_ref()
                .and_then(|s| s.rolling_update.as_ref());
            let (surge, unavailable) = resolve_fenceposts(
                rolling.and_then(|r| r.max_surge.as_ref()),
                rolling.and_then(|r| r.max_unavailable.as_ref()),
                replicas,
            )
            .map_err(strategy_error)?;
            (
                surge,
                if replicas == 0 {
                    0
                } else {
                    unavailable.min(replicas)
                },
            )
        }
    };
    let mut sync = Sync {
        d: d.clone(),
        stored_status: d.status.clone(),
        in_namespace: replica_sets,
        pods,
        template: spec.template.clone(),
        selector,
        strategy,
        replicas,
        max_surge,
        max_unavailable,
        now,
        rss: Vec::new(),
        writes: Vec::new(),
        requeue_after: None,
    };
    // A halt is a decision like any other: its writes are the plan.
    let _ = sync.run();
    Ok(sync.finish())
}

impl Sync<'_> {
    fn finish(mut self) -> Plan {
        if normalized(self.d.status.as_ref()) != normalized(self.stored_status.as_ref()) {
            let status = self.d.status.take().unwrap_or_default();
            self.writes.push(Write::Status(Box::new(status)));
        }
        Plan {
            writes: self.writes,
            requeue_after: self.requeue_after,
        }
    }

    fn status(&self) -> Option<&DeploymentStatus> {
        self.d.status.as_ref()
    }

    fn status_mut(&mut self) -> &mut DeploymentStatus {
        self.d.status.get_or_insert_with(DeploymentStatus::default)
    }

    fn spec_field<T>(
        &self,
        field: impl Fn(&k8s_openapi::api::apps::v1::DeploymentSpec) -> Option<T>,
    ) -> Option<T> {
        self.d.spec.as_ref().and_then(field)
    }

    fn has_progress_deadline(&self) -> bool {
        self.spec_field(|s| s.progress_deadline_seconds)
            .is_some_and(|s| s != i32::MAX)
    }

    fn paused(&self) -> bool {
        self.spec_field(|s| s.paused).unwrap_or(false)
    }

    fn min_ready_seconds(&self) -> i32 {
        self.spec_field(|s| s.min_ready_seconds).unwrap_or(0)
    }

    fn generation(&self) -> i64 {
        self.d.metadata.generation.unwrap_or(0)
    }

    fn run(&mut self) -> Result<(), Halt> {
        if self.selector.selects_everything() {
            // Upstream refuses to manage everything in the namespace; it only records that
            // it saw this generation.
            let generation = self.generation();
            if self
                .status()
                .and_then(|s| s.observed_generation)
                .unwrap_or(0)
                < generation
            {
                self.status_mut().observed_generation = Some(generation);
            }
            return Ok(());
        }
        self.claim_replica_sets();
        if self.d.metadata.deletion_timestamp.is_some() {
            let (new, old) = self.get_all_replica_sets(false)?;
            let all = with_new(&old, new);
            self.sync_deployment_status(&all, new);
            return Ok(());
        }
        self.check_paused_conditions();
        if self.paused() || self.is_scaling_event()? {
            return self.sync_scaling();
        }
        match self.strategy {
            Strategy::Recreate => self.rollout_recreate(),
            Strategy::RollingUpdate => self.rollout_rolling(),
        }
    }

    /// Upstream's ControllerRefManager for ReplicaSets: adopt matching orphans, release
    /// owned ones that stopped matching, keep the rest of the owned ones.
    fn claim_replica_sets(&mut self) {
        let uid = self.d.metadata.uid.clone();
        let deleting = self.d.metadata.deletion_timestamp.is_some();
        for rs in self.in_namespace {
            let matches = self.selector.matches(rs.metadata.labels.as_ref());
            match controller_of(&rs.metadata) {
                Some(owner) if Some(&owner.uid) == uid.as_ref() => {
                    if matches {
                        self.rss.push((**rs).clone());
                    } else if !deleting {
                        self.writes.push(Write::ReleaseReplicaSet {
                            name: rs.name_any(),
                            uid: rs.metadata.uid.clone(),
                        });
                    }
                }
                Some(_) => {}
                None => {
                    if matches && !deleting && rs.metadata.deletion_timestamp.is_none() {
                        self.writes.push(Write::AdoptReplicaSet {
                            name: rs.name_any(),
                            uid: rs.metadata.uid.clone(),
                        });
                        let mut adopted = (**rs).clone();
                        adopted
                            .metadata
                            .owner_references
                            .get_or_insert_with(Vec::new)
                            .push(controller_ref(&self.d));
                        self.rss.push(adopted);
                    }
                }
            }
        }
    }

    fn check_paused_conditions(&mut self) {
        if !self.has_progress_deadline() {
            return;
        }
        let reason = condition(self.status(), PROGRESSING).and_then(|c| c.reason.clone());
        if reason.as_deref() == Some(TIMED_OUT) {
            return;
        }
        let paused_condition = reason.as_deref() == Some(PAUSED);
        let now = self.now;
        if self.paused() && !paused_condition {
            let cond = new_condition(
                PROGRESSING,
                "Unknown",
                PAUSED,
                "Deployment is paused".into(),
                now,
            );
            set_condition(self.status_mut(), cond);
        } else if !self.paused() && paused_condition {
            let cond = new_condition(
                PROGRESSING,
                "Unknown",
                RESUMED,
                "Deployment is resumed".into(),
                now,
            );
            set_condition(self.status_mut(), cond);
        }
    }

    /// Whether the active ReplicaSets were sized for another `spec.replicas`.
    fn is_scaling_event(&mut self) -> Result<bool, Halt> {
        let (new, old) = self.get_all_replica_sets(false)?;
        Ok(with_new(&old, new).into_iter().any(|i| {
            let rs = &self.rss[i];
            spec_replicas(rs) > 0
                && int_annotation(rs, DESIRED_REPLICAS)
                    .is_some_and(|desired| desired != self.replicas)
        }))
    }

    // -- Finding the new ReplicaSet and numbering revisions -----------------------------

    fn by(
        &self,
        order: fn(&ReplicaSet, &ReplicaSet) -> Ordering,
    ) -> impl Fn(&usize, &usize) -> Ordering + '_ {
        move |a, b| order(&self.rss[*a], &self.rss[*b])
    }

    /// The oldest ReplicaSet whose template is the Deployment's, and the others oldest
    /// first.
    fn find_new_and_old(&self) -> (Option<usize>, Vec<usize>) {
        let mut all: Vec<usize> = (0..self.rss.len()).collect();
        all.sort_by(self.by(by_creation));
        let new = all.iter().copied().find(|&i| {
            template_of(&self.rss[i]).is_some_and(|t| equal_ignore_hash(t, &self.template))
        });
        (new, all.into_iter().filter(|&i| Some(i) != new).collect())
    }

    /// Upstream's `getAllReplicaSetsAndSyncRevision`: the new ReplicaSet (created when
    /// asked and missing) with its revision raised above every old one's, and the old
    /// ReplicaSets.
    fn get_all_replica_sets(&mut self, create: bool) -> Result<(Option<usize>, Vec<usize>), Halt> {
        let (new, old) = self.find_new_and_old();
        let new_revision = max_revision(old.iter().map(|&i| &self.rss[i])) + 1;
        if let Some(n) = new {
            let mut copy = self.rss[n].clone();
            let annotations_updated =
                set_new_rs_annotations(&self.d, &mut copy, new_revision, None);
            let min_ready = self.min_ready_seconds();
            let spec = copy.spec.get_or_insert_with(ReplicaSetSpec::default);
            let min_ready_updated = spec.min_ready_seconds.unwrap_or(0) != min_ready;
            if annotations_updated || min_ready_updated {
                spec.min_ready_seconds = Some(min_ready);
                self.update_replica_set(n, copy);
                return Ok((Some(n), old));
            }
            let revision = annotation(&copy.metadata, REVISION)
                .unwrap_or_default()
                .to_string();
            self.set_deployment_revision(revision);
            if self.has_progress_deadline() && condition(self.status(), PROGRESSING).is_none() {
                let message = format!("Found new replica set {:?}", copy.name_any());
                let cond = new_condition(PROGRESSING, "True", FOUND_NEW_RS, message, self.now);
                set_condition(self.status_mut(), cond);
            }
            return Ok((Some(n), old));
        }
        if !create {
            return Ok((None, old));
        }

        let collision_count = self.status().and_then(|s| s.collision_count);
        let Ok(hash) = compute_hash(&self.template, collision_count) else {
            return Err(Halt);
        };
        let mut template = self.template.clone();
        let labels = template
            .metadata
            .get_or_insert_with(ObjectMeta::default)
            .labels
            .get_or_insert_with(BTreeMap::new);
        labels.insert(HASH_LABEL.into(), hash.clone());
        let labels = labels.clone();
        let mut selector = self
            .d
            .spec
            .as_ref()
            .map(|s| s.selector.clone())
            .unwrap_or_default();
        selector
            .match_labels
            .get_or_insert_with(BTreeMap::new)
            .insert(HASH_LABEL.into(), hash.clone());
        let name = format!("{}-{hash}", self.d.name_any());
        let mut rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: self.d.namespace(),
                owner_references: Some(vec![controller_ref(&self.d)]),
                labels: Some(labels),
                creation_timestamp: Some(Time(self.now)),
                ..ObjectMeta::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: Some(self.min_ready_seconds()),
                selector,
                template: Some(template),
            }),
            status: None,
        };
        let all: Vec<&ReplicaSet> = old.iter().map(|&i| &self.rss[i]).chain([&rs]).collect();
        let replicas = self.new_rs_new_replicas(&all, &rs);
        if let Some(spec) = rs.spec.as_mut() {
            spec.replicas = Some(replicas);
        }
        set_new_rs_annotations(
            &self.d,
            &mut rs,
            new_revision,
            Some((self.replicas, self.replicas + self.max_surge)),
        );

        if self
            .in_namespace
            .iter()
            .any(|other| other.metadata.name.as_deref() == Some(name.as_str()))
        {
            // Another template already has this name: bump the collision count so the
            // next sync hashes to a different one.
            let status = self.status_mut();
            status.collision_count = Some(collision_count.unwrap_or(0).saturating_add(1));
            self.requeue_after = Some(Duration::from_millis(100));
            return Err(Halt);
        }
        self.writes
            .push(Write::CreateReplicaSet(Box::new(rs.clone())));
        self.rss.push(rs);
        let new = self.rss.len() - 1;
        self.set_deployment_revision(new_revision.to_string());
        if self.has_progress_deadline() {
            let message = format!("Created new replica set {name:?}");
            let cond = new_condition(PROGRESSING, "True", NEW_RS_CREATED, message, self.now);
            set_condition(self.status_mut(), cond);
        }
        Ok((Some(new), old))
    }

    fn set_deployment_revision(&mut self, revision: String) {
        if annotation(&self.d.metadata, REVISION) != Some(revision.as_str()) {
            set_annotation(&mut self.d.metadata, REVISION, revision.clone());
            self.writes.push(Write::SetRevision(revision));
        }
    }

    // -- Sizing ---------------------------------------------------------------------------

    /// Upstream's `NewRSNewReplicas`: how far the new ReplicaSet may grow now. A
    /// ReplicaSet still running more pods than its spec asks counts with those pods, so
    /// the pods of a shrinking old ReplicaSet leave before new ones come (upstream counts
    /// spec only and may briefly run more than `replicas + maxSurge` pods).
    fn new_rs_new_replicas(&self, all: &[&ReplicaSet], new: &ReplicaSet) -> i32 {
        match self.strategy {
            Strategy::Recreate => self.replicas,
            Strategy::RollingUpdate => {
                let current: i32 = all
                    .iter()
                    .map(|rs| spec_replicas(rs).max(actual_replicas(rs)))
                    .sum();
                let max_total = self.replicas + self.max_surge;
                if current >= max_total {
                    return spec_replicas(new);
                }
                let scale_up = (max_total - current).min(self.replicas - spec_replicas(new));
                spec_replicas(new) + scale_up
            }
        }
    }

    fn update_replica_set(&mut self, i: usize, rs: ReplicaSet) {
        self.writes
            .push(Write::UpdateReplicaSet(Box::new(rs.clone())));
        self.rss[i] = rs;
    }

    /// Upstream's `scaleReplicaSetAndRecordEvent`: true when the size changed.
    fn scale_and_record(&mut self, i: usize, new_scale: i32) -> bool {
        spec_replicas(&self.rss[i]) != new_scale && self.scale_replica_set(i, new_scale)
    }

    /// Upstream's `scaleReplicaSet`: writes the size and the replicas annotations when
    /// either is out of date; true when the size changed.
    fn scale_replica_set(&mut self, i: usize, new_scale: i32) -> bool {
        let rs = &self.rss[i];
        let max = self.replicas + self.max_surge;
        let size_changed = spec_replicas(rs) != new_scale;
        if !size_changed && !replicas_annotations_need_update(rs, self.replicas, max) {
            return false;
        }
        let mut copy = rs.clone();
        copy.spec
            .get_or_insert_with(ReplicaSetSpec::default)
            .replicas = Some(new_scale);
        set_replicas_annotations(&mut copy, self.replicas, max);
        self.update_replica_set(i, copy);
        size_changed
    }

    fn active(&self, rss: &[usize]) -> Vec<usize> {
        rss.iter()
            .copied()
            .filter(|&i| spec_replicas(&self.rss[i]) > 0)
            .collect()
    }

    fn sum(&self, rss: &[usize], field: fn(&ReplicaSet) -> i32) -> i32 {
        rss.iter().map(|&i| field(&self.rss[i])).sum()
    }

    // -- Scaling without a rollout (paused, or replicas changed) --------------------------

    fn sync_scaling(&mut self) -> Result<(), Halt> {
        let (new, old) = self.get_all_replica_sets(false)?;
        self.scale(new, &old);
        if self.paused() {
            self.cleanup(&old);
        }
        let all = with_new(&old, new);
        self.sync_deployment_status(&all, new);
        Ok(())
    }

    /// Upstream's `scale`: one active ReplicaSet takes the whole size; a saturated new
    /// one empties the old ones; otherwise a rolling Deployment spreads the change over
    /// the active ReplicaSets in proportion to their size.
    fn scale(&mut self, new: Option<usize>, old: &[usize]) {
        if let Some(i) = self.find_active_or_latest(new, old) {
            if spec_replicas(&self.rss[i]) != self.replicas {
                self.scale_and_record(i, self.replicas);
            }
            return;
        }
        if new.is_some_and(|n| self.is_saturated(n)) {
            for i in self.active(old) {
                self.scale_and_record(i, 0);
            }
            return;
        }
        if self.strategy != Strategy::RollingUpdate {
            return;
        }
        let mut all = self.active(&with_new(old, new));
        let all_replicas = self.sum(&all, spec_replicas);
        let allowed = if self.replicas > 0 {
            self.replicas + self.max_surge
        } else {
            0
        };
        let to_add = allowed - all_replicas;
        match to_add.cmp(&0) {
            Ordering::Greater => all.sort_by(self.by(by_size_newer)),
            Ordering::Less => all.sort_by(self.by(by_size_older)),
            Ordering::Equal => {}
        }
        let mut added = 0;
        let mut sizes = Vec::with_capacity(all.len());
        for &i in &all {
            let size = spec_replicas(&self.rss[i]);
            if to_add == 0 {
                sizes.push(size);
            } else {
                let proportion = self.proportion(&self.rss[i], to_add, added);
                sizes.push(size + proportion);
                added += proportion;
            }
        }
        for (k, &i) in all.iter().enumerate() {
            let mut size = sizes[k];
            if k == 0 && to_add != 0 {
                size = (size + to_add - added).max(0);
            }
            self.scale_replica_set(i, size);
        }
    }

    fn find_active_or_latest(&self, new: Option<usize>, old: &[usize]) -> Option<usize> {
        if new.is_none() && old.is_empty() {
            return None;
        }
        let mut old = old.to_vec();
        old.sort_by(|a, b| by_creation(&self.rss[*b], &self.rss[*a]));
        let active = self.active(&with_new(&old, new));
        match active.len() {
            0 => new.or_else(|| old.first().copied()),
            1 => Some(active[0]),
            _ => None,
        }
    }

    /// The new ReplicaSet owns all replicas, was sized for them and has them available.
    fn is_saturated(&self, n: usize) -> bool {
        let rs = &self.rss[n];
        int_annotation(rs, DESIRED_REPLICAS).is_some_and(|desired| desired == self.replicas)
            && spec_replicas(rs) == self.replicas
            && available_replicas(rs) == self.replicas
    }

    /// Upstream's `GetProportion`: this ReplicaSet's share of `to_add`, bounded by what
    /// is left to add (or remove).
    fn proportion(&self, rs: &ReplicaSet, to_add: i32, added: i32) -> i32 {
        if spec_replicas(rs) == 0 || to_add == 0 || to_add == added {
            return 0;
        }
        let fraction = self.fraction(rs);
        let allowed = to_add - added;
        if to_add > 0 {
            fraction.min(allowed)
        } else {
            fraction.max(allowed)
        }
    }

    fn fraction(&self, rs: &ReplicaSet) -> i32 {
        let size = spec_replicas(rs);
        if self.replicas == 0 {
            return -size;
        }
        let deployment_replicas = self.replicas + self.max_surge;
        let annotated = int_annotation(rs, MAX_REPLICAS)
            .unwrap_or_else(|| count(&normalized(self.status()), |s| s.replicas));
        if annotated <= 0 {
            return 0;
        }
        let new_size = f64::from(size) * f64::from(deployment_replicas) / f64::from(annotated);
        new_size.round() as i32 - size
    }

    // -- Rolling update -------------------------------------------------------------------

    fn rollout_rolling(&mut self) -> Result<(), Halt> {
        let (new, old) = self.get_all_replica_sets(true)?;
        let Some(new) = new else {
            return Ok(());
        };
        let all = with_new(&old, Some(new));
        if self.reconcile_new_replica_set(&all, new) {
            self.sync_rollout_status(&all, Some(new));
            return Ok(());
        }
        let active_old = self.active(&old);
        if self.reconcile_old_replica_sets(&all, active_old, new) {
            self.sync_rollout_status(&all, Some(new));
            return Ok(());
        }
        if self.deployment_complete(&normalized(self.status())) {
            self.cleanup(&old);
        }
        self.sync_rollout_status(&all, Some(new));
        Ok(())
    }

    fn reconcile_new_replica_set(&mut self, all: &[usize], new: usize) -> bool {
        let size = spec_replicas(&self.rss[new]);
        if size == self.replicas {
            return false;
        }
        if size > self.replicas {
            return self.scale_and_record(new, self.replicas);
        }
        let all: Vec<&ReplicaSet> = all.iter().map(|&i| &self.rss[i]).collect();
        let count = self.new_rs_new_replicas(&all, &self.rss[new]);
        self.scale_and_record(new, count)
    }

    fn reconcile_old_replica_sets(&mut self, all: &[usize], old: Vec<usize>, new: usize) -> bool {
        if self.sum(&old, spec_replicas) == 0 {
            return false;
        }
        let all_pods = self.sum(all, spec_replicas);
        let min_available = self.replicas - self.max_unavailable;
        let new_rs = &self.rss[new];
        let new_unavailable = spec_replicas(new_rs) - available_replicas(new_rs);
        let max_scaled_down = all_pods - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return false;
        }
        let Some((old, cleaned)) = self.cleanup_unhealthy_replicas(old, max_scaled_down) else {
            return false;
        };
        let all = with_new(&old, Some(new));
        let Some(scaled) = self.scale_down_old_replica_sets(&all, old) else {
            return false;
        };
        cleaned + scaled > 0
    }

    /// Upstream's `cleanupUnhealthyReplicas`: shrink old ReplicaSets by their unavailable
    /// pods first, oldest first, up to `max_cleanup`; `None` on an impossible request.
    fn cleanup_unhealthy_replicas(
        &mut self,
        mut old: Vec<usize>,
        max_cleanup: i32,
    ) -> Option<(Vec<usize>, i32)> {
        old.sort_by(self.by(by_creation));
        let mut total = 0;
        for &i in &old {
            if total >= max_cleanup {
                break;
            }
            let size = spec_replicas(&self.rss[i]);
            let available = available_replicas(&self.rss[i]);
            if size == 0 || size == available {
                continue;
            }
            let scaled_down = (max_cleanup - total).min(size - available);
            let new_size = size - scaled_down;
            if new_size > size {
                return None;
            }
            self.scale_and_record(i, new_size);
            total += scaled_down;
        }
        Some((old, total))
    }

    /// Upstream's `scaleDownOldReplicaSetsForRollingUpdate`: remove available old pods
    /// while more than `replicas - maxUnavailable` are available, oldest first.
    fn scale_down_old_replica_sets(&mut self, all: &[usize], mut old: Vec<usize>) -> Option<i32> {
        let min_available = self.replicas - self.max_unavailable;
        let available = self.sum(all, available_replicas);
        if available <= min_available {
            return Some(0);
        }
        old.sort_by(self.by(by_creation));
        let wanted = available - min_available;
        let mut total = 0;
        for i in old {
            if total >= wanted {
                break;
            }
            let size = spec_replicas(&self.rss[i]);
            if size == 0 {
                continue;
            }
            let scale_down = size.min(wanted - total);
            let new_size = size - scale_down;
            if new_size > size {
                return None;
            }
            self.scale_and_record(i, new_size);
            total += scale_down;
        }
        Some(total)
    }

    // -- Recreate -------------------------------------------------------------------------

    fn rollout_recreate(&mut self) -> Result<(), Halt> {
        let (mut new, mut old) = self.get_all_replica_sets(false)?;
        let mut all = with_new(&old, new);
        let mut scaled_down = false;
        for i in self.active(&old) {
            scaled_down |= self.scale_and_record(i, 0);
        }
        if scaled_down || self.old_pods_running(new, &old) {
            self.sync_rollout_status(&all, new);
            return Ok(());
        }
        if new.is_none() {
            (new, old) = self.get_all_replica_sets(true)?;
            all = with_new(&old, new);
        }
        if let Some(n) = new {
            self.scale_and_record(n, self.replicas);
        }
        if self.deployment_complete(&normalized(self.status())) {
            self.cleanup(&old);
        }
        self.sync_rollout_status(&all, new);
        Ok(())
    }

    /// Whether an old ReplicaSet reports pods, or a pod of one still exists and has not
    /// finished.
    fn old_pods_running(&self, new: Option<usize>, old: &[usize]) -> bool {
        if self.sum(old, actual_replicas) > 0 {
            return true;
        }
        let new_uid = new.and_then(|n| self.rss[n].metadata.uid.as_deref());
        let old_uids: Vec<&str> = self
            .rss
            .iter()
            .filter_map(|rs| rs.metadata.uid.as_deref())
            .filter(|uid| Some(*uid) != new_uid)
            .collect();
        self.pods.iter().any(|pod| {
            self.selector.matches(pod.metadata.labels.as_ref())
                && old_uids
                    .iter()
                    .any(|uid| controlled_by(&pod.metadata, Some(uid)))
                && !is_pod_terminal(pod)
        })
    }

    // -- History --------------------------------------------------------------------------

    /// Upstream's `cleanupDeployment`: delete the oldest revisions beyond
    /// `revisionHistoryLimit`, skipping any that still has or wants pods.
    fn cleanup(&mut self, old: &[usize]) {
        let Some(limit) = self
            .spec_field(|s| s.revision_history_limit)
            .filter(|l| *l != i32::MAX)
        else {
            return;
        };
        let mut alive: Vec<usize> = old
            .iter()
            .copied()
            .filter(|&i| self.rss[i].metadata.deletion_timestamp.is_none())
            .collect();
        let excess = i64::try_from(alive.len()).unwrap_or(i64::MAX) - i64::from(limit);
        if excess <= 0 {
            return;
        }
        alive.sort_by(self.by(by_revision));
        for i in alive.into_iter().take(usize::try_from(excess).unwrap_or(0)) {
            let rs = &self.rss[i];
            let observed = rs
                .status
                .as_ref()
                .and_then(|s| s.observed_generation)
                .unwrap_or(0);
            if actual_replicas(rs) != 0
                || spec_replicas(rs) != 0
                || rs.metadata.generation.unwrap_or(0) > observed
            {
                continue;
            }
            self.writes.push(Write::DeleteReplicaSet {
                name: rs.name_any(),
            });
        }
    }

    // -- Status ---------------------------------------------------------------------------

    fn deployment_complete(&self, status: &DeploymentStatus) -> bool {
        let replicas = Some(self.replicas);
        status.updated_replicas == replicas
            && status.replicas == replicas
            && status.available_replicas == replicas
            && status.observed_generation.unwrap_or(0) >= self.generation()
    }

    /// Upstream's `calculateStatus`: counts from the ReplicaSets' statuses and the
    /// Available condition.
    fn calculate_status(&self, all: &[usize], new: Option<usize>) -> DeploymentStatus {
        let available = self.sum(all, available_replicas);
        let total = self.sum(all, spec_replicas);
        let current = self.status().cloned().unwrap_or_default();
        let mut status = DeploymentStatus {
            observed_generation: self.d.metadata.generation,
            replicas: Some(self.sum(all, actual_replicas)),
            updated_replicas: Some(new.map_or(0, |n| actual_replicas(&self.rss[n]))),
            ready_replicas: Some(self.sum(all, |rs| rs_status(rs).1)),
            available_replicas: Some(available),
            unavailable_replicas: Some((total - available).max(0)),
            collision_count: current.collision_count,
            conditions: current.conditions,
            terminating_replicas: None,
        };
        let cond = if available >= self.replicas - self.max_unavailable {
            new_condition(
                AVAILABLE,
                "True",
                MIN_AVAILABLE,
                "Deployment has minimum availability.".into(),
                self.now,
            )
        } else {
            new_condition(
                AVAILABLE,
                "False",
                MIN_UNAVAILABLE,
                "Deployment does not have minimum availability.".into(),
                self.now,
            )
        };
        set_condition(&mut status, cond);
        status
    }

    fn sync_deployment_status(&mut self, all: &[usize], new: Option<usize>) {
        let status = self.calculate_status(all, new);
        self.d.status = Some(status);
    }

    /// Upstream's `syncRolloutStatus`: the counts plus the Progressing condition, which
    /// records progress, completion or a missed deadline.
    fn sync_rollout_status(&mut self, all: &[usize], new: Option<usize>) {
        let mut status = self.calculate_status(all, new);
        if !self.has_progress_deadline() {
            remove_condition(&mut status, PROGRESSING);
        }
        let current = condition(self.status(), PROGRESSING).cloned();
        let complete_before = status.replicas == status.updated_replicas
            && current.as_ref().and_then(|c| c.reason.as_deref()) == Some(NEW_RS_AVAILABLE);
        let rs_name = new.map(|n| self.rss[n].name_any());
        let subject = match &rs_name {
            Some(name) => format!("ReplicaSet {name:?}"),
            None => format!("Deployment {:?}", self.d.name_any()),
        };
        if self.has_progress_deadline() && !complete_before {
            if self.deployment_complete(&status) {
                let message = format!("{subject} has successfully progressed.");
                set_condition(
                    &mut status,
                    new_condition(PROGRESSING, "True", NEW_RS_AVAILABLE, message, self.now),
                );
            } else if self.deployment_progressing(&status) {
                let message = format!("{subject} is progressing.");
                let mut cond = new_condition(PROGRESSING, "True", RS_UPDATED, message, self.now);
                if let Some(current) = &current {
                    if current.status == "True" {
                        cond.last_transition_time = current.last_transition_time.clone();
                    }
                    remove_condition(&mut status, PROGRESSING);
                }
                set_condition(&mut status, cond);
            } else if self.deployment_timed_out(&status) {
                let message = format!("{subject} has timed out progressing.");
                set_condition(
                    &mut status,
                    new_condition(PROGRESSING, "False", TIMED_OUT, message, self.now),
                );
            }
        }
        match self.replica_failure(all, new) {
            Some(failure) => set_condition(&mut status, failure),
            None => remove_condition(&mut status, REPLICA_FAILURE),
        }
        if normalized(Some(&status)) == normalized(self.status()) {
            self.requeue_stuck(&status);
        } else {
            self.d.status = Some(status);
        }
    }

    fn deployment_progressing(&self, status: &DeploymentStatus) -> bool {
        let old = normalized(self.status());
        let new = normalized(Some(status));
        let n = |s: &DeploymentStatus, f: fn(&DeploymentStatus) -> Option<i32>| count(s, f);
        let old_old = n(&old, |s| s.replicas) - n(&old, |s| s.updated_replicas);
        let new_old = n(&new, |s| s.replicas) - n(&new, |s| s.updated_replicas);
        n(&new, |s| s.updated_replicas) > n(&old, |s| s.updated_replicas)
            || new_old < old_old
            || n(&new, |s| s.ready_replicas) > n(&old, |s| s.ready_replicas)
            || n(&new, |s| s.available_replicas) > n(&old, |s| s.available_replicas)
    }

    fn deployment_timed_out(&self, status: &DeploymentStatus) -> bool {
        let Some(deadline) = self
            .spec_field(|s| s.progress_deadline_seconds)
            .filter(|s| *s != i32::MAX)
        else {
            return false;
        };
        let Some(cond) = condition(Some(status), PROGRESSING) else {
            return false;
        };
        match cond.reason.as_deref() {
            Some(NEW_RS_AVAILABLE) => false,
            Some(TIMED_OUT) => true,
            _ => cond
                .last_update_time
                .as_ref()
                .is_none_or(|t| t.0.as_second() + i64::from(deadline) < self.now.as_second()),
        }
    }

    /// Upstream's `requeueStuckDeployment`: a rollout that made no progress is looked at
    /// again when its deadline passes.
    fn requeue_stuck(&mut self, status: &DeploymentStatus) {
        let Some(deadline) = self
            .spec_field(|s| s.progress_deadline_seconds)
            .filter(|s| *s != i32::MAX)
        else {
            return;
        };
        let Some(current) = condition(self.status(), PROGRESSING) else {
            return;
        };
        if self.deployment_complete(status) || current.reason.as_deref() == Some(TIMED_OUT) {
            return;
        }
        let last = current
            .last_update_time
            .as_ref()
            .map_or(0, |t| t.0.as_second());
        let after = last + i64::from(deadline) - self.now.as_second();
        self.requeue_after = Some(if after < 1 {
            Duration::from_millis(100)
        } else {
            Duration::from_secs(u64::try_from(after).unwrap_or(0) + 1)
        });
    }

    /// The ReplicaFailure condition of the new ReplicaSet, else of any ReplicaSet.
    fn replica_failure(&self, all: &[usize], new: Option<usize>) -> Option<DeploymentCondition> {
        let failure = |i: usize| {
            self.rss[i]
                .status
                .as_ref()?
                .conditions
                .as_deref()?
                .iter()
                .find(|c| c.type_ == REPLICA_FAILURE)
                .map(|c| DeploymentCondition {
                    type_: c.type_.clone(),
                    status: c.status.clone(),
                    reason: c.reason.clone(),
                    message: c.message.clone(),
                    last_update_time: c.last_transition_time.clone(),
                    last_transition_time: c.last_transition_time.clone(),
                })
        };
        new.and_then(failure)
            .or_else(|| all.iter().copied().find_map(failure))
    }
}

/// The old ReplicaSets followed by the new one, if any.
fn with_new(old: &[usize], new: Option<usize>) -> Vec<usize> {
    old.iter().copied().chain(new).collect()
}

/// Upstream's `SetNewReplicaSetAnnotations`: copies the Deployment's annotations, raises
/// the revision to `new_revision` (remembering the one it replaces) and, for a
/// ReplicaSet about to be created, records `(desired, max)` replicas. True when the
/// annotations changed.
fn set_new_rs_annotations(
    d: &Deployment,
    rs: &mut ReplicaSet,
    new_revision: i64,
    replicas: Option<(i32, i32)>,
) -> bool {
    let mut changed = false;
    for (key, value) in d.metadata.annotations.iter().flatten() {
        if NOT_COPIED.contains(&key.as_str())
            || annotation(&rs.metadata, key) == Some(value.as_str())
        {
            continue;
        }
        set_annotation(&mut rs.metadata, key, value.clone());
        changed = true;
    }
    let old_revision = annotation(&rs.metadata, REVISION).map(str::to_string);
    let old_number = match old_revision.as_deref() {
        None | Some("") => 0,
        Some(text) => match text.parse::<i64>() {
            Ok(n) => n,
            Err(_) => return false,
        },
    };
    if old_number < new_revision {
        set_annotation(&mut rs.metadata, REVISION, new_revision.to_string());
        changed = true;
        if let Some(old_revision) = old_revision {
            let history = annotation(&rs.metadata, REVISION_HISTORY)
                .unwrap_or_default()
                .to_string();
            if history.is_empty() {
                set_annotation(&mut rs.metadata, REVISION_HISTORY, old_revision);
            } else {
                let entries: Vec<&str> = history.split(',').collect();
                let mut total = history.len() + old_revision.len() + 1;
                let mut start = 0;
                while total > MAX_REVISION_HISTORY_CHARS && start < entries.len() {
                    total -= entries[start].len() + 1;
                    start += 1;
                }
                if total <= MAX_REVISION_HISTORY_CHARS {
                    let mut kept: Vec<&str> = entries[start..].to_vec();
                    kept.push(&old_revision);
                    set_annotation(&mut rs.metadata, REVISION_HISTORY, kept.join(","));
                }
            }
        }
    }
    if let Some((desired, max)) = replicas {
        changed |= set_replicas_annotations(rs, desired, max);
    }
    changed
}

// ---------------------------------------------------------------------------------------
// The reconciler.

struct Context {
    client: Client,
    deployments: Store<Deployment>,
    rss: Store<ReplicaSet>,
    pods: Store<Pod>,
    /// The controlling Deployment each ReplicaSet had when last seen, to wake the
    /// previous owner when that changes.
    rs_owners: Mutex<HashMap<ObjectRef<ReplicaSet>, Option<ObjectRef<Deployment>>>>,
    retries: Retries,
}

impl Context {
    fn all_deployments(&self) -> Vec<ObjectRef<Deployment>> {
        self.deployments
            .state()
            .iter()
            .map(|d| ObjectRef::from_obj(&**d))
            .collect()
    }

    fn owning_deployment(rs: &ReplicaSet) -> Option<ObjectRef<Deployment>> {
        ObjectRef::from_owner_ref(rs.namespace().as_deref(), controller_of(&rs.metadata)?, ())
    }

    /// Deployments whose selector matches an orphan ReplicaSet's labels.
    fn matching_deployments(&self, rs: &ReplicaSet) -> Vec<ObjectRef<Deployment>> {
        self.deployments
            .state()
            .iter()
            .filter(|d| d.namespace() == rs.namespace())
            .filter(|d| {
                d.spec
                    .as_ref()
                    .and_then(|s| Selector::parse(&s.selector).ok())
                    .is_some_and(|sel| {
                        !sel.selects_everything() && sel.matches(rs.metadata.labels.as_ref())
                    })
            })
            .map(|d| ObjectRef::from_obj(&**d))
            .collect()
    }

    fn replica_set_triggers(&self, event: &Event<ReplicaSet>) -> Vec<ObjectRef<Deployment>> {
        match event {
            Event::Apply(rs) | Event::Delete(rs) => {
                let key = ObjectRef::from_obj(rs);
                let owner = Self::owning_deployment(rs);
                let previous = {
                    let mut owners = lock(&self.rs_owners);
                    if matches!(event, Event::Delete(_)) {
                        owners.remove(&key).flatten()
                    } else {
                        owners.insert(key, owner.clone()).flatten()
                    }
                };
                let mut touched = match &owner {
                    Some(owner) => vec![owner.clone()],
                    None => self.matching_deployments(rs),
                };
                touched.extend(previous.filter(|p| Some(p) != owner.as_ref()));
                touched
            }
            Event::InitDone => {
                let mut owners = lock(&self.rs_owners);
                owners.clear();
                for rs in self.rss.state() {
                    owners.insert(ObjectRef::from_obj(&*rs), Self::owning_deployment(&rs));
                }
                drop(owners);
                self.all_deployments()
            }
            Event::Init | Event::InitApply(_) => Vec::new(),
        }
    }

    /// A Recreate Deployment waits for its old pods to be gone: their deletion wakes it.
    fn pod_triggers(&self, event: &Event<Pod>) -> Vec<ObjectRef<Deployment>> {
        match event {
            Event::Delete(pod) => {
                let Some(rs_ref) = controller_of(&pod.metadata).and_then(|o| {
                    ObjectRef::<ReplicaSet>::from_owner_ref(pod.namespace().as_deref(), o, ())
                }) else {
                    return Vec::new();
                };
                let Some(d_ref) = self
                    .rss
                    .get(&rs_ref)
                    .and_then(|rs| Self::owning_deployment(&rs))
                else {
                    return Vec::new();
                };
                let recreate = self.deployments.get(&d_ref).is_some_and(|d| {
                    d.spec
                        .as_ref()
                        .and_then(|s| s.strategy.as_ref())
                        .and_then(|s| s.type_.as_deref())
                        == Some("Recreate")
                });
                if recreate {
                    vec![d_ref]
                } else {
                    Vec::new()
                }
            }
            Event::InitDone => self.all_deployments(),
            Event::Apply(_) | Event::Init | Event::InitApply(_) => Vec::new(),
        }
    }
}

/// Runs the Deployment controller until its watch streams end.
pub async fn run(client: Client) -> Result<()> {
    let (deployments, d_writer) = reflector::store::<Deployment>();
    let (rss, rs_writer) = reflector::store::<ReplicaSet>();
    let (pods, pod_writer) = reflector::store::<Pod>();
    let ctx = Arc::new(Context {
        client: client.clone(),
        deployments: deployments.clone(),
        rss,
        pods,
        rs_owners: Mutex::default(),
        retries: Retries::default(),
    });

    let d_ctx = ctx.clone();
    let d_triggers = watcher(
        Api::<Deployment>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(d_writer)
    .map_ok(move |event| match event {
        Event::Apply(d) => vec![ObjectRef::from_obj(&d)],
        Event::InitDone => d_ctx.all_deployments(),
        Event::Delete(d) => {
            d_ctx.retries.reset(&key_of(&d.metadata));
            Vec::new()
        }
        Event::Init | Event::InitApply(_) => Vec::new(),
    });
    let rs_ctx = ctx.clone();
    let rs_triggers = watcher(
        Api::<ReplicaSet>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(rs_writer)
    .map_ok(move |event| rs_ctx.replica_set_triggers(&event));
    let pod_ctx = ctx.clone();
    let pod_triggers = watcher(Api::<Pod>::all(client), watcher::Config::default())
        .default_backoff()
        .reflect(pod_writer)
        .map_ok(move |event| pod_ctx.pod_triggers(&event));
    let queue = stream::select(d_triggers, stream::select(rs_triggers, pod_triggers))
        .map_ok(|refs| stream::iter(refs).map(Ok::<_, watcher::Error>))
        .try_flatten();

    report(
        "deployment",
        applier(
            |d, ctx| Box::pin(reconcile(d, ctx)),
            error_policy,
            ctx,
            deployments,
            queue,
            Config::default(),
        ),
    )
    .await;
    Ok(())
}

fn error_policy(d: Arc<Deployment>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.retries
        .after_failure("deployment", &key_of(&d.metadata), err, err.is_stale())
}

#[instrument(skip_all, fields(deployment = %key_of(&d.metadata)))]
async fn reconcile(d: Arc<Deployment>, ctx: Arc<Context>) -> Result<Action> {
    ctx.rss
        .wait_until_ready()
        .await
        .map_err(|_| Error::StoreClosed)?;
    ctx.pods
        .wait_until_ready()
        .await
        .map_err(|_| Error::StoreClosed)?;
    let key = key_of(&d.metadata);
    let namespace = d
        .namespace()
        .ok_or_else(|| Error::NoNamespace(key.clone()))?;
    let in_namespace = |ns: Option<String>| ns.as_deref() == Some(namespace.as_str());
    let rss: Vec<Arc<ReplicaSet>> = ctx
        .rss
        .state()
        .into_iter()
        .filter(|rs| in_namespace(rs.namespace()))
        .collect();
    let pods: Vec<Arc<Pod>> = ctx
        .pods
        .state()
        .into_iter()
        .filter(|p| in_namespace(p.namespace()))
        .collect();
    let plan = sync_deployment(&d, &rss, &pods, now())?;
    execute(&ctx.client, &d, plan.writes).await?;
    ctx.retries.reset(&key);
    Ok(plan
        .requeue_after
        .map_or_else(Action::await_change, Action::requeue))
}

/// Performs the writes in order, each ReplicaSet write on the resourceVersion the
/// previous write of it returned.
async fn execute(client: &Client, d: &Deployment, writes: Vec<Write>) -> Result<()> {
    let namespace = d.namespace().unwrap_or_default();
    let rs_api = Api::<ReplicaSet>::namespaced(client.clone(), &namespace);
    let d_api = Api::<Deployment>::namespaced(client.clone(), &namespace);
    let post = PostParams::default();
    let patch = PatchParams::default();
    let mut versions: HashMap<String, Option<String>> = HashMap::new();
    let mut current = d.clone();
    for write in writes {
        match write {
            Write::AdoptReplicaSet { name, uid } => {
                let body = adopt_patch(controller_ref(d), uid.as_deref());
                match rs_api.patch(&name, &patch, &Patch::Strategic(body)).await {
                    Ok(rs) => {
                        info!(replicaset = %name, "adopted replica set");
                        versions.insert(name, rs.metadata.resource_version);
                    }
                    Err(err) if is_not_found(&err) => {}
                    Err(err) => return Err(err.into()),
                }
            }
            Write::ReleaseReplicaSet { name, uid } => {
                let body = release_patch(d.metadata.uid.as_deref(), uid.as_deref());
                match rs_api.patch(&name, &patch, &Patch::Strategic(body)).await {
                    Ok(_) => info!(replicaset = %name, "released replica set"),
                    Err(err) if is_not_found(&err) => {}
                    Err(err) => return Err(err.into()),
                }
            }
            Write::CreateReplicaSet(rs) => {
                let mut rs = *rs;
                rs.metadata.creation_timestamp = None;
                let created = rs_api.create(&post, &rs).await?;
                info!(replicaset = %created.name_any(), replicas = spec_replicas(&created), "created replica set");
                versions.insert(created.name_any(), created.metadata.resource_version);
            }
            Write::UpdateReplicaSet(rs) => {
                let mut rs = *rs;
                let name = rs.name_any();
                if let Some(version) = versions.get(&name) {
                    rs.metadata.resource_version.clone_from(version);
                }
                let updated = rs_api.replace(&name, &post, &rs).await?;
                info!(replicaset = %name, replicas = spec_replicas(&updated), "updated replica set");
                versions.insert(name, updated.metadata.resource_version);
            }
            Write::DeleteReplicaSet { name } => {
                match rs_api.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => info!(replicaset = %name, "deleted old replica set"),
                    Err(err) if is_not_found(&err) => {}
                    Err(err) => return Err(err.into()),
                }
            }
            Write::SetRevision(revision) => {
                let body = json!({"metadata": {
                    "annotations": {REVISION: revision},
                    "resourceVersion": current.metadata.resource_version,
                }});
                current = d_api
                    .patch(&current.name_any(), &patch, &Patch::Merge(body))
                    .await?;
            }
            Write::Status(status) => {
                current.status = Some(*status);
                current = d_api
                    .replace_status(&current.name_any(), &post, &current)
                    .await?;
                debug!("status updated");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{
        DeploymentSpec, DeploymentStrategy, ReplicaSetStatus, RollingUpdateDeployment,
    };
    use k8s_openapi::api::core::v1::{Container, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + second).expect("valid time")
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn template(image: &str) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(labels(&[("app", "web")])),
                ..ObjectMeta::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "web".into(),
                    image: Some(image.into()),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
        }
    }

    fn intstr(text: &str) -> IntOrString {
        text.parse()
            .map_or_else(|_| IntOrString::String(text.into()), IntOrString::Int)
    }

    /// A Deployment `web` of image v2 (4 replicas, RollingUpdate 25%/25%, generation 2,
    /// deadline 600 s, history 10) changed by `key=value` words: `replicas`, `image`,
    /// `surge`, `unavailable`, `recreate`, `paused`, `history`, `deadline`, `minready`,
    /// `cause` (the change-cause annotation), `revision`; and the stored status from
    /// `status.replicas`, `status.updated`, `status.available` (also ready),
    /// `status.observed` and `progressing=<reason>@<second>`, with the Available
    /// condition True.
    fn deployment(text: &str) -> Deployment {
        let mut spec = DeploymentSpec {
            replicas: Some(4),
            selector: LabelSelector {
                match_labels: Some(labels(&[("app", "web")])),
                ..LabelSelector::default()
            },
            template: template("v2"),
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(intstr("25%")),
                    max_unavailable: Some(intstr("25%")),
                }),
            }),
            progress_deadline_seconds: Some(600),
            revision_history_limit: Some(10),
            ..DeploymentSpec::default()
        };
        let mut meta = ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            uid: Some("d-uid".into()),
            generation: Some(2),
            ..ObjectMeta::default()
        };
        let mut status: Option<DeploymentStatus> = None;
        for word in text.split_whitespace() {
            let (key, value) = word.split_once('=').unwrap_or((word, ""));
            let number = || value.parse::<i32>().expect("a number");
            let rolling = |spec: &mut DeploymentSpec| {
                spec.strategy
                    .as_mut()
                    .and_then(|s| s.rolling_update.as_mut())
                    .expect("rolling update")
                    .clone()
            };
            match key {
                "replicas" => spec.replicas = Some(number()),
                "image" => spec.template = template(value),
                "surge" | "unavailable" => {
                    let mut r = rolling(&mut spec);
                    if key == "surge" {
                        r.max_surge = Some(intstr(value));
                    } else {
                        r.max_unavailable = Some(intstr(value));
                    }
                    spec.strategy = Some(DeploymentStrategy {
                        type_: Some("RollingUpdate".into()),
                        rolling_update: Some(r),
                    });
                }
                "recreate" => {
                    spec.strategy = Some(DeploymentStrategy {
                        type_: Some("Recreate".into()),
                        rolling_update: None,
                    })
                }
                "paused" => spec.paused = Some(true),
                "history" => spec.revision_history_limit = Some(number()),
                "deadline" => spec.progress_deadline_seconds = Some(number()),
                "minready" => spec.min_ready_seconds = Some(number()),
                "cause" => set_annotation(&mut meta, "kubernetes.io/change-cause", value.into()),
                "revision" => set_annotation(&mut meta, REVISION, value.into()),
                "progressing" => {
                    let (reason, second) = value.split_once('@').expect("reason@second");
                    let second: i64 = second.parse().expect("a number");
                    let state = if reason == TIMED_OUT { "False" } else { "True" };
                    let mut cond =
                        new_condition(PROGRESSING, state, reason, String::new(), at(second));
                    cond.message = None;
                    set_condition(status.get_or_insert_with(Default::default), cond);
                }
                field => {
                    let s = status.get_or_insert_with(Default::default);
                    match field {
                        "status.replicas" => s.replicas = Some(number()),
                        "status.updated" => s.updated_replicas = Some(number()),
                        "status.available" => s.available_replicas = Some(number()),
                        "status.observed" => s.observed_generation = Some(number().into()),
                        other => panic!("unknown deployment word {other}"),
                    }
                }
            }
        }
        if let Some(s) = status.as_mut() {
            s.ready_replicas = s.ready_replicas.or(s.available_replicas);
            s.unavailable_replicas.get_or_insert(0);
            if condition(Some(s), AVAILABLE).is_none() {
                let message = "Deployment has minimum availability.".into();
                set_condition(
                    s,
                    new_condition(AVAILABLE, "True", MIN_AVAILABLE, message, at(0)),
                );
            }
        }
        Deployment {
            metadata: meta,
            spec: Some(spec),
            status,
        }
    }

    /// A ReplicaSet of `d` for `image=<image>`, described by `replicas`, `actual`
    /// (default: replicas), `available` (default: actual), `revision`, `created`,
    /// `desired`, `max`, `minready` (default: 0), `orphan`, `deleting`.
    fn replica_set(d: &Deployment, text: &str) -> Arc<ReplicaSet> {
        let mut image = "v1";
        let (mut replicas, mut actual, mut available) = (0, None, None);
        let mut min_ready = 0;
        let mut meta = ObjectMeta {
            namespace: Some("default".into()),
            owner_references: Some(vec![controller_ref(d)]),
            generation: Some(1),
            creation_timestamp: Some(Time(at(0))),
            ..ObjectMeta::default()
        };
        for word in text.split_whitespace() {
            let (key, value) = word.split_once('=').unwrap_or((word, ""));
            let number = || value.parse::<i32>().expect("a number");
            match key {
                "image" => image = value,
                "replicas" => replicas = number(),
                "actual" => actual = Some(number()),
                "available" => available = Some(number()),
                "revision" => set_annotation(&mut meta, REVISION, value.into()),
                "desired" => set_annotation(&mut meta, DESIRED_REPLICAS, value.into()),
                "max" => set_annotation(&mut meta, MAX_REPLICAS, value.into()),
                "created" => meta.creation_timestamp = Some(Time(at(number().into()))),
                "minready" => min_ready = number(),
                "orphan" => meta.owner_references = None,
                "deleting" => meta.deletion_timestamp = Some(Time(at(0))),
                other => panic!("unknown replica set word {other}"),
            }
        }
        let mut template = template(image);
        let hash = compute_hash(&template, None).expect("hash");
        let mut with_hash = labels(&[("app", "web")]);
        with_hash.insert(HASH_LABEL.into(), hash.clone());
        template
            .metadata
            .get_or_insert_with(Default::default)
            .labels = Some(with_hash.clone());
        meta.name = Some(format!("web-{hash}"));
        meta.uid = Some(format!("uid-{image}"));
        meta.labels = Some(with_hash.clone());
        let actual = actual.unwrap_or(replicas);
        let available = available.unwrap_or(actual);
        Arc::new(ReplicaSet {
            metadata: meta,
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                selector: LabelSelector {
                    match_labels: Some(with_hash),
                    ..LabelSelector::default()
                },
                template: Some(template),
                min_ready_seconds: Some(min_ready),
            }),
            status: Some(ReplicaSetStatus {
                replicas: actual,
                ready_replicas: Some(available),
                available_replicas: Some(available),
                observed_generation: Some(1),
                ..ReplicaSetStatus::default()
            }),
        })
    }

    fn min_ready_of(rs: &ReplicaSet) -> i32 {
        rs.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }

    fn image_of(rs: &ReplicaSet) -> String {
        template_of(rs)
            .and_then(|t| t.spec.as_ref())
            .and_then(|s| s.containers.first())
            .and_then(|c| c.image.clone())
            .unwrap_or_default()
    }

    /// The plan in words: `create v2 replicas=1 revision=2` (with `minReadySeconds=<n>`
    /// when not 0), `update v1 replicas 4->3` (and `minReadySeconds 0->3` when it
    /// changes), `delete v1`, `revision 2`, `status replicas=… Progressing=<reason>`.
    fn render(plan: &Plan, rss: &[Arc<ReplicaSet>]) -> Vec<String> {
        let mut known: HashMap<String, ReplicaSet> = rss
            .iter()
            .map(|rs| (rs.name_any(), (**rs).clone()))
            .collect();
        let mut lines: Vec<String> = plan
            .writes
            .iter()
            .map(|write| match write {
                Write::AdoptReplicaSet { name, .. } => format!("adopt {}", image_of(&known[name])),
                Write::ReleaseReplicaSet { name, .. } => format!("release {}", image_of(&known[name])),
                Write::CreateReplicaSet(rs) => {
                    known.insert(rs.name_any(), (**rs).clone());
                    let mut line = format!(
                        "create {} replicas={} revision={}",
                        image_of(rs),
                        spec_replicas(rs),
                        annotation(&rs.metadata, REVISION).unwrap_or_default()
                    );
                    if min_ready_of(rs) != 0 {
                        line.push_str(&format!(" minReadySeconds={}", min_ready_of(rs)));
                    }
                    line
                }
                Write::UpdateReplicaSet(rs) => {
                    let before = known.insert(rs.name_any(), (**rs).clone()).expect("known replica set");
                    let mut parts = vec![format!("update {}", image_of(rs))];
                    if spec_replicas(&before) != spec_replicas(rs) {
                        parts.push(format!("replicas {}->{}", spec_replicas(&before), spec_replicas(rs)));
                    }
                    if min_ready_of(&before) != min_ready_of(rs) {
                        parts.push(format!("minReadySeconds {}->{}", min_ready_of(&before), min_ready_of(rs)));
                    }
                    for key in [REVISION, REVISION_HISTORY] {
                        let (old, new) = (annotation(&before.metadata, key), annotation(&rs.metadata, key));
                        if old != new {
                            let short = key.trim_start_matches("deployment.kubernetes.io/");
                            parts.push(format!("{short} {}->{}", old.unwrap_or("-"), new.unwrap_or("-")));
                        }
                    }
                    parts.join(" ")
                }
                Write::DeleteReplicaSet { name } => format!("delete {}", image_of(&known[name])),
                Write::SetRevision(revision) => format!("revision {revision}"),
                Write::Status(status) => {
                    let mut line = format!(
                        "status replicas={} updated={} ready={} available={} unavailable={} observed={}",
                        count(status, |s| s.replicas),
                        count(status, |s| s.updated_replicas),
                        count(status, |s| s.ready_replicas),
                        count(status, |s| s.available_replicas),
                        count(status, |s| s.unavailable_replicas),
                        status.observed_generation.unwrap_or(0),
                    );
                    let mut conditions: Vec<_> = status.conditions.iter().flatten().collect();
                    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
                    for c in conditions {
                        line.push_str(&format!(" {}={}", c.type_, c.reason.as_deref().unwrap_or_default()));
                        if c.status != "True" {
                            line.push_str(&format!("({})", c.status));
                        }
                    }
                    line
                }
            })
            .collect();
        if let Some(after) = plan.requeue_after {
            lines.push(format!("requeue {}s", after.as_secs()));
        }
        lines
    }

    /// Syncs the Deployment described by `d` over ReplicaSets described by `rss` at
    /// second `now` and compares the plan's words with `expect`.
    fn check_at(now: i64, d: &str, rss: &[&str], pods: &[Arc<Pod>], expect: &[&str]) {
        let d = deployment(d);
        let rss: Vec<_> = rss.iter().map(|text| replica_set(&d, text)).collect();
        let plan = sync_deployment(&d, &rss, pods, at(now)).expect("sync");
        assert_eq!(render(&plan, &rss), expect);
    }

    fn check(d: &str, rss: &[&str], expect: &[&str]) {
        check_at(100, d, rss, &[], expect);
    }

    const COMPLETE_V1: &str = "status.replicas=4 status.updated=4 status.available=4 status.observed=1 progressing=NewReplicaSetAvailable@0";

    #[test]
    fn fenceposts_round_surge_up_and_unavailable_down() {
        let check_fenceposts =
            |surge: &str, unavailable: &str, desired: i32, expect: Result<(i32, i32), ()>| {
                let got =
                    resolve_fenceposts(Some(&intstr(surge)), Some(&intstr(unavailable)), desired)
                        .map_err(drop);
                assert_eq!(
                    got, expect,
                    "maxSurge {surge}, maxUnavailable {unavailable}, {desired} replicas"
                );
            };
        check_fenceposts("25%", "25%", 4, Ok((1, 1)));
        check_fenceposts("25%", "25%", 1, Ok((1, 0)));
        check_fenceposts("25%", "25%", 10, Ok((3, 2)));
        check_fenceposts("50%", "50%", 5, Ok((3, 2)));
        check_fenceposts("1%", "25%", 2, Ok((1, 0)));
        check_fenceposts("0%", "1%", 2, Ok((0, 1)));
        check_fenceposts("0", "0", 10, Ok((0, 1)));
        check_fenceposts("0%", "0%", 0, Ok((0, 1)));
        check_fenceposts("3", "2", 10, Ok((3, 2)));
        check_fenceposts("12", "abc%", 10, Err(()));
        check_fenceposts("12x", "1", 10, Err(()));
        assert_eq!(
            resolve_fenceposts(None, None, 8),
            Ok((2, 2)),
            "absent values are the 25% defaults"
        );
    }

    #[test]
    fn hash_is_stable_safe_and_ignores_its_own_label() {
        assert_eq!(safe_encode("0123456789"), "456789bcdf");
        let v1 = template("v1");
        let hash = compute_hash(&v1, None).expect("hash");
        assert_eq!(
            hash,
            compute_hash(&template("v1"), None).expect("hash"),
            "deterministic"
        );
        assert!(
            hash.bytes().all(|b| SAFE_ALPHABET.contains(&b)) && (1..=10).contains(&hash.len()),
            "{hash}"
        );
        assert_ne!(hash, compute_hash(&template("v2"), None).expect("hash"));
        assert_ne!(
            hash,
            compute_hash(&v1, Some(1)).expect("hash"),
            "a collision count moves the hash"
        );

        let mut labelled = v1.clone();
        let meta = labelled.metadata.get_or_insert_with(Default::default);
        meta.labels
            .get_or_insert_with(Default::default)
            .insert(HASH_LABEL.into(), hash);
        meta.annotations = Some(BTreeMap::new());
        assert!(
            equal_ignore_hash(&v1, &labelled),
            "hash label and empty annotations ignored"
        );
        assert!(!equal_ignore_hash(&v1, &template("v2")));
    }

    #[test]
    fn rolling_update_steps() {
        // A new template: the new ReplicaSet starts at maxSurge, then old ones shrink
        // within maxUnavailable in the same sync.
        check(
            COMPLETE_V1,
            &["image=v1 replicas=4 revision=1"],
            &[
                "create v2 replicas=1 revision=2",
                "revision 2",
                "update v1 replicas 4->3",
                "status replicas=4 updated=0 ready=4 available=4 unavailable=0 observed=2 Available=MinimumReplicasAvailable Progressing=NewReplicaSetCreated",
            ],
        );
        // Room under maxSurge: the new ReplicaSet grows first.
        check(
            "revision=2",
            &["image=v1 replicas=3 revision=1", "image=v2 replicas=1 revision=2 available=1"],
            &[
                "update v2 replicas 1->2",
                "status replicas=4 updated=1 ready=4 available=4 unavailable=1 observed=2 Available=MinimumReplicasAvailable Progressing=ReplicaSetUpdated",
            ],
        );
        // At the surge limit with a new pod still unavailable: old ones shrink only as far
        // as availability allows.
        check(
            "revision=2",
            &["image=v1 replicas=3 revision=1", "image=v2 replicas=2 revision=2 available=1"],
            &[
                "update v1 replicas 3->2",
                "status replicas=5 updated=2 ready=4 available=4 unavailable=0 observed=2 Available=MinimumReplicasAvailable Progressing=ReplicaSetUpdated",
            ],
        );
        // An old ReplicaSet still running pods beyond its spec holds the new one back.
        check(
            "revision=2",
            &["image=v1 replicas=2 actual=3 available=2 revision=1", "image=v2 replicas=2 revision=2"],
            &[
                "update v1 replicas 2->1",
                "status replicas=5 updated=2 ready=4 available=4 unavailable=0 observed=2 Available=MinimumReplicasAvailable Progressing=ReplicaSetUpdated",
            ],
        );
        // Unavailable old pods go first, without lowering availability.
        check(
            "revision=2",
            &["image=v1 replicas=4 available=2 revision=1", "image=v2 replicas=1 available=0 revision=2"],
            &[
                "update v1 replicas 4->3",
                "status replicas=5 updated=1 ready=2 available=2 unavailable=2 observed=2 Available=MinimumReplicasUnavailable(False) Progressing=ReplicaSetUpdated",
            ],
        );
        // Upstream's example: 10 replicas, maxSurge 3, maxUnavailable 2, new pods never
        // become available: nothing more may go.
        check(
            "replicas=10 surge=3 unavailable=2 revision=2",
            &["image=v1 replicas=8 revision=1", "image=v2 replicas=5 available=0 revision=2"],
            &["status replicas=13 updated=5 ready=8 available=8 unavailable=5 observed=2 Available=MinimumReplicasAvailable Progressing=ReplicaSetUpdated"],
        );
        // maxSurge 0: old first, one at a time (maxUnavailable resolves to 1).
        check(
            "replicas=10 surge=0 unavailable=0 revision=2",
            &["image=v1 replicas=10 revision=1", "image=v2 replicas=0 revision=2"],
            &[
                "update v1 replicas 10->9",
                "status replicas=10 updated=0 ready=10 available=10 unavailable=0 observed=2 Available=MinimumReplicasAvailable Progressing=ReplicaSetUpdated",
            ],
        );
        // A new ReplicaSet larger than the Deployment shrinks to it.
        check(
            "replicas=2 revision=2",
            &["image=v2 replicas=3 revision=2 desired=3 max=4"],
            &[
                "update v2 replicas 3->2",
                "status replicas=3 updated=3 ready=3 available=3 unavailable=0 observed=2 Available=MinimumReplicasAvailable Progressing=FoundNewReplicaSet",
            ],
        );
        // Done: the Progressing condition says so.
        check(
            "revision=2 status.replicas=4 status.updated=4 status.available=3 status.observed=2 progressing=ReplicaSetUpdated@50",
            &["image=v1 replicas=0 revision=1", "image=v2 replicas=4 revision=2 desired=4 max=5"],
            &["status replicas=4 updated=4 ready=4 available=4 unavailable=0 observed=2 Available=MinimumReplicasAvailable Progressing=NewReplicaSetAvailable"],
        );
        // And nothing is written again once it is recorded.
        check(
            "revision=2 status.replicas=4 status.updated=4 status.available=4 status.observed=2 progressing=NewReplicaSetAvailable@50",
            &["image=v1 replicas=0 revision=1", "image=v2 replicas=4 revision=2 desired=4 max=5"],
            &[],
        );
    }

    #[test]
    fn progress_deadline() {
        let stuck =
            "revision=2 status.replicas=5 status.updated=2 status.available=3 status.observed=2";
        let rss = [
            "image=v1 replicas=3 revision=1 desired=4 max=5",
            "image=v2 replicas=2 available=0 revision=2 desired=4 max=5",
        ];
        // No progress since second 50: checked again when the 600 s deadline passes.
        check_at(100, &format!("{stuck} progressing=ReplicaSetUpdated@50"), &rss, &[], &[
            "status replicas=5 updated=2 ready=3 available=3 unavailable=2 observed=2 Available=MinimumReplicasAvailable Progressing=ReplicaSetUpdated",
        ]);
        let recorded = format!("{stuck} progressing=ReplicaSetUpdated@50");
        let d = deployment(&recorded);
        let rss_objects: Vec<_> = rss.iter().map(|t| replica_set(&d, t)).collect();
        let mut d = d;
        let status = sync_deployment(&d, &rss_objects, &[], at(100))
            .expect("sync")
            .writes
            .into_iter()
            .find_map(|w| match w {
                Write::Status(s) => Some(*s),
                _ => None,
            });
        d.status = status;
        let plan = sync_deployment(&d, &rss_objects, &[], at(100)).expect("sync");
        assert_eq!(render(&plan, &rss_objects), ["requeue 551s"]);
        // Past the deadline: Progressing turns False.
        check_at(700, &format!("{stuck} progressing=ReplicaSetUpdated@50"), &rss, &[], &[
            "status replicas=5 updated=2 ready=3 available=3 unavailable=2 observed=2 Available=MinimumReplicasAvailable Progressing=ProgressDeadlineExceeded(False)",
        ]);
        // Without a deadline there is no Progressing condition at all.
        check_at(700, &format!("{stuck} deadline=2147483647 progressing=ReplicaSetUpdated@50"), &rss, &[], &[
            "status replicas=5 updated=2 ready=3 available=3 unavailable=2 observed=2 Available=MinimumReplicasAvailable",
        ]);
    }

    #[test]
    fn recreate_steps() {
        // Old ReplicaSets go to zero first; no new one yet.
        check(
            &format!("recreate {COMPLETE_V1}"),
            &["image=v1 replicas=4 revision=1"],
            &["update v1 replicas 4->0", "status replicas=4 updated=0 ready=4 available=4 unavailable=0 observed=2 Available=MinimumReplicasAvailable Progressing=NewReplicaSetAvailable"],
        );
        // Old pods still reported: wait.
        check(
            "recreate revision=1",
            &["image=v1 replicas=0 actual=2 revision=1 desired=4 max=4"],
            &["status replicas=2 updated=0 ready=2 available=2 unavailable=0 observed=2 Available=MinimumReplicasUnavailable(False) Progressing=ReplicaSetUpdated"],
        );
        // A pod of the old ReplicaSet still exists (terminating): wait.
        let d = deployment("recreate");
        let old_pod = Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some("web-old-x".into()),
                labels: Some(labels(&[("app", "web")])),
                owner_references: Some(vec![OwnerReference {
                    uid: "uid-v1".into(),
                    controller: Some(true),
                    ..controller_ref(&*replica_set(&d, "image=v1"))
                }]),
                deletion_timestamp: Some(Time(at(90))),
                ..ObjectMeta::default()
            },
            spec: None,
            status: Some(PodStatus {
                phase: Some("Running".into()),
                ..PodStatus::default()
            }),
        });
        check_at(
            100,
            "recreate revision=1",
            &["image=v1 replicas=0 revision=1 desired=4 max=4"],
            &[old_pod],
            &["status replicas=0 updated=0 ready=0 available=0 unavailable=0 observed=2 Available=MinimumReplicasUnavailable(False)"],
        );
        // All gone: the new ReplicaSet comes at full size.
        check(
            "recreate revision=1",
            &["image=v1 replicas=0 revision=1 desired=4 max=4"],
            &[
                "create v2 replicas=4 revision=2",
                "revision 2",
                "status replicas=0 updated=0 ready=0 available=0 unavailable=4 observed=2 Available=MinimumReplicasUnavailable(False) Progressing=NewReplicaSetCreated",
            ],
        );
    }

    #[test]
    fn revisions_number_templates_and_reuse_old_ones() {
        // The first ReplicaSet is revision 1 and carries the change-cause.
        let d = deployment("cause=first");
        let plan = sync_deployment(&d, &[], &[], at(0)).expect("sync");
        let Some(Write::CreateReplicaSet(rs)) = plan.writes.first() else {
            panic!("expected a create first: {plan:?}");
        };
        assert_eq!(annotation(&rs.metadata, REVISION), Some("1"));
        assert_eq!(
            annotation(&rs.metadata, "kubernetes.io/change-cause"),
            Some("first")
        );
        assert_eq!(
            (
                annotation(&rs.metadata, DESIRED_REPLICAS),
                annotation(&rs.metadata, MAX_REPLICAS)
            ),
            (Some("4"), Some("5"))
        );
        assert_eq!(
            rs.name_any(),
            format!("web-{}", compute_hash(&template("v2"), None).expect("hash"))
        );
        let selector = rs
            .spec
            .as_ref()
            .and_then(|s| s.selector.match_labels.as_ref())
            .expect("selector");
        assert!(selector.contains_key(HASH_LABEL) && selector.contains_key("app"));
        assert!(plan.writes.contains(&Write::SetRevision("1".into())));

        // Undo to the first template: its ReplicaSet is reused as revision 3 and
        // remembers that it was revision 1, the Deployment takes revision 3, and the
        // rollout back starts.
        check(
            &format!("image=v1 revision=2 {COMPLETE_V1}"),
            &["image=v1 replicas=0 revision=1 created=1", "image=v2 replicas=4 revision=2 created=2 desired=4 max=5"],
            &[
                "update v1 revision 1->3 revision-history -->1",
                "revision 3",
                "update v1 replicas 0->1",
                "status replicas=4 updated=0 ready=4 available=4 unavailable=1 observed=2 Available=MinimumReplicasAvailable Progressing=NewReplicaSetAvailable",
            ],
        );
        // Undone again to the second: revision 4, the history grows.
        check(
            "image=v2 revision=3",
            &["image=v1 replicas=4 revision=3 created=1 desired=4 max=5", "image=v2 replicas=0 revision=2 created=2"],
            &[
                "update v2 revision 2->4 revision-history -->2",
                "revision 4",
                "update v2 replicas 0->1",
                "status replicas=4 updated=0 ready=4 available=4 unavailable=1 observed=2 Available=MinimumReplicasAvailable Progressing=ReplicaSetUpdated",
            ],
        );
    }

    #[test]
    fn history_beyond_the_limit_is_deleted() {
        let done = "revision=4 status.replicas=4 status.updated=4 status.available=4 status.observed=2 progressing=NewReplicaSetAvailable@0";
        let current = "image=v2 replicas=4 revision=4 created=4 desired=4 max=5";
        check(
            &format!("history=2 {done}"),
            &[
                "image=v0 replicas=0 revision=1 created=1",
                "image=v1 replicas=0 revision=3 created=2",
                "image=v3 replicas=0 revision=2 created=3",
                current,
            ],
            &["delete v0"],
        );
        // One already being deleted is not counted, nor deleted again.
        check(
            &format!("history=0 {done}"),
            &[
                "image=v0 replicas=0 revision=1 created=1 deleting",
                "image=v1 replicas=0 revision=3 created=2",
                current,
            ],
            &["delete v1"],
        );
        // A ReplicaSet that still has pods is kept even beyond the limit (a paused
        // Deployment cleans up without waiting for the rollout to complete).
        check(
            &format!("paused history=0 {done}"),
            &["image=v0 replicas=0 actual=1 revision=1 created=1", "image=v1 replicas=0 revision=3 created=2", current],
            &[
                "delete v1",
                "status replicas=5 updated=4 ready=5 available=5 unavailable=0 observed=2 Available=MinimumReplicasAvailable Progressing=DeploymentPaused(Unknown)",
            ],
        );
        // Mid-rollout nothing is deleted.
        check(
            "history=0 revision=4",
            &["image=v1 replicas=0 revision=3 created=2", "image=v2 replicas=1 available=0 revision=4 created=4 desired=4 max=5", "image=v0 replicas=3 revision=1 created=1 desired=4 max=5"],
            &["update v2 replicas 1->2", "status replicas=4 updated=1 ready=3 available=3 unavailable=2 observed=2 Available=MinimumReplicasAvailable Progressing=ReplicaSetUpdated"],
        );
    }

    #[test]
    fn scaling_mid_rollout_is_proportional() {
        // 10 → 15 replicas (maxSurge 3): 13 → 18 pods spread by size.
        check(
            "replicas=15 surge=3 unavailable=2 revision=2",
            &["image=v1 replicas=8 revision=1 desired=10 max=13", "image=v2 replicas=5 available=0 revision=2 desired=10 max=13"],
            &[
                "update v1 replicas 8->11",
                "update v2 replicas 5->7",
                "status replicas=13 updated=5 ready=8 available=8 unavailable=10 observed=2 Available=MinimumReplicasUnavailable(False) Progressing=FoundNewReplicaSet",
            ],
        );
        // Down to zero: everything goes.
        check(
            "replicas=0 surge=3 unavailable=2 revision=2",
            &["image=v1 replicas=8 revision=1 desired=10 max=13", "image=v2 replicas=5 available=0 revision=2 desired=10 max=13"],
            &[
                "update v1 replicas 8->0",
                "update v2 replicas 5->0",
                "status replicas=13 updated=5 ready=8 available=8 unavailable=0 observed=2 Available=MinimumReplicasAvailable Progressing=FoundNewReplicaSet",
            ],
        );
        // A single active ReplicaSet simply takes the new size.
        check(
            "replicas=6 revision=2 status.replicas=4 status.updated=4 status.available=4 status.observed=1 progressing=NewReplicaSetAvailable@0",
            &["image=v2 replicas=4 revision=2 desired=4 max=5"],
            &["update v2 replicas 4->6", "status replicas=4 updated=4 ready=4 available=4 unavailable=2 observed=2 Available=MinimumReplicasUnavailable(False) Progressing=NewReplicaSetAvailable"],
        );
    }

    #[test]
    fn paused_deployments_scale_but_do_not_roll_out() {
        check(
            &format!("paused replicas=5 {COMPLETE_V1}"),
            &["image=v1 replicas=4 revision=1 desired=4 max=5"],
            &[
                "update v1 replicas 4->5",
                "status replicas=4 updated=0 ready=4 available=4 unavailable=1 observed=2 Available=MinimumReplicasAvailable Progressing=DeploymentPaused(Unknown)",
            ],
        );
    }

    #[test]
    fn min_ready_seconds_goes_to_the_new_replica_set() {
        // A new ReplicaSet is created with the Deployment's minReadySeconds.
        check(
            &format!("minready=3 {COMPLETE_V1}"),
            &["image=v1 replicas=4 revision=1"],
            &[
                "create v2 replicas=1 revision=2 minReadySeconds=3",
                "revision 2",
                "update v1 replicas 4->3",
                "status replicas=4 updated=0 ready=4 available=4 unavailable=0 observed=2 Available=MinimumReplicasAvailable Progressing=NewReplicaSetCreated",
            ],
        );
        // A changed minReadySeconds updates the current ReplicaSet in place (no new
        // revision), and only that one: old ReplicaSets keep theirs.
        let done = "revision=2 status.replicas=4 status.updated=4 status.available=4 status.observed=2 progressing=NewReplicaSetAvailable@0";
        check(
            &format!("minready=3 {done}"),
            &[
                "image=v1 replicas=0 revision=1",
                "image=v2 replicas=4 revision=2 desired=4 max=5",
            ],
            &["update v2 minReadySeconds 0->3"],
        );
        check(
            &format!("minready=3 {done}"),
            &[
                "image=v1 replicas=0 revision=1",
                "image=v2 replicas=4 revision=2 desired=4 max=5 minready=3",
            ],
            &[],
        );
        // Back to 0, and also while paused.
        check(
            done,
            &["image=v2 replicas=4 revision=2 desired=4 max=5 minready=5"],
            &["update v2 minReadySeconds 5->0"],
        );
        check(
            &format!("paused minready=2 {done}"),
            &["image=v2 replicas=4 revision=2 desired=4 max=5"],
            &[
                "update v2 minReadySeconds 0->2",
                "status replicas=4 updated=4 ready=4 available=4 unavailable=0 observed=2 Available=MinimumReplicasAvailable Progressing=DeploymentPaused(Unknown)",
            ],
        );
    }

    #[test]
    fn replica_sets_are_adopted_released_and_collisions_counted() {
        let d = deployment("revision=2");
        let orphan = replica_set(&d, "image=v2 replicas=4 orphan revision=2 desired=4 max=5");
        let mut stray = (*replica_set(&d, "image=v1 replicas=0 revision=1")).clone();
        stray.metadata.labels = Some(labels(&[("app", "db")]));
        let stray = Arc::new(stray);
        let plan = sync_deployment(&d, &[orphan.clone(), stray.clone()], &[], at(0)).expect("sync");
        assert_eq!(
            plan.writes[..2],
            [
                Write::AdoptReplicaSet {
                    name: orphan.name_any(),
                    uid: Some("uid-v2".into())
                },
                Write::ReleaseReplicaSet {
                    name: stray.name_any(),
                    uid: Some("uid-v1".into())
                },
            ]
        );

        // A ReplicaSet of another template already has the new name.
        let mut taken = (*replica_set(&d, "image=v1 replicas=1 revision=1")).clone();
        taken.metadata.name = Some(format!(
            "web-{}",
            compute_hash(&template("v2"), None).expect("hash")
        ));
        taken.metadata.owner_references = None;
        taken.metadata.labels = Some(labels(&[("other", "x")]));
        let plan = sync_deployment(&d, &[Arc::new(taken)], &[], at(0)).expect("sync");
        let Some(Write::Status(status)) = plan.writes.last() else {
            panic!("expected a status write: {plan:?}");
        };
        assert_eq!(status.collision_count, Some(1));
        assert!(!plan
            .writes
            .iter()
            .any(|w| matches!(w, Write::CreateReplicaSet(_))));
    }
}
