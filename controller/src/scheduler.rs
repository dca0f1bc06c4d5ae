//! The scheduler: binds each pending pod (no `spec.nodeName`, `schedulerName`
//! `default-scheduler` or empty) to a node through `pods/{name}/binding`, as
//! kube-scheduler does with its default plugins reduced to the ones that matter here.
//!
//! Filters, in kube-scheduler's order, each giving its reason when it rejects a node:
//! NodeUnschedulable (`spec.unschedulable` unless tolerated), TaintToleration (NoSchedule
//! and NoExecute taints, plus the `node.kubernetes.io/not-ready` or `unreachable` taint
//! the node lifecycle controller would put on a node that is not Ready), NodeAffinity
//! (`spec.nodeSelector` and required node affinity) and the pod count of
//! NodeResourcesFit (`allocatable.pods`). Score: the node with the fewest pods wins, ties
//! go to the first name. A bound pod gets a `Scheduled` event; a pod that fits nowhere a
//! `FailedScheduling` event and a `PodScheduled=False` condition with kube-scheduler's
//! message, and is tried again when nodes change or a pod leaves a node.
//!
//! Decisions are made one at a time against a cache of pods per node that counts the
//! pods this scheduler just bound before the watch shows them (kube-scheduler's
//! "assumed" pods); bindings and events are written concurrently. Not here: CPU and
//! memory requests, pod (anti-)affinity, topology spread, preemption, priorities.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::mpsc;
use futures::{future, StreamExt};
use k8s_openapi::api::core::v1::{
    Binding, Node, NodeSelectorRequirement, ObjectReference, Pod, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use serde_json::json;
use thiserror::Error;

use crate::events::Recorder;

/// The `spec.schedulerName` this scheduler serves (an empty name means it too).
pub const SCHEDULER_NAME: &str = "default-scheduler";

const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready";
const UNREACHABLE_TAINT: &str = "node.kubernetes.io/unreachable";
const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";
/// How long an unschedulable pod waits for a retry when nothing changes, as
/// kube-scheduler's unschedulable queue does.
const UNSCHEDULABLE_RETRY: Duration = Duration::from_secs(300);
const CONCURRENT_BINDINGS: u16 = 64;

#[derive(Debug, Error)]
pub enum Error {
    #[error("binding pod {pod} to node {node}: {source}")]
    Bind {
        pod: String,
        node: String,
        source: kube::Error,
    },
    #[error("marking pod {pod} unschedulable: {source}")]
    Status { pod: String, source: kube::Error },
    #[error("the node store was dropped")]
    Stopped,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A node as the scheduler weighs it: the Node and the pods already placed on it.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub node: &'a Node,
    pub pods: usize,
}

/// Where a pod goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    Bind(String),
    /// No node fits; the message explains why, in kube-scheduler's words.
    Unschedulable(String),
}

/// Why a node was filtered out, and whether preemption could ever make room on it.
struct Rejection {
    reason: String,
    resolvable: bool,
}

impl Rejection {
    fn unresolvable(reason: impl Into<String>) -> Self {
        Rejection {
            reason: reason.into(),
            resolvable: false,
        }
    }
}

/// Chooses the node for `pod`: among the nodes that pass every filter, the one with the
/// fewest pods, ties broken by name.
pub fn place(pod: &Pod, candidates: &[Candidate<'_>]) -> Placement {
    if candidates.is_empty() {
        return Placement::Unschedulable("no nodes available to schedule pods".into());
    }
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut resolvable = 0;
    let mut best: Option<(usize, String)> = None;
    for c in candidates {
        match filter(pod, c) {
            Ok(()) => {
                let key = (c.pods, c.node.name_any());
                if best.as_ref().is_none_or(|b| key < *b) {
                    best = Some(key);
                }
            }
            Err(r) => {
                resolvable += usize::from(r.resolvable);
                *reasons.entry(r.reason).or_default() += 1;
            }
        }
    }
    match best {
        Some((_, name)) => Placement::Bind(name),
        None => Placement::Unschedulable(fit_error(candidates.len(), &reasons, resolvable)),
    }
}

/// kube-scheduler's FitError text: the sorted reason histogram, then what preemption found.
fn fit_error(total: usize, reasons: &BTreeMap<String, usize>, resolvable: usize) -> String {
    let mut histogram: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
    histogram.sort();
    let mut preemption = Vec::new();
    if resolvable > 0 {
        preemption.push(format!(
            "{resolvable} No preemption victims found for incoming pod"
        ));
    }
    if total > resolvable {
        preemption.push(format!(
            "{} Preemption is not helpful for scheduling",
            total - resolvable
        ));
    }
    format!(
        "0/{total} nodes are available: {}. preemption: 0/{total} nodes are available: {}.",
        histogram.join(", "),
        preemption.join(", ")
    )
}

fn filter(pod: &Pod, c: &Candidate<'_>) -> Result<(), Rejection> {
    let spec = c.node.spec.as_ref();
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default();
    if spec.and_then(|s| s.unschedulable).unwrap_or(false) {
        let cordon = Taint {
            key: UNSCHEDULABLE_TAINT.into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        if !tolerations.iter().any(|t| tolerates(t, &cordon)) {
            return Err(Rejection::unresolvable("node(s) were unschedulable"));
        }
    }
    let taints = spec.and_then(|s| s.taints.as_deref()).unwrap_or_default();
    let implied = condition_taint(c.node, taints);
    let untolerated = taints
        .iter()
        .chain(&implied)
        .filter(|t| matches!(t.effect.as_str(), "NoSchedule" | "NoExecute"))
        .find(|t| !tolerations.iter().any(|tol| tolerates(tol, t)));
    if let Some(t) = untolerated {
        return Err(Rejection::unresolvable(format!(
            "node(s) had untolerated taint {{{}: {}}}",
            t.key,
            t.value.as_deref().unwrap_or_default()
        )));
    }
    if !matches_node_selector(pod, c.node) {
        return Err(Rejection::unresolvable(
            "node(s) didn't match Pod's node affinity/selector",
        ));
    }
    let max_pods = c
        .node
        .status
        .as_ref()
        .and_then(|s| s.allocatable.as_ref())
        .and_then(|a| a.get("pods"))
        .and_then(|q| q.0.parse::<usize>().ok());
    if max_pods.is_some_and(|max| c.pods >= max) {
        return Err(Rejection {
            reason: "Too many pods".into(),
            resolvable: true,
        });
    }
    Ok(())
}

/// The taint the node lifecycle controller keeps on a node that is not Ready, unless the
/// node already carries it.
fn condition_taint(node: &Node, taints: &[Taint]) -> Option<Taint> {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.as_str());
    let key = match ready {
        Some("True") => return None,
        Some("Unknown") => UNREACHABLE_TAINT,
        _ => NOT_READY_TAINT,
    };
    if taints.iter().any(|t| t.key == key) {
        return None;
    }
    Some(Taint {
        key: key.into(),
        effect: "NoSchedule".into(),
        ..Default::default()
    })
}

/// Whether `toleration` tolerates `taint`, by the rules of the core API helpers.
fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect = toleration.effect.as_deref().unwrap_or_default();
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or_default();
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => {
            toleration.value.as_deref().unwrap_or_default()
                == taint.value.as_deref().unwrap_or_default()
        }
        _ => false,
    }
}

fn matches_node_selector(pod: &Pod, node: &Node) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return true;
    };
    let labels = node.labels();
    let selector_ok = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    let affinity_ok = required.is_none_or(|r| {
        r.node_selector_terms.iter().any(|term| {
            let exprs = term.match_expressions.as_deref().unwrap_or_default();
            let fields = term.match_fields.as_deref().unwrap_or_default();
            (!exprs.is_empty() || !fields.is_empty())
                && exprs
                    .iter()
                    .all(|e| requirement_matches(e, labels.get(&e.key).map(String::as_str)))
                && fields.iter().all(|f| {
                    f.key == "metadata.name"
                        && requirement_matches(f, node.metadata.name.as_deref())
                })
        })
    });
    selector_ok && affinity_ok
}

fn requirement_matches(req: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = req.values.as_deref().unwrap_or_default();
    let number = |s: &str| s.parse::<i64>().ok();
    match req.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| values.iter().all(|x| x != v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(have), Some(want)) = (
                value.and_then(number),
                values.first().and_then(|s| number(s)),
            ) else {
                return false;
            };
            if req.operator == "Gt" {
                have > want
            } else {
                have < want
            }
        }
        _ => false,
    }
}

/// Whether this scheduler should place `pod` now.
fn wants_scheduling(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    let unbound = spec.node_name.as_deref().unwrap_or_default().is_empty();
    let ours = matches!(
        spec.scheduler_name.as_deref(),
        None | Some("") | Some(SCHEDULER_NAME)
    );
    let gated = spec
        .scheduling_gates
        .as_ref()
        .is_some_and(|g| !g.is_empty());
    unbound && ours && !gated && pod.metadata.deletion_timestamp.is_none() && !finished(pod)
}

fn finished(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    matches!(phase, Some("Succeeded" | "Failed"))
}

fn bound_node(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

/// Pods per node: what the watch shows bound and unfinished, plus what this scheduler
/// bound that the watch does not show yet.
#[derive(Default)]
struct Cache {
    placed: HashMap<String, String>,
    assumed: HashSet<String>,
    per_node: HashMap<String, usize>,
    relist: Option<HashMap<String, String>>,
    synced: bool,
}

impl Cache {
    fn count(&self, node: &str) -> usize {
        self.per_node.get(node).copied().unwrap_or(0)
    }

    fn place(&mut self, uid: &str, node: &str) {
        if let Some(old) = self.placed.insert(uid.to_string(), node.to_string()) {
            self.uncount(&old);
        }
        *self.per_node.entry(node.to_string()).or_default() += 1;
    }

    /// Drops `uid`; true if it held a place on a node.
    fn remove(&mut self, uid: &str) -> bool {
        self.assumed.remove(uid);
        match self.placed.remove(uid) {
            Some(node) => {
                self.uncount(&node);
                true
            }
            None => false,
        }
    }

    fn uncount(&mut self, node: &str) {
        if let Some(n) = self.per_node.get_mut(node) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_node.remove(node);
            }
        }
    }

    fn assume(&mut self, uid: &str, node: &str) {
        self.place(uid, node);
        self.assumed.insert(uid.to_string());
    }

    fn forget(&mut self, uid: &str) {
        if self.assumed.contains(uid) {
            self.remove(uid);
        }
    }

    /// Applies a watch event; true when a node may have room again.
    fn apply(&mut self, event: watcher::Event<Pod>) -> bool {
        match event {
            watcher::Event::Apply(pod) => self.observe(&pod),
            watcher::Event::Delete(pod) => self.remove(&pod.uid().unwrap_or_default()),
            watcher::Event::Init => {
                self.relist = Some(HashMap::new());
                false
            }
            watcher::Event::InitApply(pod) => {
                if let (Some(list), Some(node)) = (self.relist.as_mut(), bound_node(&pod)) {
                    if !finished(&pod) {
                        list.insert(pod.uid().unwrap_or_default(), node.to_string());
                    }
                }
                false
            }
            watcher::Event::InitDone => {
                let listed = self.relist.take().unwrap_or_default();
                let assumed: Vec<(String, String)> = self
                    .assumed
                    .iter()
                    .filter(|uid| !listed.contains_key(*uid))
                    .filter_map(|uid| self.placed.get(uid).map(|n| (uid.clone(), n.clone())))
                    .collect();
                *self = Cache {
                    synced: true,
                    ..Cache::default()
                };
                for (uid, node) in listed {
                    self.place(&uid, &node);
                }
                for (uid, node) in assumed {
                    self.assume(&uid, &node);
                }
                true
            }
        }
    }

    fn observe(&mut self, pod: &Pod) -> bool {
        let uid = pod.uid().unwrap_or_default();
        match bound_node(pod) {
            Some(_) if finished(pod) => self.remove(&uid),
            Some(node) => {
                self.assumed.remove(&uid);
                if self.placed.get(&uid).map(String::as_str) != Some(node) {
                    self.place(&uid, node);
                }
                false
            }
            None if self.assumed.contains(&uid) => false,
            None => self.remove(&uid),
        }
    }
}

/// What of a node decides whether pods fit on it; a change means pods are worth retrying.
type Fingerprint = (
    BTreeMap<String, String>,
    Option<Vec<Taint>>,
    Option<bool>,
    Option<String>,
    Option<String>,
);

fn fingerprint(node: &Node) -> Fingerprint {
    let spec = node.spec.as_ref();
    let status = node.status.as_ref();
    (
        node.labels().clone(),
        spec.and_then(|s| s.taints.clone()),
        spec.and_then(|s| s.unschedulable),
        status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.status.clone()),
        status
            .and_then(|s| s.allocatable.as_ref())
            .and_then(|a| a.get("pods"))
            .map(|q| q.0.clone()),
    )
}

struct Ctx {
    client: Client,
    nodes: Store<Node>,
    cache: Mutex<Cache>,
    events: Recorder,
}

impl Ctx {
    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[tracing::instrument(skip_all, fields(pod = %format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())))]
async fn reconcile(pod: Arc<Pod>, ctx: Arc<Ctx>) -> Result<Action> {
    if !wants_scheduling(&pod) {
        return Ok(Action::await_change());
    }
    ctx.nodes
        .wait_until_ready()
        .await
        .map_err(|_| Error::Stopped)?;
    let uid = pod.uid().unwrap_or_default();
    let nodes = ctx.nodes.state();
    let placement = {
        let mut cache = ctx.cache();
        if !cache.synced {
            return Ok(Action::requeue(Duration::from_millis(100)));
        }
        let candidates: Vec<Candidate<'_>> = nodes
            .iter()
            .map(|n| Candidate {
                node: n,
                pods: cache.count(&n.name_any()),
            })
            .collect();
        let placement = place(&pod, &candidates);
        if let Placement::Bind(node) = &placement {
            cache.assume(&uid, node);
        }
        placement
    };
    match placement {
        Placement::Bind(node) => bind(&ctx, &pod, &uid, node).await,
        Placement::Unschedulable(message) => {
            tracing::info!(%message, "unschedulable");
            mark_unschedulable(&ctx, &pod, &message).await?;
            Ok(Action::requeue(UNSCHEDULABLE_RETRY))
        }
    }
}

async fn bind(ctx: &Ctx, pod: &Pod, uid: &str, node: String) -> Result<Action> {
    let (namespace, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.clone()),
            uid: Some(uid.to_string()),
            ..Default::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.clone()),
            ..Default::default()
        },
    };
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let created: Result<serde_json::Value, kube::Error> = api
        .create_subresource("binding", &name, &PostParams::default(), &binding)
        .await;
    match created {
        Ok(_) => {
            tracing::info!(%node, "bound");
            let message = format!("Successfully assigned {namespace}/{name} to {node}");
            ctx.events
                .record(pod, "Normal", "Scheduled", "Binding", &message);
            Ok(Action::await_change())
        }
        Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => {
            // Gone, already bound or being deleted: nothing left to schedule.
            ctx.cache().forget(uid);
            tracing::debug!(%node, message = %status.message, "binding refused");
            Ok(Action::await_change())
        }
        Err(source) => {
            ctx.cache().forget(uid);
            Err(Error::Bind {
                pod: format!("{namespace}/{name}"),
                node,
                source,
            })
        }
    }
}

/// Sets `PodScheduled=False` and records `FailedScheduling`, unless the pod already
/// carries this very verdict.
async fn mark_unschedulable(ctx: &Ctx, pod: &Pod, message: &str) -> Result<()> {
    let current = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"));
    if current.is_some_and(|c| {
        c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
            && c.message.as_deref() == Some(message)
    }) {
        return Ok(());
    }
    let transition = current
        .filter(|c| c.status == "False")
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or_else(now);
    let patch = json!({"status": {"conditions": [{
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": message,
        "lastProbeTime": null,
        "lastTransitionTime": transition,
    }]}});
    let (namespace, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let params = PatchParams {
        field_manager: Some(SCHEDULER_NAME.into()),
        ..Default::default()
    };
    match api
        .patch_status(&name, &params, &Patch::Strategic(&patch))
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
        Err(source) => {
            return Err(Error::Status {
                pod: format!("{namespace}/{name}"),
                source,
            })
        }
    }
    ctx.events
        .record(pod, "Warning", "FailedScheduling", "Scheduling", message);
    Ok(())
}

fn now() -> Time {
    Time(Timestamp::now())
}

fn error_policy(_pod: Arc<Pod>, err: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(error = %err, "scheduling");
    Action::requeue(Duration::from_secs(1))
}

/// Schedules pending pods until one of its watches ends.
pub async fn run(client: Client) -> Result<(), Error> {
    let (nodes, node_writer) = reflector::store();
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        nodes,
        cache: Mutex::new(Cache::default()),
        events: Recorder::new(client.clone(), SCHEDULER_NAME),
    });
    // Retries of unschedulable pods, coalesced: one pending signal is enough.
    let (retry, retries) = mpsc::channel::<()>(1);

    let mut seen: HashMap<String, Fingerprint> = HashMap::new();
    let mut node_retry = retry.clone();
    let node_events = watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(node_writer)
        .for_each(move |event| {
            let changed = match event {
                Ok(watcher::Event::Apply(n) | watcher::Event::InitApply(n)) => {
                    let print = fingerprint(&n);
                    seen.insert(n.name_any(), print.clone()) != Some(print)
                }
                Ok(watcher::Event::Delete(n)) => seen.remove(&n.name_any()).is_some(),
                Ok(watcher::Event::Init | watcher::Event::InitDone) => false,
                Err(err) => {
                    tracing::warn!(error = %err, "watching nodes");
                    false
                }
            };
            if changed {
                let _ = node_retry.try_send(());
            }
            future::ready(())
        });

    let cache_ctx = ctx.clone();
    let mut pod_retry = retry;
    let all_pods = watcher::Config::default().streaming_lists();
    let pod_events = watcher(Api::<Pod>::all(client.clone()), all_pods)
        .default_backoff()
        .for_each(move |event| {
            match event {
                Ok(event) => {
                    if cache_ctx.cache().apply(event) {
                        let _ = pod_retry.try_send(());
                    }
                }
                Err(err) => tracing::warn!(error = %err, "watching pods"),
            }
            future::ready(())
        });

    let pending = watcher::Config::default().fields("spec.nodeName=");
    let scheduling = Controller::new(Api::<Pod>::all(client), pending)
        .with_config(controller::Config::default().concurrency(CONCURRENT_BINDINGS))
        .reconcile_all_on(retries)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| {
            if let Err(err) = result {
                tracing::debug!(error = %err, "scheduler");
            }
            future::ready(())
        });

    tracing::info!("scheduler started");
    tokio::select! {
        () = node_events => tracing::warn!("node watch ended"),
        () = pod_events => tracing::warn!("pod watch ended"),
        () = scheduling => tracing::warn!("scheduling ended"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node from `name word…`: `pods=N`, `max=N` (allocatable pods), `label:k=v`,
    /// `taint:k=v:Effect`, `unschedulable`, `notready`, `unknown`.
    fn node(text: &str) -> (Node, usize) {
        let mut words = text.split_whitespace();
        let name = words.next().unwrap_or_default();
        let mut node = json!({"metadata": {"name": name, "labels": {}}, "spec": {},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        let mut pods = 0;
        for w in words {
            if let Some(n) = w.strip_prefix("pods=") {
                pods = n.parse().expect("pod count");
            } else if let Some(n) = w.strip_prefix("max=") {
                node["status"]["allocatable"] = json!({"pods": n});
            } else if let Some((k, v)) = w.strip_prefix("label:").and_then(|l| l.split_once('=')) {
                node["metadata"]["labels"][k] = json!(v);
            } else if let Some(t) = w.strip_prefix("taint:") {
                let (kv, effect) = t.rsplit_once(':').expect("taint effect");
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                let taints = node["spec"]["taints"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let mut taints = taints;
                taints.push(json!({"key": k, "value": v, "effect": effect}));
                node["spec"]["taints"] = json!(taints);
            } else if w == "unschedulable" {
                node["spec"]["unschedulable"] = json!(true);
            } else if w == "notready" {
                node["status"]["conditions"][0]["status"] = json!("False");
            } else if w == "unknown" {
                node["status"]["conditions"][0]["status"] = json!("Unknown");
            } else {
                panic!("unknown node word {w}");
            }
        }
        (serde_json::from_value(node).expect("node"), pods)
    }

    /// A pod from words: `select:k=v`, `tolerate:k=v:Effect` / `tolerate:k:Effect`
    /// (Exists) / `tolerate:*` (everything), `affinity:key:Op:v1,v2`, `field:Op:name`.
    fn pod(text: &str) -> Pod {
        let mut pod =
            json!({"metadata": {"name": "p", "namespace": "default"}, "spec": {"containers": []}});
        let mut terms = Vec::new();
        for w in text.split_whitespace() {
            if let Some((k, v)) = w.strip_prefix("select:").and_then(|l| l.split_once('=')) {
                pod["spec"]["nodeSelector"][k] = json!(v);
            } else if let Some(t) = w.strip_prefix("tolerate:") {
                let toleration = match t.rsplit_once(':') {
                    None => json!({"operator": "Exists"}),
                    Some((kv, effect)) => match kv.split_once('=') {
                        Some((k, v)) => json!({"key": k, "value": v, "effect": effect}),
                        None => json!({"key": kv, "operator": "Exists", "effect": effect}),
                    },
                };
                let mut list = pod["spec"]["tolerations"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                list.push(toleration);
                pod["spec"]["tolerations"] = json!(list);
            } else if let Some(a) = w.strip_prefix("affinity:") {
                let parts: Vec<&str> = a.split(':').collect();
                let values: Vec<&str> = parts[2].split(',').filter(|v| !v.is_empty()).collect();
                terms.push(json!({"matchExpressions": [{"key": parts[0], "operator": parts[1], "values": values}]}));
            } else if let Some(f) = w.strip_prefix("field:") {
                let (op, name) = f.split_once(':').expect("field op");
                terms.push(json!({"matchFields": [{"key": "metadata.name", "operator": op, "values": [name]}]}));
            } else {
                panic!("unknown pod word {w}");
            }
        }
        if !terms.is_empty() {
            pod["spec"]["affinity"] = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}});
        }
        serde_json::from_value(pod).expect("pod")
    }

    fn check(nodes: &[&str], pod_text: &str, expect: &str) {
        let nodes: Vec<(Node, usize)> = nodes.iter().map(|n| node(n)).collect();
        let candidates: Vec<Candidate<'_>> = nodes
            .iter()
            .map(|(node, pods)| Candidate { node, pods: *pods })
            .collect();
        let got = match place(&pod(pod_text), &candidates) {
            Placement::Bind(n) => format!("bind {n}"),
            Placement::Unschedulable(m) => m,
        };
        assert_eq!(got, expect, "nodes {nodes:?} pod {pod_text:?}");
    }

    #[test]
    fn fewest_pods_wins_and_ties_go_to_the_first_name() {
        check(&["b pods=1", "a pods=1", "c pods=2"], "", "bind a");
        check(&["a pods=3", "b pods=1", "c pods=2"], "", "bind b");
        check(&["n1", "n2", "n3"], "", "bind n1");
    }

    #[test]
    fn node_selector_and_required_affinity_filter_nodes() {
        check(
            &["a", "b label:disk=ssd pods=9"],
            "select:disk=ssd",
            "bind b",
        );
        check(
            &["a", "b", "c label:disk=hdd"],
            "select:disk=ssd",
            "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.",
        );
        check(
            &["a label:zone=x", "b label:zone=y pods=5"],
            "affinity:zone:In:y,z",
            "bind b",
        );
        check(
            &["a label:zone=x", "b label:zone=y"],
            "affinity:zone:NotIn:x",
            "bind b",
        );
        check(
            &["a label:gen=3", "b label:gen=5 pods=1"],
            "affinity:gen:Gt:4",
            "bind b",
        );
        check(
            &["a", "b label:gpu=1 pods=1"],
            "affinity:gpu:Exists:",
            "bind b",
        );
        check(
            &["a pods=1", "b label:gpu=1"],
            "affinity:gpu:DoesNotExist:",
            "bind a",
        );
        check(&["a", "b pods=3"], "field:In:b", "bind b");
        check(
            &["a label:zone=x", "b pods=3"],
            "affinity:zone:In:x field:In:b",
            "bind a",
        );
    }

    #[test]
    fn taints_need_tolerations() {
        check(
            &["a taint:dedicated=gpu:NoSchedule", "b pods=4"],
            "",
            "bind b",
        );
        check(
            &["a taint:dedicated=gpu:NoSchedule", "b pods=4"],
            "tolerate:dedicated=gpu:NoSchedule",
            "bind a",
        );
        check(
            &["a taint:dedicated=gpu:NoSchedule", "b pods=4"],
            "tolerate:dedicated:NoSchedule",
            "bind a",
        );
        check(
            &["a taint:x=y:PreferNoSchedule pods=1", "b pods=2"],
            "",
            "bind a",
        );
        check(
            &["a taint:dedicated=gpu:NoExecute", "b taint:dedicated=gpu:NoSchedule"],
            "tolerate:dedicated=cpu:NoSchedule",
            "0/2 nodes are available: 2 node(s) had untolerated taint {dedicated: gpu}. preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling.",
        );
    }

    #[test]
    fn cordoned_and_not_ready_nodes_are_skipped() {
        check(&["a unschedulable", "b pods=5"], "", "bind b");
        check(&["a unschedulable", "b pods=5"], "tolerate:*", "bind a");
        check(
            &["a unschedulable", "b notready", "c unknown label:disk=ssd"],
            "select:disk=ssd",
            "0/3 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }, 1 node(s) had untolerated taint {node.kubernetes.io/unreachable: }, 1 node(s) were unschedulable. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.",
        );
        check(
            &["a notready"],
            "tolerate:node.kubernetes.io/not-ready:NoSchedule",
            "bind a",
        );
    }

    #[test]
    fn full_nodes_are_skipped() {
        check(&["a pods=3 max=3", "b pods=7"], "", "bind b");
        check(&["a pods=3 max=3", "b label:disk=ssd"], "", "bind b");
        check(
            &["a pods=3 max=3", "b pods=1 max=1", "c"],
            "select:disk=ssd",
            "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.",
        );
        check(
            &["a pods=3 max=3", "b unschedulable"],
            "",
            "0/2 nodes are available: 1 Too many pods, 1 node(s) were unschedulable. preemption: 0/2 nodes are available: 1 No preemption victims found for incoming pod, 1 Preemption is not helpful for scheduling.",
        );
    }

    #[test]
    fn no_nodes_at_all() {
        check(&[], "", "no nodes available to schedule pods");
    }

    #[test]
    fn the_cache_counts_assumed_pods_until_the_watch_confirms_them() {
        let mut cache = Cache::default();
        let mut bound = pod("");
        bound.metadata.uid = Some("u1".into());
        cache.assume("u1", "a");
        assert_eq!(cache.count("a"), 1);
        assert!(
            !cache.apply(watcher::Event::Apply(bound.clone())),
            "unbound copy keeps the assumption"
        );
        assert_eq!(cache.count("a"), 1);
        bound.spec.as_mut().expect("spec").node_name = Some("a".into());
        cache.apply(watcher::Event::Apply(bound.clone()));
        assert_eq!((cache.count("a"), cache.assumed.len()), (1, 0));
        cache.assume("u2", "b");
        cache.forget("u2");
        assert_eq!(cache.count("b"), 0);
        assert!(
            cache.apply(watcher::Event::Delete(bound)),
            "a deleted pod frees its node"
        );
        assert_eq!(cache.count("a"), 0);
    }
}
