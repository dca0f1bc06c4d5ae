//! The kernel half of flannel: the VXLAN device and its neighbour, FDB and route
//! entries, programmed over an rtnetlink [`Handle`] in whichever namespace the handle
//! was opened. The calls are the ones flannel makes through vishvananda/netlink.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use nix::errno::Errno;
use rtnetlink::packet_route::address::AddressMessage;
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourHeader, NeighbourMessage,
    NeighbourState,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteType,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, LinkVxlan, RouteMessageBuilder};

use super::plan::{Changes, Entries, FdbEntry, Mac, Neighbour, Route};
use super::{Error, Result, ENCAP_OVERHEAD};
use crate::topology::Ipv4Net;

/// The VXLAN device to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSpec {
    pub vni: u32,
    /// The UDP destination port.
    pub port: u16,
    /// The node's underlay address, the tunnel's source.
    pub local: Ipv4Addr,
    /// The underlay interface, e.g. `eth0`; the device's MTU is its MTU minus 50.
    pub underlay: String,
    /// The node's pod CIDR; the device gets its network address as a /32.
    pub pod_cidr: Ipv4Net,
}

impl DeviceSpec {
    /// `flannel.<vni>`.
    pub fn name(&self) -> String {
        format!("flannel.{}", self.vni)
    }
}

/// The device as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Device {
    pub index: u32,
    /// The VTEP MAC, whatever the kernel gave the device; nodes publish it.
    pub mac: Mac,
    pub mtu: u32,
}

/// An interface's index, first IPv4 address and MTU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interface {
    pub index: u32,
    pub ip: Ipv4Addr,
    pub mtu: u32,
}

/// Reads the interface `name`: flannel's external interface.
pub async fn interface(handle: &Handle, name: &str) -> Result<Interface> {
    let link = netns::require_link(handle, name).await?;
    let index = link.header.index;
    let mtu = mtu_of(&link).ok_or_else(|| Error::Device(format!("{name} reports no MTU")))?;
    let ip = ipv4_addresses(handle, index)
        .await?
        .into_iter()
        .map(|(ip, _, _)| ip)
        .next()
        .ok_or_else(|| Error::Device(format!("{name} has no IPv4 address")))?;
    Ok(Interface { index, ip, mtu })
}

/// Makes the VXLAN device of `spec` (VNI, local address, underlay device, UDP port,
/// no learning, MTU of the underlay minus 50), gives it the pod CIDR's network
/// address as a /32 and sets it up. A device that is already there with a compatible
/// configuration is kept (with its MAC); an incompatible one is recreated, as flannel
/// does. Returns the device as the kernel reports it.
pub async fn ensure_device(handle: &Handle, spec: &DeviceSpec) -> Result<Device> {
    let name = spec.name();
    let underlay = netns::require_link(handle, &spec.underlay).await?;
    let underlay_mtu = mtu_of(&underlay)
        .ok_or_else(|| Error::Device(format!("{} reports no MTU", spec.underlay)))?;
    let mtu = underlay_mtu.saturating_sub(ENCAP_OVERHEAD);
    if let Some(existing) = netns::link_by_name(handle, &name).await? {
        match incompatibility(&existing, spec, underlay.header.index) {
            None => tracing::debug!(device = %name, "vxlan device already exists"),
            Some(reason) => {
                tracing::warn!(device = %name, %reason, "vxlan device exists with an incompatible configuration, recreating it");
                handle
                    .link()
                    .del(existing.header.index)
                    .execute()
                    .await
                    .map_err(|e| Error::netlink(format!("deleting {name}"), e))?;
            }
        }
    }
    if netns::link_by_name(handle, &name).await?.is_none() {
        handle
            .link()
            .add(
                LinkVxlan::new(&name, spec.vni)
                    .dev(underlay.header.index)
                    .local(spec.local)
                    .port(spec.port)
                    .learning(false)
                    .mtu(mtu)
                    .build(),
            )
            .execute()
            .await
            .map_err(|e| Error::netlink(format!("creating {name}"), e))?;
    }
    let index = netns::require_link(handle, &name).await?.header.index;
    ensure_only_address(handle, index, spec.pod_cidr.network(), &name).await?;
    netns::set_up(handle, index, &name).await?;
    let link = netns::require_link(handle, &name).await?;
    Ok(Device {
        index,
        mac: netns::mac_of(&link).ok_or_else(|| Error::Device(format!("{name} has no MAC")))?,
        mtu: mtu_of(&link).ok_or_else(|| Error::Device(format!("{name} reports no MTU")))?,
    })
}

/// Why the existing link cannot serve as the device of `spec`, as flannel's
/// `vxlanLinksIncompat` decides it (attributes the kernel does not report are not
/// compared).
fn incompatibility(link: &LinkMessage, spec: &DeviceSpec, underlay: u32) -> Option<String> {
    let infos = link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => Some(infos),
        _ => None,
    });
    let is_vxlan = infos.is_some_and(|infos| {
        infos
            .iter()
            .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Vxlan)))
    });
    if !is_vxlan {
        return Some("link type: not vxlan".to_owned());
    }
    let data = infos
        .into_iter()
        .flatten()
        .find_map(|i| match i {
            LinkInfo::Data(InfoData::Vxlan(data)) => Some(data.as_slice()),
            _ => None,
        })
        .unwrap_or_default();
    data.iter().find_map(|attr| match *attr {
        InfoVxlan::Id(vni) if vni != spec.vni => Some(format!("vni: {} vs {vni}", spec.vni)),
        InfoVxlan::Link(index) if index != underlay => {
            Some(format!("vtep (external) interface: {underlay} vs {index}"))
        }
        InfoVxlan::Local(ip) if ip != spec.local => {
            Some(format!("vtep (external) IP: {} vs {ip}", spec.local))
        }
        InfoVxlan::Port(port) if port != spec.port => {
            Some(format!("port: {} vs {port}", spec.port))
        }
        _ => None,
    })
}

/// Leaves `ip/32` as the only IPv4 address of the link `index`.
async fn ensure_only_address(handle: &Handle, index: u32, ip: Ipv4Addr, what: &str) -> Result<()> {
    let mut present = false;
    for (addr, prefix, message) in ipv4_addresses(handle, index).await? {
        if addr == ip && prefix == 32 {
            present = true;
            continue;
        }
        handle
            .address()
            .del(message)
            .execute()
            .await
            .map_err(|e| Error::netlink(format!("removing {addr}/{prefix} from {what}"), e))?;
    }
    if !present {
        netns::add_address(handle, index, ip, 32, what).await?;
    }
    Ok(())
}

async fn ipv4_addresses(
    handle: &Handle,
    index: u32,
) -> Result<Vec<(Ipv4Addr, u8, AddressMessage)>> {
    Ok(netns::link_addresses(handle, index, "the VXLAN device")
        .await?
        .into_iter()
        .filter_map(|m| Some((netns::ipv4_of(&m)?, m.header.prefix_len, m)))
        .collect())
}

fn mtu_of(link: &LinkMessage) -> Option<u32> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Mtu(mtu) => Some(*mtu),
        _ => None,
    })
}

/// The permanent neighbours, FDB entries with a destination, and main-table routes
/// with a gateway on `device`, as the kernel reports them.
pub async fn current(handle: &Handle, device: &str) -> Result<Entries> {
    let index = netns::require_link(handle, device).await?.header.index;
    let mut entries = Entries::default();
    for message in neighbours(handle, AddressFamily::Inet).await? {
        if message.header.ifindex != index || message.header.state != NeighbourState::Permanent {
            continue;
        }
        let ip = message.attributes.iter().find_map(|a| match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
            _ => None,
        });
        if let (Some(ip), Some(mac)) = (ip, lladdr(&message)) {
            entries.neighbours.insert(Neighbour { ip, mac });
        }
    }
    for message in neighbours(handle, AddressFamily::Bridge).await? {
        if message.header.ifindex != index || message.header.state != NeighbourState::Permanent {
            continue;
        }
        let dst = message.attributes.iter().find_map(|a| match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
            NeighbourAttribute::Destination(NeighbourAddress::Other(bytes)) => {
                <[u8; 4]>::try_from(bytes.as_slice())
                    .ok()
                    .map(Ipv4Addr::from)
            }
            _ => None,
        });
        if let (Some(dst), Some(mac)) = (dst, lladdr(&message)) {
            entries.fdb.insert(FdbEntry { mac, dst });
        }
    }
    let routes: Vec<RouteMessage> = handle
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute()
        .try_collect()
        .await
        .map_err(|e| Error::netlink("listing routes", e))?;
    for message in routes {
        if message.header.table != RouteHeader::RT_TABLE_MAIN
            || message.header.kind != RouteType::Unicast
        {
            continue;
        }
        let mut oif = None;
        let mut dst = None;
        let mut gateway = None;
        for attr in &message.attributes {
            match attr {
                RouteAttribute::Oif(i) => oif = Some(*i),
                RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = Some(*ip),
                RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gateway = Some(*ip),
                _ => {}
            }
        }
        if let (Some(oif), Some(dst), Some(gateway)) = (oif, dst, gateway) {
            if oif == index {
                entries.routes.insert(Route {
                    dst,
                    prefix: message.header.destination_prefix_length,
                    gateway,
                });
            }
        }
    }
    Ok(entries)
}

async fn neighbours(handle: &Handle, family: AddressFamily) -> Result<Vec<NeighbourMessage>> {
    handle
        .neighbours()
        .get()
        .set_address_family(family)
        .execute()
        .try_collect()
        .await
        .map_err(|e| Error::netlink(format!("listing {family:?} neighbours"), e))
}

fn lladdr(message: &NeighbourMessage) -> Option<Mac> {
    message.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(bytes) => bytes.as_slice().try_into().ok(),
        _ => None,
    })
}

/// Applies `changes` to `device`: stale routes, FDB entries and neighbours go first;
/// then, per flannel's order, neighbours, FDB entries and last the routes (so the
/// kernel never resolves a gateway it has no entry for). Entries already gone are
/// not an error when removing.
pub async fn apply(handle: &Handle, device: &str, changes: &Changes) -> Result<()> {
    let index = netns::require_link(handle, device).await?.header.index;
    let gone = |e: &rtnetlink::Error| {
        netns::is_errno(e, Errno::ENOENT) || netns::is_errno(e, Errno::ESRCH)
    };
    for route in &changes.remove.routes {
        match handle
            .route()
            .del(route_message(index, route))
            .execute()
            .await
        {
            Err(e) if !gone(&e) => {
                return Err(Error::netlink(format!("removing route {route:?}"), e))
            }
            _ => {}
        }
    }
    for entry in &changes.remove.fdb {
        match handle
            .neighbours()
            .del(fdb_message(index, entry))
            .execute()
            .await
        {
            Err(e) if !gone(&e) => {
                return Err(Error::netlink(format!("removing fdb {entry:?}"), e))
            }
            _ => {}
        }
    }
    for neighbour in &changes.remove.neighbours {
        match handle
            .neighbours()
            .del(neighbour_message(index, neighbour))
            .execute()
            .await
        {
            Err(e) if !gone(&e) => {
                return Err(Error::netlink(
                    format!("removing neighbour {neighbour:?}"),
                    e,
                ))
            }
            _ => {}
        }
    }
    for neighbour in &changes.add.neighbours {
        handle
            .neighbours()
            .add(index, IpAddr::V4(neighbour.ip))
            .link_layer_address(&neighbour.mac)
            .state(NeighbourState::Permanent)
            .kind(RouteType::Unicast)
            .replace()
            .execute()
            .await
            .map_err(|e| Error::netlink(format!("adding neighbour {neighbour:?}"), e))?;
    }
    for entry in &changes.add.fdb {
        handle
            .neighbours()
            .add_bridge(index, &entry.mac)
            .destination(IpAddr::V4(entry.dst))
            .flags(NeighbourFlags::Own)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(|e| Error::netlink(format!("adding fdb {entry:?}"), e))?;
    }
    for route in &changes.add.routes {
        handle
            .route()
            .add(route_message(index, route))
            .replace()
            .execute()
            .await
            .map_err(|e| Error::netlink(format!("adding route {route:?}"), e))?;
    }
    Ok(())
}

/// `dst/prefix via gateway dev <index> onlink`, protocol boot as flannel's routes.
fn route_message(index: u32, route: &Route) -> RouteMessage {
    RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(route.dst, route.prefix)
        .gateway(route.gateway)
        .output_interface(index)
        .protocol(RouteProtocol::Boot)
        .onlink()
        .build()
}

fn neighbour_message(index: u32, neighbour: &Neighbour) -> NeighbourMessage {
    let mut message = NeighbourMessage::default();
    message.header = NeighbourHeader {
        family: AddressFamily::Inet,
        ifindex: index,
        state: NeighbourState::Permanent,
        flags: NeighbourFlags::empty(),
        kind: RouteType::Unicast,
    };
    message.attributes = vec![
        NeighbourAttribute::Destination(NeighbourAddress::Inet(neighbour.ip)),
        NeighbourAttribute::LinkLayerAddress(neighbour.mac.to_vec()),
    ];
    message
}

/// An AF_BRIDGE neighbour with NTF_SELF: the vxlan driver's own FDB entry.
fn fdb_message(index: u32, entry: &FdbEntry) -> NeighbourMessage {
    let mut message = NeighbourMessage::default();
    message.header = NeighbourHeader {
        family: AddressFamily::Bridge,
        ifindex: index,
        state: NeighbourState::Permanent,
        flags: NeighbourFlags::Own,
        kind: RouteType::Unspec,
    };
    message.attributes = vec![
        NeighbourAttribute::LinkLayerAddress(entry.mac.to_vec()),
        NeighbourAttribute::Destination(NeighbourAddress::Inet(entry.dst)),
    ];
    message
}
