//! The kernel side, over rtnetlink: the bridge, the veth pair, the container's address
//! and default route. Netlink sockets talk to the namespace of the thread that opened
//! them, so work inside the container runs on a short-lived thread that entered
//! `CNI_NETNS` with `setns`; the plugin's own threads stay in the namespace it was
//! started in, and nothing here ever names the root namespace.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;

use futures::TryStreamExt;
use nix::errno::Errno;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::LinkMessage;
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};
use rtnetlink::{Handle, LinkBridge, LinkBridgePort, LinkUnspec, LinkVeth, RouteMessageBuilder};

use netns::{add_address, format_mac, is_errno, link_by_name, set_up};

use crate::config::NetConf;
use crate::error::{Error, Result};

/// The hardware address of a link, as `aa:bb:…`.
pub fn mac_of(link: &LinkMessage) -> String {
    netns::mac_of(link)
        .map(|mac| format_mac(&mac))
        .unwrap_or_default()
}

/// The bridge of the configuration, created with the gateway address and set up if
/// missing.
pub async fn ensure_bridge(handle: &Handle, conf: &NetConf) -> Result<LinkMessage> {
    if link_by_name(handle, &conf.bridge).await?.is_none() {
        match handle
            .link()
            .add(LinkBridge::new(&conf.bridge).build())
            .execute()
            .await
        {
            Ok(()) => {}
            Err(e) if is_errno(&e, Errno::EEXIST) => {}
            Err(e) => {
                return Err(Error::netlink(
                    format!("creating bridge {}", conf.bridge),
                    e,
                ))
            }
        }
    }
    let bridge = link_by_name(handle, &conf.bridge)
        .await?
        .ok_or_else(|| Error::netlink(format!("bridge {}", conf.bridge), "vanished"))?;
    let index = bridge.header.index;
    if conf.is_gateway {
        add_address(
            handle,
            index,
            conf.gateway,
            conf.subnet.prefix,
            &conf.bridge,
        )
        .await?;
    }
    set_up(handle, index, &conf.bridge).await?;
    Ok(bridge)
}

/// Creates the veth pair `host`/`peer`, moves `peer` into `netns`, attaches `host` to
/// the bridge (hairpin on when asked) and sets it up. Returns the host side.
pub async fn create_veth(
    handle: &Handle,
    conf: &NetConf,
    bridge: u32,
    host: &str,
    peer: &str,
    netns: &File,
) -> Result<LinkMessage> {
    let mut veth = LinkVeth::new(host, peer);
    if let Some(mtu) = conf.mtu {
        veth = veth.mtu(mtu);
    }
    handle
        .link()
        .add(veth.build())
        .execute()
        .await
        .map_err(|e| Error::netlink(format!("creating veth {host}"), e))?;
    let peer_link = link_by_name(handle, peer)
        .await?
        .ok_or_else(|| Error::netlink(format!("veth peer {peer}"), "vanished"))?;
    handle
        .link()
        .set(
            LinkUnspec::new_with_index(peer_link.header.index)
                .setns_by_fd(netns.as_raw_fd())
                .build(),
        )
        .execute()
        .await
        .map_err(|e| Error::netlink(format!("moving {peer} into the container"), e))?;
    let host_link = link_by_name(handle, host)
        .await?
        .ok_or_else(|| Error::netlink(format!("veth {host}"), "vanished"))?;
    let index = host_link.header.index;
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).controller(bridge).build())
        .execute()
        .await
        .map_err(|e| Error::netlink(format!("attaching {host} to {}", conf.bridge), e))?;
    if conf.hairpin_mode {
        handle
            .link()
            .set_port(LinkBridgePort::new(index).hairpin(true).build())
            .execute()
            .await
            .map_err(|e| Error::netlink(format!("hairpin mode on {host}"), e))?;
    }
    set_up(handle, index, host).await?;
    Ok(host_link)
}

/// Inside the container: renames `peer` to `ifname`, sets the MTU, address and default
/// route, and sets it and `lo` up. Returns the container interface.
pub async fn configure_container(
    handle: &Handle,
    conf: &NetConf,
    peer: &str,
    ifname: &str,
    ip: Ipv4Addr,
) -> Result<LinkMessage> {
    let link = link_by_name(handle, peer)
        .await?
        .ok_or_else(|| Error::netlink(format!("veth peer {peer}"), "not in the container"))?;
    let index = link.header.index;
    let mut rename = LinkUnspec::new_with_index(index).name(ifname.to_owned());
    if let Some(mtu) = conf.mtu {
        rename = rename.mtu(mtu);
    }
    handle
        .link()
        .set(rename.build())
        .execute()
        .await
        .map_err(|e| Error::netlink(format!("renaming {peer} to {ifname}"), e))?;
    set_up(handle, index, ifname).await?;
    if let Some(lo) = link_by_name(handle, "lo").await? {
        set_up(handle, lo.header.index, "lo").await?;
    }
    add_address(handle, index, ip, conf.subnet.prefix, ifname).await?;
    handle
        .route()
        .add(
            RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(conf.gateway)
                .output_interface(index)
                .build(),
        )
        .execute()
        .await
        .map_err(|e| Error::netlink(format!("default route via {}", conf.gateway), e))?;
    link_by_name(handle, ifname)
        .await?
        .ok_or_else(|| Error::netlink(format!("interface {ifname}"), "vanished"))
}

/// Deletes the link called `name` if it exists.
pub async fn delete_link(handle: &Handle, name: &str) -> Result<()> {
    let Some(link) = link_by_name(handle, name).await? else {
        return Ok(());
    };
    match handle.link().del(link.header.index).execute().await {
        Ok(()) => Ok(()),
        Err(e) if is_errno(&e, Errno::ENODEV) => Ok(()),
        Err(e) => Err(Error::netlink(format!("deleting {name}"), e)),
    }
}

/// Checks inside the container that `ifname` exists, carries `ip/prefix` and that the
/// default route goes through the gateway.
pub async fn check_container(
    handle: &Handle,
    conf: &NetConf,
    ifname: &str,
    ip: Ipv4Addr,
) -> Result<()> {
    let link = link_by_name(handle, ifname)
        .await?
        .ok_or_else(|| Error::Check(format!("interface {ifname} is missing")))?;
    let index = link.header.index;
    let addresses = netns::link_addresses(handle, index, ifname).await?;
    let has_address = addresses.iter().any(|a| {
        a.header.prefix_len == conf.subnet.prefix
            && a.attributes
                .iter()
                .any(|attr| matches!(attr, AddressAttribute::Address(IpAddr::V4(v)) if *v == ip))
    });
    if !has_address {
        return Err(Error::Check(format!(
            "{ifname} does not have {ip}/{}",
            conf.subnet.prefix
        )));
    }
    let routes: Vec<_> = handle
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute()
        .try_collect()
        .await
        .map_err(|e| Error::netlink("listing routes", e))?;
    let has_default = routes.iter().any(|r| {
        r.header.destination_prefix_length == 0
            && r.attributes.iter().any(|attr| {
                matches!(attr, RouteAttribute::Gateway(RouteAddress::Inet(gw)) if *gw == conf.gateway)
            })
            && r.attributes
                .iter()
                .any(|attr| matches!(attr, RouteAttribute::Oif(oif) if *oif == index))
    });
    if !has_default {
        return Err(Error::Check(format!(
            "no default route via {} on {ifname}",
            conf.gateway
        )));
    }
    Ok(())
}
