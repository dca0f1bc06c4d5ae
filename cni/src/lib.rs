//! `cni`: a CNI 1.1 plugin (containernetworking SPEC.md) that any CNI runtime can call:
//! ADD puts one end of a veth pair into the container's network namespace with an
//! address from a host-local style pool and a default route through the gateway, and
//! attaches the other end to a bridge (`cni0` by default) in the namespace the plugin
//! runs in; DEL undoes it idempotently; CHECK, VERSION, GC and STATUS as the spec says.
//!
//! It is not a runtime (it does not create namespaces) and not a chaining framework: it
//! reads no `prevResult` and calls no other plugin. It never assumes which namespace it
//! was started in, so under kubesim it programs the node's namespace only.

pub mod config;
pub mod error;
pub mod ipam;
pub mod link;
pub mod result;

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::net::Ipv4Addr;

use serde_json::{json, Value};

use crate::config::{peek_version, Attachment, Command, Env, NetConf, SUPPORTED_VERSIONS};
use crate::error::{Error, Result};
use crate::ipam::Store;
use crate::result::{AddResult, Interface};

/// Runs the plugin as a CNI runtime calls it: `CNI_*` from the environment, the network
/// configuration on stdin, the result or error JSON on stdout. Returns the exit code.
pub fn main() -> i32 {
    let mut stdin = Vec::new();
    let outcome = std::io::stdin()
        .read_to_end(&mut stdin)
        .map_err(|e| Error::io("reading stdin", e))
        .and_then(|_| Env::from_lookup(|name| std::env::var(name).ok()));
    // A thread of our own: the caller may be inside an async runtime, and namespace
    // switches must stay on threads the plugin owns.
    let outcome = match outcome {
        Ok(env) => {
            let stdin = stdin.clone();
            std::thread::spawn(move || run(&env, &stdin))
                .join()
                .unwrap_or_else(|_| Err(Error::netlink("plugin", "worker thread panicked")))
        }
        Err(e) => Err(e),
    };
    match outcome {
        Ok(Some(output)) => {
            println!("{output}");
            0
        }
        Ok(None) => 0,
        Err(err) => {
            tracing::error!(%err, code = err.code(), "cni plugin failed");
            println!("{}", err.to_json(&peek_version(&stdin)));
            1
        }
    }
}

/// Executes one command; `Some` is the JSON to print on success.
pub fn run(env: &Env, stdin: &[u8]) -> Result<Option<Value>> {
    if env.command == Command::Version {
        return Ok(Some(json!({
            "cniVersion": peek_version(stdin),
            "supportedVersions": SUPPORTED_VERSIONS,
        })));
    }
    let conf = NetConf::parse(stdin)?;
    let since = match env.command {
        Command::Check => "0.4.0",
        Command::Gc | Command::Status => "1.1.0",
        _ => "0.3.0",
    };
    if version_before(&conf.cni_version, since) {
        return Err(Error::IncompatibleVersion(format!(
            "{}: {:?} needs {since} or later",
            conf.cni_version, env.command
        )));
    }
    match env.command {
        Command::Add => add(env, &conf).map(|r| Some(r.render(&conf.cni_version))),
        Command::Del => del(env, &conf).map(|()| None),
        Command::Check => check(env, &conf).map(|()| None),
        Command::Gc => gc(&conf).map(|()| None),
        Command::Status => Store::open(&conf.data_dir, &conf.name).map(|_| None),
        Command::Version => Ok(None),
    }
}

/// Whether `version` is older than `since` (both among the supported versions).
fn version_before(version: &str, since: &str) -> bool {
    let position = |v: &str| SUPPORTED_VERSIONS.iter().position(|s| *s == v);
    position(version) < position(since)
}

fn owner(env: &Env) -> Attachment {
    Attachment {
        container_id: env.container_id.clone(),
        ifname: env.ifname.clone(),
    }
}

/// The host-side veth name: `veth` and 8 hex digits of a hash of container ID and
/// interface name (12 characters, below the kernel's 15).
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    format!("veth{:08x}", fnv1a(container_id, ifname))
}

/// The temporary name of the container side before it is renamed inside the netns.
fn peer_temp_name(container_id: &str, ifname: &str) -> String {
    format!("cnitmp{:08x}", fnv1a(container_id, ifname))
}

fn fnv1a(container_id: &str, ifname: &str) -> u32 {
    container_id
        .bytes()
        .chain(std::iter::once(b'/'))
        .chain(ifname.bytes())
        .fold(0x811c_9dc5_u32, |hash, byte| {
            (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
        })
}

fn open_netns(env: &Env) -> Result<Option<File>> {
    let Some(path) = &env.netns else {
        return Ok(None);
    };
    match File::open(path) {
        Ok(file) => Ok(Some(file)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("opening netns {}", path.display()), e)),
    }
}

fn require_netns(env: &Env) -> Result<File> {
    open_netns(env)?.ok_or_else(|| Error::InvalidEnv {
        name: "CNI_NETNS",
        reason: match &env.netns {
            Some(path) => format!("{} does not exist", path.display()),
            None => "missing".into(),
        },
    })
}

fn add(env: &Env, conf: &NetConf) -> Result<AddResult> {
    let netns = require_netns(env)?;
    let exists = netns::run_in(&netns, || {
        netns::with_netlink(|h| async move {
            Ok::<_, Error>(netns::link_by_name(&h, &env.ifname).await?)
        })
    })?;
    if exists.is_some() {
        return Err(Error::InterfaceExists(env.ifname.clone()));
    }
    let store = Store::open(&conf.data_dir, &conf.name)?;
    let ip = store.allocate(conf.subnet, conf.gateway, &owner(env))?;
    let outcome = add_links(env, conf, &netns, ip);
    if outcome.is_err() {
        if let Err(err) = store.release(&owner(env)) {
            tracing::warn!(%err, "releasing the lease after a failed ADD");
        }
    }
    outcome
}

fn add_links(env: &Env, conf: &NetConf, netns: &File, ip: Ipv4Addr) -> Result<AddResult> {
    let host = host_veth_name(&env.container_id, &env.ifname);
    let peer = peer_temp_name(&env.container_id, &env.ifname);
    let (host_ref, peer_ref) = (host.as_str(), peer.as_str());
    let (bridge, host_link) = netns::with_netlink(|h| async move {
        let bridge = link::ensure_bridge(&h, conf).await?;
        // Leftovers of an interrupted ADD would make the names collide.
        link::delete_link(&h, host_ref).await?;
        link::delete_link(&h, peer_ref).await?;
        let host_link =
            link::create_veth(&h, conf, bridge.header.index, host_ref, peer_ref, netns).await?;
        Ok::<_, Error>((bridge, host_link))
    })?;
    let configured = netns::run_in(netns, || {
        netns::with_netlink(|h| async move {
            link::configure_container(&h, conf, peer_ref, &env.ifname, ip).await
        })
    });
    let container = match configured {
        Ok(container) => container,
        Err(err) => {
            if let Err(cleanup) =
                netns::with_netlink(|h| async move { link::delete_link(&h, host_ref).await })
            {
                tracing::warn!(%cleanup, "removing the veth after a failed ADD");
            }
            return Err(err);
        }
    };
    let sandbox = env.netns.as_ref().map(|p| p.display().to_string());
    Ok(AddResult {
        interfaces: vec![
            Interface {
                name: conf.bridge.clone(),
                mac: link::mac_of(&bridge),
                sandbox: None,
            },
            Interface {
                name: host,
                mac: link::mac_of(&host_link),
                sandbox: None,
            },
            Interface {
                name: env.ifname.clone(),
                mac: link::mac_of(&container),
                sandbox,
            },
        ],
        address: ip,
        prefix: conf.subnet.prefix,
        gateway: conf.gateway,
        interface: 2,
    })
}

fn del(env: &Env, conf: &NetConf) -> Result<()> {
    let store = Store::open(&conf.data_dir, &conf.name)?;
    store.release(&owner(env))?;
    if let Some(netns) = open_netns(env)? {
        netns::run_in(&netns, || {
            netns::with_netlink(|h| async move { link::delete_link(&h, &env.ifname).await })
        })?;
    }
    let host = host_veth_name(&env.container_id, &env.ifname);
    netns::with_netlink(|h| async move { link::delete_link(&h, &host).await })
}

fn check(env: &Env, conf: &NetConf) -> Result<()> {
    let netns = require_netns(env)?;
    let store = Store::open(&conf.data_dir, &conf.name)?;
    let ip = store
        .find(&owner(env))?
        .ok_or_else(|| Error::UnknownContainer(env.container_id.clone()))?;
    netns::run_in(&netns, || {
        netns::with_netlink(
            |h| async move { link::check_container(&h, conf, &env.ifname, ip).await },
        )
    })
}

fn gc(conf: &NetConf) -> Result<()> {
    let store = Store::open(&conf.data_dir, &conf.name)?;
    let freed = store.gc(&conf.valid_attachments)?;
    tracing::debug!(?freed, "released stale leases");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_veth_names_are_short_and_stable() {
        let name = host_veth_name("0123456789abcdef0123456789abcdef", "eth0");
        assert_eq!(name.len(), 12);
        assert!(name.starts_with("veth"));
        assert_eq!(
            name,
            host_veth_name("0123456789abcdef0123456789abcdef", "eth0")
        );
        assert_ne!(
            name,
            host_veth_name("0123456789abcdef0123456789abcdef", "eth1")
        );
        assert!(peer_temp_name("c", "eth0").len() <= 15);
    }

    fn env(command: Command) -> Env {
        Env {
            command,
            container_id: "c1".into(),
            netns: None,
            ifname: "eth0".into(),
            args: String::new(),
        }
    }

    #[test]
    fn version_lists_supported_versions() {
        let out = run(&env(Command::Version), br#"{"cniVersion":"1.0.0"}"#)
            .expect("version")
            .expect("output");
        assert_eq!(
            out,
            json!({
                "cniVersion": "1.0.0",
                "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"],
            })
        );
    }

    #[test]
    fn gc_and_status_work_on_the_lease_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = |extra: &str| {
            format!(
                r#"{{"cniVersion":"1.1.0","name":"n","type":"kubesim",{extra}
                "ipam":{{"type":"host-local","subnet":"10.244.1.0/24","dataDir":{:?}}}}}"#,
                dir.path().display().to_string()
            )
        };
        let parsed = NetConf::parse(conf("").as_bytes()).expect("conf");
        let store = Store::open(&parsed.data_dir, "n").expect("store");
        let a = store.allocate(parsed.subnet, parsed.gateway, &owner(&env(Command::Add)));
        let a = a.expect("lease");
        drop(store);
        assert_eq!(
            run(&env(Command::Status), conf("").as_bytes()).expect("status"),
            None
        );
        let keep = r#""cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"}],"#;
        run(&env(Command::Gc), conf(keep).as_bytes()).expect("gc keeps");
        assert!(dir.path().join("n").join(a.to_string()).exists());
        run(&env(Command::Gc), conf("").as_bytes()).expect("gc frees");
        assert!(!dir.path().join("n").join(a.to_string()).exists());
    }

    #[test]
    fn commands_newer_than_the_configured_version_are_incompatible() {
        let conf = |version: &str| {
            format!(
                r#"{{"cniVersion":"{version}","name":"n","type":"kubesim",
                "ipam":{{"type":"host-local","subnet":"10.244.1.0/24"}}}}"#
            )
        };
        let err = run(&env(Command::Check), conf("0.3.1").as_bytes()).unwrap_err();
        assert_eq!(err.code(), 1);
        let err = run(&env(Command::Gc), conf("1.0.0").as_bytes()).unwrap_err();
        assert_eq!(err.code(), 1);
    }

    #[test]
    fn malformed_configuration_is_a_decode_error() {
        let err = run(&env(Command::Add), b"{").unwrap_err();
        assert_eq!(err.code(), 6);
    }
}
