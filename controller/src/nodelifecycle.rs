//! Node health, as the node lifecycle controller of kube-controller-manager monitors it:
//! every `--node-monitor-period` it looks at each Node's Ready condition, and a node
//! whose kubelet has not posted a heartbeat for `--node-monitor-grace-period` (or,
//! never having posted one, for the startup grace period since it was created) gets
//! every condition set to Unknown — reason `NodeStatusUnknown`, "Kubelet stopped
//! posting node status." (or `NodeStatusNeverUpdated`, "Kubelet never posted node
//! status.") — so the scheduler, the endpoint controllers and the load-balancer
//! speakers stop counting on it. The kubelet's next heartbeat makes it Ready again.
//!
//! Not here: the `node.kubernetes.io/unreachable` taints and the eviction of pods from
//! an unreachable node.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, NodeCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::runtime::watched_store;

const FIELD_MANAGER: &str = "node-lifecycle-controller";
/// The conditions a kubelet reports, which go Unknown together.
const KUBELET_CONDITIONS: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

/// How the controller watches over nodes.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How often nodes are looked at (`--node-monitor-period`, 5 s).
    pub period: Duration,
    /// How long a running node may go without a heartbeat
    /// (`--node-monitor-grace-period`, 50 s).
    pub grace: Duration,
    /// How long a new node may take to post its first status
    /// (`--node-startup-grace-period`, 1 min).
    pub startup_grace: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            period: Duration::from_secs(5),
            grace: Duration::from_secs(50),
            startup_grace: Duration::from_secs(60),
        }
    }
}

fn older_than(time: Option<&Time>, now: Timestamp, limit: Duration) -> bool {
    let limit = SignedDuration::try_from(limit).unwrap_or(SignedDuration::MAX);
    time.is_some_and(|t| now.duration_since(t.0) > limit)
}

/// The conditions `node` should have now: `None` when it is fine as it is, or the
/// kubelet's conditions set to Unknown when its heartbeat is overdue. Pure.
pub fn overdue_conditions(
    node: &Node,
    now: Timestamp,
    timing: &Timing,
) -> Option<Vec<NodeCondition>> {
    let conditions = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let ready = conditions.iter().find(|c| c.type_ == "Ready");
    let (reason, message) = match ready {
        Some(ready) if ready.status == "Unknown" => return None,
        Some(ready) => {
            let beat = ready.last_heartbeat_time.as_ref();
            if !older_than(beat, now, timing.grace) {
                return None;
            }
            ("NodeStatusUnknown", "Kubelet stopped posting node status.")
        }
        None => {
            let created = node.metadata.creation_timestamp.as_ref();
            if !older_than(created, now, timing.startup_grace) {
                return None;
            }
            (
                "NodeStatusNeverUpdated",
                "Kubelet never posted node status.",
            )
        }
    };
    let mut out = conditions.clone();
    for kind in KUBELET_CONDITIONS {
        let unknown = |previous: Option<&NodeCondition>| NodeCondition {
            type_: kind.to_owned(),
            status: "Unknown".to_owned(),
            reason: Some(reason.to_owned()),
            message: Some(message.to_owned()),
            last_heartbeat_time: previous.and_then(|c| c.last_heartbeat_time.clone()),
            last_transition_time: Some(Time(now)),
        };
        match out.iter_mut().find(|c| c.type_ == kind) {
            Some(condition) => *condition = unknown(Some(condition)),
            None => out.push(unknown(None)),
        }
    }
    Some(out)
}

/// Watches over nodes until the watch ends.
pub async fn run(client: Client, timing: Timing) -> anyhow::Result<()> {
    let store = watched_store::<Node>(client.clone(), || {});
    store.wait_until_ready().await?;
    let nodes: Api<Node> = Api::all(client);
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    tracing::info!(grace = ?timing.grace, period = ?timing.period, "node lifecycle controller started");
    loop {
        let now = Timestamp::now();
        for node in store.state().iter().map(Arc::as_ref) {
            let Some(conditions) = overdue_conditions(node, now, &timing) else {
                continue;
            };
            let name = node.name_any();
            let patch = json!({"status": {"conditions": conditions}});
            match nodes
                .patch_status(&name, &params, &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    tracing::info!(node = %name, "node is unreachable: its kubelet stopped posting status")
                }
                Err(err) => tracing::warn!(node = %name, %err, "marking a node unreachable"),
            }
        }
        tokio::time::sleep(timing.period).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(ready_beat: Option<&str>, created: &str) -> Node {
        let conditions: Vec<serde_json::Value> = ready_beat
            .map(|beat| {
                vec![
                    json!({"type": "Ready", "status": "True", "reason": "KubeletReady",
                           "lastHeartbeatTime": beat, "lastTransitionTime": created}),
                    json!({"type": "MemoryPressure", "status": "False",
                           "lastHeartbeatTime": beat, "lastTransitionTime": created}),
                ]
            })
            .unwrap_or_default();
        serde_json::from_value(json!({
            "metadata": {"name": "node1", "creationTimestamp": created},
            "status": {"conditions": conditions},
        }))
        .expect("node")
    }

    fn at(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    #[test]
    fn a_fresh_heartbeat_leaves_the_node_alone() {
        let timing = Timing::default();
        let fresh = node(Some("2026-11-25T10:00:00Z"), "2026-11-25T09:00:00Z");
        assert_eq!(
            overdue_conditions(&fresh, at("2026-11-25T10:00:50Z"), &timing),
            None
        );
    }

    #[test]
    fn an_overdue_heartbeat_makes_every_kubelet_condition_unknown() {
        let timing = Timing::default();
        let stale = node(Some("2026-11-25T10:00:00Z"), "2026-11-25T09:00:00Z");
        let conditions =
            overdue_conditions(&stale, at("2026-11-25T10:00:51Z"), &timing).expect("overdue");
        let kinds: Vec<&str> = conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(
            kinds,
            ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"]
        );
        for condition in &conditions {
            assert_eq!(condition.status, "Unknown");
            assert_eq!(condition.reason.as_deref(), Some("NodeStatusUnknown"));
            assert_eq!(
                condition.message.as_deref(),
                Some("Kubelet stopped posting node status.")
            );
        }
        assert_eq!(
            conditions[0].last_heartbeat_time.as_ref().map(|t| t.0),
            Some(at("2026-11-25T10:00:00Z")),
            "the last heartbeat stays as the kubelet posted it"
        );
        let mut marked = stale.clone();
        marked.status.as_mut().expect("status").conditions = Some(conditions);
        assert_eq!(
            overdue_conditions(&marked, at("2026-11-25T10:05:00Z"), &timing),
            None,
            "an Unknown node is not written again"
        );
    }

    #[test]
    fn a_node_that_never_posted_status_gets_the_startup_grace() {
        let timing = Timing::default();
        let silent = node(None, "2026-11-25T10:00:00Z");
        assert_eq!(
            overdue_conditions(&silent, at("2026-11-25T10:00:59Z"), &timing),
            None
        );
        let conditions =
            overdue_conditions(&silent, at("2026-11-25T10:01:01Z"), &timing).expect("overdue");
        assert_eq!(
            conditions[0].reason.as_deref(),
            Some("NodeStatusNeverUpdated")
        );
        assert_eq!(
            conditions[0].message.as_deref(),
            Some("Kubelet never posted node status.")
        );
    }
}
