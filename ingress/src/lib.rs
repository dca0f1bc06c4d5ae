//! ingress: the ingress controller of kubesim (`kubesim ingress`, run by the kubelet
//! for ingress-nginx's controller image). It serves networking.k8s.io/v1 Ingresses
//! the way ingress-nginx does, so ordinary manifests work: the same class selection
//! (`class`), the Kubernetes path and host matching rules (`path`, `host`), Ingresses
//! merged per host into a routing `snapshot`, a reverse `proxy` straight to the
//! Services' ready endpoints (`backend`) with nginx's headers, retries, timeouts and
//! error `pages`, HTTPS with certificates chosen by SNI from TLS Secrets (`tls`), and
//! the Ingresses' load-balancer `status`. `watch` keeps the snapshot current from
//! kube-rs reflectors; `server` holds the listeners, `metrics` ingress-nginx's
//! Prometheus metrics.
//!
//! It is not nginx: no annotations (rewrites, auth, canaries, rate limits), no
//! ConfigMap settings, no WebSocket upgrades, no TCP/UDP services, no admission
//! webhook, no leader election (run one replica).

pub mod backend;
pub mod class;
pub mod host;
pub mod metrics;
pub mod pages;
pub mod path;
pub mod proxy;
pub mod server;
pub mod snapshot;
pub mod status;
#[cfg(test)]
mod testing;
pub mod tls;
pub mod watch;

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;

use kube::Client;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

pub use class::Class;
pub use proxy::Timeouts;
pub use snapshot::{Publish, Snapshot};

/// A namespaced object's `namespace/name`, as flags such as `--publish-service` give it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub namespace: String,
    pub name: String,
}

impl Key {
    pub fn new(namespace: &str, name: &str) -> Key {
        Key {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not of the form namespace/name")]
pub struct ParseKeyError(String);

impl FromStr for Key {
    type Err = ParseKeyError;

    fn from_str(text: &str) -> Result<Key, ParseKeyError> {
        match text.split_once('/') {
            Some((namespace, name))
                if !namespace.is_empty() && !name.is_empty() && !name.contains('/') =>
            {
                Ok(Key::new(namespace, name))
            }
            _ => Err(ParseKeyError(text.to_string())),
        }
    }
}

/// What the controller serves and how; the defaults are ingress-nginx's.
#[derive(Debug, Clone)]
pub struct Options {
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub healthz: SocketAddr,
    pub class: Class,
    /// `--default-backend-service`: where requests matching no rule go (else 404).
    pub default_backend: Option<Key>,
    /// `--default-ssl-certificate`: the certificate for names no Ingress covers (else
    /// a self-signed fake certificate made at start).
    pub default_certificate: Option<Key>,
    /// `--publish-service` or `--publish-status-address`.
    pub publish: Publish,
    pub timeouts: Timeouts,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            http: ([0, 0, 0, 0], 80).into(),
            https: ([0, 0, 0, 0], 443).into(),
            healthz: ([0, 0, 0, 0], 10254).into(),
            class: Class::default(),
            default_backend: None,
            default_certificate: None,
            publish: Publish::Nothing,
            timeouts: Timeouts::default(),
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
    Tls(#[from] tls::Error),
    #[error(transparent)]
    Watch(#[from] watch::Error),
    #[error("a listener stopped")]
    Stopped,
}

/// A started controller: its bound addresses, and its tasks (stopped on drop).
pub struct Running {
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub healthz: SocketAddr,
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

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), Error> {
    let bind_error = |source| Error::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    let bound = listener.local_addr().map_err(bind_error)?;
    Ok((listener, bound))
}

/// Binds every listener and starts serving: 404 everywhere (and /healthz failing)
/// until the watches have synced.
pub async fn start(client: Client, opts: Options) -> Result<Running, Error> {
    let fake_certificate = Arc::new(tls::fake_certificate()?);
    let (state_tx, state_rx) =
        tokio::sync::watch::channel(Arc::new(Snapshot::empty(fake_certificate.clone())));
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls::server_config(
        tls::SniResolver::new(state_rx.clone()),
    )?));
    let metrics = Arc::new(metrics::Metrics::default());
    let proxy = Arc::new(proxy::Proxy::new(opts.timeouts, metrics.clone()));
    let (http_listener, http) = bind(opts.http).await?;
    let (https_listener, https) = bind(opts.https).await?;
    let (healthz_listener, healthz) = bind(opts.healthz).await?;
    let mut tasks = JoinSet::new();
    let (http_state, https_state) = (state_rx.clone(), state_rx.clone());
    let http_proxy = proxy.clone();
    tasks.spawn(async move {
        server::serve(http_listener, None, http_proxy, http_state).await;
        Err(Error::Stopped)
    });
    tasks.spawn(async move {
        server::serve(https_listener, Some(acceptor), proxy, https_state).await;
        Err(Error::Stopped)
    });
    let router = server::status_port(state_rx.clone(), metrics.clone());
    tasks.spawn(async move {
        axum::serve(healthz_listener, router)
            .await
            .map_err(|source| Error::Bind {
                addr: healthz,
                source,
            })?;
        Err(Error::Stopped)
    });
    let status_client = client.clone();
    tasks.spawn(async move {
        status::run(status_client, state_rx).await;
        Err(Error::Stopped)
    });
    let config = snapshot::Config {
        class: opts.class,
        default_backend: opts.default_backend,
        default_certificate: opts.default_certificate,
        publish: opts.publish,
    };
    tasks.spawn(async move {
        Ok(watch::run(client, config, fake_certificate, state_tx, metrics).await?)
    });
    tracing::info!(%http, %https, %healthz, "serving ingresses");
    Ok(Running {
        http,
        https,
        healthz,
        tasks,
    })
}

/// Serves until a watch fails for good or a listener stops.
pub async fn run(client: Client, opts: Options) -> Result<(), Error> {
    start(client, opts).await?.wait().await
}
