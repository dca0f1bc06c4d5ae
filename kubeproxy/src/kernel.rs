//! The proxy's hands on the node's netfilter, through the same tools kube-proxy
//! uses: `iptables` for chains and jumps, `iptables-restore --noflush` for the rules of
//! a sync in one transaction, `iptables-save` to find stale chains, and `conntrack` to
//! drop UDP flows that point at endpoints that are gone. Everything runs in the
//! namespace the proxy runs in.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, UdpSocket};
use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::iptables::{self, Jump, CANARY, FILTER_CHAINS, NAT_CHAINS};
use crate::userspace;

#[derive(Debug, thiserror::Error)]
#[error("{command}: {message}")]
pub struct Error {
    pub command: String,
    pub message: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How long iptables waits for the xtables lock, as kube-proxy's `-w 5`.
const WAIT: &str = "5";

pub(crate) async fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String> {
    let command = format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error {
            command: command.clone(),
            message: e.to_string(),
        })?;
    if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
        input.write_all(text.as_bytes()).await.map_err(|e| Error {
            command: command.clone(),
            message: e.to_string(),
        })?;
    }
    let output = child.wait_with_output().await.map_err(|e| Error {
        command: command.clone(),
        message: e.to_string(),
    })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(Error {
            command,
            message: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

/// Creates `chain` in `table` unless it exists.
pub async fn ensure_chain(table: &str, chain: &str) -> Result<()> {
    if run("iptables", &["-w", WAIT, "-t", table, "-S", chain], None)
        .await
        .is_ok()
    {
        return Ok(());
    }
    run("iptables", &["-w", WAIT, "-t", table, "-N", chain], None)
        .await
        .map(drop)
}

/// The top-level chains, the jumps into them and the canaries, as kube-proxy ensures
/// them before a full sync.
pub async fn ensure_base() -> Result<()> {
    for chain in FILTER_CHAINS {
        ensure_chain("filter", chain).await?;
    }
    for chain in NAT_CHAINS {
        ensure_chain("nat", chain).await?;
    }
    for jump in iptables::jumps() {
        ensure_jump(&jump, Position::Prepend).await?;
    }
    for table in ["mangle", "nat", "filter"] {
        ensure_chain(table, CANARY).await?;
    }
    Ok(())
}

/// Where a rule goes in its chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    Prepend,
    Append,
}

/// Adds `jump` at `position` unless its chain has it.
pub async fn ensure_jump(jump: &Jump, position: Position) -> Result<()> {
    let mut rule: Vec<&str> = jump.args.clone();
    rule.extend(["-j", jump.to]);
    let mut check = vec!["-w", WAIT, "-t", jump.table, "-C", jump.from];
    check.extend(&rule);
    if run("iptables", &check, None).await.is_ok() {
        return Ok(());
    }
    let add = match position {
        Position::Prepend => "-I",
        Position::Append => "-A",
    };
    let mut insert = vec!["-w", WAIT, "-t", jump.table, add, jump.from];
    insert.extend(&rule);
    run("iptables", &insert, None).await.map(drop)
}

/// The node's address: the source the kernel picks on the default route, as
/// kube-proxy's `ChooseHostInterface` takes the default route's interface. Nothing
/// is sent.
pub fn host_ip() -> Result<Ipv4Addr> {
    let error = |e: std::io::Error| Error {
        command: "finding the node's address on the default route".into(),
        message: e.to_string(),
    };
    let probe = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).map_err(error)?;
    probe
        .connect((Ipv4Addr::new(192, 0, 2, 1), 9))
        .map_err(error)?;
    match probe.local_addr().map_err(error)?.ip() {
        std::net::IpAddr::V4(ip) => Ok(ip),
        std::net::IpAddr::V6(ip) => Err(Error {
            command: "finding the node's address on the default route".into(),
            message: format!("{ip} is not IPv4"),
        }),
    }
}

/// Whether the canary chain is still there (nobody flushed the tables).
pub async fn canary_alive() -> bool {
    run(
        "iptables",
        &["-w", WAIT, "-t", "mangle", "-S", CANARY],
        None,
    )
    .await
    .is_ok()
}

/// The per-service chains the nat table has now.
pub async fn existing_service_chains() -> Result<BTreeSet<String>> {
    let save = run("iptables-save", &["-t", "nat"], None).await?;
    Ok(iptables::service_chains_in(&save))
}

/// Loads the rules of a sync in one transaction.
pub async fn restore(rules: &str) -> Result<()> {
    run("iptables-restore", &["-w", WAIT, "--noflush"], Some(rules))
        .await
        .map(drop)
}

/// Deletes the conntrack entries of UDP flows to `service_ip` (all of them, or those
/// NATed to `endpoint`), as kube-proxy does when UDP endpoints change.
pub async fn clear_udp_flows(service_ip: &str, endpoint: Option<&str>) {
    let mut args = vec!["-D", "-p", "udp", "--orig-dst", service_ip];
    if let Some(endpoint) = endpoint {
        args.extend(["--dst-nat", endpoint]);
    }
    // conntrack exits non-zero when nothing matched; that is the common case.
    if let Err(err) = run("conntrack", &args, None).await {
        tracing::debug!(%err, "conntrack");
    }
}

/// Deletes the conntrack entries of UDP flows to a node port.
pub async fn clear_udp_node_port(port: u16) {
    let port = port.to_string();
    if let Err(err) = run("conntrack", &["-D", "-p", "udp", "--dport", &port], None).await {
        tracing::debug!(%err, "conntrack");
    }
}

/// Removes everything the proxy made in any mode (`kube-proxy --cleanup`): the jumps,
/// then every KUBE- chain of the proxy in nat, filter and mangle, then the nftables
/// table.
pub async fn cleanup() -> Result<()> {
    let userspace_jumps = userspace::jumps().into_iter().map(|(jump, _)| jump);
    for jump in iptables::jumps().into_iter().chain(userspace_jumps) {
        let mut delete = vec!["-w", WAIT, "-t", jump.table, "-D", jump.from];
        delete.extend(jump.args.iter().copied());
        delete.extend(["-j", jump.to]);
        while run("iptables", &delete, None).await.is_ok() {}
    }
    for table in ["nat", "filter", "mangle"] {
        let save = run("iptables-save", &["-t", table], None).await?;
        let ours: Vec<String> = save
            .lines()
            .filter_map(|l| l.strip_prefix(':'))
            .filter_map(|l| l.split_whitespace().next())
            .filter(|c| is_ours(c))
            .map(str::to_owned)
            .collect();
        for chain in &ours {
            run("iptables", &["-w", WAIT, "-t", table, "-F", chain], None).await?;
        }
        for chain in &ours {
            run("iptables", &["-w", WAIT, "-t", table, "-X", chain], None).await?;
        }
    }
    crate::nftables::kernel::cleanup().await
}

fn is_ours(chain: &str) -> bool {
    FILTER_CHAINS.contains(&chain)
        || NAT_CHAINS.contains(&chain)
        || chain == CANARY
        || userspace::NAT_CHAINS.contains(&chain)
        || userspace::FILTER_CHAINS.contains(&chain)
        || iptables::SERVICE_CHAIN_PREFIXES
            .iter()
            .any(|p| chain.starts_with(p))
}
