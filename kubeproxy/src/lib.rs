//! kube-proxy for kubesim nodes (`kubesim proxy`), running inside a node's network
//! namespace. `model` reads Services and EndpointSlices as kube-proxy's caches do;
//! `iptables` lays out the iptables proxier's rules (pure); `kernel` applies them with
//! the iptables tools; `nftables` is the nftables proxier (its planner, and `nft`
//! transactions); `userspace` is the old userspace proxier (a proxy socket per service
//! port, iptables redirecting to it); `proxier` is the sync loop; `server` the health
//! and metrics endpoints; `healthcheck` the per-Service health check node ports.

pub mod healthcheck;
pub mod iptables;
pub mod kernel;
pub mod model;
pub mod nftables;
pub mod proxier;
pub mod server;
pub mod userspace;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::{Api, Client};

/// The proxy modes kube-proxy offers that kubesim runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Iptables,
    Nftables,
    /// IPVS when the kernel has it; otherwise, as kube-proxy does, iptables.
    Ipvs,
    /// The userspace proxier of Kubernetes 1.25 and before.
    Userspace,
}

#[derive(Debug, Clone)]
pub struct ProxyOptions {
    pub mode: Mode,
    pub proxier: proxier::Options,
    /// How the userspace proxier proxies, in [`Mode::Userspace`].
    pub userspace: userspace::Options,
    pub healthz: SocketAddr,
    pub metrics: SocketAddr,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kernel(#[from] kernel::Error),
    #[error("serving health and metrics: {0}")]
    Serve(std::io::Error),
    #[error("IPVS mode: the kernel has IPVS, but kubesim implements the iptables proxier only")]
    IpvsUnsupported,
}

/// Why IPVS cannot be used here, if it cannot: kube-proxy checks the same kernel
/// support before it falls back.
pub fn ipvs_unavailable() -> Option<String> {
    match std::fs::metadata("/proc/net/ip_vs") {
        Ok(_) => None,
        Err(e) => Some(format!(
            "IPVS proxier will not be used because the kernel lacks IPVS support (/proc/net/ip_vs: {e})"
        )),
    }
}

/// The node's IP as kube-proxy finds it without `--bind-address`: the first
/// InternalIP of its Node object, waiting a while for the kubelet to register it.
pub async fn node_ip(client: &Client, node: &str) -> Option<Ipv4Addr> {
    let nodes: Api<Node> = Api::all(client.clone());
    for _ in 0..50 {
        if let Ok(Some(found)) = nodes.get_opt(node).await {
            return found
                .status
                .and_then(|s| s.addresses)
                .into_iter()
                .flatten()
                .filter(|a| a.type_ == "InternalIP")
                .find_map(|a| a.address.parse().ok());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tracing::warn!(
        node,
        "Can't determine this node's IP: the Node object was not found"
    );
    None
}

/// Runs the proxy until it fails.
pub async fn run(client: Client, opts: ProxyOptions) -> Result<(), Error> {
    if opts.mode == Mode::Ipvs {
        match ipvs_unavailable() {
            Some(reason) => {
                tracing::warn!(%reason, "Can't use the IPVS proxier");
                tracing::info!("Using iptables Proxier");
            }
            None => return Err(Error::IpvsUnsupported),
        }
    }
    let health_timeout = (opts.proxier.sync_period * 2).max(Duration::from_secs(60));
    let config = opts.proxier.config.clone();
    let (name, backend) = match opts.mode {
        Mode::Nftables => (
            "nftables",
            proxier::Backend::Nftables(nftables::Proxier::new(config.into())),
        ),
        Mode::Iptables | Mode::Ipvs => (
            "iptables",
            proxier::Backend::Iptables(proxier::Proxier::new(config)),
        ),
        Mode::Userspace => (
            "userspace",
            proxier::Backend::Userspace(userspace::Proxier::new(config, opts.userspace)),
        ),
    };
    let status = Arc::new(server::Status::new(name, health_timeout));
    let serving = server::serve(opts.healthz, opts.metrics, status.clone());
    tokio::select! {
        result = proxier::run(client, opts.proxier, status, backend) => Ok(result?),
        served = serving => Err(Error::Serve(served.err().unwrap_or_else(|| std::io::Error::other("stopped")))),
    }
}
