//! `kubesim`: one binary, every component a subcommand (like k3s).

use std::net::IpAddr;
use std::path::PathBuf;

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
    /// Run the Kubernetes API server (HTTPS, bearer token, storage in sled).
    Apiserver(ApiserverArgs),
    /// Run the control loops: deployments, replicasets, endpoints, endpointslices,
    /// scheduler, node IPAM and garbage collection.
    Controller(ControllerArgs),
    /// Run nodes: `--simulated` registers N nodes that run their pods as status only.
    Kubelet(KubeletArgs),
    /// Run as a CNI plugin: reads CNI_* variables and the network configuration on stdin,
    /// as any CNI runtime calls it.
    Cni,
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
}

#[derive(clap::Args)]
struct KubeletArgs {
    /// The kubeconfig of the apiserver to work against.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Simulated nodes (KWOK-style): no namespaces, pods run as status only.
    /// Required until real nodes are available.
    #[arg(long, required = true)]
    simulated: bool,
    /// How many nodes to register.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// Node names are this prefix and a number from 1.
    #[arg(long, default_value = "kubesim-node-")]
    node_name_prefix: String,
    /// The InternalIP of the first node; the others follow.
    #[arg(long, default_value = "192.168.1.11")]
    first_node_ip: std::net::Ipv4Addr,
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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Apiserver(args) => run_apiserver(args).await,
        Command::Controller(args) => run_controller(args).await,
        Command::Kubelet(args) => run_kubelet(args).await,
        Command::Cni => std::process::exit(cni::main()),
    }
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
    };
    tokio::select! {
        result = controller::run(client, options) => result,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

async fn run_kubelet(args: KubeletArgs) -> anyhow::Result<()> {
    let client = client(&args.kubeconfig).await?;
    let options = kubelet::simulated::SimulatedOptions {
        nodes: args.nodes,
        name_prefix: args.node_name_prefix,
        first_ip: args.first_node_ip,
    };
    tokio::select! {
        result = kubelet::simulated::run(client, options) => Ok(result?),
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
    };
    let running = apiserver::start(config).await?;
    tracing::info!(addr = %running.addr, "serving; stop with Ctrl-C");
    tokio::signal::ctrl_c().await?;
    running.stop().await;
    Ok(())
}
