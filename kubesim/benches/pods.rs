//! Real pods on a real 3-node cluster (the topology's namespaces, the apiserver,
//! controller, and per node a kubelet and flannel, each the `kubesim` binary as
//! `NetCluster` starts them), against the same control plane with simulated nodes:
//! 1. pod startup: a Deployment of N agnhost netexec pods with an HTTP readiness probe,
//!    created → all Running and Ready; then scaled to 0 → every pod (and its network
//!    namespace) gone;
//! 2. memory: Pss and Rss of the processes inside the pod namespaces, per pod, and the
//!    kubelets' Rss;
//! 3. pod-to-pod TCP throughput with iperf3: across nodes (VXLAN), on one node (the
//!    `cni0` bridge), and node to node on the underlay.
//!
//! Run as root with `bench/pods.sh` (or `cargo bench -p kubesim --bench pods`).
//! `PODS` overrides the sizes (comma-separated, default `10,100,500`); the kubelets run
//! with `--max-pods 250`, and a size above the nodes' pod capacity is reported, not run. Every process
//! started here is killed and every namespace of the cluster removed when the run ends,
//! also on failure, panic or Ctrl-C.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::ResourceExt;
use kubelet::topology::{remove_cluster, Topology, TopologySpec};

const NODES: usize = 3;
/// Every node's `--max-pods`, so 500 pods fit on three nodes.
const MAX_PODS: &str = "250";
/// How long one size may take to become Ready before the run reports what it saw and
/// skips the larger sizes.
const READY_LIMIT: Duration = Duration::from_secs(600);
const IMAGE: &str = "registry.k8s.io/e2e-test-images/agnhost:2.53";

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        // Dropping `run` on Ctrl-C drops the clusters, which removes them.
        tokio::select! {
            result = run() => result,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        }
    })
}

fn sizes() -> anyhow::Result<Vec<usize>> {
    let text = std::env::var("PODS").unwrap_or_else(|_| "10,100,500".into());
    text.split(',')
        .map(|s| {
            s.trim()
                .parse()
                .with_context(|| format!("PODS: {s:?} is not a count"))
        })
        .collect()
}

/// A cluster name no other cluster uses: `b` and five random lowercase characters.
fn unique_name() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    let mut bits = h.finish();
    let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut name = String::from("b");
    for _ in 0..5 {
        name.push(char::from(alphabet[(bits % 36) as usize]));
        bits /= 36;
    }
    name
}

/// A running cluster: its processes and, for real nodes, its namespaces. Dropping it
/// kills every process and removes every namespace named after the cluster.
struct Cluster {
    /// The real cluster's name (the prefix of its namespaces); `None` when simulated.
    name: Option<String>,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    children: Vec<(String, Child)>,
    topology: Option<Topology>,
    client: Option<kube::Client>,
}

impl Cluster {
    fn new(name: Option<String>, topology: Option<Topology>) -> anyhow::Result<Cluster> {
        let dir = tempfile::tempdir()?;
        let kubeconfig = dir.path().join("kubeconfig");
        Ok(Cluster {
            name,
            dir,
            kubeconfig,
            children: Vec::new(),
            topology,
            client: None,
        })
    }

    /// An apiserver, controller and `kubelet --simulated --nodes 3`.
    async fn simulated() -> anyhow::Result<Cluster> {
        let mut cluster = Cluster::new(None, None)?;
        cluster.start_control_plane(&[]).await?;
        let admin = cluster.kubeconfig.clone();
        cluster.spawn(
            "kubelet",
            &[
                "kubelet",
                "--simulated",
                "--nodes",
                &NODES.to_string(),
                "--max-pods",
                MAX_PODS,
                "--kubeconfig",
            ],
            &admin,
        )?;
        cluster.wait_for_nodes().await?;
        Ok(cluster)
    }

    /// The topology's namespaces, the control plane, and per node a kubelet and flannel
    /// inside the node's namespace, as `NetCluster` starts them.
    async fn real() -> anyhow::Result<Cluster> {
        let name = unique_name();
        let topology = Topology::create(&TopologySpec::new(name.clone(), NODES)).await?;
        let gateway = topology.gateway().to_string();
        let underlay = topology.underlay_netns().to_owned();
        let mut cluster = Cluster::new(Some(name.clone()), Some(topology))?;
        cluster
            .start_control_plane(&[
                "--underlay-netns",
                &underlay,
                "--advertise-address",
                &gateway,
            ])
            .await?;
        let admin = std::fs::read_to_string(&cluster.kubeconfig)?;
        let node_kubeconfig = cluster.dir.path().join("node.kubeconfig");
        std::fs::write(
            &node_kubeconfig,
            admin.replace("https://127.0.0.1:", &format!("https://{gateway}:")),
        )?;
        for i in 1..=NODES {
            let node = cluster.node_name(i)?;
            let ip = cluster
                .topology()?
                .node_ip(i)
                .context("node exists")?
                .to_string();
            let data = cluster.dir.path().join(&node);
            let data = data.to_str().context("utf-8 path")?.to_owned();
            cluster.spawn(
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
                    &data,
                    "--max-pods",
                    MAX_PODS,
                    "--kubeconfig",
                ],
                &node_kubeconfig,
            )?;
            let run_dir = format!("{data}/flannel");
            cluster.spawn(
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
                ],
                &node_kubeconfig,
            )?;
        }
        cluster.wait_for_nodes().await?;
        Ok(cluster)
    }

    /// Starts the apiserver with `flags`, waits for its kubeconfig, then the controller.
    async fn start_control_plane(&mut self, flags: &[&str]) -> anyhow::Result<()> {
        let data = self.dir.path().join("data");
        let data = data.to_str().context("utf-8 path")?.to_owned();
        let kubeconfig = self.kubeconfig.to_str().context("utf-8 path")?.to_owned();
        let mut args = vec![
            "apiserver",
            "--https-listen-port",
            "0",
            "--data-dir",
            &data,
            "--write-kubeconfig",
            &kubeconfig,
        ];
        args.extend_from_slice(flags);
        self.spawn_args("apiserver", &args)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.kubeconfig.exists() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the apiserver wrote no kubeconfig:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let config = kube::config::Kubeconfig::read_from(&self.kubeconfig)?;
        let config = kube::Config::from_custom_kubeconfig(config, &Default::default()).await?;
        self.client = Some(kube::Client::try_from(config)?);
        let admin = self.kubeconfig.clone();
        self.spawn("controller", &["controller", "--kubeconfig"], &admin)
    }

    fn spawn(&mut self, name: &str, args: &[&str], kubeconfig: &Path) -> anyhow::Result<()> {
        let kubeconfig = kubeconfig.to_str().context("utf-8 path")?;
        let mut all = args.to_vec();
        all.push(kubeconfig);
        self.spawn_args(name, &all)
    }

    fn spawn_args(&mut self, name: &str, args: &[&str]) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.log")))?;
        let child = Command::new(env!("CARGO_BIN_EXE_kubesim"))
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting kubesim {name}"))?;
        self.children.push((name.to_owned(), child));
        Ok(())
    }

    fn client(&self) -> anyhow::Result<kube::Client> {
        self.client.clone().context("the apiserver is not started")
    }

    fn topology(&self) -> anyhow::Result<&Topology> {
        self.topology.as_ref().context("a simulated cluster")
    }

    /// The name of node `i` (from 1), which is also its namespace's name.
    fn node_name(&self, i: usize) -> anyhow::Result<String> {
        Ok(self
            .topology()?
            .node_netns(i)
            .context("node exists")?
            .to_owned())
    }

    /// The pid of each process started as `prefix…` (e.g. every kubelet).
    fn pids(&self, prefix: &str) -> Vec<u32> {
        self.children
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(_, child)| child.id())
            .collect()
    }

    /// How many pods the nodes hold: the sum of their `status.capacity.pods`.
    async fn pod_capacity(&self) -> anyhow::Result<usize> {
        let nodes: Api<Node> = Api::all(self.client()?);
        let mut capacity = 0;
        for node in nodes.list(&ListParams::default()).await? {
            let pods = node
                .status
                .and_then(|s| s.capacity)
                .and_then(|c| c.get("pods").and_then(|q| q.0.parse::<usize>().ok()))
                .context("a node without capacity.pods")?;
            capacity += pods;
        }
        Ok(capacity)
    }

    async fn wait_for_nodes(&self) -> anyhow::Result<()> {
        let nodes: Api<Node> = Api::all(self.client()?);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let list = nodes.list(&ListParams::default()).await?;
            let with_cidr = list
                .items
                .iter()
                .filter(|n| n.spec.as_ref().and_then(|s| s.pod_cidr.as_ref()).is_some())
                .count();
            if with_cidr == NODES {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "nodes did not register with pod CIDRs:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The pod namespaces that exist now.
    fn pod_namespaces(&self) -> anyhow::Result<Vec<String>> {
        match &self.name {
            Some(name) => Ok(netns::list(&format!("{name}-pod-"))?),
            None => Ok(Vec::new()),
        }
    }

    /// The netns of a pod, as the kubelet names it.
    fn pod_netns(&self, pod: &Pod) -> anyhow::Result<String> {
        let name = self.name.as_deref().context("a simulated cluster")?;
        let short: String = pod
            .uid()
            .context("pod without uid")?
            .chars()
            .filter(|c| *c != '-')
            .take(12)
            .collect();
        Ok(format!("{name}-pod-{short}"))
    }

    /// The tail of every component's log, for failure messages.
    fn logs(&self) -> String {
        self.children
            .iter()
            .map(|(name, _)| {
                let text = std::fs::read_to_string(self.dir.path().join(format!("{name}.log")))
                    .unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(20).collect();
                format!(
                    "--- {name} ---\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        drop(self.topology.take());
        // Pod namespaces and every process left in the cluster's namespaces.
        if let Some(name) = &self.name {
            if let Err(err) = remove_cluster(name) {
                eprintln!("removing cluster {name}: {err}");
            }
        }
    }
}

fn is_ready(pod: &Pod) -> bool {
    pod.status.as_ref().is_some_and(|s| {
        s.phase.as_deref() == Some("Running")
            && s.conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

/// One size's startup and teardown.
#[derive(Debug)]
struct Startup {
    /// Created → all Ready, or how many were Ready when [`READY_LIMIT`] passed.
    ready: Result<Duration, usize>,
    /// Scaled to 0 → every pod and pod namespace gone.
    gone: Duration,
    memory: Option<Memory>,
}

/// Runs size `n` (measuring memory at `memory_at`), or returns the nodes' pod capacity
/// when `n` is above it.
async fn size(
    cluster: &Cluster,
    n: usize,
    memory_at: usize,
) -> anyhow::Result<Result<Startup, usize>> {
    let capacity = cluster.pod_capacity().await?;
    if n > capacity {
        return Ok(Err(capacity));
    }
    Ok(Ok(startup(cluster, n, n == memory_at).await?))
}

/// Creates a Deployment of `n` agnhost pods, waits until all are Ready (measuring
/// memory then, if `measure`), scales it to 0 and waits until every pod is gone.
async fn startup(cluster: &Cluster, n: usize, measure: bool) -> anyhow::Result<Startup> {
    let client = cluster.client()?;
    let app = format!("web-{n}");
    let deploy: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": app},
        "spec": {
            "replicas": n,
            "selector": {"matchLabels": {"app": app}},
            "template": {
                "metadata": {"labels": {"app": app}},
                "spec": {"containers": [{
                    "name": "agnhost",
                    "image": IMAGE,
                    "args": ["netexec", "--http-port=8080"],
                    "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1},
                }]},
            },
        },
    }))?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let selector = format!("app={app}");
    let events = watcher(pods.clone(), watcher::Config::default().labels(&selector));
    let mut events = std::pin::pin!(events);
    let mut ready: HashMap<String, bool> = HashMap::new();
    let start = Instant::now();
    deployments.create(&PostParams::default(), &deploy).await?;
    let wait = async {
        while let Some(event) = events.next().await {
            match event? {
                watcher::Event::Init => ready.clear(),
                watcher::Event::InitApply(pod) | watcher::Event::Apply(pod) => {
                    ready.insert(pod.uid().unwrap_or_default(), is_ready(&pod));
                }
                watcher::Event::Delete(pod) => {
                    ready.remove(&pod.uid().unwrap_or_default());
                }
                watcher::Event::InitDone => {}
            }
            if ready.values().filter(|r| **r).count() == n {
                return anyhow::Ok(start.elapsed());
            }
        }
        anyhow::bail!("the pod watch ended")
    };
    let waited = tokio::time::timeout(READY_LIMIT, wait).await;
    let ready = match waited {
        Ok(elapsed) => Ok(elapsed?),
        Err(_) => Err(ready.values().filter(|r| **r).count()),
    };
    let memory = match (&ready, measure) {
        (Ok(_), true) => Some(memory(cluster)?),
        _ => None,
    };

    let start = Instant::now();
    deployments
        .patch(
            &app,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": 0}})),
        )
        .await?;
    loop {
        let left = pods
            .list_metadata(&ListParams::default().labels(&selector))
            .await?;
        if left.items.is_empty() && cluster.pod_namespaces()?.is_empty() {
            break;
        }
        anyhow::ensure!(
            start.elapsed() < READY_LIMIT,
            "{} pods still there {} s after scaling to 0",
            left.items.len(),
            READY_LIMIT.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let gone = start.elapsed();
    deployments.delete(&app, &DeleteParams::default()).await?;
    Ok(Startup {
        ready,
        gone,
        memory,
    })
}

/// Kilobytes of a process: (Pss, Rss) from `/proc/<pid>/smaps_rollup`.
fn pss_rss(pid: u32) -> anyhow::Result<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok((field("Pss:"), field("Rss:")))
}

/// Memory of the running pods and of the kubelets, in kB.
#[derive(Debug)]
struct Memory {
    pods: usize,
    processes: usize,
    pss: u64,
    rss: u64,
    kubelets: usize,
    kubelet_rss: u64,
}

fn memory(cluster: &Cluster) -> anyhow::Result<Memory> {
    let namespaces = cluster.pod_namespaces()?;
    let (mut processes, mut pss, mut rss) = (0, 0, 0);
    for ns in &namespaces {
        for pid in netns::pids(ns)? {
            let pid = u32::try_from(pid.as_raw())?;
            let (p, r) = pss_rss(pid)?;
            processes += 1;
            pss += p;
            rss += r;
        }
    }
    let kubelets = cluster.pids("kubelet");
    let mut kubelet_rss = 0;
    for pid in &kubelets {
        kubelet_rss += pss_rss(*pid)?.1;
    }
    Ok(Memory {
        pods: namespaces.len(),
        processes,
        pss,
        rss,
        kubelets: kubelets.len(),
        kubelet_rss,
    })
}

/// Creates a busybox pod running `command` on node `node` and returns it once it runs
/// with an IP.
async fn host_pod(
    cluster: &Cluster,
    name: &str,
    node: usize,
    command: &[&str],
) -> anyhow::Result<Pod> {
    let pods: Api<Pod> = Api::namespaced(cluster.client()?, "default");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": cluster.node_name(node)?},
            "containers": [{"name": "c", "image": "busybox:1.36", "command": command}],
        },
    }))?;
    pods.create(&PostParams::default(), &pod).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let pod = pods.get(name).await?;
        let status = pod.status.as_ref();
        if status.and_then(|s| s.phase.as_deref()) == Some("Running")
            && status.and_then(|s| s.pod_ip.as_ref()).is_some()
        {
            return Ok(pod);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "pod {name} did not run:\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs `iperf3 -c <server> -t 5 -J` inside `netns` (retrying while the server is not
/// listening yet) and returns the received bits per second.
async fn iperf(netns: &str, server: &str) -> anyhow::Result<f64> {
    let mut last = String::new();
    for _ in 0..20 {
        let out = tokio::process::Command::new("ip")
            .args([
                "netns", "exec", netns, "iperf3", "-c", server, "-t", "5", "-J",
            ])
            .kill_on_drop(true)
            .output()
            .await?;
        if out.status.success() {
            let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
            return report["end"]["sum_received"]["bits_per_second"]
                .as_f64()
                .context("iperf3 reported no end.sum_received.bits_per_second");
        }
        last = String::from_utf8_lossy(&out.stdout).into_owned();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    anyhow::bail!("iperf3 -c {server} in {netns} failed: {last}")
}

/// How many times each iperf3 test runs; the table shows the median and the range.
const ROUNDS: usize = 3;

/// Gbit/s of each round, sorted: pod to pod across nodes, pod to pod on one node, node
/// to node on the underlay.
struct Throughput {
    cross: Vec<f64>,
    same: Vec<f64>,
    underlay: Vec<f64>,
}

async fn throughput(cluster: &mut Cluster) -> anyhow::Result<Throughput> {
    let server = host_pod(cluster, "iperf-server", 2, &["iperf3", "-s"]).await?;
    let server_ip = server
        .status
        .and_then(|s| s.pod_ip)
        .context("server pod without IP")?;
    let cross = host_pod(cluster, "iperf-cross", 1, &["sleep", "infinity"]).await?;
    let same = host_pod(cluster, "iperf-same", 2, &["sleep", "infinity"]).await?;
    let (cross, same) = (cluster.pod_netns(&cross)?, cluster.pod_netns(&same)?);
    // The underlay: node 1 to a server in node 2's namespace.
    let (node1, node2) = (cluster.node_name(1)?, cluster.node_name(2)?);
    let node2_ip = cluster
        .topology()?
        .node_ip(2)
        .context("node exists")?
        .to_string();
    let child = Command::new("ip")
        .args(["netns", "exec", &node2, "iperf3", "-s"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    cluster.children.push(("iperf3-underlay".into(), child));
    let mut result = Throughput {
        cross: Vec::new(),
        same: Vec::new(),
        underlay: Vec::new(),
    };
    for _ in 0..ROUNDS {
        result.cross.push(iperf(&cross, &server_ip).await? / 1e9);
        result.same.push(iperf(&same, &server_ip).await? / 1e9);
        result.underlay.push(iperf(&node1, &node2_ip).await? / 1e9);
    }
    for gbits in [&mut result.cross, &mut result.same, &mut result.underlay] {
        gbits.sort_by(f64::total_cmp);
    }
    Ok(result)
}

fn median(sorted: &[f64]) -> f64 {
    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
}

/// `median (min–max) Gbit/s`.
fn gbits(sorted: &[f64]) -> String {
    format!(
        "{:.2} Gbit/s ({:.2}–{:.2})",
        median(sorted),
        sorted.first().copied().unwrap_or(f64::NAN),
        sorted.last().copied().unwrap_or(f64::NAN)
    )
}

fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

async fn run() -> anyhow::Result<()> {
    let sizes = sizes()?;
    let memory_at = if sizes.contains(&100) {
        100
    } else {
        sizes.iter().copied().max().unwrap_or(0)
    };

    let mut simulated = Vec::new();
    {
        let cluster = Cluster::simulated().await?;
        eprintln!("simulated nodes: logs in {}", cluster.dir.path().display());
        for &n in &sizes {
            let result = size(&cluster, n, memory_at).await?;
            eprintln!("simulated: {n} pods: {result:?}");
            let stop = result.as_ref().is_ok_and(|r| r.ready.is_err());
            simulated.push((n, result));
            if stop {
                break;
            }
        }
    }

    let mut cluster = Cluster::real().await?;
    eprintln!(
        "real nodes, cluster {}: logs in {}",
        cluster.name.as_deref().unwrap_or_default(),
        cluster.dir.path().display()
    );
    let mut real = Vec::new();
    for &n in &sizes {
        let result = size(&cluster, n, memory_at).await?;
        eprintln!("real: {n} pods: {result:?}");
        let stop = result.as_ref().is_ok_and(|r| r.ready.is_err());
        real.push((n, result));
        if stop {
            break;
        }
    }
    let net = throughput(&mut cluster).await?;
    drop(cluster);

    let ready = |r: &Result<Duration, usize>, n: usize| match r {
        Ok(d) => format!(
            "{:.1} s ({:.1} pods/s)",
            d.as_secs_f64(),
            n as f64 / d.as_secs_f64()
        ),
        Err(k) => format!(
            "stopped: {k} of {n} Ready after {} s",
            READY_LIMIT.as_secs()
        ),
    };
    println!("| measurement | real nodes (netns, CNI, processes) | simulated nodes (same run) |");
    println!("| --- | --- | --- |");
    let not_run = |capacity: usize| {
        format!("not run: above the nodes' pod capacity ({NODES} × 110 = {capacity})")
    };
    for (n, result) in &real {
        let sim = simulated.iter().find(|(m, _)| m == n).map(|(_, s)| s);
        let (result, sim) = match (result, sim) {
            (Ok(result), Some(Ok(sim))) => (result, Some(sim)),
            (Ok(result), _) => (result, None),
            (Err(capacity), _) => {
                println!(
                    "| {n} pods of one Deployment on {NODES} nodes | {} | {} |",
                    not_run(*capacity),
                    sim.and_then(|s| s.as_ref().err())
                        .map_or("—".into(), |c| not_run(*c)),
                );
                continue;
            }
        };
        println!(
            "| {n} pods of one Deployment on {NODES} nodes: created → all Running and Ready | {} | {} |",
            ready(&result.ready, *n),
            sim.map_or("—".into(), |s| ready(&s.ready, *n)),
        );
        println!(
            "| … scaled to 0 → all pods gone (and their netns) | {:.1} s | {} |",
            result.gone.as_secs_f64(),
            sim.map_or("—".into(), |s| format!("{:.1} s", s.gone.as_secs_f64())),
        );
        if let Some(m) = &result.memory {
            let pods = m.pods.max(1) as f64;
            println!(
                "| memory per pod with {} pods Running ({:.1} processes per pod) | Pss {:.2} MiB, Rss {:.2} MiB | — |",
                m.pods,
                m.processes as f64 / pods,
                mib(m.pss) / pods,
                mib(m.rss) / pods,
            );
            let sim_rss = sim.and_then(|s| s.memory.as_ref()).map(|m| m.kubelet_rss);
            println!(
                "| kubelet Rss with {} pods Running | {:.1} MiB in {} kubelets | {} |",
                m.pods,
                mib(m.kubelet_rss),
                m.kubelets,
                sim_rss.map_or("—".into(), |kb| format!(
                    "{:.1} MiB (one kubelet for {NODES} nodes)",
                    mib(kb)
                )),
            );
        }
    }
    println!(
        "| pod → pod TCP across nodes (VXLAN), iperf3 5 s, median of {ROUNDS} (range) | {} | node → node on the underlay: {} |",
        gbits(&net.cross),
        gbits(&net.underlay)
    );
    println!(
        "| pod → pod TCP on one node (cni0 bridge), iperf3 5 s, median of {ROUNDS} (range) | {} | — |",
        gbits(&net.same)
    );
    println!(
        "| across nodes / on one node (medians) | {:.2} | — |",
        median(&net.cross) / median(&net.same)
    );
    Ok(())
}
