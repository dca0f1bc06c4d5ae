//! The kubesim apiserver: the Kubernetes REST API over HTTPS for the resources a
//! Service-and-networking lab needs, stored in sled, spoken to by real `kubectl` and
//! kube-rs. It is not an aggregator, has no admission plugins and one admin identity.
//!
//! `app(state)` is the whole HTTP surface, testable in-process; `serve` adds TLS.

mod discovery;
mod error;
pub mod handlers;
mod kinds;
mod metrics;
mod objects;
mod openapi;
pub mod resources;
pub mod store;
pub mod tls;
mod watch;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

pub use error::ApiError;
use store::{SledBackend, Store};

/// How the apiserver is set up; the CLI flags mirror k3s server's.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub bind_address: IpAddr,
    /// 0 picks a free port.
    pub port: u16,
    pub service_cidr: String,
    pub node_port_range: String,
    pub write_kubeconfig: Option<PathBuf>,
    /// Extra names and addresses for the serving certificate.
    pub tls_san: Vec<String>,
    /// The address published in the `kubernetes` Endpoints; defaults to the bind
    /// address, or 127.0.0.1 when binding to all addresses.
    pub advertise_address: Option<IpAddr>,
    /// A named network namespace (the cluster's underlay) in which the apiserver also
    /// listens, on the advertise address and the same port, so nodes and pods reach it
    /// the way they reach a real cluster's apiserver.
    pub underlay_netns: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("/var/lib/kubesim/server"),
            bind_address: IpAddr::from([127, 0, 0, 1]),
            port: 6443,
            service_cidr: "10.96.0.0/12".into(),
            node_port_range: "30000-32767".into(),
            write_kubeconfig: None,
            tls_san: Vec::new(),
            advertise_address: None,
            underlay_netns: None,
        }
    }
}

/// Shared by every request.
pub struct AppState {
    pub store: Store,
    pub token: String,
    pub service_cidr: String,
    pub node_port_range: String,
    pub metrics: metrics::Metrics,
    /// The underlay namespace, from which the apiserver dials kubelets.
    pub underlay_netns: Option<String>,
    /// Where clients reach this server (`host:port`), as `/api` publishes it.
    pub server_address: String,
    /// The stored Services' specs as of a committed revision, so a Service create
    /// does not decode every stored Service again (see `kinds::allocate`).
    pub service_specs: std::sync::Mutex<Option<kinds::ServiceSpecs>>,
}

pub type SharedState = Arc<AppState>;

impl AppState {
    /// Opens the store under `config.data_dir` and makes sure the default namespaces
    /// and the `kubernetes` Service exist, pointing at `port`.
    pub async fn open(config: &Config, token: String, port: u16) -> anyhow::Result<SharedState> {
        // Validate the ranges up front: a bad flag is a start-up error, not a 500 later.
        api::alloc::IpAllocator::new(&config.service_cidr)
            .map_err(|e| anyhow::anyhow!("--service-cidr {}: {e}", config.service_cidr))?;
        api::alloc::PortAllocator::new(&config.node_port_range).map_err(|e| {
            anyhow::anyhow!("--service-node-port-range {}: {e}", config.node_port_range)
        })?;
        let backend = SledBackend::open(&config.data_dir.join("db"))?;
        let advertise =
            config
                .advertise_address
                .unwrap_or(if config.bind_address.is_unspecified() {
                    IpAddr::from([127, 0, 0, 1])
                } else {
                    config.bind_address
                });
        let state = Arc::new(AppState {
            store: Store::new(Box::new(backend))?,
            token,
            service_cidr: config.service_cidr.clone(),
            node_port_range: config.node_port_range.clone(),
            metrics: metrics::Metrics::default(),
            underlay_netns: config.underlay_netns.clone(),
            server_address: display_addr(SocketAddr::new(advertise, port)),
            service_specs: std::sync::Mutex::new(None),
        });
        kinds::bootstrap(&state, advertise, port).await?;
        Ok(state)
    }
}

/// The whole HTTP API.
pub fn app(state: SharedState) -> Router {
    let public = Router::new()
        .route("/healthz", get(health))
        .route("/livez", get(health))
        .route("/readyz", get(health))
        .route("/version", get(discovery::version));
    let private = Router::new()
        .route("/metrics", get(metrics::render))
        .route("/api", get(discovery::core_versions))
        .route("/api/v1", get(discovery::core_resources))
        .route("/apis", get(discovery::groups))
        .route("/apis/{group}", get(discovery::group))
        .route("/apis/{group}/{version}", get(discovery::group_resources))
        .route("/openapi/v2", get(openapi::v2))
        .route("/openapi/v3", get(openapi::index))
        .route("/openapi/v3/{*path}", get(openapi::group_version))
        .fallback(handlers::dispatch)
        .layer(middleware::from_fn_with_state(state.clone(), authenticate));
    public
        .merge(private)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

async fn health() -> &'static str {
    "ok"
}

async fn authenticate(State(state): State<SharedState>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if presented == Some(state.token.as_str()) {
        next.run(req).await
    } else {
        ApiError::unauthorized().into_response()
    }
}

/// A started apiserver: where it listens and how to stop it.
pub struct Running {
    pub addr: SocketAddr,
    pub state: SharedState,
    pub kubeconfig: String,
    shutdown: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Opens the store, makes or loads the TLS material and token, binds and serves.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    std::fs::create_dir_all(&config.data_dir)?;
    let creds = tls::Credentials::load_or_create(&config.data_dir, &config)?;
    let listener = tokio::net::TcpListener::bind((config.bind_address, config.port)).await?;
    let addr = listener.local_addr()?;
    let underlay = match &config.underlay_netns {
        Some(name) => {
            let advertise = config.advertise_address.ok_or_else(|| {
                anyhow::anyhow!("listening in network namespace {name} needs an advertise address")
            })?;
            Some(listen_in_netns(
                name,
                SocketAddr::new(advertise, addr.port()),
            )?)
        }
        None => None,
    };
    let state = AppState::open(&config, creds.token.clone(), addr.port()).await?;
    let kubeconfig = creds.kubeconfig(&format!("https://{}", display_addr(addr)));
    if let Some(path) = &config.write_kubeconfig {
        tls::write_private(path, &kubeconfig)?;
    }
    let (shutdown, stop) = tokio::sync::watch::channel(false);
    let router = app(state.clone());
    let acceptor = creds.acceptor()?;
    let mut tasks = Vec::new();
    if let Some(underlay) = underlay {
        let inner = underlay.local_addr()?;
        let serving = tls::serve(underlay, acceptor.clone(), router.clone(), stop.clone());
        tasks.push(tokio::spawn(serving));
        tracing::info!(addr = %inner, netns = ?config.underlay_netns, "apiserver listening in the underlay");
    }
    tasks.push(tokio::spawn(tls::serve(listener, acceptor, router, stop)));
    tracing::info!(%addr, "apiserver listening");
    Ok(Running {
        addr,
        state,
        kubeconfig,
        shutdown,
        tasks,
    })
}

/// The listener inside the underlay namespace: a socket made on a thread that entered
/// the namespace belongs to it for good, whichever thread accepts on it later.
fn listen_in_netns(name: &str, addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    let ns = netns::open(name)?;
    let listener = netns::run_in(&ns, || {
        std::net::TcpListener::bind(addr)
            .map_err(|e| netns::Error::io(format!("listening on {addr} in {name}"), e))
    })?;
    listener.set_nonblocking(true)?;
    Ok(tokio::net::TcpListener::from_std(listener)?)
}

fn display_addr(addr: SocketAddr) -> String {
    match addr.ip() {
        IpAddr::V6(ip) => format!("[{ip}]:{}", addr.port()),
        IpAddr::V4(ip) => format!("{ip}:{}", addr.port()),
    }
}

#[cfg(test)]
mod tests;
