//! A whole cluster on this machine, as `kubesim up` starts it and the integration
//! tests use it: the topology's namespaces (underlay, nodes, external host), the
//! apiserver on loopback and inside the underlay at the gateway address, the
//! controller, and per node a kubelet, kube-proxy, flannel and the load-balancer
//! speaker inside the node's namespace — each a `kubesim` process with its log under
//! `<data dir>/logs`; then the addons as manifests: the cluster DNS and the ingress
//! controller.
//!
//! Dropping a [`Cluster`] kills its processes and removes every namespace of the
//! cluster, also when whatever used it failed; [`Cluster::leave_running`] instead
//! hands it to the background (recording its processes in `<data dir>/cluster.json`)
//! and [`down`] removes it later.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Service};
use k8s_openapi::api::networking::v1::IngressClass;
use kube::api::{Api, ListParams, PostParams};
use kubelet::topology::{remove_cluster, validate_cluster_name, Topology, TopologySpec};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The file that records a cluster left running.
const STATE_FILE: &str = "cluster.json";
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// What to start.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The cluster's name, the prefix of all its namespaces (at most 8 characters).
    pub name: String,
    pub nodes: usize,
    /// The apiserver's store, the nodes' pod directories, the kubeconfigs and logs.
    pub data_dir: PathBuf,
    /// The `kubesim` executable the components run as.
    pub binary: PathBuf,
    /// Extra flags for every node's `kubesim proxy` (e.g. `--proxy-mode nftables`).
    pub proxy_flags: Vec<String>,
    /// Extra flags for `kubesim controller` (e.g. `--node-monitor-grace-period 15s`).
    pub controller_flags: Vec<String>,
    /// Install the cluster DNS (CoreDNS's Deployment and the kube-dns Service, run by
    /// `kubesim dns`) and wait until it is ready.
    pub dns: bool,
    /// Install the ingress controller (ingress-nginx's Deployment behind a
    /// LoadBalancer Service, run by `kubesim ingress`) and wait until it is ready.
    pub ingress: bool,
}

/// The kube-dns Service, and a name it always knows.
const KUBE_DNS: std::net::SocketAddr = std::net::SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 96, 0, 10)),
    53,
);
const DNS_PROBE_NAME: &str = "kubernetes.default.svc.cluster.local.";

/// The cluster DNS as kubeadm installs CoreDNS.
const COREDNS: &str = include_str!("../../scenarios/cluster/coredns.yaml");
/// The ingress controller as ingress-nginx's manifest installs it.
const INGRESS: &str = include_str!("../../scenarios/cluster/ingress.yaml");

struct Component {
    name: String,
    args: Vec<String>,
    child: Child,
}

/// A running cluster.
pub struct Cluster {
    spec: Spec,
    topology: Option<Topology>,
    components: Vec<Component>,
    kubeconfig: PathBuf,
    /// Left running in the background: dropping the handle does not stop it.
    detached: bool,
}

impl Cluster {
    /// Starts the cluster of `spec` and waits until every node is Ready with a pod
    /// CIDR. On failure, whatever was started is stopped and removed.
    pub fn up(spec: Spec) -> anyhow::Result<Cluster> {
        validate_cluster_name(&spec.name)?;
        if !nix::unistd::geteuid().is_root() {
            bail!("kubesim up needs root: it creates network namespaces, links and firewall rules (run it with sudo)");
        }
        for (tool, package) in REQUIRED_TOOLS {
            if !on_path(tool) {
                bail!("{tool} is missing: install it with `apt-get install -y {package}` (or run scripts/install-deps)");
            }
        }
        if let Some(taken) = netns::list(&format!("{}-", spec.name))?.first() {
            bail!(
                "cluster {} exists (namespace {taken}); remove it first with `kubesim down --name {}`",
                spec.name,
                spec.name
            );
        }
        fs::create_dir_all(spec.data_dir.join("logs"))
            .with_context(|| format!("creating {}", spec.data_dir.display()))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let topology = runtime.block_on(Topology::create(&TopologySpec::new(
            spec.name.clone(),
            spec.nodes,
        )))?;
        let kubeconfig = spec.data_dir.join("kubeconfig");
        let mut cluster = Cluster {
            spec,
            topology: Some(topology),
            components: Vec::new(),
            kubeconfig,
            detached: false,
        };
        cluster.start_components()?;
        runtime.block_on(cluster.wait_for_nodes())?;
        if cluster.spec.dns {
            runtime.block_on(cluster.install_dns())?;
        }
        if cluster.spec.ingress {
            runtime.block_on(cluster.install_ingress())?;
        }
        Ok(cluster)
    }

    fn start_components(&mut self) -> anyhow::Result<()> {
        let topology = self.topology()?;
        let gateway = topology.gateway().to_string();
        let underlay = topology.underlay_netns().to_owned();
        let data = self.spec.data_dir.clone();
        let _ = fs::remove_file(&self.kubeconfig);
        let server = data.join("server");
        let kubeconfig = self.kubeconfig.clone();
        self.spawn(
            "apiserver",
            &[
                "apiserver",
                "--https-listen-port",
                "0",
                "--data-dir",
                path(&server)?,
                "--write-kubeconfig",
                path(&kubeconfig)?,
                "--underlay-netns",
                &underlay,
                "--advertise-address",
                &gateway,
            ],
        )?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.kubeconfig.exists() {
            if Instant::now() > deadline {
                bail!("the apiserver did not start:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let admin = fs::read_to_string(&self.kubeconfig)?;
        let node_kubeconfig = data.join("node.kubeconfig");
        fs::write(
            &node_kubeconfig,
            admin.replace("https://127.0.0.1:", &format!("https://{gateway}:")),
        )?;
        let admin = self.kubeconfig.clone();
        let mut controller = vec![
            "controller".to_owned(),
            "--kubeconfig".to_owned(),
            path(&admin)?.to_owned(),
        ];
        controller.extend(self.spec.controller_flags.iter().cloned());
        self.spawn_owned("controller", controller)?;
        let node_kubeconfig = path(&node_kubeconfig)?.to_owned();
        for i in 1..=self.spec.nodes {
            let node = self.node_name(i)?;
            let ip = self
                .topology()?
                .node_ip(i)
                .context("node exists")?
                .to_string();
            let node_data = data.join(&node);
            let node_data = path(&node_data)?.to_owned();
            let name = self.spec.name.clone();
            self.spawn(
                &format!("kubelet-{node}"),
                &[
                    "kubelet",
                    "--netns",
                    &node,
                    "--node-name",
                    &node,
                    "--node-ip",
                    &ip,
                    "--cluster",
                    &name,
                    "--data-dir",
                    &node_data,
                    "--kubeconfig",
                    &node_kubeconfig,
                ],
            )?;
            let mut proxy: Vec<&str> = vec![
                "proxy",
                "--netns",
                &node,
                "--hostname-override",
                &node,
                "--metrics-bind-address",
                "0.0.0.0:10249",
                "--kubeconfig",
                &node_kubeconfig,
            ];
            proxy.extend(
                self.spec
                    .proxy_flags
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>(),
            );
            let proxy: Vec<String> = proxy.iter().map(|s| s.to_string()).collect();
            self.spawn_owned(&format!("proxy-{node}"), proxy)?;
            self.spawn(
                &format!("speaker-{node}"),
                &[
                    "speaker",
                    "--netns",
                    &node,
                    "--node-name",
                    &node,
                    "--kubeconfig",
                    &node_kubeconfig,
                ],
            )?;
            let run_dir = format!("{node_data}/flannel");
            self.spawn(
                &format!("flannel-{node}"),
                &[
                    "flannel",
                    "--netns",
                    &node,
                    "--node-name",
                    &node,
                    "--run-dir",
                    &run_dir,
                    "--kubeconfig",
                    &node_kubeconfig,
                ],
            )?;
        }
        Ok(())
    }

    async fn client(&self) -> anyhow::Result<kube::Client> {
        let config = kube::config::Kubeconfig::read_from(&self.kubeconfig)?;
        let config = kube::Config::from_custom_kubeconfig(config, &Default::default()).await?;
        Ok(kube::Client::try_from(config)?)
    }

    /// Creates the objects of a manifest, in order.
    async fn install(&self, manifest: &str) -> anyhow::Result<kube::Client> {
        let client = self.client().await?;
        let params = PostParams::default();
        for document in serde_yaml::Deserializer::from_str(manifest) {
            let value: serde_json::Value = serde::Deserialize::deserialize(document)?;
            let namespace = value["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_owned();
            let c = || client.clone();
            match value["kind"].as_str() {
                Some("Namespace") => {
                    let api: Api<Namespace> = Api::all(c());
                    api.create(&params, &serde_json::from_value(value)?).await?;
                }
                Some("IngressClass") => {
                    let api: Api<IngressClass> = Api::all(c());
                    api.create(&params, &serde_json::from_value(value)?).await?;
                }
                Some("ConfigMap") => {
                    let api: Api<ConfigMap> = Api::namespaced(c(), &namespace);
                    api.create(&params, &serde_json::from_value(value)?).await?;
                }
                Some("Deployment") => {
                    let api: Api<Deployment> = Api::namespaced(c(), &namespace);
                    api.create(&params, &serde_json::from_value(value)?).await?;
                }
                Some("Service") => {
                    let api: Api<Service> = Api::namespaced(c(), &namespace);
                    api.create(&params, &serde_json::from_value(value)?).await?;
                }
                other => bail!("unexpected kind {other:?} in an addon manifest"),
            }
        }
        Ok(client)
    }

    /// Waits until the Deployment has every replica ready and `ready` holds.
    async fn wait_ready<F, Fut>(
        &self,
        client: kube::Client,
        namespace: &str,
        name: &str,
        what: &str,
        mut ready: F,
    ) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deployments: Api<Deployment> = Api::namespaced(client, namespace);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let deployment = deployments.get(name).await?;
            let wanted = deployment
                .spec
                .as_ref()
                .and_then(|s| s.replicas)
                .unwrap_or(1);
            let have = deployment
                .status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0);
            if have >= wanted && ready().await {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{what} did not become ready ({have} of {wanted}):\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Creates CoreDNS's ConfigMap, Deployment and the kube-dns Service, and waits
    /// until every replica is ready and a query through kube-dns is answered from every
    /// node.
    async fn install_dns(&self) -> anyhow::Result<()> {
        let client = self.install(COREDNS).await?;
        self.wait_ready(client, "kube-system", "coredns", "the cluster DNS", || {
            self.dns_answers_everywhere()
        })
        .await
    }

    /// Creates the ingress controller's namespace, IngressClass, Deployment and
    /// LoadBalancer Service, and waits until it is ready and its Service has an
    /// address.
    async fn install_ingress(&self) -> anyhow::Result<()> {
        let client = self.install(INGRESS).await?;
        let services: Api<Service> = Api::namespaced(client.clone(), "ingress-nginx");
        self.wait_ready(
            client,
            "ingress-nginx",
            "ingress-nginx-controller",
            "the ingress controller",
            || {
                let services = services.clone();
                async move {
                    services
                        .get("ingress-nginx-controller")
                        .await
                        .ok()
                        .is_some_and(|s| !controller::loadbalancer::ingress_ips(&s).is_empty())
                }
            },
        )
        .await
    }
    /// Whether a query to kube-dns from every node's namespace is answered: the DNS
    /// pods run and every node's kube-proxy forwards to them.
    async fn dns_answers_everywhere(&self) -> bool {
        let Ok(topology) = self.topology() else {
            return false;
        };
        let nodes: Vec<String> = (1..=self.spec.nodes)
            .filter_map(|i| topology.node_netns(i).map(str::to_owned))
            .collect();
        tokio::task::spawn_blocking(move || {
            nodes.iter().all(|node| {
                let Ok(ns) = netns::open(node) else {
                    return false;
                };
                netns::run_in(&ns, || {
                    Ok::<_, netns::Error>(
                        coredns_lite::wire::answers_a(
                            KUBE_DNS,
                            DNS_PROBE_NAME,
                            Duration::from_millis(500),
                        )
                        .unwrap_or(false),
                    )
                })
                .unwrap_or(false)
            })
        })
        .await
        .unwrap_or(false)
    }

    async fn wait_for_nodes(&self) -> anyhow::Result<()> {
        let nodes: Api<Node> = Api::all(self.client().await?);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let list = nodes.list(&ListParams::default()).await.ok();
            let ready = list
                .iter()
                .flat_map(|l| &l.items)
                .filter(|n| is_ready(n))
                .count();
            if ready == self.spec.nodes {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{ready} of {} nodes became Ready with a pod CIDR:\n{}",
                    self.spec.nodes,
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn spawn(&mut self, name: &str, args: &[&str]) -> anyhow::Result<()> {
        self.spawn_owned(name, args.iter().map(|a| a.to_string()).collect())
    }

    fn spawn_owned(&mut self, name: &str, args: Vec<String>) -> anyhow::Result<()> {
        let child = self.launch(name, &args)?;
        self.components.push(Component {
            name: name.to_owned(),
            args,
            child,
        });
        Ok(())
    }

    fn launch(&self, name: &str, args: &[String]) -> anyhow::Result<Child> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(name))?;
        Command::new(&self.spec.binary)
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            // A group of its own: the component outlives the terminal `kubesim up` ran in.
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting kubesim {name}"))
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.spec.data_dir.join("logs").join(format!("{name}.log"))
    }

    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The admin kubeconfig (the apiserver on 127.0.0.1).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    pub fn topology(&self) -> anyhow::Result<&Topology> {
        self.topology
            .as_ref()
            .context("the cluster's topology is gone")
    }

    /// The name of node `i` (from 1), which is also its namespace's name.
    pub fn node_name(&self, i: usize) -> anyhow::Result<String> {
        Ok(self
            .topology()?
            .node_netns(i)
            .context("no such node")?
            .to_owned())
    }

    /// The names of the components, in the order they started.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.components.iter().map(|c| c.name.as_str())
    }

    /// Kills the component `name` (e.g. `proxy-<node>`), as a crash would.
    pub fn stop(&mut self, name: &str) {
        for component in self.components.iter_mut().filter(|c| c.name == name) {
            let _ = component.child.kill();
            let _ = component.child.wait();
        }
    }

    /// Kills the component `name` and starts it again with the same command line.
    pub fn restart(&mut self, name: &str) -> anyhow::Result<()> {
        self.stop(name);
        let index = self
            .components
            .iter()
            .position(|c| c.name == name)
            .with_context(|| format!("no component {name}"))?;
        let args = self.components[index].args.clone();
        let child = self.launch(name, &args)?;
        self.components[index].child = child;
        Ok(())
    }

    /// The last lines of every component's log.
    pub fn logs(&self) -> String {
        self.components
            .iter()
            .map(|c| {
                let text = fs::read_to_string(self.log_path(&c.name)).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                format!(
                    "--- {} ---\n{}",
                    c.name,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Leaves the cluster running after this process ends; [`down`] removes it.
    pub fn leave_running(mut self) -> anyhow::Result<()> {
        let state = State {
            name: self.spec.name.clone(),
            nodes: self.spec.nodes,
            components: self
                .components
                .iter()
                .map(|c| Recorded {
                    name: c.name.clone(),
                    pid: c.child.id(),
                })
                .collect(),
        };
        fs::write(
            self.spec.data_dir.join(STATE_FILE),
            serde_json::to_string_pretty(&state)?,
        )?;
        if let Some(topology) = self.topology.take() {
            topology.detach();
        }
        self.detached = true;
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.detached {
            return;
        }
        for component in &mut self.components {
            let _ = component.child.kill();
            let _ = component.child.wait();
        }
        drop(self.topology.take());
        // Pod namespaces and any process left in the cluster's namespaces.
        if let Err(err) = remove_cluster(&self.spec.name) {
            tracing::warn!(%err, cluster = %self.spec.name, "removing the cluster");
        }
    }
}

/// What `cluster.json` records of a cluster left running.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct State {
    pub name: String,
    pub nodes: usize,
    pub components: Vec<Recorded>,
}

/// One component process of a cluster left running.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Recorded {
    pub name: String,
    pub pid: u32,
}

impl State {
    /// The state recorded in `data_dir`, if a cluster was left running there.
    pub fn read(data_dir: &Path) -> anyhow::Result<Option<State>> {
        let path = data_dir.join(STATE_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => Ok(Some(
                serde_json::from_str(&text)
                    .with_context(|| format!("reading {}", path.display()))?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
}

impl Recorded {
    /// Whether the process still runs (and is still kubesim).
    pub fn alive(&self) -> bool {
        i32::try_from(self.pid)
            .is_ok_and(|pid| kill(Pid::from_raw(pid), None).is_ok() && is_kubesim(pid))
    }
}

/// The tools the components run, and the Debian packages that bring them.
const REQUIRED_TOOLS: [(&str, &str); 6] = [
    ("ip", "iproute2"),
    ("arping", "iputils-arping"),
    ("iptables-restore", "iptables"),
    ("iptables-save", "iptables"),
    ("nft", "nftables"),
    ("conntrack", "conntrack"),
];

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
}

fn is_ready(node: &Node) -> bool {
    let has_cidr = node
        .spec
        .as_ref()
        .and_then(|s| s.pod_cidr.as_ref())
        .is_some();
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    has_cidr && ready
}

fn is_kubesim(pid: i32) -> bool {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|cmdline| {
            let program = cmdline.split(|b| *b == 0).next().unwrap_or_default();
            Path::new(std::ffi::OsStr::from_bytes(program))
                .file_name()
                .is_some_and(|name| name == "kubesim")
        })
        .unwrap_or(false)
}

/// The kubesim component processes (not this process) one of whose arguments
/// contains one of `needles`.
fn components_naming(needles: &[&str]) -> Vec<Pid> {
    let own = std::process::id();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| u32::try_from(*pid).is_ok_and(|p| p != own) && is_kubesim(*pid))
        .filter(|pid| {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            // `kubesim up` and `down` themselves name the data directory too.
            let command = args.get(1).copied().unwrap_or_default();
            command != b"up"
                && command != b"down"
                && args.iter().any(|a| {
                    let arg = String::from_utf8_lossy(a);
                    needles.iter().any(|n| arg.contains(n))
                })
        })
        .map(Pid::from_raw)
        .collect()
}

fn path(p: &Path) -> anyhow::Result<&str> {
    p.to_str()
        .with_context(|| format!("{} is not UTF-8", p.display()))
}

/// Stops a cluster left running: its processes (SIGTERM, then SIGKILL after 5 s),
/// then every namespace of the cluster and whatever still runs inside; then its data
/// directory. A cluster that crashed (no state, or stale pids) is removed as well.
pub fn down(name: &str, data_dir: &Path) -> anyhow::Result<()> {
    validate_cluster_name(name)?;
    // Only processes that still are kubesim's: a pid of a cluster that crashed long
    // ago may belong to something else by now.
    let mut pids: Vec<Pid> = State::read(data_dir)?
        .map(|state| state.components)
        .unwrap_or_default()
        .iter()
        .filter_map(|c| i32::try_from(c.pid).ok())
        .filter(|p| is_kubesim(*p))
        .map(Pid::from_raw)
        .collect();
    // Components of a start that failed before it recorded them: their command lines
    // name the cluster's underlay namespace or data directory.
    pids.extend(components_naming(&[
        &format!("{name}-underlay"),
        path(data_dir)?,
    ]));
    pids.sort();
    pids.dedup();
    for pid in &pids {
        let _ = kill(*pid, Signal::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|p| kill(*p, None).is_ok()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for pid in &pids {
        let _ = kill(*pid, Signal::SIGKILL);
    }
    let removed = remove_cluster(name)?;
    if data_dir.exists() {
        fs::remove_dir_all(data_dir).with_context(|| format!("removing {}", data_dir.display()))?;
    }
    tracing::info!(cluster = name, namespaces = removed, "cluster removed");
    Ok(())
}
