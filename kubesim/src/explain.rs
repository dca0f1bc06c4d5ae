//! `kubesim explain service`: the path a packet to a Service takes from one node, told
//! from the live system — the Service and its endpoints from the API, the rules
//! kube-proxy wrote on that node (`iptables-save`, or `nft list` in nftables mode), and
//! for each endpoint on another node the flannel route, neighbour and FDB entry that
//! carry the packet there.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::Command;

use anyhow::Context;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};

/// Runs `argv` inside the named namespace `netns` (as `ip netns exec` does) and returns
/// its output; the command line is shown with the output so a reader can run it.
fn inside(netns: &str, argv: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", netns])
        .args(argv)
        .output()
        .with_context(|| format!("running {} in {netns}", argv.join(" ")))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// An endpoint as the explanation names it.
struct Backend {
    address: String,
    pod: String,
    node: String,
}

/// Explains Service `namespace/name` as seen from `node` (a node's name, which is also
/// its namespace's name).
pub async fn service(
    client: kube::Client,
    namespace: &str,
    name: &str,
    node: &str,
) -> anyhow::Result<String> {
    let service = Api::<Service>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .with_context(|| format!("service {namespace}/{name}"))?;
    let spec = service.spec.clone().unwrap_or_default();
    let cluster_ip = spec.cluster_ip.clone().unwrap_or_default();
    let slices = Api::<EndpointSlice>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={name}")))
        .await?;
    let pods: BTreeMap<String, (String, String)> = Api::<Pod>::namespaced(client, namespace)
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|p| {
            let ip = p.status.as_ref()?.pod_ip.clone()?;
            let node = p.spec.as_ref()?.node_name.clone().unwrap_or_default();
            Some((ip, (p.metadata.name.unwrap_or_default(), node)))
        })
        .collect();
    let backends: Vec<Backend> = slices
        .items
        .iter()
        .flat_map(|s| s.endpoints.iter())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .flat_map(|e| e.addresses.iter())
        .map(|address| {
            let (pod, node) = pods.get(address).cloned().unwrap_or_default();
            Backend {
                address: address.clone(),
                pod,
                node,
            }
        })
        .collect();

    let mut out = String::new();
    let ports: Vec<String> = spec
        .ports
        .iter()
        .flatten()
        .map(|p| {
            let target = p
                .target_port
                .as_ref()
                .map(|t| match t {
                    k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n) => {
                        n.to_string()
                    }
                    k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s) => {
                        s.clone()
                    }
                })
                .unwrap_or_else(|| p.port.to_string());
            let node_port = p
                .node_port
                .map(|n| format!(", node port {n}"))
                .unwrap_or_default();
            format!(
                "{}/{} → {target}{node_port}",
                p.port,
                p.protocol.as_deref().unwrap_or("TCP")
            )
        })
        .collect();
    let _ = writeln!(
        out,
        "Service {namespace}/{name}: {} {cluster_ip}, ports {}; seen from node {node}.",
        spec.type_.as_deref().unwrap_or("ClusterIP"),
        ports.join(", ")
    );
    let _ = writeln!(
        out,
        "\nIts ready endpoints (EndpointSlices built from the selector):"
    );
    for b in &backends {
        let _ = writeln!(out, "  {:<15} pod {} on {}", b.address, b.pod, b.node);
    }
    if backends.is_empty() {
        let _ = writeln!(
            out,
            "  none: kube-proxy rejects connections to it (connection refused)."
        );
    }

    let nft = inside(node, &["nft", "list", "table", "ip", "kube-proxy"])?;
    if !nft.trim().is_empty() {
        let _ = writeln!(
            out,
            "\n1. kube-proxy runs in nftables mode. A packet to {cluster_ip} is looked up in the\n   service-ips map ($ nft list table ip kube-proxy):"
        );
        for line in nft
            .lines()
            .filter(|l| l.contains(&cluster_ip) || l.contains(&format!("{namespace}/{name}/")))
        {
            let _ = writeln!(out, "     {}", line.trim());
        }
    } else {
        let nat = inside(node, &["iptables-save", "-t", "nat"])?;
        let comment = format!("{namespace}/{name}");
        let service_rules: Vec<&str> = nat
            .lines()
            .filter(|l| l.starts_with("-A KUBE-SERVICES") && l.contains(&comment))
            .collect();
        let chains: Vec<String> = service_rules
            .iter()
            .filter_map(|l| l.split(" -j ").nth(1))
            .map(str::to_owned)
            .collect();
        let _ = writeln!(
            out,
            "\n1. A pod (or the node itself) sends to {cluster_ip}. The nat table's PREROUTING (from pods)\n   and OUTPUT (from the node) jump to KUBE-SERVICES, where one rule matches the Service\n   ($ ip netns exec {node} iptables-save -t nat):"
        );
        for rule in &service_rules {
            let _ = writeln!(out, "     {rule}");
        }
        for chain in chains
            .iter()
            .filter(|c| c.starts_with("KUBE-SVC-") || c.starts_with("KUBE-SVL-"))
        {
            let _ = writeln!(
                out,
                "\n2. {chain} marks traffic from outside the pod network for masquerading and picks an\n   endpoint at random: each rule takes its share (1/n, then 1/(n-1), …), the last takes the rest:"
            );
            for rule in nat
                .lines()
                .filter(|l| l.starts_with(&format!("-A {chain} ")))
            {
                let _ = writeln!(out, "     {rule}");
            }
        }
        let _ = writeln!(
            out,
            "\n3. Each KUBE-SEP chain rewrites the destination to its endpoint (DNAT):"
        );
        for rule in nat
            .lines()
            .filter(|l| l.starts_with("-A KUBE-SEP-") && l.contains("DNAT") && l.contains(&comment))
        {
            let _ = writeln!(out, "     {rule}");
        }
    }

    let routes = inside(node, &["ip", "route", "show", "dev", "flannel.1"])?;
    let neighbours = inside(node, &["ip", "neigh", "show", "dev", "flannel.1"])?;
    let fdb = inside(node, &["bridge", "fdb", "show", "dev", "flannel.1"])?;
    let _ = writeln!(
        out,
        "\n4. After the DNAT the packet is routed to the endpoint:"
    );
    for b in &backends {
        if b.node == node {
            let _ = writeln!(
                out,
                "   {} ({}) is on this node: the packet goes out cni0, the bridge of this node's pods.",
                b.address, b.pod
            );
            continue;
        }
        let Some(route) = routes.lines().find(|r| covers(r, &b.address)) else {
            let _ = writeln!(
                out,
                "   {} ({}) on {}: no flannel route on this node.",
                b.address, b.pod, b.node
            );
            continue;
        };
        let gateway = route.split_whitespace().nth(2).unwrap_or_default();
        let mac = neighbours
            .lines()
            .find(|n| n.split_whitespace().next() == Some(gateway))
            .and_then(|n| n.split("lladdr ").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_default();
        let dst = fdb
            .lines()
            .find(|f| f.starts_with(mac) && f.contains(" dst "))
            .and_then(|f| f.split(" dst ").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "   {} ({}) is on {}: route `{}`; {} is {} (neighbour), whose VXLAN endpoint is\n   {} (FDB): the frame is wrapped in UDP to {}:8472 and crosses the underlay.",
            b.address, b.pod, b.node, route.trim(), gateway, mac, dst, dst
        );
    }
    Ok(out)
}

/// Whether a route line (`10.244.1.0/24 via …`) covers `address`.
fn covers(route: &str, address: &str) -> bool {
    let Some((net, prefix)) = route
        .split_whitespace()
        .next()
        .and_then(|c| c.split_once('/'))
    else {
        return false;
    };
    let (Ok(net), Ok(prefix), Ok(ip)) = (
        net.parse::<std::net::Ipv4Addr>(),
        prefix.parse::<u32>(),
        address.parse::<std::net::Ipv4Addr>(),
    ) else {
        return false;
    };
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix.min(32))
    };
    u32::from(net) & mask == u32::from(ip) & mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_cover_their_subnet_only() {
        let route = "10.244.1.0/24 via 10.244.1.0 onlink";
        assert!(covers(route, "10.244.1.7"));
        assert!(!covers(route, "10.244.2.7"));
        assert!(!covers("default via 192.168.1.1", "10.244.1.7"));
    }
}
