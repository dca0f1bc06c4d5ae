//! flannel's VXLAN backend, programming the kernel the way flannel does: per node a
//! `flannel.1` VXLAN device (VNI 1, UDP 8472, no learning, MTU of the underlay minus
//! 50, the pod CIDR's network address as a /32), and for every other node that
//! published a lease a permanent neighbour (`<subnet>.0` → its VTEP MAC), a permanent
//! FDB entry (VTEP MAC → its public IP) and the route `<subnet> via <subnet>.0 dev
//! flannel.1 onlink`; `subnet.env` and the `FLANNEL-POSTRTG` masquerade rules.
//!
//! Leases come from Node objects as flannel's kube subnet manager reads them
//! (`spec.podCIDR` and the `flannel.alpha.coreos.com/*` annotations); [`plan`] turns
//! them into the desired entries, [`diff`] compares them with what [`current`] reads
//! from the kernel and [`apply`] makes the difference.
//!
//! Everything that touches a node's kernel takes the name of the node's network
//! namespace and works there from a thread that entered it ([`netns::netlink_in`],
//! [`netns::run_in`]), so the caller may live in any namespace and the root namespace
//! is never touched. Not here: IPv6, the host-gw, wireguard and other backends,
//! direct routing, the FLANNEL-FWD filter chain, and leases from etcd.

mod kernel;
mod plan;

use std::fs;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::Client;
use serde_json::json;

pub use kernel::{apply, current, ensure_device, interface, Device, DeviceSpec, Interface};
pub use plan::{
    diff, masquerade_jump_check, masquerade_rules, node_annotations, parse_cidr, parse_mac, plan,
    subnet_env, Changes, Entries, FdbEntry, Lease, Mac, Neighbour, Route, ANNOTATION_PREFIX,
    BACKEND_DATA, BACKEND_TYPE, BACKEND_VXLAN, KUBE_PROXY_MARK, KUBE_SUBNET_MANAGER, MASQ_CHAIN,
    PUBLIC_IP,
};

use crate::topology::Ipv4Net;

/// flannel's default VNI.
pub const VNI: u32 = 1;
/// The VXLAN UDP port flannel uses (the Linux default).
pub const PORT: u16 = 8472;
/// The device of VNI 1.
pub const DEVICE: &str = "flannel.1";
/// What VXLAN encapsulation costs of the underlay MTU.
pub const ENCAP_OVERHEAD: u32 = 50;
/// The cluster's pod network, 10.244.0.0/16.
pub const DEFAULT_NETWORK: Ipv4Net = Ipv4Net {
    addr: Ipv4Addr::new(10, 244, 0, 0),
    prefix: 16,
};
/// The file flannel writes for the CNI plugin, inside the run directory.
pub const SUBNET_ENV: &str = "subnet.env";
/// How long node changes are gathered before one sync.
pub const DEBOUNCE: Duration = Duration::from_millis(100);
/// How long to wait before retrying a failed sync.
const RETRY: Duration = Duration::from_secs(1);
const FIELD_MANAGER: &str = "flanneld";

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("node {node}: invalid flannel lease: {reason}")]
    InvalidLease { node: String, reason: String },
    #[error("vxlan device: {0}")]
    Device(String),
    #[error("{context}: {source}")]
    Netlink {
        context: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("{command} failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("node {0} has no valid pod CIDR")]
    NoPodCidr(String),
    #[error("waiting for node {node}: {source}")]
    Wait {
        node: String,
        #[source]
        source: kube::runtime::wait::Error,
    },
    #[error("node {0} was deleted")]
    NodeDeleted(String),
    #[error("the node watch ended")]
    WatchEnded,
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Netns(#[from] netns::Error),
}

impl Error {
    fn netlink(context: impl Into<String>, source: rtnetlink::Error) -> Self {
        Error::Netlink {
            context: context.into(),
            source,
        }
    }

    fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Brings the kernel of the node in network namespace `netns_name` to what the Node
/// objects `nodes` ask of node `own`: reads the entries on `flannel.1`, diffs them
/// with the plan and applies the difference, which it returns (empty when nothing
/// had to change).
pub async fn sync(netns_name: &str, own: &str, nodes: &[Node]) -> Result<Changes> {
    sync_entries(netns_name, plan(own, nodes)).await
}

async fn sync_entries(netns_name: &str, desired: Entries) -> Result<Changes> {
    netns::netlink_in(netns_name, move |handle| async move {
        let current = current(&handle, DEVICE).await?;
        let changes = diff(&desired, &current);
        apply(&handle, DEVICE, &changes).await?;
        Ok(changes)
    })
    .await
}

/// Writes `subnet.env` into `dir` (made if missing) the way flannel does: to a
/// temporary file, renamed into place, mode 0644.
pub fn write_subnet_env(
    dir: &Path,
    network: Ipv4Net,
    subnet: Ipv4Net,
    mtu: u32,
    ip_masq: bool,
) -> Result<PathBuf> {
    fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let path = dir.join(SUBNET_ENV);
    let temp = dir.join(format!(".{SUBNET_ENV}.tmp"));
    fs::write(&temp, subnet_env(network, subnet, mtu, ip_masq))
        .map_err(|e| Error::io(format!("writing {}", temp.display()), e))?;
    fs::rename(&temp, &path)
        .map_err(|e| Error::io(format!("renaming to {}", path.display()), e))?;
    Ok(path)
}

/// Installs flannel's masquerade rules in the nat table of the namespace
/// `netns_name` with `iptables-restore --noflush`; applying them again leaves one copy.
/// Blocking: runs `iptables` and `iptables-restore` from a thread inside the namespace.
pub fn apply_masquerade(netns_name: &str, network: Ipv4Net, subnet: Ipv4Net) -> Result<()> {
    let ns = netns::open(netns_name)?;
    netns::run_in(&ns, || {
        // A jump into a chain that does not exist cannot exist either.
        let chain = run_command("iptables", ["-w", "-t", "nat", "-S", MASQ_CHAIN], None)?;
        let jump_exists = chain.status.success() && {
            let check = std::iter::once("-w".to_owned()).chain(masquerade_jump_check());
            let checked = run_command("iptables", check, None)?;
            match checked.status.code() {
                Some(0) => true,
                Some(1) => false,
                _ => return Err(command_error("iptables -C", &checked)),
            }
        };
        let rules = masquerade_rules(network, subnet, jump_exists);
        let restored = run_command("iptables-restore", ["-w", "--noflush"], Some(&rules))?;
        if !restored.status.success() {
            return Err(command_error("iptables-restore --noflush", &restored));
        }
        Ok(())
    })
}

fn run_command(
    program: &str,
    args: impl IntoIterator<Item = impl AsRef<std::ffi::OsStr>>,
    stdin: Option<&str>,
) -> Result<Output> {
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
        .map_err(|e| Error::io(format!("running {program}"), e))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        io::Write::write_all(&mut pipe, input.as_bytes())
            .map_err(|e| Error::io(format!("writing to {program}"), e))?;
    }
    child
        .wait_with_output()
        .map_err(|e| Error::io(format!("waiting for {program}"), e))
}

fn command_error(command: &str, output: &Output) -> Error {
    Error::Command {
        command: command.to_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    }
}

/// How to run flannel for one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlannelOptions {
    /// The Node object of this node.
    pub node_name: String,
    /// The node's network namespace; every kernel change happens there.
    pub netns: String,
    /// The external interface: its first IPv4 address is the public IP and the
    /// tunnel's source.
    pub interface: String,
    /// The cluster's pod network (`FLANNEL_NETWORK`).
    pub network: Ipv4Net,
    /// Where `subnet.env` goes (flannel's is `/run/flannel`; give each cluster its own).
    pub run_dir: PathBuf,
    /// Whether to masquerade traffic leaving the pod network.
    pub ip_masq: bool,
}

impl FlannelOptions {
    /// Defaults: interface `eth0`, network 10.244.0.0/16, masquerading on.
    pub fn new(
        node_name: impl Into<String>,
        netns: impl Into<String>,
        run_dir: impl Into<PathBuf>,
    ) -> Self {
        FlannelOptions {
            node_name: node_name.into(),
            netns: netns.into(),
            interface: "eth0".to_owned(),
            network: DEFAULT_NETWORK,
            run_dir: run_dir.into(),
            ip_masq: true,
        }
    }
}

/// Runs flannel for one node until the node watch ends or setup fails: waits for the
/// node's pod CIDR, makes `flannel.1`, publishes the lease annotations (merge patch),
/// writes `subnet.env`, installs the masquerade rules, then follows every Node and
/// syncs the kernel at most [`DEBOUNCE`] after a change (retrying failed syncs).
pub async fn run(client: Client, opts: FlannelOptions) -> Result<()> {
    let nodes: Api<Node> = Api::all(client);
    let name = opts.node_name.clone();
    let has_cidr = |node: Option<&Node>| {
        node.and_then(|n| n.spec.as_ref()?.pod_cidr.as_ref())
            .is_some()
    };
    let own = kube::runtime::wait::await_condition(nodes.clone(), &name, has_cidr)
        .await
        .map_err(|source| Error::Wait {
            node: name.clone(),
            source,
        })?
        .ok_or_else(|| Error::NodeDeleted(name.clone()))?;
    let pod_cidr = own
        .spec
        .as_ref()
        .and_then(|s| s.pod_cidr.as_deref())
        .and_then(parse_cidr)
        .ok_or_else(|| Error::NoPodCidr(name.clone()))?;

    let interface_name = opts.interface.clone();
    let (public_ip, device) = netns::netlink_in(&opts.netns, move |handle| async move {
        let external = interface(&handle, &interface_name).await?;
        let spec = DeviceSpec {
            vni: VNI,
            port: PORT,
            local: external.ip,
            underlay: interface_name,
            pod_cidr,
        };
        Ok::<_, Error>((external.ip, ensure_device(&handle, &spec).await?))
    })
    .await?;
    tracing::info!(node = %name, %pod_cidr, %public_ip, vtep_mac = %netns::format_mac(&device.mac), mtu = device.mtu, "vxlan device ready");

    let patch = json!({ "metadata": { "annotations": node_annotations(public_ip, device.mac) } });
    nodes
        .patch(
            &name,
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.to_owned()),
                ..PatchParams::default()
            },
            &Patch::Merge(&patch),
        )
        .await?;
    let env = write_subnet_env(
        &opts.run_dir,
        opts.network,
        pod_cidr,
        device.mtu,
        opts.ip_masq,
    )?;
    tracing::debug!(path = %env.display(), "wrote subnet.env");
    if opts.ip_masq {
        let (netns_name, network) = (opts.netns.clone(), opts.network);
        tokio::task::spawn_blocking(move || apply_masquerade(&netns_name, network, pod_cidr))
            .await
            .map_err(|e| Error::io("installing masquerade rules", io::Error::other(e)))??;
    }
    follow(nodes, &opts).await
}

/// Watches every Node and syncs the kernel whenever the plan changes.
async fn follow(nodes: Api<Node>, opts: &FlannelOptions) -> Result<()> {
    let (store, writer) = reflector::store::<Node>();
    let mut events =
        pin!(reflector(writer, watcher(nodes, watcher::Config::default())).default_backoff());
    let mut ready = false;
    let mut due: Option<tokio::time::Instant> = None;
    let mut applied: Option<Entries> = None;
    loop {
        let wait = async {
            match due {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(event)) => {
                    ready |= matches!(event, watcher::Event::InitDone);
                    if ready && due.is_none() {
                        due = Some(tokio::time::Instant::now() + DEBOUNCE);
                    }
                }
                Some(Err(err)) => tracing::warn!(%err, "node watch failed, retrying"),
                None => return Err(Error::WatchEnded),
            },
            () = wait => {
                due = None;
                let all: Vec<Node> = store.state().iter().map(|n| (**n).clone()).collect();
                let desired = plan(&opts.node_name, &all);
                if applied.as_ref() == Some(&desired) {
                    continue;
                }
                match sync_entries(&opts.netns, desired.clone()).await {
                    Ok(changes) => {
                        if !changes.is_empty() {
                            tracing::info!(node = %opts.node_name, added = ?changes.add, removed = ?changes.remove, "synced vxlan entries");
                        }
                        applied = Some(desired);
                    }
                    Err(err) => {
                        tracing::warn!(%err, node = %opts.node_name, "sync failed, retrying");
                        due = Some(tokio::time::Instant::now() + RETRY);
                    }
                }
            }
        }
    }
}
