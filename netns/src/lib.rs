//! Named network namespaces, kept as `ip netns` keeps them (a bind mount of the
//! namespace under `/run/netns/<name>`), and the netlink helpers the topology, the CNI
//! plugin, flannel and the kubelet share.
//!
//! A netlink socket talks to the namespace of the thread that opened it, so work
//! inside a namespace runs on a short-lived thread that entered it with `setns`; the
//! caller's own threads never change namespace, and nothing here names the root
//! namespace.

use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use futures::TryStreamExt;
use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::{Handle, LinkUnspec};

/// Where named network namespaces live, as `ip netns` keeps them.
pub const NETNS_DIR: &str = "/run/netns";

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("network namespace {0} already exists")]
    Exists(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("{context}: {source}")]
    Netlink {
        context: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("{0}: worker thread died")]
    Worker(String),
}

impl Error {
    pub fn io(context: impl Into<String>, source: impl Into<io::Error>) -> Self {
        Error::Io {
            context: context.into(),
            source: source.into(),
        }
    }

    pub fn netlink(context: impl Into<String>, source: rtnetlink::Error) -> Self {
        Error::Netlink {
            context: context.into(),
            source,
        }
    }
}

/// The file of the named namespace `name`.
pub fn path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Makes `/run/netns` a shared mount point, as `ip netns add` does, so namespaces
/// mounted there are seen (and unmounted) in mount namespaces made later.
pub fn prepare_dir() -> Result<()> {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    fs::create_dir_all(NETNS_DIR).map_err(|e| Error::io(format!("creating {NETNS_DIR}"), e))?;
    let make_shared = || {
        mount(
            None::<&str>,
            NETNS_DIR,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    match make_shared() {
        Ok(()) => Ok(()),
        Err(Errno::EINVAL) => {
            mount(
                Some(NETNS_DIR),
                NETNS_DIR,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| Error::io(format!("bind-mounting {NETNS_DIR} onto itself"), e))?;
            make_shared().map_err(|e| Error::io(format!("making {NETNS_DIR} shared"), e))
        }
        Err(e) => Err(Error::io(format!("making {NETNS_DIR} shared"), e)),
    }
}

/// Creates the named namespace `name`: a new network namespace, made on a throwaway
/// thread and bind-mounted onto `/run/netns/<name>`. Its loopback is left down.
pub fn add(name: &str) -> Result<()> {
    prepare_dir()?;
    let path = path(name);
    match OpenOptions::new().write(true).create_new(true).open(&path) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(Error::Exists(name.to_owned()))
        }
        Err(e) => return Err(Error::io(format!("creating {}", path.display()), e)),
    }
    let mounted = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                unshare(CloneFlags::CLONE_NEWNET)
                    .map_err(|e| Error::io("creating a network namespace", e))?;
                mount(
                    Some("/proc/thread-self/ns/net"),
                    &path,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(|e| Error::io(format!("bind-mounting {}", path.display()), e))
            })
            .join()
            .map_err(|_| Error::Worker(format!("creating network namespace {name}")))?
    });
    if mounted.is_err() {
        if let Err(err) = fs::remove_file(&path) {
            tracing::warn!(%err, path = %path.display(), "failed to remove namespace file");
        }
    }
    mounted
}

/// Removes the named namespace `name` (unmount, then remove the file); a namespace
/// that is already gone is not an error. The namespace itself lives on while a
/// process is still inside it.
pub fn remove(name: &str) -> Result<()> {
    let path = path(name);
    match umount2(&path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(Error::io(format!("unmounting {}", path.display()), e)),
    }
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("removing {}", path.display()), e)),
    }
}

/// Opens the named namespace `name`.
pub fn open(name: &str) -> Result<File> {
    let path = path(name);
    File::open(&path).map_err(|e| Error::io(format!("opening {}", path.display()), e))
}

/// The named namespaces whose names start with `prefix`, sorted.
pub fn list(prefix: &str) -> Result<Vec<String>> {
    let entries = match fs::read_dir(NETNS_DIR) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("listing {NETNS_DIR}"), e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("listing {NETNS_DIR}"), e))?;
        if let Some(name) = entry.file_name().to_str() {
            if name.starts_with(prefix) {
                names.push(name.to_owned());
            }
        }
    }
    names.sort();
    Ok(names)
}

/// The processes whose network namespace is the named namespace `name`, found as
/// `ip netns pids` finds them: by the namespace's inode in `/proc/<pid>/ns/net`.
pub fn pids(name: &str) -> Result<Vec<Pid>> {
    let target = match fs::metadata(path(name)) {
        Ok(meta) => (meta.dev(), meta.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("reading {}", path(name).display()), e)),
    };
    let entries = fs::read_dir("/proc").map_err(|e| Error::io("listing /proc", e))?;
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        // A process may exit while we look; it is then not in the namespace anymore.
        if let Ok(meta) = fs::metadata(entry.path().join("ns/net")) {
            if (meta.dev(), meta.ino()) == target {
                found.push(Pid::from_raw(pid));
            }
        }
    }
    Ok(found)
}

/// Sends SIGKILL to every process inside the named namespace `name`; returns how many.
pub fn kill_all(name: &str) -> Result<usize> {
    let pids = pids(name)?;
    for pid in &pids {
        match kill(*pid, Signal::SIGKILL) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(e) => return Err(Error::io(format!("killing {pid} in {name}"), e)),
        }
    }
    Ok(pids.len())
}

/// Runs `f` on a thread that entered the network namespace `ns`, and waits for it.
pub fn run_in<T: Send, E: From<Error> + Send>(
    ns: &File,
    f: impl FnOnce() -> Result<T, E> + Send,
) -> Result<T, E> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                setns(ns, CloneFlags::CLONE_NEWNET)
                    .map_err(|e| Error::io("entering a network namespace", e))?;
                f()
            })
            .join()
            .map_err(|_| Error::Worker("working in a network namespace".to_owned()))?
    })
}

/// Runs `f` with a netlink handle in the calling thread's network namespace, on a
/// runtime of its own.
pub fn with_netlink<T, E, F, Fut>(f: F) -> Result<T, E>
where
    E: From<Error>,
    F: FnOnce(Handle) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the netlink runtime", e))?;
    runtime.block_on(async move {
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|e| Error::io("opening a netlink socket", e))?;
        tokio::spawn(connection);
        f(handle).await
    })
}

/// Runs `f` with a netlink handle on a fresh thread that entered the named namespace
/// `name`, without blocking the caller's runtime.
pub fn netlink_in<T, E, F, Fut>(name: &str, f: F) -> impl Future<Output = Result<T, E>>
where
    T: Send + 'static,
    E: From<Error> + Send + 'static,
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, E>>,
{
    let what = format!("working in network namespace {name}");
    let started = open(name).and_then(|netns| {
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("netns-worker".to_owned())
            .spawn(move || {
                let result = run_in(&netns, || with_netlink(f));
                // The receiver is gone only when the caller stopped waiting.
                let _ = tx.send(result);
            })
            .map_err(|e| Error::io(format!("starting a thread for {name}"), e))?;
        Ok(rx)
    });
    async move {
        match started {
            Ok(rx) => rx.await.map_err(|_| E::from(Error::Worker(what)))?,
            Err(e) => Err(e.into()),
        }
    }
}

/// Whether `err` is the kernel's answer `errno`.
pub fn is_errno(err: &rtnetlink::Error, errno: Errno) -> bool {
    matches!(err, rtnetlink::Error::NetlinkError(msg) if msg.raw_code() == -(errno as i32))
}

/// The link called `name`, if there is one.
pub async fn link_by_name(handle: &Handle, name: &str) -> Result<Option<LinkMessage>> {
    match handle
        .link()
        .get()
        .match_name(name.to_owned())
        .execute()
        .try_next()
        .await
    {
        Ok(link) => Ok(link),
        Err(e) if is_errno(&e, Errno::ENODEV) => Ok(None),
        Err(e) => Err(Error::netlink(format!("looking up {name}"), e)),
    }
}

/// The link called `name`; its absence is an error.
pub async fn require_link(handle: &Handle, name: &str) -> Result<LinkMessage> {
    link_by_name(handle, name).await?.ok_or_else(|| {
        Error::io(
            format!("looking up {name}"),
            io::Error::from(io::ErrorKind::NotFound),
        )
    })
}

/// Sets the link `index` up.
pub async fn set_up(handle: &Handle, index: u32, what: &str) -> Result<()> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(|e| Error::netlink(format!("setting {what} up"), e))
}

/// Adds `ip/prefix` to the link `index`; an address already there is not an error.
pub async fn add_address(
    handle: &Handle,
    index: u32,
    ip: Ipv4Addr,
    prefix: u8,
    what: &str,
) -> Result<()> {
    match handle
        .address()
        .add(index, IpAddr::V4(ip), prefix)
        .execute()
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if is_errno(&e, Errno::EEXIST) => Ok(()),
        Err(e) => Err(Error::netlink(format!("adding {ip}/{prefix} to {what}"), e)),
    }
}

/// The addresses of the link `index` (`what` names it in errors).
pub async fn link_addresses(
    handle: &Handle,
    index: u32,
    what: &str,
) -> Result<Vec<AddressMessage>> {
    let messages: Vec<AddressMessage> = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(|e| Error::netlink(format!("listing addresses of {what}"), e))?;
    Ok(messages
        .into_iter()
        .filter(|m| m.header.index == index)
        .collect())
}

/// The local IPv4 address of an address message, if it is one.
pub fn ipv4_of(message: &AddressMessage) -> Option<Ipv4Addr> {
    message.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
        _ => None,
    })
}

/// The hardware address of a link, if it has one.
pub fn mac_of(link: &LinkMessage) -> Option<[u8; 6]> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(bytes) => bytes.as_slice().try_into().ok(),
        _ => None,
    })
}

/// A hardware address as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_macs() {
        assert_eq!(format_mac(&[0, 0x1a, 0xff, 2, 3, 4]), "00:1a:ff:02:03:04");
    }

    #[test]
    fn namespaces_live_under_run_netns() {
        assert_eq!(path("demo-node1"), Path::new("/run/netns/demo-node1"));
    }
}
