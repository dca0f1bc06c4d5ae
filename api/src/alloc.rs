//! Service ClusterIP and NodePort allocation as the apiserver keeps it: the bitmap
//! allocators of k8s.io/kubernetes `pkg/registry/core/service/{ipallocator,portallocator}`
//! and the Service registry steps around them (`pkg/registry/core/service/storage/alloc.go`),
//! with the same error texts (`provided port is already allocated`, …).
//!
//! [`IpAllocator`] and [`PortAllocator`] hand out values at random, first from the upper
//! part of the range and only then from a small static lower block (the first 256 service
//! IPs of a /12, the first 86 node ports of 30000-32767), so that well-known addresses such
//! as `kube-dns`'s 10.96.0.10 stay free for explicit requests, as upstream does.
//! [`ServiceAllocator`] applies them to a Service the way the registry does before
//! validating it: carry over values the client left out, allocate, clear what the new
//! type no longer uses, and undo everything if any step fails.
//!
//! Single-stack IPv4 only: an IPv6 family or address is refused as "not configured on
//! this cluster", as a real IPv4-only cluster does.
//!
//! Not here: persistence. The caller keeps the allocators next to the store and rebuilds
//! them with [`ServiceAllocator::restore`] from the stored Services on start.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, Ipv4Addr};

use serde_json::{Map, Value};
use thiserror::Error;

use crate::field::{aggregate, FieldError};
use crate::validation::{
    go_strings, int_of, is_headless, list_of, needs_health_check, parse_ip, service_cluster_ips,
    service_type, str_of, strings, validate_service_cluster_ips,
};

/// Why a value could not be allocated; the texts are the allocators' own.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AllocError {
    #[error("the provided IP ({ip}) is not in the valid range. The range of valid IPs is {range}")]
    IpNotInRange { ip: Ipv4Addr, range: String },
    #[error("provided port is not in the valid range. The range of valid ports is {range}")]
    PortNotInRange { range: String },
    #[error("provided IP is already allocated")]
    IpAllocated,
    #[error("provided port is already allocated")]
    PortAllocated,
    #[error("range is full")]
    Full,
    #[error("invalid service CIDR {0:?}: want an IPv4 CIDR with a prefix of at least /12, such as 10.96.0.0/12")]
    InvalidCidr(String),
    #[error("invalid port range {0:?}: want FIRST-LAST, FIRST+COUNT or a single port, such as 30000-32767")]
    InvalidPortRange(String),
}

/// A small SplitMix64 generator: randomness without a dependency, reproducible when seeded.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn from_entropy() -> Self {
        Rng(RandomState::new().build_hasher().finish())
    }

    /// Uniform-enough value in `0..n`; `n` must be positive.
    fn below(&mut self, n: u32) -> u32 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (((z >> 32) * u64::from(n)) >> 32) as u32
    }
}

/// One bit per value. `next` scans from a random point of `[offset, size)` and wraps, then
/// tries `[0, offset)` the same way (upstream's `randomScanStrategyWithOffset`).
#[derive(Debug, Clone)]
struct Bitmap {
    words: Vec<u64>,
    size: u32,
    offset: u32,
    count: u32,
    rng: Rng,
}

impl Bitmap {
    fn new(size: u32, offset: u32, rng: Rng) -> Self {
        Bitmap {
            words: vec![0; size.div_ceil(64) as usize],
            size,
            offset: offset.min(size),
            count: 0,
            rng,
        }
    }

    fn has(&self, i: u32) -> bool {
        self.words
            .get((i / 64) as usize)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// Marks `i`; false if it was already marked.
    fn set(&mut self, i: u32) -> bool {
        if i >= self.size || self.has(i) {
            return false;
        }
        if let Some(w) = self.words.get_mut((i / 64) as usize) {
            *w |= 1 << (i % 64);
            self.count += 1;
        }
        true
    }

    fn clear(&mut self, i: u32) {
        if self.has(i) {
            if let Some(w) = self.words.get_mut((i / 64) as usize) {
                *w &= !(1 << (i % 64));
                self.count -= 1;
            }
        }
    }

    fn next(&mut self) -> Option<u32> {
        if self.count >= self.size {
            return None;
        }
        let (offset, size) = (self.offset, self.size);
        for (lo, len) in [(offset, size - offset), (0, offset)] {
            if len == 0 {
                continue;
            }
            let start = self.rng.below(len);
            if let Some(i) = (0..len)
                .map(|k| lo + (start + k) % len)
                .find(|&i| !self.has(i))
            {
                self.set(i);
                return Some(i);
            }
        }
        None
    }
}

/// Allocates Service IPs from an IPv4 CIDR (the apiserver's `--service-cluster-ip-range`).
/// The network and broadcast addresses are never handed out.
#[derive(Debug, Clone)]
pub struct IpAllocator {
    network: Ipv4Addr,
    prefix: u8,
    /// The first usable address (network + 1), the value of offset 0.
    base: u32,
    map: Bitmap,
}

impl IpAllocator {
    /// An allocator over `cidr` (e.g. `10.96.0.0/12`), choosing addresses at random.
    pub fn new(cidr: &str) -> Result<Self, AllocError> {
        Self::build(cidr, Rng::from_entropy())
    }

    /// Like [`IpAllocator::new`] with a fixed seed, so that a lab replays the same addresses.
    pub fn with_seed(cidr: &str, seed: u64) -> Result<Self, AllocError> {
        Self::build(cidr, Rng(seed))
    }

    fn build(cidr: &str, rng: Rng) -> Result<Self, AllocError> {
        let bad = || AllocError::InvalidCidr(cidr.to_string());
        let (ip, bits) = cidr.split_once('/').ok_or_else(bad)?;
        let prefix: u8 = bits.parse().map_err(|_| bad())?;
        let Some(IpAddr::V4(ip)) = parse_ip(ip) else {
            return Err(bad());
        };
        if !(12..=32).contains(&prefix) {
            return Err(bad());
        }
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        let network = u32::from(ip) & mask;
        let size = 1u64 << (32 - prefix);
        let usable = u32::try_from(size.saturating_sub(2)).map_err(|_| bad())?;
        let offset = match size {
            s if s <= 16 => 0,
            s => (s / 16).clamp(16, 256) as u32,
        };
        Ok(IpAllocator {
            network: Ipv4Addr::from(network),
            prefix,
            base: network.wrapping_add(1),
            map: Bitmap::new(usable, offset, rng),
        })
    }

    fn offset_of(&self, ip: Ipv4Addr) -> Option<u32> {
        let off = u32::from(ip).checked_sub(self.base)?;
        (off < self.map.size).then_some(off)
    }

    /// Reserves a requested address.
    pub fn allocate(&mut self, ip: Ipv4Addr) -> Result<(), AllocError> {
        let off = self.offset_of(ip).ok_or_else(|| AllocError::IpNotInRange {
            ip,
            range: self.cidr(),
        })?;
        if self.map.set(off) {
            Ok(())
        } else {
            Err(AllocError::IpAllocated)
        }
    }

    /// Reserves a free address: a random one above the static block, else one inside it.
    pub fn allocate_next(&mut self) -> Result<Ipv4Addr, AllocError> {
        let off = self.map.next().ok_or(AllocError::Full)?;
        Ok(Ipv4Addr::from(self.base + off))
    }

    /// Frees an address; freeing a free or foreign address does nothing.
    pub fn release(&mut self, ip: Ipv4Addr) {
        if let Some(off) = self.offset_of(ip) {
            self.map.clear(off);
        }
    }

    /// The first usable address, the one the `kubernetes` Service gets (10.96.0.1).
    pub fn first(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base)
    }

    /// Whether `ip` is an address this allocator can hand out.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.offset_of(ip).is_some()
    }

    /// Whether `ip` is currently allocated.
    pub fn has(&self, ip: Ipv4Addr) -> bool {
        self.offset_of(ip).is_some_and(|off| self.map.has(off))
    }

    /// The range in CIDR notation, as error messages show it (`10.96.0.0/12`).
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.network, self.prefix)
    }

    /// How many addresses are allocated.
    pub fn used(&self) -> u32 {
        self.map.count
    }

    /// How many addresses are still free.
    pub fn free(&self) -> u32 {
        self.map.size - self.map.count
    }
}

/// Allocates node ports from a range (the apiserver's `--service-node-port-range`).
#[derive(Debug, Clone)]
pub struct PortAllocator {
    base: u16,
    map: Bitmap,
}

impl PortAllocator {
    /// An allocator over `range` (`30000-32767`, `30000+2768` or `30000`).
    pub fn new(range: &str) -> Result<Self, AllocError> {
        Self::build(range, Rng::from_entropy())
    }

    /// Like [`PortAllocator::new`] with a fixed seed.
    pub fn with_seed(range: &str, seed: u64) -> Result<Self, AllocError> {
        Self::build(range, Rng(seed))
    }

    fn build(range: &str, rng: Rng) -> Result<Self, AllocError> {
        let bad = || AllocError::InvalidPortRange(range.to_string());
        let num = |s: &str| s.trim().parse::<u32>().map_err(|_| bad());
        let (base, size) = if let Some((lo, hi)) = range.split_once('-') {
            let (lo, hi) = (num(lo)?, num(hi)?);
            (lo, hi.checked_sub(lo).ok_or_else(bad)? + 1)
        } else if let Some((lo, count)) = range.split_once('+') {
            (num(lo)?, num(count)?)
        } else {
            (num(range)?, 1)
        };
        if size == 0 || base + size - 1 > 65535 {
            return Err(bad());
        }
        let offset = match size {
            s if s <= 16 => 0,
            s => (s / 32).clamp(16, 128),
        };
        let base = u16::try_from(base).map_err(|_| bad())?;
        Ok(PortAllocator {
            base,
            map: Bitmap::new(size, offset, rng),
        })
    }

    fn offset_of(&self, port: u16) -> Option<u32> {
        let off = u32::from(port).checked_sub(u32::from(self.base))?;
        (off < self.map.size).then_some(off)
    }

    /// Reserves a requested port.
    pub fn allocate(&mut self, port: u16) -> Result<(), AllocError> {
        let off = self
            .offset_of(port)
            .ok_or_else(|| AllocError::PortNotInRange {
                range: self.range(),
            })?;
        if self.map.set(off) {
            Ok(())
        } else {
            Err(AllocError::PortAllocated)
        }
    }

    /// Reserves a free port: a random one above the static block, else one inside it.
    pub fn allocate_next(&mut self) -> Result<u16, AllocError> {
        let off = self.map.next().ok_or(AllocError::Full)?;
        u16::try_from(u32::from(self.base) + off).map_err(|_| AllocError::Full)
    }

    /// Frees a port; freeing a free or foreign port does nothing.
    pub fn release(&mut self, port: u16) {
        if let Some(off) = self.offset_of(port) {
            self.map.clear(off);
        }
    }

    /// Whether `port` is currently allocated.
    pub fn has(&self, port: u16) -> bool {
        self.offset_of(port).is_some_and(|off| self.map.has(off))
    }

    /// The range as error messages show it (`30000-32767`).
    pub fn range(&self) -> String {
        format!("{}-{}", self.base, u32::from(self.base) + self.map.size - 1)
    }

    /// How many ports are allocated.
    pub fn used(&self) -> u32 {
        self.map.count
    }

    /// How many ports are still free.
    pub fn free(&self) -> u32 {
        self.map.size - self.map.count
    }
}

/// Why a Service could not get its IPs and ports.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ServiceAllocError {
    /// Rejected as `422 Invalid` for the Service, with these causes.
    #[error("{}", aggregate(.0))]
    Invalid(Vec<FieldError>),
    /// Rejected as `500 InternalError`; the text follows "Internal error occurred: ".
    #[error("{0}")]
    Internal(String),
}

type Result<T, E = ServiceAllocError> = std::result::Result<T, E>;

/// `spec.ports[i].nodePort: Invalid value: 30000: provided port is already allocated`.
pub fn node_port_error(index: usize, port: i64, err: &AllocError) -> FieldError {
    FieldError::invalid(
        format!("spec.ports[{index}].nodePort"),
        port,
        err.to_string(),
    )
}

/// `spec.clusterIPs: Invalid value: []string{"10.96.100.80"}: failed to allocate IP
/// 10.96.100.80: provided IP is already allocated`.
pub fn cluster_ip_error(cluster_ips: &[String], ip: &str, err: &AllocError) -> FieldError {
    FieldError::invalid_go(
        "spec.clusterIPs",
        go_strings(Some(cluster_ips)),
        format!("failed to allocate IP {ip}: {err}"),
    )
}

/// What one call took and what it frees once it succeeds.
#[derive(Default)]
struct Txn {
    ips: Vec<Ipv4Addr>,
    ports: Vec<u16>,
    release_ips: Vec<Ipv4Addr>,
    release_ports: Vec<u16>,
}

/// The Service registry's allocation steps over one IP range and one node port range.
#[derive(Debug, Clone)]
pub struct ServiceAllocator {
    ips: IpAllocator,
    ports: PortAllocator,
}

impl ServiceAllocator {
    /// Combines the cluster's service IP range and node port range.
    pub fn new(ips: IpAllocator, ports: PortAllocator) -> Self {
        ServiceAllocator { ips, ports }
    }

    /// The service IP allocator, for metrics and the `kubernetes` Service's address.
    pub fn ips(&self) -> &IpAllocator {
        &self.ips
    }

    /// The node port allocator, for metrics.
    pub fn ports(&self) -> &PortAllocator {
        &self.ports
    }

    /// Fills in `spec.clusterIP(s)`, `ipFamilies`, `ipFamilyPolicy`, node ports and the
    /// health check node port of a Service being created (the registry's `beginCreate`,
    /// which runs before validation). On error nothing stays allocated.
    pub fn allocate_create(&mut self, svc: &mut Value) -> Result<()> {
        let Some(spec) = spec_mut(svc) else {
            return Ok(());
        };
        if !str_of(spec, "clusterIP").is_empty() && list_of(spec, "clusterIPs").is_empty() {
            let ip = Value::from(str_of(spec, "clusterIP"));
            set(spec, "clusterIPs", Value::Array(vec![ip]));
        }
        init_ip_families(spec, None)?;
        let mut txn = Txn::default();
        let result = self
            .alloc_cluster_ips(spec, &mut txn)
            .and_then(|()| self.alloc_node_ports_create(spec, &mut txn))
            .and_then(|()| self.alloc_health_check(spec, &mut txn));
        self.finish(txn, result)
    }

    /// The registry's `beginUpdate` and type-change clean-up: carries over allocated values
    /// the client left out, allocates what the new spec needs, frees what it no longer
    /// uses and clears the fields of a type left behind. Run before `validate_update`.
    pub fn allocate_update(&mut self, new: &mut Value, old: &Value) -> Result<()> {
        let old_spec = old
            .get("spec")
            .cloned()
            .unwrap_or(Value::Object(Map::new()));
        let Some(spec) = spec_mut(new) else {
            return Ok(());
        };
        patch_allocated_values(spec, &old_spec);
        normalize_cluster_ips_update(spec, &old_spec);
        init_ip_families(spec, Some(&old_spec))?;
        let mut txn = Txn::default();
        let result = self.update(spec, &old_spec, &mut txn);
        drop_type_dependent_fields(spec, &old_spec);
        self.finish(txn, result)
    }

    fn update(&mut self, spec: &mut Value, old: &Value, txn: &mut Txn) -> Result<()> {
        let (new_ty, old_ty) = (
            service_type(spec).to_string(),
            service_type(old).to_string(),
        );
        if old_ty == "ExternalName" && new_ty != "ExternalName" {
            self.alloc_cluster_ips(spec, txn)?;
        } else if !is_headless(service_cluster_ips(old).as_deref())
            && old_ty != "ExternalName"
            && new_ty == "ExternalName"
        {
            txn.release_ips.extend(ipv4s(old));
        }
        let needs_node_ports = |t: &str| t == "NodePort" || t == "LoadBalancer";
        if needs_node_ports(&old_ty) && matches!(new_ty.as_str(), "ExternalName" | "ClusterIP") {
            txn.release_ports.extend(
                node_ports(old)
                    .into_iter()
                    .filter_map(|p| u16::try_from(p).ok()),
            );
        }
        if needs_node_ports(&new_ty) {
            self.update_node_ports(spec, old, txn)?;
        }
        match (needs_health_check(old), needs_health_check(spec)) {
            (false, true) => self.alloc_health_check(spec, txn)?,
            (true, false) => {
                let hc = int_of(old, "healthCheckNodePort").unwrap_or(0);
                txn.release_ports
                    .extend(u16::try_from(hc).ok().filter(|p| *p != 0));
            }
            _ => {}
        }
        Ok(())
    }

    /// Frees everything a deleted Service held.
    pub fn release(&mut self, svc: &Value) {
        let spec = svc.get("spec").unwrap_or(&Value::Null);
        for ip in ipv4s(spec) {
            self.ips.release(ip);
        }
        for port in node_ports(spec)
            .into_iter()
            .chain(int_of(spec, "healthCheckNodePort"))
        {
            if let Ok(port) = u16::try_from(port) {
                self.ports.release(port);
            }
        }
    }

    /// Marks what a stored Service's spec holds as allocated, to rebuild the allocators
    /// (the repair loops' job upstream). Values outside the ranges are ignored.
    pub fn restore_spec(&mut self, spec: &Value) {
        for ip in ipv4s(spec) {
            // Already held or foreign addresses are simply skipped.
            let _ = self.ips.allocate(ip);
        }
        for port in node_ports(spec)
            .into_iter()
            .chain(int_of(spec, "healthCheckNodePort"))
        {
            if let Ok(port) = u16::try_from(port) {
                let _ = self.ports.allocate(port);
            }
        }
    }

    fn finish(&mut self, txn: Txn, result: Result<()>) -> Result<()> {
        let (undo_ips, undo_ports) = match &result {
            Ok(()) => (txn.release_ips, txn.release_ports),
            Err(_) => (txn.ips, txn.ports),
        };
        for ip in undo_ips {
            self.ips.release(ip);
        }
        for port in undo_ports {
            self.ports.release(port);
        }
        result
    }

    fn take_port(&mut self, port: i64, txn: &mut Txn) -> Result<(), AllocError> {
        let range = || AllocError::PortNotInRange {
            range: self.ports.range(),
        };
        let port = u16::try_from(port).map_err(|_| range())?;
        self.ports.allocate(port)?;
        txn.ports.push(port);
        Ok(())
    }

    fn next_port(&mut self, txn: &mut Txn) -> Result<i64, AllocError> {
        let port = self.ports.allocate_next()?;
        txn.ports.push(port);
        Ok(i64::from(port))
    }

    /// `allocClusterIPs`: one address per IP family, requested or picked.
    fn alloc_cluster_ips(&mut self, spec: &mut Value, txn: &mut Txn) -> Result<()> {
        if service_type(spec) == "ExternalName" || is_headless(service_cluster_ips(spec).as_deref())
        {
            return Ok(());
        }
        let mut ips = strings(list_of(spec, "clusterIPs"));
        for (i, _family) in list_of(spec, "ipFamilies").iter().enumerate() {
            if i >= ips.len() {
                ips.push(String::new());
            }
            if ips[i].is_empty() {
                let ip = self.ips.allocate_next().map_err(|e| {
                    ServiceAllocError::Internal(format!("failed to allocate a serviceIP: {e}"))
                })?;
                txn.ips.push(ip);
                ips[i] = ip.to_string();
            } else if let Some(IpAddr::V4(ip)) = parse_ip(&ips[i]) {
                if let Err(e) = self.ips.allocate(ip) {
                    return Err(ServiceAllocError::Invalid(vec![cluster_ip_error(
                        &ips, &ips[i], &e,
                    )]));
                }
                txn.ips.push(ip);
            }
        }
        if let Some(first) = ips.first() {
            set(spec, "clusterIP", Value::from(first.as_str()));
        }
        set(spec, "clusterIPs", Value::from(ips));
        Ok(())
    }

    /// `initNodePorts`: ports that share a port number share one node port.
    fn alloc_node_ports_create(&mut self, spec: &mut Value, txn: &mut Txn) -> Result<()> {
        if !matches!(service_type(spec), "NodePort" | "LoadBalancer") {
            return Ok(());
        }
        let should = should_allocate_node_ports(spec);
        let numbers: Vec<i64> = list_of(spec, "ports")
            .iter()
            .map(|p| int_of(p, "port").unwrap_or(0))
            .collect();
        let mut assigned = node_port_list(spec);
        let mut by_port: HashMap<i64, i64> = HashMap::new();
        for i in 0..assigned.len() {
            if assigned[i] == 0 && !should {
                continue;
            }
            let shared = by_port.get(&numbers[i]).copied().unwrap_or(0);
            if shared == 0 {
                let requested = (i..assigned.len())
                    .find(|&j| numbers[j] == numbers[i] && assigned[j] != 0)
                    .map(|j| assigned[j]);
                let np = match requested {
                    Some(np) => {
                        self.take_port(np, txn).map_err(|e| {
                            ServiceAllocError::Invalid(vec![node_port_error(i, np, &e)])
                        })?;
                        np
                    }
                    None => self.next_port(txn).map_err(|e| {
                        ServiceAllocError::Internal(format!("failed to allocate a nodePort: {e}"))
                    })?,
                };
                assigned[i] = np;
                by_port.insert(numbers[i], np);
            } else if assigned[i] != shared {
                if assigned[i] == 0 {
                    assigned[i] = shared;
                } else {
                    let np = assigned[i];
                    self.take_port(np, txn).map_err(|e| {
                        ServiceAllocError::Invalid(vec![node_port_error(i, np, &e)])
                    })?;
                }
            }
        }
        write_node_ports(spec, &assigned);
        Ok(())
    }

    /// `updateNodePorts`: keep the old ports, take new requests, free what is gone.
    fn update_node_ports(&mut self, spec: &mut Value, old: &Value, txn: &mut Txn) -> Result<()> {
        let old_ports = node_ports(old);
        let should = should_allocate_node_ports(spec);
        let protocols: Vec<String> = list_of(spec, "ports")
            .iter()
            .map(|p| crate::validation::str_or(p, "protocol", "TCP").to_string())
            .collect();
        let mut assigned = node_port_list(spec);
        let mut taken = HashSet::new();
        let mut seen = HashSet::new();
        for i in 0..assigned.len() {
            let np = assigned[i];
            if np == 0 && !should {
                continue;
            }
            if np != 0 {
                if !old_ports.contains(&np) && !taken.contains(&np) {
                    self.take_port(np, txn).map_err(|e| {
                        ServiceAllocError::Invalid(vec![node_port_error(i, np, &e)])
                    })?;
                    taken.insert(np);
                }
            } else {
                assigned[i] = self.next_port(txn).map_err(|e| {
                    ServiceAllocError::Internal(format!("failed to allocate a nodePort: {e}"))
                })?;
            }
            if !seen.insert((protocols[i].clone(), assigned[i])) {
                return Err(ServiceAllocError::Internal(format!(
                    "duplicate nodePort: {{{} {}}}",
                    protocols[i], assigned[i]
                )));
            }
        }
        write_node_ports(spec, &assigned);
        for port in old_ports.into_iter().filter(|p| !assigned.contains(p)) {
            txn.release_ports.extend(u16::try_from(port).ok());
        }
        Ok(())
    }

    /// `allocHealthCheckNodePort`, for a LoadBalancer with `externalTrafficPolicy: Local`.
    fn alloc_health_check(&mut self, spec: &mut Value, txn: &mut Txn) -> Result<()> {
        if !needs_health_check(spec) {
            return Ok(());
        }
        match int_of(spec, "healthCheckNodePort").unwrap_or(0) {
            0 => {
                let port = self.next_port(txn).map_err(|e| {
                    ServiceAllocError::Internal(format!(
                        "failed to allocate a HealthCheck NodePort 0: {e}"
                    ))
                })?;
                set(spec, "healthCheckNodePort", Value::from(port));
            }
            hc => self.take_port(hc, txn).map_err(|e| {
                ServiceAllocError::Internal(format!(
                    "failed to allocate requested HealthCheck NodePort {hc}: {e}"
                ))
            })?,
        }
        Ok(())
    }
}

fn spec_mut(svc: &mut Value) -> Option<&mut Value> {
    let obj = svc.as_object_mut()?;
    let spec = obj
        .entry("spec")
        .or_insert_with(|| Value::Object(Map::new()));
    if spec.is_null() {
        *spec = Value::Object(Map::new());
    }
    spec.is_object().then_some(spec)
}

fn set(spec: &mut Value, key: &str, value: Value) {
    if let Some(obj) = spec.as_object_mut() {
        obj.insert(key.to_string(), value);
    }
}

fn remove(spec: &mut Value, key: &str) {
    if let Some(obj) = spec.as_object_mut() {
        obj.remove(key);
    }
}

/// The IPv4 cluster IPs a spec holds (none for ExternalName or headless).
fn ipv4s(spec: &Value) -> Vec<Ipv4Addr> {
    if service_type(spec) == "ExternalName" {
        return Vec::new();
    }
    service_cluster_ips(spec)
        .unwrap_or_default()
        .iter()
        .filter_map(|ip| match parse_ip(ip) {
            Some(IpAddr::V4(v4)) => Some(v4),
            _ => None,
        })
        .collect()
}

/// Every port's `nodePort`, 0 where unset.
fn node_port_list(spec: &Value) -> Vec<i64> {
    list_of(spec, "ports")
        .iter()
        .map(|p| int_of(p, "nodePort").unwrap_or(0))
        .collect()
}

/// The node ports in use (`collectServiceNodePorts`).
fn node_ports(spec: &Value) -> Vec<i64> {
    node_port_list(spec)
        .into_iter()
        .filter(|p| *p != 0)
        .collect()
}

fn write_node_ports(spec: &mut Value, assigned: &[i64]) {
    let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) else {
        return;
    };
    for (port, np) in ports.iter_mut().zip(assigned) {
        if let Some(obj) = port.as_object_mut() {
            if *np == 0 {
                obj.remove("nodePort");
            } else {
                obj.insert("nodePort".to_string(), Value::from(*np));
            }
        }
    }
}

fn should_allocate_node_ports(spec: &Value) -> bool {
    match service_type(spec) {
        "NodePort" => true,
        "LoadBalancer" => {
            spec.get("allocateLoadBalancerNodePorts")
                .and_then(Value::as_bool)
                != Some(false)
        }
        _ => false,
    }
}

fn family_of(ip: &str) -> &'static str {
    match parse_ip(ip) {
        Some(IpAddr::V6(_)) => "IPv6",
        _ => "IPv4",
    }
}

fn policy_value(spec: &Value) -> Value {
    spec.get("ipFamilyPolicy")
        .and_then(Value::as_str)
        .map_or(Value::Null, Value::from)
}

/// `initIPFamilyFields` on a single-stack IPv4 cluster: default the family policy, check
/// the cluster IP fields, infer `ipFamilies` and refuse IPv6 or dual-stack demands.
fn init_ip_families(spec: &mut Value, old: Option<&Value>) -> Result<()> {
    if service_type(spec) == "ExternalName" {
        return Ok(());
    }
    let selectorless = spec
        .get("selector")
        .and_then(Value::as_object)
        .is_none_or(Map::is_empty);
    let headless_selectorless = str_of(spec, "clusterIP") == "None" && selectorless;
    if spec.get("ipFamilyPolicy").and_then(Value::as_str).is_none() {
        let inherited = old
            .and_then(|o| o.get("ipFamilyPolicy"))
            .and_then(Value::as_str);
        let policy = match inherited {
            Some(p) => p,
            None if headless_selectorless => "RequireDualStack",
            None => "SingleStack",
        };
        set(spec, "ipFamilyPolicy", Value::from(policy));
    }
    let errs = validate_service_cluster_ips(spec);
    if !errs.is_empty() {
        return Err(ServiceAllocError::Invalid(errs));
    }
    let mut errs = Vec::new();
    let policy = str_of(spec, "ipFamilyPolicy").to_string();
    let mut ips = strings(list_of(spec, "clusterIPs"));
    let mut families = strings(list_of(spec, "ipFamilies"));
    if let Some(old) = old {
        let (old_ips, old_families) = (
            strings(list_of(old, "clusterIPs")),
            strings(list_of(old, "ipFamilies")),
        );
        if policy == "SingleStack" {
            if str_of(old, "clusterIP") == str_of(spec, "clusterIP")
                && old_ips == ips
                && ips.len() > 1
            {
                ips.truncate(1);
            }
            if old_families == families && families.len() > 1 {
                families.truncate(1);
            }
        } else {
            if !ips.is_empty() && ips.len() < old_ips.len() {
                errs.push(FieldError::invalid(
                    "spec.ipFamilyPolicy",
                    policy_value(spec),
                    "must be 'SingleStack' to release the secondary cluster IP",
                ));
            }
            if !families.is_empty() && families.len() < old_families.len() {
                errs.push(FieldError::invalid(
                    "spec.ipFamilyPolicy",
                    policy_value(spec),
                    "must be 'SingleStack' to release the secondary IP family",
                ));
            }
        }
    }
    if policy == "SingleStack" {
        if ips.len() == 2 {
            errs.push(FieldError::invalid(
                "spec.ipFamilyPolicy",
                policy_value(spec),
                "must be 'RequireDualStack' or 'PreferDualStack' when multiple cluster IPs are specified",
            ));
        }
        if families.len() == 2 {
            errs.push(FieldError::invalid(
                "spec.ipFamilyPolicy",
                policy_value(spec),
                "must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are specified",
            ));
        }
    }
    for (i, ip) in ips.iter().enumerate() {
        if ip == "None" {
            break;
        }
        if i >= families.len() {
            match family_of(ip) {
                "IPv6" => errs.push(FieldError::invalid_go(
                    format!("spec.clusterIPs[{i}]"),
                    go_strings(Some(&ips)),
                    "IPv6 is not configured on this cluster",
                )),
                fam => families.push(fam.to_string()),
            }
        }
    }
    if !errs.is_empty() {
        return Err(ServiceAllocError::Invalid(errs));
    }
    let write = |spec: &mut Value, ips: &[String], families: &[String]| {
        if !ips.is_empty() {
            set(spec, "clusterIPs", Value::from(ips.to_vec()));
        }
        set(spec, "ipFamilies", Value::from(families.to_vec()));
    };
    if headless_selectorless {
        if families.is_empty() {
            families.push("IPv4".to_string());
        }
        if families.len() < 2 && policy != "SingleStack" {
            let other = if families[0] == "IPv4" {
                "IPv6"
            } else {
                "IPv4"
            };
            families.push(other.to_string());
        }
        write(spec, &ips, &families);
        return Ok(());
    }
    if policy == "RequireDualStack" {
        errs.push(FieldError::invalid(
            "spec.ipFamilyPolicy",
            policy_value(spec),
            "this cluster is not configured for dual-stack services",
        ));
    }
    for (i, fam) in families.iter().enumerate() {
        if fam != "IPv4" {
            errs.push(FieldError::invalid(
                format!("spec.ipFamilies[{i}]"),
                fam.as_str(),
                "not configured on this cluster",
            ));
        }
    }
    if !errs.is_empty() {
        return Err(ServiceAllocError::Invalid(errs));
    }
    if families.is_empty() {
        families.push("IPv4".to_string());
    }
    write(spec, &ips, &families);
    Ok(())
}

/// `patchAllocatedValues`: a re-applied manifest without the allocated values keeps them.
fn patch_allocated_values(spec: &mut Value, old: &Value) {
    let (new_ty, old_ty) = (
        service_type(spec).to_string(),
        service_type(old).to_string(),
    );
    if new_ty != "ExternalName" && old_ty != "ExternalName" {
        if str_of(spec, "clusterIP").is_empty() && !str_of(old, "clusterIP").is_empty() {
            set(spec, "clusterIP", Value::from(str_of(old, "clusterIP")));
        }
        if list_of(spec, "clusterIPs").is_empty() && !list_of(old, "clusterIPs").is_empty() {
            set(
                spec,
                "clusterIPs",
                Value::from(list_of(old, "clusterIPs").to_vec()),
            );
        }
    }
    let node_port_type = |t: &str| t == "NodePort" || t == "LoadBalancer";
    if node_port_type(&old_ty) && node_port_type(&new_ty) {
        let new_used: HashSet<i64> = node_ports(spec).into_iter().collect();
        let used: HashSet<i64> = node_ports(old)
            .into_iter()
            .filter(|p| new_used.contains(p))
            .collect();
        let by_name: HashMap<&str, i64> = list_of(old, "ports")
            .iter()
            .map(|p| (str_of(p, "name"), int_of(p, "nodePort").unwrap_or(0)))
            .collect();
        let names: Vec<String> = list_of(spec, "ports")
            .iter()
            .map(|p| str_of(p, "name").to_string())
            .collect();
        let mut assigned = node_port_list(spec);
        for (np, name) in assigned.iter_mut().zip(&names) {
            let old_val = by_name.get(name.as_str()).copied().unwrap_or(0);
            if *np == 0 && !used.contains(&old_val) {
                *np = old_val;
            }
        }
        write_node_ports(spec, &assigned);
    }
    if needs_health_check(old)
        && needs_health_check(spec)
        && int_of(spec, "healthCheckNodePort").unwrap_or(0) == 0
    {
        if let Some(hc) = int_of(old, "healthCheckNodePort") {
            set(spec, "healthCheckNodePort", Value::from(hc));
        }
    }
}

/// `normalizeClusterIPs` for an update: keep `clusterIP` and `clusterIPs` in step.
fn normalize_cluster_ips_update(spec: &mut Value, old: &Value) {
    let (new_ip, old_ip) = (
        str_of(spec, "clusterIP").to_string(),
        str_of(old, "clusterIP").to_string(),
    );
    let old_ips = strings(list_of(old, "clusterIPs"));
    if !old_ips.is_empty() && list_of(spec, "clusterIPs").is_empty() && old_ip == new_ip {
        set(spec, "clusterIPs", Value::from(old_ips.clone()));
    }
    if old_ip != new_ip {
        let same_plural = strings(list_of(spec, "clusterIPs")) == old_ips;
        if !old_ip.is_empty() && new_ip.is_empty() {
            if same_plural {
                remove(spec, "clusterIPs");
            }
        } else if same_plural {
            set(spec, "clusterIPs", Value::from(vec![new_ip]));
        }
    }
}

/// `dropTypeDependentFields`: after a type change, clear what the new type does not use,
/// unless the client changed it too (then validation reports it).
fn drop_type_dependent_fields(spec: &mut Value, old: &Value) {
    let (new_ty, old_ty) = (
        service_type(spec).to_string(),
        service_type(old).to_string(),
    );
    if old_ty != "ExternalName" && new_ty == "ExternalName" {
        let same_ips = str_of(old, "clusterIP") == str_of(spec, "clusterIP")
            && strings(list_of(old, "clusterIPs")) == strings(list_of(spec, "clusterIPs"));
        if same_ips {
            remove(spec, "clusterIP");
            remove(spec, "clusterIPs");
        }
        if list_of(old, "ipFamilies") == list_of(spec, "ipFamilies") {
            remove(spec, "ipFamilies");
        }
        if str_of(old, "ipFamilyPolicy") == str_of(spec, "ipFamilyPolicy") {
            remove(spec, "ipFamilyPolicy");
        }
    }
    let node_port_type = |t: &str| t == "NodePort" || t == "LoadBalancer";
    if node_port_type(&old_ty) && !node_port_type(&new_ty) {
        let old_ports: HashSet<i64> = node_ports(old).into_iter().collect();
        if node_ports(spec).iter().all(|p| old_ports.contains(p)) {
            write_node_ports(spec, &vec![0; list_of(spec, "ports").len()]);
        }
    }
    if needs_health_check(old)
        && !needs_health_check(spec)
        && int_of(old, "healthCheckNodePort") == int_of(spec, "healthCheckNodePort")
    {
        remove(spec, "healthCheckNodePort");
    }
    if new_ty != old_ty {
        let unchanged = |spec: &Value, field: &str| spec.get(field) == old.get(field);
        if new_ty != "LoadBalancer" {
            for field in ["allocateLoadBalancerNodePorts", "loadBalancerClass"] {
                if unchanged(spec, field) {
                    remove(spec, field);
                }
            }
        }
        if !node_port_type(&new_ty) && unchanged(spec, "externalTrafficPolicy") {
            remove(spec, "externalTrafficPolicy");
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::validation::validate_create;

    fn allocator() -> ServiceAllocator {
        let ips = IpAllocator::with_seed("10.96.0.0/12", 7).expect("valid CIDR");
        let ports = PortAllocator::with_seed("30000-32767", 7).expect("valid range");
        ServiceAllocator::new(ips, ports)
    }

    fn svc(name: &str, spec: Value) -> Value {
        json!({"metadata": {"name": name, "namespace": "default"}, "spec": spec})
    }

    /// Creates each Service in turn on one allocator; `expect[i]` is `Ok` or the error text.
    fn check(
        services: &[Value],
        expect: &[std::result::Result<(), &str>],
    ) -> (ServiceAllocator, Vec<Value>) {
        let mut alloc = allocator();
        let mut out = Vec::new();
        for (svc, want) in services.iter().zip(expect) {
            let mut svc = svc.clone();
            let got = alloc.allocate_create(&mut svc).map_err(|e| e.to_string());
            assert_eq!(got, want.map_err(str::to_string), "{svc}");
            out.push(svc);
        }
        (alloc, out)
    }

    #[test]
    fn seed_node_port_out_of_range() {
        let manifest = svc(
            "test-nodeport-nginx-service",
            json!({
                "selector": {"app": "nginx"}, "type": "NodePort",
                "ports": [{"protocol": "TCP", "port": 8080, "targetPort": 80, "nodePort": 58080}]
            }),
        );
        let (alloc, _) = check(
            &[manifest],
            &[Err("spec.ports[0].nodePort: Invalid value: 58080: provided port is not in the valid range. The range of valid ports is 30000-32767")],
        );
        assert_eq!(
            (alloc.ips().used(), alloc.ports().used()),
            (0, 0),
            "a failed create keeps nothing"
        );
    }

    #[test]
    fn seed_node_port_twice() {
        let spec = json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30000}]});
        let (alloc, out) = check(
            &[svc("a", spec.clone()), svc("b", spec)],
            &[Ok(()), Err("spec.ports[0].nodePort: Invalid value: 30000: provided port is already allocated")],
        );
        assert_eq!(out[0]["spec"]["ports"][0]["nodePort"], 30000);
        assert_eq!(
            alloc.ips().used(),
            1,
            "the second Service's cluster IP was given back"
        );
    }

    #[test]
    fn seed_cluster_ip_twice() {
        let spec = json!({"clusterIP": "10.96.100.80", "ports": [{"port": 80}]});
        let (_, out) = check(
            &[svc("a", spec.clone()), svc("b", spec)],
            &[Ok(()), Err("spec.clusterIPs: Invalid value: []string{\"10.96.100.80\"}: failed to allocate IP 10.96.100.80: provided IP is already allocated")],
        );
        assert_eq!(out[0]["spec"]["clusterIPs"], json!(["10.96.100.80"]));
        assert_eq!(out[0]["spec"]["ipFamilies"], json!(["IPv4"]));
        assert_eq!(out[0]["spec"]["ipFamilyPolicy"], "SingleStack");
    }

    #[test]
    fn cluster_ip_requests() {
        check(
            &[
                svc("a", json!({"clusterIP": "10.0.0.1", "ports": [{"port": 80}]})),
                svc("b", json!({"clusterIP": "fd00::1", "ports": [{"port": 80}]})),
                svc("c", json!({"ipFamilyPolicy": "RequireDualStack", "ports": [{"port": 80}]})),
                svc("d", json!({"clusterIP": "bogus", "ports": [{"port": 80}]})),
            ],
            &[
                Err("spec.clusterIPs: Invalid value: []string{\"10.0.0.1\"}: failed to allocate IP 10.0.0.1: the provided IP (10.0.0.1) is not in the valid range. The range of valid IPs is 10.96.0.0/12"),
                Err("spec.clusterIPs[0]: Invalid value: []string{\"fd00::1\"}: IPv6 is not configured on this cluster"),
                Err("spec.ipFamilyPolicy: Invalid value: \"RequireDualStack\": this cluster is not configured for dual-stack services"),
                Err("spec.clusterIPs[0]: Invalid value: \"bogus\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"),
            ],
        );
    }

    #[test]
    fn dynamic_values_avoid_the_static_block() {
        let (alloc, out) = check(
            &[
                svc(
                    "a",
                    json!({"type": "NodePort", "ports": [{"name": "tcp", "port": 53}, {"name": "udp", "port": 53, "protocol": "UDP"}]}),
                ),
                svc("h", json!({"clusterIP": "None", "ports": [{"port": 80}]})),
            ],
            &[Ok(()), Ok(())],
        );
        let spec = &out[0]["spec"];
        let ip: Ipv4Addr = spec["clusterIP"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("an address");
        assert!(
            u32::from(ip) >= u32::from(Ipv4Addr::new(10, 96, 1, 1)),
            "{ip} is above the first 256"
        );
        let np = spec["ports"][0]["nodePort"].as_i64().expect("a node port");
        assert!((30086..=32767).contains(&np), "{np}");
        assert_eq!(
            spec["ports"][1]["nodePort"], np,
            "the same port number shares its node port"
        );
        assert_eq!(alloc.ports().used(), 1);
        assert_eq!(
            out[1]["spec"]["ipFamilies"],
            json!(["IPv4", "IPv6"]),
            "headless and selectorless"
        );
        assert_eq!(out[1]["spec"]["ipFamilyPolicy"], "RequireDualStack");
        assert!(validate_create("Service", &out[0]).is_empty());
    }

    #[test]
    fn changed_cluster_ip_is_refused_on_update() {
        let mut alloc = allocator();
        let mut live = svc(
            "db",
            json!({"selector": {"app": "db"}, "ports": [{"port": 5432}]}),
        );
        alloc.allocate_create(&mut live).expect("created");
        let mut applied = svc(
            "db",
            json!({"selector": {"app": "db"}, "clusterIP": "None", "ports": [{"port": 5432}]}),
        );
        alloc
            .allocate_update(&mut applied, &live)
            .expect("nothing to allocate");
        let errs: Vec<String> = crate::validation::validate_update("Service", &applied, &live)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            errs,
            ["spec.clusterIPs[0]: Invalid value: []string{\"None\"}: may not change once set"]
        );
    }

    #[test]
    fn ip_allocator_exhaustion_and_release() {
        let mut ips = IpAllocator::with_seed("10.96.0.0/29", 1).expect("valid CIDR");
        assert_eq!(
            (ips.first(), ips.cidr(), ips.free()),
            (Ipv4Addr::new(10, 96, 0, 1), "10.96.0.0/29".to_string(), 6)
        );
        assert!(
            !ips.contains(Ipv4Addr::new(10, 96, 0, 0))
                && !ips.contains(Ipv4Addr::new(10, 96, 0, 7))
        );
        let mut got: Vec<Ipv4Addr> = (0..6)
            .map(|_| ips.allocate_next().expect("free address"))
            .collect();
        got.sort();
        assert_eq!(
            got,
            (1..=6)
                .map(|i| Ipv4Addr::new(10, 96, 0, i))
                .collect::<Vec<_>>()
        );
        assert_eq!(ips.allocate_next(), Err(AllocError::Full));
        assert_eq!(
            ips.allocate(Ipv4Addr::new(10, 96, 0, 3)),
            Err(AllocError::IpAllocated)
        );
        ips.release(Ipv4Addr::new(10, 96, 0, 3));
        assert_eq!(ips.allocate_next(), Ok(Ipv4Addr::new(10, 96, 0, 3)));
        assert_eq!(
            ips.allocate(Ipv4Addr::new(10, 96, 0, 7)).map_err(|e| e.to_string()),
            Err("the provided IP (10.96.0.7) is not in the valid range. The range of valid IPs is 10.96.0.0/29".to_string())
        );
        assert!(IpAllocator::new("10.0.0.0/8").is_err() && IpAllocator::new("fd00::/112").is_err());
    }

    #[test]
    fn port_allocator_exhaustion_and_release() {
        let mut ports = PortAllocator::with_seed("30000+20", 3).expect("valid range");
        assert_eq!(ports.range(), "30000-30019");
        let mut order = Vec::new();
        while let Ok(p) = ports.allocate_next() {
            order.push(p);
        }
        assert_eq!(order.len(), 20);
        assert!(
            order[..4].iter().all(|p| *p >= 30016),
            "upper block first: {order:?}"
        );
        assert_eq!(ports.allocate_next(), Err(AllocError::Full));
        ports.release(30005);
        assert!(!ports.has(30005));
        assert_eq!(ports.allocate(30005), Ok(()));
        assert_eq!(ports.allocate(30005), Err(AllocError::PortAllocated));
        assert_eq!(
            PortAllocator::new("30000-32767")
                .map(|p| p.range())
                .map_err(|e| e.to_string()),
            Ok("30000-32767".to_string())
        );
        assert!(PortAllocator::new("32767-30000").is_err());
    }

    #[test]
    fn updates_keep_and_release() {
        let mut alloc = allocator();
        let mut created = svc(
            "web",
            json!({"type": "NodePort", "ports": [{"name": "http", "port": 80}]}),
        );
        alloc.allocate_create(&mut created).expect("created");
        let (ip, np) = (
            created["spec"]["clusterIP"].clone(),
            created["spec"]["ports"][0]["nodePort"].clone(),
        );

        let mut reapplied = svc(
            "web",
            json!({"type": "NodePort", "ports": [{"name": "http", "port": 80}]}),
        );
        alloc
            .allocate_update(&mut reapplied, &created)
            .expect("re-applied");
        assert_eq!(
            (
                &reapplied["spec"]["clusterIP"],
                &reapplied["spec"]["ports"][0]["nodePort"]
            ),
            (&ip, &np)
        );
        assert_eq!(alloc.ports().used(), 1);

        let mut to_cluster_ip = reapplied.clone();
        to_cluster_ip["spec"]["type"] = json!("ClusterIP");
        alloc
            .allocate_update(&mut to_cluster_ip, &reapplied)
            .expect("type change");
        assert_eq!(
            to_cluster_ip["spec"]["ports"][0].get("nodePort"),
            None,
            "cleared with the type"
        );
        assert_eq!(alloc.ports().used(), 0, "node port given back");

        let mut to_external = to_cluster_ip.clone();
        to_external["spec"]["type"] = json!("ExternalName");
        to_external["spec"]["externalName"] = json!("db.example.com");
        alloc
            .allocate_update(&mut to_external, &to_cluster_ip)
            .expect("to ExternalName");
        assert_eq!(to_external["spec"].get("clusterIP"), None);
        assert_eq!(alloc.ips().used(), 0, "cluster IP given back");

        alloc.restore_spec(&created["spec"]);
        assert_eq!((alloc.ips().used(), alloc.ports().used()), (1, 1));
        alloc.release(&created);
        assert_eq!((alloc.ips().used(), alloc.ports().used()), (0, 0));
    }

    #[test]
    fn leaving_load_balancer_drops_its_fields_unless_the_client_changed_them() {
        let mut alloc = allocator();
        let mut lb = svc(
            "web",
            json!({"type": "LoadBalancer", "allocateLoadBalancerNodePorts": true,
                   "loadBalancerClass": "example.com/lb", "externalTrafficPolicy": "Cluster",
                   "ports": [{"name": "http", "port": 80}]}),
        );
        alloc.allocate_create(&mut lb).expect("created");
        let mut to_node_port = lb.clone();
        to_node_port["spec"]["type"] = json!("NodePort");
        alloc
            .allocate_update(&mut to_node_port, &lb)
            .expect("to NodePort");
        let spec = &to_node_port["spec"];
        assert_eq!(spec.get("allocateLoadBalancerNodePorts"), None);
        assert_eq!(spec.get("loadBalancerClass"), None);
        assert_eq!(spec["externalTrafficPolicy"], "Cluster", "NodePort uses it");
        let mut to_cluster_ip = to_node_port.clone();
        to_cluster_ip["spec"]["type"] = json!("ClusterIP");
        alloc
            .allocate_update(&mut to_cluster_ip, &to_node_port)
            .expect("to ClusterIP");
        assert_eq!(to_cluster_ip["spec"].get("externalTrafficPolicy"), None);
    }
}
