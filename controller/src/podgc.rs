//! Pod garbage collection of orphans, as kube-controller-manager's pod GC does it: a
//! pod bound to a node that no longer exists is deleted (grace period 0) once the node
//! has been gone for the quarantine time (40 s) and the apiserver confirms it is gone,
//! after its status got the `DisruptionTarget` condition (reason `DeletionByPodGC`,
//! "PodGC: node no longer exists") and, unless it had finished, phase Failed. Its
//! ReplicaSet then replaces it on a node that exists.
//!
//! Not here: the pod GC's other duties (terminated pods above a threshold, terminating
//! pods of out-of-service nodes, unscheduled terminating pods).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::runtime::watched_store;

/// How long a node must be gone before its pods are collected (upstream's constant).
pub const QUARANTINE: Duration = Duration::from_secs(40);
/// How often pods are looked at (upstream's gcCheckPeriod).
const CHECK_PERIOD: Duration = Duration::from_secs(20);
const FIELD_MANAGER: &str = "pod-garbage-collector";

/// Nodes that pods are bound to but the cluster does not have, and since when.
#[derive(Debug, Default)]
pub struct Missing {
    since: BTreeMap<String, Instant>,
}

impl Missing {
    /// Notes the nodes `pods` are bound to that are not among `nodes`, forgets those
    /// that are back or have no pods left, and returns the ones gone for at least
    /// `quarantine`. Pure but for the times it is given.
    pub fn overdue(
        &mut self,
        pods: &[Pod],
        nodes: &BTreeSet<String>,
        now: Instant,
        quarantine: Duration,
    ) -> BTreeSet<String> {
        let bound: BTreeSet<String> = pods
            .iter()
            .filter_map(|p| p.spec.as_ref()?.node_name.clone())
            .filter(|n| !n.is_empty() && !nodes.contains(n))
            .collect();
        self.since.retain(|node, _| bound.contains(node));
        for node in &bound {
            self.since.entry(node.clone()).or_insert(now);
        }
        self.since
            .iter()
            .filter(|(_, since)| now.duration_since(**since) >= quarantine)
            .map(|(node, _)| node.clone())
            .collect()
    }
}

/// The status patch a collected pod gets before its deletion.
pub fn disruption_patch(pod: &Pod, now: Timestamp) -> serde_json::Value {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    let mut status = json!({
        "conditions": [{
            "type": "DisruptionTarget",
            "status": "True",
            "reason": "DeletionByPodGC",
            "message": "PodGC: node no longer exists",
            "lastTransitionTime": Time(now),
        }],
    });
    if !matches!(phase, Some("Succeeded" | "Failed")) {
        status["phase"] = json!("Failed");
    }
    json!({ "status": status })
}

/// Collects orphaned pods until the watches end; `quarantine` is [`QUARANTINE`] but
/// for tests.
pub async fn run(client: Client, quarantine: Duration) -> anyhow::Result<()> {
    let pods = watched_store::<Pod>(client.clone(), || {});
    let nodes = watched_store::<Node>(client.clone(), || {});
    pods.wait_until_ready().await?;
    nodes.wait_until_ready().await?;
    let node_api: Api<Node> = Api::all(client.clone());
    let period = CHECK_PERIOD
        .min(quarantine / 2)
        .max(Duration::from_millis(100));
    let mut missing = Missing::default();
    loop {
        tokio::time::sleep(period).await;
        let all: Vec<Pod> = pods.state().iter().map(|p| Pod::clone(p)).collect();
        let known: BTreeSet<String> = nodes.state().iter().map(|n| n.name_any()).collect();
        for node in missing.overdue(&all, &known, Instant::now(), quarantine) {
            // The store may lag: only the apiserver's word that the node is gone counts.
            match node_api.get_opt(&node).await {
                Ok(None) => {}
                Ok(Some(_)) => continue,
                Err(err) => {
                    tracing::warn!(%node, %err, "checking a node before collecting its pods");
                    continue;
                }
            }
            for pod in all.iter().filter(|p| {
                p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node.as_str())
            }) {
                collect(&client, pod).await;
            }
        }
    }
}

async fn collect(client: &Client, pod: &Pod) {
    let (namespace, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
    let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    let patch = disruption_patch(pod, Timestamp::now());
    if let Err(err) = api
        .patch_status(&name, &params, &Patch::Merge(&patch))
        .await
    {
        tracing::debug!(pod = %format!("{namespace}/{name}"), %err, "marking an orphaned pod");
    }
    let delete = DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    match api.delete(&name, &delete).await {
        Ok(_) => {
            tracing::info!(pod = %format!("{namespace}/{name}"), "PodGC: node no longer exists, pod deleted")
        }
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(err) => {
            tracing::warn!(pod = %format!("{namespace}/{name}"), %err, "deleting an orphaned pod")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, node: &str, phase: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "nginx"}]},
            "status": {"phase": phase},
        }))
        .expect("pod")
    }

    #[test]
    fn pods_of_a_node_gone_longer_than_the_quarantine_are_overdue() {
        let pods = vec![pod("a", "node1", "Running"), pod("b", "node2", "Running")];
        let nodes = BTreeSet::from(["node1".to_owned()]);
        let mut missing = Missing::default();
        let start = Instant::now();
        let q = Duration::from_secs(40);
        assert!(missing.overdue(&pods, &nodes, start, q).is_empty());
        assert!(missing
            .overdue(&pods, &nodes, start + Duration::from_secs(39), q)
            .is_empty());
        assert_eq!(
            missing.overdue(&pods, &nodes, start + Duration::from_secs(40), q),
            BTreeSet::from(["node2".to_owned()])
        );
        // The node came back: the clock starts again if it goes once more.
        let back = BTreeSet::from(["node1".to_owned(), "node2".to_owned()]);
        assert!(missing
            .overdue(&pods, &back, start + Duration::from_secs(41), q)
            .is_empty());
        assert!(missing
            .overdue(&pods, &nodes, start + Duration::from_secs(42), q)
            .is_empty());
    }

    #[test]
    fn a_collected_pod_is_marked_as_upstream_marks_it() {
        let now: Timestamp = "2026-11-25T10:00:00Z".parse().expect("time");
        let running = disruption_patch(&pod("a", "node2", "Running"), now);
        assert_eq!(running["status"]["phase"], "Failed");
        let condition = &running["status"]["conditions"][0];
        assert_eq!(condition["type"], "DisruptionTarget");
        assert_eq!(condition["reason"], "DeletionByPodGC");
        assert_eq!(condition["message"], "PodGC: node no longer exists");
        let done = disruption_patch(&pod("b", "node2", "Succeeded"), now);
        assert!(
            done["status"].get("phase").is_none(),
            "a finished pod keeps its phase"
        );
    }
}
