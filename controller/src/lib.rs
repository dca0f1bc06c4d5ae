//! The kubesim control loops, each its own module with a pure decision function and a
//! reconciler on kube-rs's runtime (watcher, reflector, Controller) against the
//! apiserver: deployments, replicasets, endpoints, endpointslices (and their mirroring),
//! the scheduler, node podCIDR allocation, node health, ownerReference garbage
//! collection, the collection of pods orphaned by a deleted node, and load-balancer
//! address assignment.
//!
//! Nothing here touches the kernel or the store directly: every read and write goes
//! through the Kubernetes API, as a real controller-manager's does.

pub mod deployment;
pub mod endpoints;
pub mod endpointslice;
pub mod events;
pub mod gc;
pub mod loadbalancer;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod podgc;
pub mod replicaset;
mod runtime;
pub mod scheduler;

/// Settings of the loops that have any.
#[derive(Debug, Clone)]
pub struct Options {
    /// The range node podCIDRs come from (10.244.0.0/16).
    pub cluster_cidr: String,
    /// The prefix length of each node's podCIDR (24).
    pub node_cidr_mask_size: u8,
    /// The addresses LoadBalancer Services get.
    pub lb_pool: loadbalancer::Pool,
    /// The `loadBalancerClass` served; none serves the Services without one.
    pub lb_class: Option<String>,
    /// When a node whose kubelet went quiet is marked unreachable.
    pub node_monitor: nodelifecycle::Timing,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            cluster_cidr: "10.244.0.0/16".into(),
            node_cidr_mask_size: 24,
            lb_pool: loadbalancer::DEFAULT_POOL
                .parse()
                .expect("the default pool parses"),
            lb_class: None,
            node_monitor: nodelifecycle::Timing::default(),
        }
    }
}

/// Runs every control loop until one of them stops; its error ends the whole.
pub async fn run(client: kube::Client, options: Options) -> anyhow::Result<()> {
    use anyhow::Context;
    let c = || client.clone();
    tokio::try_join!(
        async { deployment::run(c()).await.context("deployment controller") },
        async { replicaset::run(c()).await.context("replicaset controller") },
        async { endpoints::run(c()).await.context("endpoints controller") },
        async {
            endpointslice::run(c())
                .await
                .context("endpointslice controller")
        },
        async {
            endpointslice::mirroring::run(c())
                .await
                .context("endpointslice mirroring controller")
        },
        async { scheduler::run(c()).await.context("scheduler") },
        async {
            nodeipam::run(c(), &options.cluster_cidr, options.node_cidr_mask_size)
                .await
                .context("node ipam controller")
        },
        async { gc::run(c()).await.context("garbage collector") },
        async {
            podgc::run(c(), podgc::QUARANTINE)
                .await
                .context("pod garbage collector")
        },
        async {
            nodelifecycle::run(c(), options.node_monitor)
                .await
                .context("node lifecycle controller")
        },
        async {
            loadbalancer::run(c(), options.lb_pool.clone(), options.lb_class.clone())
                .await
                .context("load-balancer controller")
        },
    )?;
    Ok(())
}
