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
