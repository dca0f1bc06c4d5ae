//! coredns-lite: the cluster DNS of kubesim (`kubesim dns`). It answers the
//! Kubernetes DNS-based service discovery specification (schema 1.1.0) the way
//! CoreDNS's `kubernetes` plugin does: A/AAAA for ClusterIP and headless Services,
//! endpoint hostnames, SRV for named ports, PTR, ExternalName CNAMEs, pod records
//! and `dns-version`, with CoreDNS's NODATA / NXDOMAIN choices and SOA.
//!
//! `answer` is the pure answer logic over a `snapshot` of the cluster and a `config`
//! (a Corefile subset); `watch` keeps both current from kube-rs reflectors; `server`
//! listens on UDP and TCP, `wire` handles EDNS, truncation and FORMERR; `http` and
//! `metrics` are the `health`, `ready` and `prometheus` plugins' endpoints.
//! It is not a general DNS server: no zone files, no cache, no DNSSEC, no transfers.

pub mod answer;
pub mod config;
pub mod http;
pub mod metrics;
pub mod server;
pub mod snapshot;
pub mod watch;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;

use kube::Client;
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinSet;

pub use answer::{answer, Outcome};
pub use config::Config;
pub use snapshot::Snapshot;

/// Where the server listens, and the configuration used while the ConfigMap
/// `kube-system/coredns` has no Corefile.
#[derive(Debug, Clone)]
pub struct Options {
    pub dns: SocketAddr,
    pub health: SocketAddr,
    pub ready: SocketAddr,
    pub metrics: SocketAddr,
    pub config: Config,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            dns: ([0, 0, 0, 0], 53).into(),
            health: ([0, 0, 0, 0], 8080).into(),
            ready: ([0, 0, 0, 0], 8181).into(),
            metrics: ([0, 0, 0, 0], 9153).into(),
            config: Config::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Watch(#[from] watch::Error),
    #[error("a listener stopped")]
    Stopped,
}

/// A started server: its bound addresses, and its tasks (stopped on drop).
pub struct Running {
    pub dns: SocketAddr,
    pub health: SocketAddr,
    pub ready: SocketAddr,
    pub metrics: SocketAddr,
    tasks: JoinSet<Result<(), Error>>,
}

impl Running {
    /// Waits until a task ends: a watch failed for good, or a listener stopped.
    pub async fn wait(mut self) -> Result<(), Error> {
        match self.tasks.join_next().await {
            Some(Ok(result)) => result,
            _ => Err(Error::Stopped),
        }
    }
}

fn bind_error(addr: SocketAddr) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Bind { addr, source }
}

/// UDP and TCP on the same address; with port 0, a port free for both.
async fn bind_dns(addr: SocketAddr) -> Result<(UdpSocket, TcpListener), Error> {
    let mut last = None;
    for _ in 0..16 {
        let udp = UdpSocket::bind(addr).await.map_err(bind_error(addr))?;
        let bound = udp.local_addr().map_err(bind_error(addr))?;
        match TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(err) if addr.port() == 0 => last = Some(err),
            Err(err) => return Err(bind_error(addr)(err)),
        }
    }
    Err(bind_error(addr)(
        last.unwrap_or_else(|| std::io::Error::other("no free port")),
    ))
}

async fn serve_http(
    addr: SocketAddr,
    router: axum::Router,
    tasks: &mut JoinSet<Result<(), Error>>,
) -> Result<SocketAddr, Error> {
    let listener = TcpListener::bind(addr).await.map_err(bind_error(addr))?;
    let bound = listener.local_addr().map_err(bind_error(addr))?;
    tasks.spawn(async move {
        axum::serve(listener, router)
            .await
            .map_err(bind_error(bound))?;
        Err(Error::Stopped)
    });
    Ok(bound)
}

/// Binds every listener and starts serving: SERVFAIL (and not ready) until the
/// watches have synced.
pub async fn start(client: Client, opts: Options) -> Result<Running, Error> {
    let (udp, tcp) = bind_dns(opts.dns).await?;
    let dns = udp.local_addr().map_err(bind_error(opts.dns))?;
    let (state_tx, state_rx) = tokio::sync::watch::channel(server::State {
        snapshot: None,
        config: Arc::new(opts.config.clone()),
    });
    let zone = opts
        .config
        .server_zones
        .first()
        .map_or(".".to_string(), |z| z.to_string());
    let metrics = Arc::new(metrics::Metrics::new(format!("dns://{}", opts.dns), zone));
    let handler = server::Handler {
        state: state_rx.clone(),
        metrics: metrics.clone(),
    };
    let mut tasks = JoinSet::new();
    let health = serve_http(opts.health, http::health(), &mut tasks).await?;
    let ready = serve_http(opts.ready, http::ready(state_rx), &mut tasks).await?;
    let metrics = serve_http(opts.metrics, http::metrics(metrics), &mut tasks).await?;
    let workers = std::thread::available_parallelism().map_or(4, |n| n.get());
    let udp_handler = handler.clone();
    tasks.spawn(async move {
        server::serve_udp(Arc::new(udp), udp_handler, workers).await;
        Err(Error::Stopped)
    });
    tasks.spawn(async move {
        server::serve_tcp(tcp, handler).await;
        Err(Error::Stopped)
    });
    let defaults = opts.config;
    tasks.spawn(async move { Ok(watch::run(client, defaults, state_tx).await?) });
    tracing::info!(%dns, %health, %ready, %metrics, "serving DNS");
    Ok(Running {
        dns,
        health,
        ready,
        metrics,
        tasks,
    })
}

/// Serves until a watch fails for good or a listener stops.
pub async fn run(client: Client, opts: Options) -> Result<(), Error> {
    start(client, opts).await?.wait().await
}
