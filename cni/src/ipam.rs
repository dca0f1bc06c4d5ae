//! Host-local style address management: one file per lease under
//! `<dataDir>/<network>/<ip>` holding the container ID and interface name, plus
//! `last_reserved_ip` so allocation continues round robin after a restart. A `lock`
//! file serialises plugin invocations.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::config::{Attachment, Subnet};
use crate::error::{Error, Result};

const LAST_RESERVED: &str = "last_reserved_ip";
const LOCK: &str = "lock";

/// The leases of one network, locked for the lifetime of the value.
pub struct Store {
    dir: PathBuf,
    _lock: Flock<File>,
}

impl Store {
    /// Opens (creating it if needed) `<data_dir>/<network>` and takes its lock.
    pub fn open(data_dir: &Path, network: &str) -> Result<Self> {
        let dir = data_dir.join(network);
        fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let lock_path = dir.join(LOCK);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io(format!("opening {}", lock_path.display()), e))?;
        let lock = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| {
            Error::io(
                format!("locking {}", lock_path.display()),
                std::io::Error::from(errno),
            )
        })?;
        Ok(Self { dir, _lock: lock })
    }

    /// Every lease: address and owner.
    pub fn leases(&self) -> Result<Vec<(Ipv4Addr, Attachment)>> {
        let entries = fs::read_dir(&self.dir)
            .map_err(|e| Error::io(format!("reading {}", self.dir.display()), e))?;
        let mut leases = Vec::new();
        for entry in entries {
            let entry =
                entry.map_err(|e| Error::io(format!("reading {}", self.dir.display()), e))?;
            let Some(ip) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            let text = fs::read_to_string(entry.path())
                .map_err(|e| Error::io(format!("reading {}", entry.path().display()), e))?;
            let mut lines = text.lines().map(str::trim);
            let container_id = lines.next().unwrap_or_default().to_owned();
            let ifname = lines.next().unwrap_or_default().to_owned();
            leases.push((
                ip,
                Attachment {
                    container_id,
                    ifname,
                },
            ));
        }
        leases.sort_by_key(|(ip, _)| *ip);
        Ok(leases)
    }

    /// The address leased to an attachment, if any.
    pub fn find(&self, owner: &Attachment) -> Result<Option<Ipv4Addr>> {
        Ok(self
            .leases()?
            .into_iter()
            .find(|(_, a)| a == owner)
            .map(|(ip, _)| ip))
    }

    /// Leases the next free address after the last one reserved, skipping `reserved`.
    pub fn allocate(
        &self,
        subnet: Subnet,
        reserved: Ipv4Addr,
        owner: &Attachment,
    ) -> Result<Ipv4Addr> {
        let first = u32::from(subnet.first_host());
        let last = u32::from(subnet.last_host());
        let last_path = self.dir.join(LAST_RESERVED);
        let previous = fs::read_to_string(&last_path)
            .ok()
            .and_then(|text| text.trim().parse::<Ipv4Addr>().ok())
            .map(u32::from)
            .filter(|ip| (first..=last).contains(ip));
        let start = match previous {
            Some(ip) if ip < last => ip + 1,
            _ => first,
        };
        let size = last - first + 1;
        for step in 0..size {
            let candidate = Ipv4Addr::from(first + (start - first + step) % size);
            if candidate == reserved {
                continue;
            }
            let path = self.dir.join(candidate.to_string());
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut file) => {
                    write!(file, "{}\r\n{}", owner.container_id, owner.ifname)
                        .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
                    fs::write(&last_path, candidate.to_string())
                        .map_err(|e| Error::io(format!("writing {}", last_path.display()), e))?;
                    return Ok(candidate);
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io(format!("creating {}", path.display()), e)),
            }
        }
        Err(Error::RangeFull(subnet.to_string()))
    }

    /// Releases the leases of one attachment; returns the addresses freed.
    pub fn release(&self, owner: &Attachment) -> Result<Vec<Ipv4Addr>> {
        self.release_where(|a| a == owner)
    }

    /// Releases every lease whose owner is not in `valid`; returns the addresses freed.
    pub fn gc(&self, valid: &[Attachment]) -> Result<Vec<Ipv4Addr>> {
        let valid: HashSet<&Attachment> = valid.iter().collect();
        self.release_where(|a| !valid.contains(a))
    }

    fn release_where(&self, pred: impl Fn(&Attachment) -> bool) -> Result<Vec<Ipv4Addr>> {
        let mut freed = Vec::new();
        for (ip, owner) in self.leases()? {
            if pred(&owner) {
                let path = self.dir.join(ip.to_string());
                match fs::remove_file(&path) {
                    Ok(()) => freed.push(ip),
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io(format!("removing {}", path.display()), e)),
                }
            }
        }
        Ok(freed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(id: &str) -> Attachment {
        Attachment {
            container_id: id.into(),
            ifname: "eth0".into(),
        }
    }

    fn subnet() -> Subnet {
        Subnet::parse("10.244.1.0/29").expect("valid")
    }

    const GW: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 1);

    #[test]
    fn allocates_round_robin_skipping_the_gateway() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), "net").expect("open");
        let a = store.allocate(subnet(), GW, &owner("a")).expect("a");
        let b = store.allocate(subnet(), GW, &owner("b")).expect("b");
        assert_eq!(a, Ipv4Addr::new(10, 244, 1, 2));
        assert_eq!(b, Ipv4Addr::new(10, 244, 1, 3));
        assert_eq!(store.find(&owner("b")).expect("find"), Some(b));
        let text = fs::read_to_string(dir.path().join("net/10.244.1.2")).expect("lease");
        assert_eq!(text, "a\r\neth0");
    }

    #[test]
    fn leases_survive_a_restart_and_release_frees_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = {
            let store = Store::open(dir.path(), "net").expect("open");
            store.allocate(subnet(), GW, &owner("a")).expect("a")
        };
        let store = Store::open(dir.path(), "net").expect("reopen");
        assert_eq!(store.find(&owner("a")).expect("find"), Some(a));
        let b = store.allocate(subnet(), GW, &owner("b")).expect("b");
        assert_ne!(a, b);
        assert_eq!(store.release(&owner("a")).expect("release"), vec![a]);
        assert_eq!(
            store.release(&owner("a")).expect("again"),
            Vec::<Ipv4Addr>::new()
        );
        assert_eq!(store.find(&owner("a")).expect("find"), None);
    }

    #[test]
    fn exhausts_the_range_then_reuses_released_addresses() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), "net").expect("open");
        // a /29 has .1 to .6; the gateway takes .1
        let ips: Vec<_> = (0..5)
            .map(|i| {
                store
                    .allocate(subnet(), GW, &owner(&format!("c{i}")))
                    .expect("ip")
            })
            .collect();
        let err = store.allocate(subnet(), GW, &owner("full")).unwrap_err();
        assert!(matches!(err, Error::RangeFull(_)), "{err}");
        store.release(&owner("c1")).expect("release");
        assert_eq!(
            store.allocate(subnet(), GW, &owner("new")).expect("reuse"),
            ips[1]
        );
    }

    #[test]
    fn gc_keeps_only_valid_attachments() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), "net").expect("open");
        let a = store.allocate(subnet(), GW, &owner("a")).expect("a");
        let b = store.allocate(subnet(), GW, &owner("b")).expect("b");
        assert_eq!(store.gc(&[owner("a")]).expect("gc"), vec![b]);
        assert_eq!(store.leases().expect("leases"), vec![(a, owner("a"))]);
    }
}
