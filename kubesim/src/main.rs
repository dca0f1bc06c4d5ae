//! `kubesim`: one binary, every component a subcommand (like k3s).

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "kubesim",
    version,
    about = "A mini Kubernetes whose networking is real"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a cluster of real nodes (network namespaces on this machine) and leave it
    /// running in the background, like kind: the apiserver, the controller, and per
    /// node a kubelet, kube-proxy and flannel.
    Up(UpArgs),
    /// Stop a cluster and remove every process, namespace and file it made.
    Down(DownArgs),
    /// Show the path a packet takes, with the live rules it meets on a node.
    Explain {
        #[command(subcommand)]
        what: Explain,
    },
    /// List the clusters left running, and whether their components run.
    Status {
        /// Where clusters keep their state.
        #[arg(long, default_value = "/var/lib/kubesim")]
        root: PathBuf,
    },
    /// Print a component's log (apiserver, controller, kubelet-NODE, proxy-NODE,
    /// flannel-NODE).
    Logs {
        component: String,
        #[arg(long, default_value = "kubesim")]
        name: String,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Run a command in a host of the cluster: a node (node1, node2, …), the external
    /// host (ext) or the underlay; for pods use `kubectl exec`.
    Exec {
        #[arg(long, default_value = "kubesim")]
        name: String,
        host: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        argv: Vec<String>,
    },
    /// Run scenarios: the labs, each on a fresh cluster, step by step with a report.
    #[command(subcommand)]
    Scenario(kubesim::scenario::Command),
    /// Run the Kubernetes API server (HTTPS, bearer token, storage in sled).
    Apiserver(ApiserverArgs),
    /// Run the control loops: deployments, replicasets, endpoints, endpointslices,
    /// scheduler, node IPAM and garbage collection.
    Controller(ControllerArgs),
    /// Run a node's kubelet inside the node's network namespace (`--netns`), with pods
    /// in namespaces of their own; or, with `--simulated`, N nodes that run their pods
    /// as status only.
    Kubelet(KubeletArgs),
    /// Run flannel's VXLAN backend for one node, inside the node's network namespace:
    /// the `flannel.1` device, and neighbour, FDB and route entries for every other node.
    Flannel(FlannelArgs),
    /// Announce LoadBalancer addresses from one node in layer 2 (as MetalLB's speaker),
    /// inside the node's network namespace: the elected node holds each address on its
    /// interface and sends gratuitous ARP.
    Speaker(SpeakerArgs),
    /// Run kube-proxy for one node, inside the node's network namespace: Services and
    /// EndpointSlices become iptables rules laid out as kube-proxy lays them out.
    Proxy(ProxyArgs),
    /// Run the cluster DNS: the Kubernetes DNS specification as CoreDNS's kubernetes
    /// plugin answers it, configured by the Corefile in ConfigMap kube-system/coredns.
    Dns(DnsArgs),
    /// Run the ingress controller: Ingresses served as ingress-nginx serves them, with
    /// its flags, proxied straight to the Services' ready endpoints.
    Ingress(IngressArgs),
    /// Run as a CNI plugin: reads CNI_* variables and the network configuration on stdin,
    /// as any CNI runtime calls it.
    Cni,
    /// The pod sandbox's pause process (started by the kubelet).
    #[command(hide = true)]
    Pause(PauseArgs),
    /// Run a command inside a pod sandbox's namespaces (used by the kubelet).
    Nsenter(NsenterArgs),
    /// A built-in workload: `nginx …` or `agnhost <subcommand> …` (started by the kubelet).
    #[command(hide = true)]
    Workload {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        argv: Vec<String>,
    },
}

#[derive(clap::Args)]
struct FlannelArgs {
    /// The kubeconfig of the apiserver to work against.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// The Node this flannel serves.
    #[arg(long)]
    node_name: String,
    /// The named network namespace of the node; flannel enters it at start.
    #[arg(long)]
    netns: String,
    /// The interface whose address is the tunnel's source (the node's public IP).
    #[arg(long, default_value = "eth0")]
    iface: String,
    /// The cluster's pod network.
    #[arg(long, default_value = "10.244.0.0/16")]
    network: String,
    /// Where subnet.env is written.
    #[arg(long)]
    run_dir: PathBuf,
}

#[derive(clap::Args)]
struct SpeakerArgs {
    /// The kubeconfig of the apiserver to work against.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// The Node this speaker runs on.
    #[arg(long)]
    node_name: String,
    /// The named network namespace of the node; the speaker enters it at start.
    #[arg(long)]
    netns: Option<String>,
    /// The interface addresses are announced on.
    #[arg(long, default_value = "eth0")]
    interface: String,
    /// Announce only Services of this spec.loadBalancerClass (by default, those
    /// without a class).
    #[arg(long)]
    lb_class: Option<String>,
}

#[derive(clap::Args)]
struct ProxyArgs {
    /// The kubeconfig of the apiserver to work against.
    #[arg(long, required_unless_present = "cleanup")]
    kubeconfig: Option<PathBuf>,
    /// The named network namespace of the node; the proxy enters it at start.
    #[arg(long)]
    netns: Option<String>,
    /// The node's name (endpoints on it are local).
    #[arg(long, required_unless_present = "cleanup")]
    hostname_override: Option<String>,
    /// Traffic to a cluster IP from outside this range is masqueraded.
    #[arg(long, default_value = "10.244.0.0/16")]
    cluster_cidr: String,
    /// iptables, nftables, ipvs (which falls back to iptables when the kernel lacks
    /// IPVS), or userspace (a proxy socket per service port, as kube-proxy up to 1.25).
    #[arg(long, default_value = "iptables", value_parser = ["iptables", "nftables", "ipvs", "userspace"])]
    proxy_mode: String,
    /// How the userspace proxy chooses a backend, by IPVS scheduler name: rr (round
    /// robin, upstream's userspace balancer), lc, dh, sh, sed or nq.
    #[arg(long, default_value = "rr", value_parser = clap::builder::PossibleValuesParser::new(kubeproxy::userspace::Scheduler::NAMES))]
    userspace_scheduler: String,
    /// How long an idle UDP connection of the userspace proxy is kept open.
    #[arg(long, default_value = "250ms", value_parser = parse_duration)]
    udp_timeout: std::time::Duration,
    /// The shortest time between two syncs.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    iptables_min_sync_period: std::time::Duration,
    /// The longest time between two syncs.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    iptables_sync_period: std::time::Duration,
    /// Masquerade all traffic sent to cluster IPs.
    #[arg(long)]
    masquerade_all: bool,
    /// Where /healthz is served.
    #[arg(long, default_value = "0.0.0.0:10256")]
    healthz_bind_address: std::net::SocketAddr,
    /// Where /metrics and /proxyMode are served.
    #[arg(long, default_value = "127.0.0.1:10249")]
    metrics_bind_address: std::net::SocketAddr,
    /// Remove every rule and chain the proxy made, then exit.
    #[arg(long)]
    cleanup: bool,
}

#[derive(clap::Args)]
struct DnsArgs {
    /// The kubeconfig of the apiserver; without it, the in-cluster configuration.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Where DNS is served, on UDP and TCP.
    #[arg(long, default_value = "0.0.0.0:53")]
    dns_bind_address: std::net::SocketAddr,
    /// Where /health is served.
    #[arg(long, default_value = "0.0.0.0:8080")]
    health_bind_address: std::net::SocketAddr,
    /// Where /ready is served.
    #[arg(long, default_value = "0.0.0.0:8181")]
    ready_bind_address: std::net::SocketAddr,
    /// Where /metrics is served.
    #[arg(long, default_value = "0.0.0.0:9153")]
    metrics_bind_address: std::net::SocketAddr,
    /// The cluster domain, while ConfigMap kube-system/coredns has no Corefile.
    #[arg(long, default_value = "cluster.local")]
    zone: String,
    /// The TTL of answers, while ConfigMap kube-system/coredns has no Corefile.
    #[arg(long, default_value_t = 30)]
    ttl: u32,
    /// Where names outside the cluster zones are forwarded (IP or IP:port), while
    /// ConfigMap kube-system/coredns has no Corefile; none by default (SERVFAIL).
    #[arg(long)]
    upstream: Option<String>,
}

#[derive(clap::Args)]
struct IngressArgs {
    /// The kubeconfig of the apiserver; without it, the in-cluster configuration.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The `spec.controller` of the IngressClasses this controller serves.
    #[arg(long, default_value = ingress::class::DEFAULT_CONTROLLER)]
    controller_class: String,
    /// The value of the deprecated `kubernetes.io/ingress.class` annotation served.
    #[arg(long, default_value = ingress::class::DEFAULT_INGRESS_CLASS)]
    ingress_class: String,
    /// Also serve Ingresses that name no class.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    watch_ingress_without_class: bool,
    /// The Service (NAMESPACE/NAME) whose addresses go into the Ingresses' status.
    #[arg(long)]
    publish_service: Option<ingress::Key>,
    /// Addresses (comma-separated) for the Ingresses' status, instead of
    /// --publish-service's.
    #[arg(long, value_delimiter = ',')]
    publish_status_address: Vec<String>,
    /// The Service (NAMESPACE/NAME) answering requests no rule matches (else 404).
    #[arg(long)]
    default_backend_service: Option<ingress::Key>,
    /// The TLS Secret (NAMESPACE/NAME) for names no Ingress covers (else a self-signed
    /// fake certificate).
    #[arg(long)]
    default_ssl_certificate: Option<ingress::Key>,
    #[arg(long, default_value_t = 80)]
    http_port: u16,
    #[arg(long, default_value_t = 443)]
    https_port: u16,
    /// Where GET /healthz is served.
    #[arg(long, default_value_t = 10254)]
    healthz_port: u16,
    /// Seconds to wait for a connection to an endpoint.
    #[arg(long, default_value_t = 5)]
    proxy_connect_timeout: u64,
    /// Seconds to wait for an endpoint's response, and between two reads of it.
    #[arg(long, default_value_t = 60)]
    proxy_read_timeout: u64,
    /// Accepted for ingress-nginx's manifests and ignored: one replica needs no election.
    #[arg(long)]
    election_id: Option<String>,
    /// Accepted for ingress-nginx's manifests and ignored: no ConfigMap settings.
    #[arg(long)]
    configmap: Option<String>,
    /// Accepted for ingress-nginx's manifests and ignored: no admission webhook.
    #[arg(long)]
    validating_webhook: Option<String>,
    #[arg(long)]
    validating_webhook_certificate: Option<String>,
    #[arg(long)]
    validating_webhook_key: Option<String>,
    /// Accepted for ingress-nginx's manifests and ignored.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    enable_metrics: Option<String>,
}

/// A duration as kube-proxy's flags take it: `500ms`, `1s`, `2m`.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?}"))?;
    match unit {
        "ms" => Ok(std::time::Duration::from_millis(n)),
        "s" => Ok(std::time::Duration::from_secs(n)),
        "m" => Ok(std::time::Duration::from_secs(n * 60)),
        _ => Err(format!("invalid duration {text:?}: use ms, s or m")),
    }
}

#[derive(clap::Args)]
struct PauseArgs {
    /// The pod's network namespace (a file such as /run/netns/NAME); none for host network.
    #[arg(long)]
    netns: Option<PathBuf>,
    /// The pod's hostname, set in a UTS namespace of its own.
    #[arg(long)]
    hostname: Option<String>,
    /// The directory whose resolv.conf, hosts and hostname cover the ones in /etc.
    #[arg(long)]
    etc: PathBuf,
    /// The directory mounted as the pod's service account credentials.
    #[arg(long)]
    service_account: Option<PathBuf>,
}

#[derive(clap::Args)]
struct NsenterArgs {
    /// The pid of the sandbox's pause process.
    #[arg(long)]
    target: i32,
    /// The working directory inside the sandbox.
    #[arg(long)]
    workdir: Option<PathBuf>,
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    argv: Vec<String>,
}

#[derive(Subcommand)]
enum Explain {
    /// A Service: its endpoints, kube-proxy's rules for it on the node, and the VXLAN
    /// route, neighbour and FDB entry to each endpoint on another node.
    Service {
        /// The Service's name.
        service: String,
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// The node to look from (default: the cluster's first node).
        #[arg(long)]
        node: Option<String>,
        /// The cluster's name.
        #[arg(long, default_value = "kubesim")]
        name: String,
        /// The kubeconfig (default: the cluster's, under /var/lib/kubesim/NAME).
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct UpArgs {
    /// The cluster's name: the prefix of all its namespaces (at most 8 characters).
    #[arg(long, default_value = "kubesim")]
    name: String,
    /// How many nodes.
    #[arg(long, default_value_t = 2)]
    nodes: usize,
    /// kube-proxy's mode on every node.
    #[arg(long, default_value = "iptables", value_parser = ["iptables", "nftables", "ipvs", "userspace"])]
    proxy_mode: String,
    /// Where the cluster keeps its state and logs (default /var/lib/kubesim/NAME).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Leave out the ingress controller (installed by default, as ingress-nginx in
    /// namespace ingress-nginx behind a LoadBalancer Service).
    #[arg(long)]
    no_ingress: bool,
}

#[derive(clap::Args)]
struct DownArgs {
    /// The cluster's name.
    #[arg(long, default_value = "kubesim")]
    name: String,
    /// Where the cluster keeps its state (default /var/lib/kubesim/NAME).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// The file in a cluster's data directory that names the kubeconfig `up` merged into.
const MERGED_INTO: &str = "kubeconfig-merged-into";

fn data_dir_of(name: &str, given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(|| PathBuf::from("/var/lib/kubesim").join(name))
}

fn status(root: &std::path::Path) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
        if !entry.path().is_dir() {
            continue;
        }
        if let Some(state) = kubesim::cluster::State::read(&entry.path())? {
            let alive = state.components.iter().filter(|c| c.alive()).count();
            rows.push((state, alive, entry.path()));
        }
    }
    println!("{:<10} {:>5}  {:<12} DATA", "NAME", "NODES", "COMPONENTS");
    for (state, alive, path) in rows {
        let running = format!("{alive}/{} up", state.components.len());
        println!(
            "{:<10} {:>5}  {:<12} {}",
            state.name,
            state.nodes,
            running,
            path.display()
        );
    }
    Ok(())
}

fn logs(data_dir: &std::path::Path, component: &str) -> anyhow::Result<()> {
    let path = data_dir.join("logs").join(format!("{component}.log"));
    let text =
        std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    print!("{text}");
    Ok(())
}

fn up(args: UpArgs) -> anyhow::Result<()> {
    let data_dir = data_dir_of(&args.name, args.data_dir);
    eprintln!(
        "Creating cluster {:?}: {} nodes, kube-proxy in {} mode …",
        args.name, args.nodes, args.proxy_mode
    );
    let started = std::time::Instant::now();
    let cluster = kubesim::cluster::Cluster::up(kubesim::cluster::Spec {
        name: args.name.clone(),
        nodes: args.nodes,
        data_dir,
        binary: std::env::current_exe()?,
        proxy_flags: vec!["--proxy-mode".into(), args.proxy_mode],
        controller_flags: Vec::new(),
        dns: true,
        ingress: !args.no_ingress,
    })?;
    let kubeconfig = cluster.kubeconfig().to_owned();
    cluster.leave_running()?;
    eprintln!(
        "Cluster {:?} is ready ({:.1}s).",
        args.name,
        started.elapsed().as_secs_f64()
    );
    if let Some(user) = kubesim::kubeconfig::user_file() {
        kubesim::kubeconfig::merge(&user, &kubeconfig, &args.name)?;
        // `down` takes the context out of this file, whatever KUBECONFIG says then.
        let record = kubeconfig.with_file_name(MERGED_INTO);
        std::fs::write(record, user.as_os_str().as_encoded_bytes())?;
        eprintln!(
            "kubectl's context is now {:?} (in {}).",
            kubesim::kubeconfig::context(&args.name),
            user.display()
        );
    }
    println!("export KUBECONFIG={}", kubeconfig.display());
    eprintln!(
        "Use it with kubectl after the line above; remove it with: kubesim down --name {}",
        args.name
    );
    Ok(())
}

#[derive(clap::Args)]
struct ControllerArgs {
    /// The kubeconfig of the apiserver to work against.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// The range node podCIDRs are allocated from.
    #[arg(long, default_value = "10.244.0.0/16")]
    cluster_cidr: String,
    /// The prefix length of each node's podCIDR.
    #[arg(long, default_value_t = 24)]
    node_cidr_mask_size: u8,
    /// The addresses LoadBalancer Services get: FIRST-LAST or CIDRs, comma-separated.
    #[arg(long, default_value = controller::loadbalancer::DEFAULT_POOL)]
    lb_pool: controller::loadbalancer::Pool,
    /// Serve only LoadBalancer Services of this spec.loadBalancerClass (by default,
    /// those without a class).
    #[arg(long)]
    lb_class: Option<String>,
    /// How often node health is checked.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    node_monitor_period: std::time::Duration,
    /// How long a node's kubelet may go without posting status before the node is
    /// marked unreachable (its conditions Unknown).
    #[arg(long, default_value = "50s", value_parser = parse_duration)]
    node_monitor_grace_period: std::time::Duration,
    /// How long a new node may take to post its first status.
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    node_startup_grace_period: std::time::Duration,
}

#[derive(clap::Args)]
struct KubeletArgs {
    /// The kubeconfig of the apiserver to work against.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Simulated nodes (KWOK-style): no namespaces, pods run as status only.
    #[arg(long)]
    simulated: bool,
    /// How many nodes to register.
    #[arg(long, default_value_t = 1, requires = "simulated")]
    nodes: usize,
    /// Node names are this prefix and a number from 1.
    #[arg(long, default_value = "kubesim-node-", requires = "simulated")]
    node_name_prefix: String,
    /// The InternalIP of the first node; the others follow.
    #[arg(long, default_value = "192.168.1.11", requires = "simulated")]
    first_node_ip: Ipv4Addr,
    /// The named network namespace of the node; the kubelet enters it at start.
    #[arg(
        long,
        conflicts_with = "simulated",
        required_unless_present = "simulated"
    )]
    netns: Option<String>,
    /// The Node's name.
    #[arg(
        long,
        conflicts_with = "simulated",
        required_unless_present = "simulated"
    )]
    node_name: Option<String>,
    /// The node's address on the underlay.
    #[arg(
        long,
        conflicts_with = "simulated",
        required_unless_present = "simulated"
    )]
    node_ip: Option<Ipv4Addr>,
    /// The cluster's name: the prefix of the pod namespaces.
    #[arg(
        long,
        conflicts_with = "simulated",
        required_unless_present = "simulated"
    )]
    cluster: Option<String>,
    /// Pod directories, logs and CNI leases.
    #[arg(long, default_value = "/var/lib/kubesim/kubelet")]
    data_dir: PathBuf,
    /// The cluster DNS server written into the pods' resolv.conf.
    #[arg(long, default_value = "10.96.0.10")]
    cluster_dns: IpAddr,
    /// The cluster's DNS domain.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// The node's resolv.conf (for dnsPolicy Default and the host's search domains).
    #[arg(long, default_value = "/etc/resolv.conf")]
    resolv_conf: PathBuf,
    /// The MTU of the pods' interfaces (the VXLAN overlay's).
    #[arg(long, default_value_t = 1450)]
    mtu: u32,
    /// The most pods the node takes (its capacity.pods).
    #[arg(long, default_value_t = kubelet::simulated::DEFAULT_MAX_PODS)]
    max_pods: u32,
}

#[derive(clap::Args)]
struct ApiserverArgs {
    /// Where the store, the CA and the admin token live.
    #[arg(long, default_value = "/var/lib/kubesim/server")]
    data_dir: PathBuf,
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    bind_address: IpAddr,
    /// The HTTPS port; 0 picks a free port and logs it.
    #[arg(long, default_value_t = 6443)]
    https_listen_port: u16,
    /// The range Service ClusterIPs are allocated from.
    #[arg(long, default_value = "10.96.0.0/12")]
    service_cidr: String,
    /// The range NodePorts are allocated from.
    #[arg(long, default_value = "30000-32767")]
    service_node_port_range: String,
    /// Write a kubeconfig for the admin user to this file.
    #[arg(long)]
    write_kubeconfig: Option<PathBuf>,
    /// Extra names or addresses for the serving certificate.
    #[arg(long)]
    tls_san: Vec<String>,
    /// The address published in the `kubernetes` Endpoints (default: the bind address).
    #[arg(long)]
    advertise_address: Option<IpAddr>,
    /// Also listen inside this named network namespace (a cluster's underlay), on the
    /// advertise address and the same port.
    #[arg(long, requires = "advertise_address")]
    underlay_netns: Option<String>,
}

/// The commands that must enter namespaces run before any thread exists; the servers
/// then start their runtime.
fn main() -> ExitCode {
    let command = Cli::parse().command;
    let code = match command {
        Command::Cni => cni::main(),
        Command::Pause(args) => {
            let pause = kubelet::sandbox::PauseArgs {
                netns: args.netns.as_deref(),
                hostname: args.hostname.as_deref(),
                etc: &args.etc,
                service_account: args.service_account.as_deref(),
            };
            match kubelet::sandbox::pause(&pause) {
                Ok(code) => code,
                Err(err) => {
                    eprintln!("kubesim pause: {err}");
                    1
                }
            }
        }
        Command::Nsenter(args) => {
            let pid = nix::unistd::Pid::from_raw(args.target);
            let err = kubelet::sandbox::nsenter(pid, args.workdir.as_deref(), &args.argv);
            eprintln!("kubesim nsenter: {}: {err}", args.argv.join(" "));
            // As a shell reports a command it cannot run.
            if err.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            }
        }
        Command::Workload { argv } => kubelet::workload::main(argv),
        Command::Up(args) => report(up(args)),
        Command::Scenario(command) => kubesim::scenario::main(command),
        Command::Status { root } => report(status(&root)),
        Command::Logs {
            component,
            name,
            data_dir,
        } => report(logs(&data_dir_of(&name, data_dir), &component)),
        Command::Exec { name, host, argv } => {
            let netns = format!("{name}-{host}");
            if let Err(err) = enter_netns(&netns) {
                eprintln!("kubesim exec: no host {host:?} in cluster {name:?} ({netns}: {err})");
                return ExitCode::FAILURE;
            }
            let err = kubelet::sandbox::exec(&argv);
            eprintln!("kubesim exec: {}: {err}", argv.join(" "));
            if err.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            }
        }
        Command::Down(args) => {
            let data_dir = data_dir_of(&args.name, args.data_dir);
            let user = std::fs::read_to_string(data_dir.join(MERGED_INTO))
                .ok()
                .map(PathBuf::from);
            report(
                kubesim::cluster::down(&args.name, &data_dir).and_then(|()| match user {
                    Some(user) => kubesim::kubeconfig::remove(&user, &args.name),
                    None => Ok(()),
                }),
            )
        }
        server => {
            let netns = match &server {
                Command::Kubelet(KubeletArgs { netns, .. }) => netns.as_deref(),
                Command::Flannel(args) => Some(args.netns.as_str()),
                Command::Speaker(args) => args.netns.as_deref(),
                Command::Proxy(args) => args.netns.as_deref(),
                _ => None,
            };
            if let Some(name) = netns {
                if let Err(err) = enter_netns(name) {
                    eprintln!("kubesim: entering network namespace {name}: {err}");
                    return ExitCode::FAILURE;
                }
            }
            match serve(server) {
                Ok(()) => 0,
                Err(err) => {
                    eprintln!("Error: {err:#}");
                    1
                }
            }
        }
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// The exit code of a command, with its error printed.
fn report(result: anyhow::Result<()>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("Error: {err:#}");
            1
        }
    }
}

/// Moves the (still single-threaded) process into the named network namespace.
fn enter_netns(name: &str) -> std::io::Result<()> {
    let file = std::fs::File::open(netns::path(name))?;
    nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)?;
    Ok(())
}

fn serve(command: Command) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        match command {
            Command::Apiserver(args) => run_apiserver(args).await,
            Command::Controller(args) => run_controller(args).await,
            Command::Kubelet(args) => run_kubelet(args).await,
            Command::Flannel(args) => run_flannel(args).await,
            Command::Speaker(args) => run_speaker(args).await,
            Command::Proxy(args) => run_proxy(args).await,
            Command::Explain {
                what:
                    Explain::Service {
                        service,
                        namespace,
                        node,
                        name,
                        kubeconfig,
                    },
            } => {
                let kubeconfig =
                    kubeconfig.unwrap_or_else(|| data_dir_of(&name, None).join("kubeconfig"));
                let node = node.unwrap_or_else(|| format!("{name}-node1"));
                let text = kubesim::explain::service(
                    client(&kubeconfig).await?,
                    &namespace,
                    &service,
                    &node,
                )
                .await?;
                print!("{text}");
                Ok(())
            }
            Command::Dns(args) => run_dns(args).await,
            Command::Ingress(args) => run_ingress(args).await,
            Command::Cni
            | Command::Pause(_)
            | Command::Nsenter(_)
            | Command::Workload { .. }
            | Command::Up(_)
            | Command::Scenario(_)
            | Command::Down(_)
            | Command::Status { .. }
            | Command::Logs { .. }
            | Command::Exec { .. } => {
                unreachable!("handled before the runtime starts")
            }
        }
    })
}

async fn client(kubeconfig: &std::path::Path) -> anyhow::Result<kube::Client> {
    let config = kube::config::Kubeconfig::read_from(kubeconfig)
        .map_err(|e| anyhow::anyhow!("{}: {e}", kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(config, &Default::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

async fn run_controller(args: ControllerArgs) -> anyhow::Result<()> {
    let client = client(&args.kubeconfig).await?;
    let options = controller::Options {
        cluster_cidr: args.cluster_cidr,
        node_cidr_mask_size: args.node_cidr_mask_size,
        lb_pool: args.lb_pool,
        lb_class: args.lb_class,
        node_monitor: controller::nodelifecycle::Timing {
            period: args.node_monitor_period,
            grace: args.node_monitor_grace_period,
            startup_grace: args.node_startup_grace_period,
        },
    };
    tokio::select! {
        result = controller::run(client, options) => result,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

async fn run_kubelet(args: KubeletArgs) -> anyhow::Result<()> {
    let client = client(&args.kubeconfig).await?;
    if let (Some(name), Some(node_ip), Some(cluster)) = (args.node_name, args.node_ip, args.cluster)
    {
        let options = kubelet::node::NodeOptions {
            name,
            cluster,
            node_ip,
            data_dir: args.data_dir,
            binary: std::env::current_exe()?,
            dns: kubelet::sandbox::ClusterDns {
                nameserver: args.cluster_dns,
                domain: args.cluster_domain,
            },
            resolv_conf: args.resolv_conf,
            mtu: args.mtu,
            max_pods: args.max_pods,
            service_account: service_account(&args.kubeconfig)?,
        };
        return tokio::select! {
            result = kubelet::node::run(client, options) => Ok(result?),
            _ = tokio::signal::ctrl_c() => Ok(()),
        };
    }
    let options = kubelet::simulated::SimulatedOptions {
        nodes: args.nodes,
        name_prefix: args.node_name_prefix,
        first_ip: args.first_node_ip,
        max_pods: args.max_pods,
    };
    tokio::select! {
        result = kubelet::simulated::run(client, options) => Ok(result?),
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

/// The token and CA of a kubeconfig's first user and cluster, for the pods' service
/// account mount.
fn service_account(
    path: &std::path::Path,
) -> anyhow::Result<Option<kubelet::node::ServiceAccount>> {
    use base64::Engine;
    let config = kube::config::Kubeconfig::read_from(path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let token = config
        .auth_infos
        .first()
        .and_then(|a| a.auth_info.as_ref())
        .and_then(|a| a.token.as_ref())
        .map(|t| secrecy::ExposeSecret::expose_secret(t).to_owned());
    let ca = config
        .clusters
        .first()
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.certificate_authority_data.as_ref())
        .map(|data| base64::engine::general_purpose::STANDARD.decode(data))
        .transpose()?
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
    Ok(token
        .zip(ca)
        .map(|(token, ca_pem)| kubelet::node::ServiceAccount { token, ca_pem }))
}

async fn run_speaker(args: SpeakerArgs) -> anyhow::Result<()> {
    let client = client(&args.kubeconfig).await?;
    let options = kubelet::speaker::SpeakerOptions {
        node: args.node_name,
        interface: args.interface,
        class: args.lb_class,
    };
    Ok(kubelet::speaker::run(client, options).await?)
}

async fn run_flannel(args: FlannelArgs) -> anyhow::Result<()> {
    let client = client(&args.kubeconfig).await?;
    let mut options =
        kubelet::flannel::FlannelOptions::new(args.node_name, args.netns, args.run_dir);
    options.interface = args.iface;
    options.network = kubelet::flannel::parse_cidr(&args.network)
        .ok_or_else(|| anyhow::anyhow!("--network {}: not an IPv4 CIDR", args.network))?;
    tokio::select! {
        result = kubelet::flannel::run(client, options) => Ok(result?),
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

async fn run_proxy(args: ProxyArgs) -> anyhow::Result<()> {
    if args.cleanup {
        kubeproxy::kernel::cleanup().await?;
        return Ok(());
    }
    let (Some(kubeconfig), Some(node)) = (args.kubeconfig, args.hostname_override) else {
        anyhow::bail!("--kubeconfig and --hostname-override are required");
    };
    let client = client(&kubeconfig).await?;
    let node_ip = kubeproxy::node_ip(&client, &node).await;
    let options = kubeproxy::ProxyOptions {
        mode: match args.proxy_mode.as_str() {
            "ipvs" => kubeproxy::Mode::Ipvs,
            "nftables" => kubeproxy::Mode::Nftables,
            "userspace" => kubeproxy::Mode::Userspace,
            _ => kubeproxy::Mode::Iptables,
        },
        proxier: kubeproxy::proxier::Options {
            config: kubeproxy::iptables::Config {
                node,
                cluster_cidr: Some(args.cluster_cidr),
                masquerade_all: args.masquerade_all,
                node_ip,
            },
            min_sync_period: args.iptables_min_sync_period,
            sync_period: args.iptables_sync_period,
        },
        userspace: kubeproxy::userspace::Options {
            scheduler: args.userspace_scheduler.parse()?,
            udp_timeout: args.udp_timeout,
        },
        healthz: args.healthz_bind_address,
        metrics: args.metrics_bind_address,
    };
    tokio::select! {
        result = kubeproxy::run(client, options) => Ok(result?),
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

/// The client of a component started without `--kubeconfig`: in a pod (where
/// `KUBERNETES_SERVICE_HOST` is set), the in-cluster configuration, as client-go's
/// `InClusterConfig` reads it; a kubesim pod sees the host's files, and a kubeconfig
/// there (which `kubesim up` writes) names a server the pod cannot reach. Elsewhere,
/// kube-rs's usual inference.
async fn in_cluster_client() -> anyhow::Result<kube::Client> {
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        let mut config = kube::Config::incluster()?;
        // A pod can start before its node's kube-proxy programmed the kubernetes
        // Service; a connection attempt made then never gets its DNAT (conntrack keeps
        // the first decision), so give up on it soon and dial afresh.
        config.connect_timeout = Some(std::time::Duration::from_secs(2));
        return Ok(kube::Client::try_from(config)?);
    }
    Ok(kube::Client::try_default().await?)
}

async fn run_dns(args: DnsArgs) -> anyhow::Result<()> {
    let client = match &args.kubeconfig {
        Some(path) => client(path).await?,
        None => in_cluster_client().await?,
    };
    let mut config = coredns_lite::Config::for_zone(&args.zone)?;
    config.ttl = args.ttl;
    config.upstream = match args.upstream.as_deref() {
        None => None,
        Some(text) => Some(
            text.parse::<std::net::SocketAddr>()
                .or_else(|_| text.parse::<IpAddr>().map(|ip| (ip, 53).into()))
                .map_err(|_| anyhow::anyhow!("--upstream {text}: not an IP or IP:port"))?,
        ),
    };
    let options = coredns_lite::Options {
        dns: args.dns_bind_address,
        health: args.health_bind_address,
        ready: args.ready_bind_address,
        metrics: args.metrics_bind_address,
        config,
    };
    tokio::select! {
        result = coredns_lite::run(client, options) => Ok(result?),
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

async fn run_ingress(args: IngressArgs) -> anyhow::Result<()> {
    let client = match &args.kubeconfig {
        Some(path) => client(path).await?,
        None => in_cluster_client().await?,
    };
    for (flag, value) in [
        ("--election-id", &args.election_id),
        ("--configmap", &args.configmap),
        ("--validating-webhook", &args.validating_webhook),
        (
            "--validating-webhook-certificate",
            &args.validating_webhook_certificate,
        ),
        ("--validating-webhook-key", &args.validating_webhook_key),
        ("--enable-metrics", &args.enable_metrics),
    ] {
        if let Some(value) = value {
            tracing::info!(flag, value = value.as_str(), "ignored");
        }
    }
    let publish = match (args.publish_status_address.is_empty(), args.publish_service) {
        (false, _) => ingress::Publish::Addresses(args.publish_status_address),
        (true, Some(service)) => ingress::Publish::Service(service),
        (true, None) => ingress::Publish::Nothing,
    };
    let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    let options = ingress::Options {
        http: (any, args.http_port).into(),
        https: (any, args.https_port).into(),
        healthz: (any, args.healthz_port).into(),
        class: ingress::Class {
            controller: args.controller_class,
            ingress_class: args.ingress_class,
            watch_without_class: args.watch_ingress_without_class,
        },
        default_backend: args.default_backend_service,
        default_certificate: args.default_ssl_certificate,
        publish,
        timeouts: ingress::Timeouts {
            connect: std::time::Duration::from_secs(args.proxy_connect_timeout),
            read: std::time::Duration::from_secs(args.proxy_read_timeout),
        },
    };
    tokio::select! {
        result = ingress::run(client, options) => Ok(result?),
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

async fn run_apiserver(args: ApiserverArgs) -> anyhow::Result<()> {
    let config = apiserver::Config {
        data_dir: args.data_dir,
        bind_address: args.bind_address,
        port: args.https_listen_port,
        service_cidr: args.service_cidr,
        node_port_range: args.service_node_port_range,
        write_kubeconfig: args.write_kubeconfig,
        tls_san: args.tls_san,
        advertise_address: args.advertise_address,
        underlay_netns: args.underlay_netns,
    };
    let running = apiserver::start(config).await?;
    tracing::info!(addr = %running.addr, "serving; stop with Ctrl-C");
    tokio::signal::ctrl_c().await?;
    running.stop().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ingress_args(flags: &[&str]) -> Result<IngressArgs, clap::Error> {
        let argv = ["kubesim", "ingress"].iter().chain(flags);
        match Cli::try_parse_from(argv)?.command {
            Command::Ingress(args) => Ok(args),
            _ => panic!("not the ingress command"),
        }
    }

    #[test]
    fn ingress_takes_the_flags_of_ingress_nginx_s_manifests() {
        let args = ingress_args(&[
            "--publish-service=ingress-nginx/ingress-nginx-controller",
            "--election-id=ingress-nginx-leader",
            "--controller-class=k8s.io/ingress-nginx",
            "--ingress-class=nginx",
            "--configmap=ingress-nginx/ingress-nginx-controller",
            "--validating-webhook=:8443",
            "--validating-webhook-certificate=/usr/local/certificates/cert",
            "--validating-webhook-key=/usr/local/certificates/key",
            "--enable-metrics=false",
            "--watch-ingress-without-class=true",
            "--publish-status-address=localhost,192.0.2.1",
        ])
        .unwrap();
        assert_eq!(
            args.publish_service,
            Some(ingress::Key::new(
                "ingress-nginx",
                "ingress-nginx-controller"
            ))
        );
        assert!(args.watch_ingress_without_class);
        assert_eq!(args.publish_status_address, ["localhost", "192.0.2.1"]);
        assert_eq!(args.election_id.as_deref(), Some("ingress-nginx-leader"));

        let defaults = ingress_args(&[]).unwrap();
        assert!(!defaults.watch_ingress_without_class);
        assert_eq!(
            (
                defaults.http_port,
                defaults.https_port,
                defaults.healthz_port
            ),
            (80, 443, 10254)
        );
        assert_eq!(
            (defaults.proxy_connect_timeout, defaults.proxy_read_timeout),
            (5, 60)
        );
        assert_eq!(defaults.controller_class, "k8s.io/ingress-nginx");
        assert_eq!(defaults.ingress_class, "nginx");
        assert!(
            ingress_args(&["--watch-ingress-without-class"])
                .unwrap()
                .watch_ingress_without_class
        );
        assert!(ingress_args(&["--default-backend-service=just-a-name"]).is_err());
    }
}
