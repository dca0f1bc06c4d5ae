//! Node IPAM, as the controller-manager's range allocator does it: every Node gets a pod
//! CIDR (`spec.podCIDR` and `spec.podCIDRs`) cut from the cluster CIDR, one no other node
//! holds. A CIDR is free again as soon as the node holding it is gone; a node keeps the
//! CIDR it has (the apiserver refuses to change it anyway).
//!
//! Allocation hands out the lowest free node CIDR, so the first node of a fresh cluster
//! gets `10.244.0.0/24`, the next `10.244.1.0/24`, and a freed CIDR is reused first.
//! Single-stack IPv4, like the rest of kubesim. Not here: the CIDRNotAvailable node
//! event; an exhausted range is logged and retried.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;
use thiserror::Error;

/// The cluster CIDR pod CIDRs are cut from unless configured otherwise.
pub const DEFAULT_CLUSTER_CIDR: &str = "10.244.0.0/16";
/// The prefix length of each node's pod CIDR unless configured otherwise.
pub const DEFAULT_NODE_MASK: u8 = 24;

/// How many bits a node CIDR may add to the cluster CIDR's prefix, as upstream allows.
const MAX_SUBNET_BITS: u8 = 16;
const FIELD_MANAGER: &str = "node-ipam-controller";

#[derive(Debug, Error)]
pub enum Error {
    #[error("invalid cluster CIDR {cidr:?}: {reason}")]
    ClusterCidr { cidr: String, reason: String },
    #[error("node CIDR mask /{mask} does not fit cluster CIDR {cidr}: {reason}")]
    NodeMask {
        cidr: String,
        mask: u8,
        reason: &'static str,
    },
    #[error("no pod CIDR left in {0} for node {1}")]
    Exhausted(String, String),
    #[error("assigning pod CIDR {cidr} to node {node}: {source}")]
    Assign {
        node: String,
        cidr: String,
        source: kube::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The cluster CIDR cut into equal node CIDRs, numbered from the start of the range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    base: u32,
    prefix: u8,
    node_mask: u8,
}

impl Pool {
    pub fn new(cluster_cidr: &str, node_mask: u8) -> Result<Pool> {
        let invalid = |reason: &str| Error::ClusterCidr {
            cidr: cluster_cidr.to_string(),
            reason: reason.to_string(),
        };
        let (base, prefix) = parse_cidr(cluster_cidr).ok_or_else(|| {
            invalid("must be an IPv4 address and prefix length, like 10.244.0.0/16")
        })?;
        if base & !mask(prefix) != 0 {
            return Err(invalid("host bits must be zero"));
        }
        let bad_mask = |reason| Error::NodeMask {
            cidr: cluster_cidr.to_string(),
            mask: node_mask,
            reason,
        };
        if node_mask > 32 {
            return Err(bad_mask("an IPv4 prefix is at most 32 bits"));
        }
        if node_mask < prefix {
            return Err(bad_mask("it is larger than the cluster CIDR"));
        }
        if node_mask - prefix > MAX_SUBNET_BITS {
            return Err(bad_mask(
                "it would cut the cluster CIDR into more than 65536 node CIDRs",
            ));
        }
        Ok(Pool {
            base,
            prefix,
            node_mask,
        })
    }

    /// How many node CIDRs the cluster CIDR holds.
    fn len(&self) -> u32 {
        1 << (self.node_mask - self.prefix)
    }

    fn cidr(&self, index: u32) -> String {
        let offset = index.checked_shl(32 - u32::from(self.node_mask));
        let start = self.base + offset.unwrap_or(0);
        format!("{}/{}", Ipv4Addr::from(start), self.node_mask)
    }

    /// The node CIDRs `cidr` overlaps, as a range of indices (empty if outside the pool).
    fn covered(&self, cidr: &str) -> std::ops::Range<u32> {
        let Some((start, prefix)) = parse_cidr(cidr) else {
            return 0..0;
        };
        let start = u64::from(start & mask(prefix));
        let end = start + (1u64 << (32 - prefix));
        let pool_start = u64::from(self.base);
        let pool_end = pool_start + (1u64 << (32 - self.prefix));
        let (from, to) = (start.max(pool_start), end.min(pool_end));
        if from >= to {
            return 0..0;
        }
        let step = 32 - self.node_mask;
        let first = (from - pool_start) >> step;
        let last = (to - pool_start).div_ceil(1u64 << step);
        // Both are at most `len()`, which fits in u32.
        first as u32..last as u32
    }
}

impl std::fmt::Display for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

fn mask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn parse_cidr(cidr: &str) -> Option<(u32, u8)> {
    let (ip, prefix) = cidr.split_once('/')?;
    let ip: Ipv4Addr = ip.parse().ok()?;
    let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32)?;
    Some((u32::from(ip), prefix))
}

/// The pod CIDR for a node that has none: the lowest node CIDR of `pool` that none of
/// the `taken` CIDRs overlaps, or `None` when the pool is exhausted.
pub fn next_free<'a>(pool: &Pool, taken: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut used = vec![false; pool.len() as usize];
    for cidr in taken {
        for i in pool.covered(cidr) {
            used[i as usize] = true;
        }
    }
    let index = used.iter().position(|u| !u)?;
    Some(pool.cidr(index as u32))
}

fn pod_cidr(node: &Node) -> Option<&str> {
    node.spec
        .as_ref()
        .and_then(|s| s.pod_cidr.as_deref())
        .filter(|c| !c.is_empty())
}

struct Ctx {
    client: Client,
    pool: Pool,
    nodes: Store<Node>,
    /// CIDRs handed out (node uid → CIDR) whose node the store does not show with it yet.
    assigned: Mutex<HashMap<String, String>>,
}

impl Ctx {
    /// Picks the CIDR for `node` under the lock, so two nodes never get the same one.
    fn choose(&self, node: &Node) -> Result<String> {
        let uid = node.uid().unwrap_or_default();
        let state = self.nodes.state();
        let mut assigned = self.assigned.lock().unwrap_or_else(|e| e.into_inner());
        let waiting: HashMap<String, bool> = state
            .iter()
            .map(|n| (n.uid().unwrap_or_default(), pod_cidr(n).is_none()))
            .collect();
        assigned.retain(|uid, _| waiting.get(uid).copied().unwrap_or(false));
        if let Some(cidr) = assigned.get(&uid) {
            return Ok(cidr.clone());
        }
        let taken = state
            .iter()
            .filter_map(|n| pod_cidr(n))
            .chain(assigned.values().map(String::as_str));
        let cidr = next_free(&self.pool, taken)
            .ok_or_else(|| Error::Exhausted(self.pool.to_string(), node.name_any()))?;
        assigned.insert(uid, cidr.clone());
        Ok(cidr)
    }

    fn forget(&self, node: &Node) {
        let mut assigned = self.assigned.lock().unwrap_or_else(|e| e.into_inner());
        assigned.remove(&node.uid().unwrap_or_default());
    }
}

#[tracing::instrument(skip_all, fields(node = %node.name_any()))]
async fn reconcile(node: Arc<Node>, ctx: Arc<Ctx>) -> Result<Action> {
    if pod_cidr(&node).is_some() {
        return Ok(Action::await_change());
    }
    let cidr = ctx.choose(&node)?;
    let patch = json!({"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}});
    let api: Api<Node> = Api::all(ctx.client.clone());
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    let name = node.name_any();
    match api.patch(&name, &params, &Patch::Merge(&patch)).await {
        Ok(_) => {
            tracing::info!(%cidr, "assigned pod CIDR");
            Ok(Action::await_change())
        }
        Err(kube::Error::Api(status)) if status.code == 404 => {
            ctx.forget(&node);
            Ok(Action::await_change())
        }
        Err(source) => {
            ctx.forget(&node);
            Err(Error::Assign {
                node: name,
                cidr,
                source,
            })
        }
    }
}

fn error_policy(_node: Arc<Node>, err: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(error = %err, "node IPAM");
    Action::requeue(Duration::from_secs(2))
}

/// Assigns pod CIDRs of `/node_mask` from `cluster_cidr` to nodes until the watch ends.
pub async fn run(client: Client, cluster_cidr: &str, node_mask: u8) -> Result<(), Error> {
    let pool = Pool::new(cluster_cidr, node_mask)?;
    let controller = Controller::new(Api::<Node>::all(client.clone()), watcher::Config::default());
    let ctx = Arc::new(Ctx {
        client,
        pool,
        nodes: controller.store(),
        assigned: Mutex::new(HashMap::new()),
    });
    tracing::info!(cluster_cidr = %pool, node_mask, "node IPAM started");
    controller
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(err) = result {
                tracing::debug!(error = %err, "node IPAM");
            }
        })
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `taken` CIDRs, then the next free one (or the error text of the pool).
    fn check(cluster: &str, node_mask: u8, taken: &[&str], expect: &str) {
        let got = match Pool::new(cluster, node_mask) {
            Ok(pool) => {
                next_free(&pool, taken.iter().copied()).unwrap_or_else(|| "exhausted".into())
            }
            Err(e) => e.to_string(),
        };
        assert_eq!(
            got, expect,
            "cluster {cluster} /{node_mask} taken {taken:?}"
        );
    }

    #[test]
    fn lowest_free_cidr_is_handed_out() {
        check("10.244.0.0/16", 24, &[], "10.244.0.0/24");
        check(
            "10.244.0.0/16",
            24,
            &["10.244.0.0/24", "10.244.1.0/24"],
            "10.244.2.0/24",
        );
        check(
            "10.244.0.0/16",
            24,
            &["10.244.0.0/24", "10.244.2.0/24"],
            "10.244.1.0/24",
        );
        check("10.0.0.0/8", 16, &["10.0.0.0/16"], "10.1.0.0/16");
    }

    #[test]
    fn foreign_and_odd_cidrs_occupy_what_they_overlap() {
        check(
            "10.244.0.0/16",
            24,
            &["192.168.0.0/24", "garbage", ""],
            "10.244.0.0/24",
        );
        check("10.244.0.0/16", 24, &["10.244.0.0/23"], "10.244.2.0/24");
        check("10.244.0.0/16", 24, &["10.244.0.128/25"], "10.244.1.0/24");
        check("10.244.0.0/16", 24, &["10.0.0.0/8"], "exhausted");
    }

    #[test]
    fn a_full_pool_is_exhausted() {
        check(
            "10.244.0.0/23",
            24,
            &["10.244.0.0/24", "10.244.1.0/24"],
            "exhausted",
        );
        check("10.244.0.0/24", 24, &[], "10.244.0.0/24");
    }

    #[test]
    fn bad_configuration_is_refused() {
        check(
            "10.244.0.1/16",
            24,
            &[],
            "invalid cluster CIDR \"10.244.0.1/16\": host bits must be zero",
        );
        check(
            "fd00::/64",
            80,
            &[],
            "invalid cluster CIDR \"fd00::/64\": must be an IPv4 address and prefix length, like 10.244.0.0/16",
        );
        check(
            "10.244.0.0/16",
            8,
            &[],
            "node CIDR mask /8 does not fit cluster CIDR 10.244.0.0/16: it is larger than the cluster CIDR",
        );
        check(
            "10.0.0.0/8",
            28,
            &[],
            "node CIDR mask /28 does not fit cluster CIDR 10.0.0.0/8: it would cut the cluster CIDR into more than 65536 node CIDRs",
        );
    }
}
