//! A real node: the kubelet that runs inside a node's network namespace, registers its
//! Node, waits for its pod CIDR, and runs every pod bound to it as a sandbox of real
//! namespaces (see [`crate::sandbox`]) with the CNI plugin wiring its network, and
//! the pod's containers as processes inside it.
//!
//! One task per pod owns that pod from start to deletion; the pod watch only routes
//! events to it. A pod removed from the API without a graceful deletion (a forced
//! delete) is torn down at once.

mod exec;
mod pod;
mod probe;
pub mod server;
mod spdy;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::api::Api;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tokio::sync::{watch, OnceCell};
use tokio::task::JoinHandle;

use crate::sandbox::{ClusterDns, ResolvConf};
use crate::simulated::{heartbeat, now, register, Flavor};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Register(#[from] crate::simulated::Error),
    #[error("watching {what}: {source}")]
    Watch {
        what: &'static str,
        source: watcher::Error,
    },
    #[error("the watch of {0} ended")]
    WatchEnded(&'static str),
    #[error("serving the kubelet API: {0}")]
    Serve(std::io::Error),
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// How a node runs.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// The Node's name.
    pub name: String,
    /// The cluster's name: the prefix of every pod namespace this node makes.
    pub cluster: String,
    /// The node's address on the underlay (its InternalIP).
    pub node_ip: Ipv4Addr,
    /// Pod directories (`/etc` files, logs) and the CNI leases.
    pub data_dir: PathBuf,
    /// The `kubesim` executable: the CNI plugin, `pause`, `nsenter` and the built-in
    /// workloads are its subcommands.
    pub binary: PathBuf,
    pub dns: ClusterDns,
    /// The node's resolv.conf, for `dnsPolicy: Default` and the host's search domains.
    pub resolv_conf: PathBuf,
    /// The pods' interface MTU (the overlay's).
    pub mtu: u32,
    /// The most pods the node takes (`capacity.pods`).
    pub max_pods: u32,
    /// The credentials mounted into pods as their service account's (kubesim has no
    /// per-account tokens: this is the node's own).
    pub service_account: Option<ServiceAccount>,
}

/// A bearer token and the CA that signed the apiserver's certificate.
#[derive(Debug, Clone)]
pub struct ServiceAccount {
    pub token: String,
    pub ca_pem: String,
}

/// What every pod task shares.
struct Context {
    client: Client,
    opts: NodeOptions,
    pod_cidr: String,
    node_resolv: ResolvConf,
    kubernetes: OnceCell<Option<(String, i32)>>,
    logs: Arc<server::Registry>,
}

impl Context {
    /// The `kubernetes` Service's cluster IP and port, for the containers' environment.
    async fn kubernetes_service(&self) -> Option<(String, i32)> {
        self.kubernetes
            .get_or_init(|| async {
                let api: Api<Service> = Api::namespaced(self.client.clone(), "default");
                let svc = api.get_opt("kubernetes").await.ok().flatten()?;
                let spec = svc.spec?;
                let port = spec.ports?.first()?.port;
                Some((spec.cluster_ip?, port))
            })
            .await
            .clone()
    }
}

/// The Node's flavour: a namespace-backed node on this machine's kernel.
fn flavor(max_pods: u32) -> Flavor {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    Flavor {
        kind: "netns",
        kernel_version: kernel,
        os_image: "kubesim node (Linux network namespace)",
        runtime: "kubesim://netns",
        max_pods,
    }
}

/// Registers the node and runs its pods until the pod watch ends.
pub async fn run(client: Client, opts: NodeOptions) -> Result<(), Error> {
    let since = now();
    register(
        &client,
        &opts.name,
        opts.node_ip,
        &since,
        &flavor(opts.max_pods),
    )
    .await?;
    let beats = tokio::spawn(heartbeat(client.clone(), vec![opts.name.clone()], since));
    let pod_cidr = wait_for_pod_cidr(&client, &opts.name).await?;
    tracing::info!(node = %opts.name, %pod_cidr, "pod CIDR assigned");
    let node_resolv = match std::fs::read_to_string(&opts.resolv_conf) {
        Ok(text) => ResolvConf::parse(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => ResolvConf::default(),
        Err(source) => {
            return Err(Error::Io {
                path: opts.resolv_conf.display().to_string(),
                source,
            })
        }
    };
    let logs = Arc::new(server::Registry::default());
    let addr = std::net::SocketAddr::from((opts.node_ip, server::KUBELET_PORT));
    let api = tokio::spawn(server::serve(addr, logs.clone()));
    let context = Arc::new(Context {
        client,
        opts,
        pod_cidr,
        node_resolv,
        kubernetes: OnceCell::new(),
        logs,
    });
    let result = tokio::select! {
        result = run_pods(context) => result,
        served = api => Err(Error::Serve(match served {
            Ok(Ok(())) => std::io::Error::other("the kubelet API stopped"),
            Ok(Err(e)) => e,
            Err(e) => std::io::Error::other(e),
        })),
    };
    beats.abort();
    result
}

/// The node's pod CIDR, once node IPAM assigned one.
async fn wait_for_pod_cidr(client: &Client, name: &str) -> Result<String, Error> {
    let api: Api<Node> = Api::all(client.clone());
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = std::pin::pin!(watcher(api, config));
    while let Some(event) = events.next().await {
        let event = event.map_err(|source| Error::Watch {
            what: "the node",
            source,
        })?;
        let node = match event {
            watcher::Event::Apply(node) | watcher::Event::InitApply(node) => node,
            _ => continue,
        };
        if let Some(cidr) = node.spec.and_then(|s| s.pod_cidr) {
            return Ok(cidr);
        }
    }
    Err(Error::WatchEnded("the node"))
}

/// A pod's task and the channel that hands it the pod's newest state (`None`: gone).
struct Worker {
    updates: watch::Sender<Option<Pod>>,
    task: JoinHandle<()>,
}

async fn run_pods(context: Arc<Context>) -> Result<(), Error> {
    let api: Api<Pod> = Api::all(context.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", context.opts.name));
    let mut events = std::pin::pin!(watcher(api, config));
    let mut workers: HashMap<String, Worker> = HashMap::new();
    let mut listed: Vec<String> = Vec::new();
    while let Some(event) = events.next().await {
        let event = event.map_err(|source| Error::Watch {
            what: "pods",
            source,
        })?;
        workers.retain(|_, w| !w.task.is_finished());
        match event {
            watcher::Event::Init => listed.clear(),
            watcher::Event::InitApply(pod) => {
                listed.extend(pod.uid());
                route(&context, &mut workers, pod);
            }
            watcher::Event::InitDone => {
                for (uid, worker) in &workers {
                    if !listed.contains(uid) {
                        worker.updates.send_replace(None);
                    }
                }
            }
            watcher::Event::Apply(pod) => route(&context, &mut workers, pod),
            watcher::Event::Delete(pod) => {
                if let Some(worker) = pod.uid().and_then(|uid| workers.get(&uid)) {
                    worker.updates.send_replace(None);
                }
            }
        }
    }
    Err(Error::WatchEnded("pods"))
}

/// Hands `pod` to its task, starting one for a pod not seen before.
fn route(context: &Arc<Context>, workers: &mut HashMap<String, Worker>, pod: Pod) {
    let Some(uid) = pod.uid() else {
        return;
    };
    if let Some(worker) = workers.get(&uid) {
        worker.updates.send_replace(Some(pod));
        return;
    }
    let (updates, receiver) = watch::channel(Some(pod));
    let task = tokio::spawn(pod::run(context.clone(), receiver));
    workers.insert(uid, Worker { updates, task });
}
