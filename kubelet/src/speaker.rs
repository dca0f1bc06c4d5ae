//! The layer-2 speaker of a node, as MetalLB's speaker announces in layer-2 mode:
//! for every address the load-balancer controller wrote into a Service's
//! `status.loadBalancer.ingress`, one node answers ARP on the underlay, so packets for
//! the address reach that node and its kube-proxy forwards them.
//!
//! Every speaker sees the same Nodes, Services and EndpointSlices and elects the same
//! node for an address without talking to the others ([`announcer`]): among the Ready
//! nodes not labelled `node.kubernetes.io/exclude-from-external-load-balancers`
//! (and, under `externalTrafficPolicy: Local`, holding a ready endpoint of the
//! Service), the one whose `sha256(node#ip)` sorts first. When that node goes away,
//! the next one wins. The winner adds the address as a /32 to its interface under the
//! label `<interface>:lb` (so `ip addr` shows it, and the kernel answers ARP for it)
//! and sends a gratuitous ARP with `arping -U`, which moves the neighbours' caches
//! over at once; a node that stops winning removes it.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::Handle;
use tokio::sync::Notify;

/// Nodes with this label never announce (the Kubernetes well-known label).
pub const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Netns(#[from] netns::Error),
    #[error("watching the cluster: {0}")]
    Watch(String),
    #[error("interface {0} not found")]
    NoInterface(String),
}

/// How a speaker runs.
#[derive(Debug, Clone)]
pub struct SpeakerOptions {
    /// The Node this speaker runs on.
    pub node: String,
    /// The underlay interface addresses are announced on.
    pub interface: String,
    /// The `loadBalancerClass` whose addresses are announced; none announces those of
    /// Services without a class.
    pub class: Option<String>,
}

fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

fn key(node: &str, ip: Ipv4Addr) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, format!("{node}#{ip}").as_bytes())
        .as_ref()
        .to_vec()
}

/// The node that announces `ip` of `service`, if any may. Pure.
pub fn announcer(
    service: &Service,
    ip: Ipv4Addr,
    nodes: &[Node],
    slices: &[EndpointSlice],
) -> Option<String> {
    let local_only = service
        .spec
        .as_ref()
        .and_then(|s| s.external_traffic_policy.as_deref())
        == Some("Local");
    let with_endpoints: BTreeSet<&str> = if local_only {
        let (namespace, name) = (service.namespace(), service.name_any());
        slices
            .iter()
            .filter(|s| {
                s.namespace() == namespace && s.labels().get(SERVICE_NAME_LABEL) == Some(&name)
            })
            .flat_map(|s| &s.endpoints)
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
            .filter_map(|e| e.node_name.as_deref())
            .collect()
    } else {
        BTreeSet::new()
    };
    nodes
        .iter()
        .filter(|n| is_ready(n) && !n.labels().contains_key(EXCLUDE_LABEL))
        .map(|n| n.name_any())
        .filter(|n| !local_only || with_endpoints.contains(n.as_str()))
        .min_by_key(|n| key(n, ip))
}

/// The addresses `node` announces. Pure.
pub fn announced_by(
    node: &str,
    class: Option<&str>,
    services: &[Service],
    nodes: &[Node],
    slices: &[EndpointSlice],
) -> BTreeSet<Ipv4Addr> {
    services
        .iter()
        .filter(|s| {
            s.spec.as_ref().is_some_and(|spec| {
                spec.type_.as_deref() == Some("LoadBalancer")
                    && spec.load_balancer_class.as_deref() == class
            })
        })
        .flat_map(|s| {
            s.status
                .as_ref()
                .and_then(|st| st.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|i| i.ip.as_deref()?.parse::<Ipv4Addr>().ok())
                .filter(|ip| announcer(s, *ip, nodes, slices).as_deref() == Some(node))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The label of the announced addresses on `interface` (at most 15 bytes, as the
/// kernel allows).
pub fn label(interface: &str) -> String {
    let mut label = format!("{interface}:lb");
    label.truncate(15);
    label
}

async fn interface_index(handle: &Handle, interface: &str) -> Result<u32, Error> {
    netns::link_by_name(handle, interface)
        .await?
        .map(|link| link.header.index)
        .ok_or_else(|| Error::NoInterface(interface.to_owned()))
}

/// The announced addresses on the link: its /32s under `label`.
async fn present(
    handle: &Handle,
    index: u32,
    label: &str,
) -> Result<Vec<(Ipv4Addr, AddressMessage)>, Error> {
    Ok(
        netns::link_addresses(handle, index, "the announcing interface")
            .await?
            .into_iter()
            .filter(|m| m.header.prefix_len == 32)
            .filter(|m| {
                m.attributes
                    .iter()
                    .any(|a| matches!(a, AddressAttribute::Label(l) if l == label))
            })
            .filter_map(|m| Some((netns::ipv4_of(&m)?, m)))
            .collect(),
    )
}

/// Makes the announced addresses on the link exactly `wanted`; returns those added.
async fn apply(
    handle: &Handle,
    interface: &str,
    wanted: &BTreeSet<Ipv4Addr>,
) -> Result<Vec<Ipv4Addr>, Error> {
    let index = interface_index(handle, interface).await?;
    let label = label(interface);
    let mut have = BTreeSet::new();
    for (ip, message) in present(handle, index, &label).await? {
        if wanted.contains(&ip) {
            have.insert(ip);
            continue;
        }
        handle
            .address()
            .del(message)
            .execute()
            .await
            .map_err(|e| netns::Error::netlink(format!("removing {ip}/32"), e))?;
        tracing::info!(%ip, "stopped announcing");
    }
    let mut added = Vec::new();
    for ip in wanted.difference(&have) {
        let mut request = handle.address().add(index, IpAddr::V4(*ip), 32);
        request
            .message_mut()
            .attributes
            .push(AddressAttribute::Label(label.clone()));
        match request.execute().await {
            Ok(()) => added.push(*ip),
            Err(e) if netns::is_errno(&e, nix::errno::Errno::EEXIST) => {}
            Err(e) => return Err(netns::Error::netlink(format!("adding {ip}/32"), e).into()),
        }
    }
    Ok(added)
}

/// Tells the neighbours on `interface` that `ip` is here now.
async fn gratuitous_arp(interface: &str, ip: Ipv4Addr) {
    let run = tokio::process::Command::new("arping")
        .args(["-U", "-c", "2", "-w", "2", "-I", interface])
        .arg(ip.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output();
    match tokio::time::timeout(Duration::from_secs(5), run).await {
        Ok(Ok(_)) => {}
        Ok(Err(err)) => {
            tracing::warn!(%err, %ip, "gratuitous ARP: running arping (package iputils-arping)")
        }
        Err(_) => tracing::warn!(%ip, "gratuitous ARP: arping did not finish"),
    }
}

/// A `for_each` callback that wakes the sync loop.
fn notify<T>(changed: &Arc<Notify>) -> impl FnMut(T) -> futures::future::Ready<()> {
    let changed = changed.clone();
    move |_| {
        changed.notify_one();
        futures::future::ready(())
    }
}

fn snapshot<K>(store: &reflector::Store<K>) -> Vec<K>
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    store.state().iter().map(|k| (**k).clone()).collect()
}

/// Announces this node's addresses until stopped by SIGTERM or SIGINT, then withdraws
/// them. Runs inside the node's network namespace.
pub async fn run(client: Client, options: SpeakerOptions) -> Result<(), Error> {
    let changed = Arc::new(Notify::new());
    let (services, service_writer) = reflector::store::<Service>();
    let (nodes, node_writer) = reflector::store::<Node>();
    let (slices, slice_writer) = reflector::store::<EndpointSlice>();
    let config = watcher::Config::default;
    tokio::spawn(
        reflector(service_writer, watcher(Api::all(client.clone()), config()))
            .default_backoff()
            .touched_objects()
            .for_each(notify(&changed)),
    );
    tokio::spawn(
        reflector(node_writer, watcher(Api::all(client.clone()), config()))
            .default_backoff()
            .touched_objects()
            .for_each(notify(&changed)),
    );
    tokio::spawn(
        reflector(slice_writer, watcher(Api::all(client), config()))
            .default_backoff()
            .touched_objects()
            .for_each(notify(&changed)),
    );
    for ready in [
        services.wait_until_ready().await,
        nodes.wait_until_ready().await,
        slices.wait_until_ready().await,
    ] {
        ready.map_err(|e| Error::Watch(e.to_string()))?;
    }
    let (connection, handle, _) =
        rtnetlink::new_connection().map_err(|e| netns::Error::io("opening a netlink socket", e))?;
    tokio::spawn(connection);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| netns::Error::io("handling SIGTERM", e))?;
    tracing::info!(node = %options.node, interface = %options.interface, "speaker started");
    loop {
        let wanted = announced_by(
            &options.node,
            options.class.as_deref(),
            &snapshot(&services),
            &snapshot(&nodes),
            &snapshot(&slices),
        );
        match apply(&handle, &options.interface, &wanted).await {
            Ok(added) => {
                for ip in added {
                    tracing::info!(%ip, node = %options.node, "announcing from node with protocol layer2");
                    gratuitous_arp(&options.interface, ip).await;
                }
            }
            Err(err) => tracing::warn!(%err, "announcing load-balancer addresses"),
        }
        tokio::select! {
            _ = changed.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
            _ = terminate.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    apply(&handle, &options.interface, &BTreeSet::new()).await?;
    tracing::info!("withdrew every announced address");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, ready: bool, labels: serde_json::Value) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "status": {"conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]},
        }))
        .expect("node")
    }

    fn service(policy: &str, ip: &str) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "LoadBalancer", "externalTrafficPolicy": policy, "ports": [{"port": 80}]},
            "status": {"loadBalancer": {"ingress": [{"ip": ip}]}},
        }))
        .expect("service")
    }

    fn slice(nodes: &[&str]) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": "web-abcde", "namespace": "default", "labels": {SERVICE_NAME_LABEL: "web"}},
            "addressType": "IPv4",
            "endpoints": nodes.iter().enumerate().map(|(i, n)| json!({
                "addresses": [format!("10.244.{i}.2")], "nodeName": n, "conditions": {"ready": true},
            })).collect::<Vec<_>>(),
        }))
        .expect("slice")
    }

    #[test]
    fn every_speaker_elects_the_same_node_and_the_next_one_takes_over() {
        let ip: Ipv4Addr = "192.168.1.200".parse().expect("ip");
        let svc = service("Cluster", "192.168.1.200");
        let all = vec![
            node("node1", true, json!({})),
            node("node2", true, json!({})),
            node("node3", true, json!({})),
        ];
        let first = announcer(&svc, ip, &all, &[]).expect("a node announces");
        let owners: Vec<String> = ["node1", "node2", "node3"]
            .iter()
            .filter(|n| announced_by(n, None, std::slice::from_ref(&svc), &all, &[]).contains(&ip))
            .map(|n| n.to_string())
            .collect();
        assert_eq!(
            owners,
            std::slice::from_ref(&first),
            "exactly one node announces"
        );
        let survivors: Vec<Node> = all
            .iter()
            .filter(|n| n.name_any() != first)
            .cloned()
            .collect();
        let second = announcer(&svc, ip, &survivors, &[]).expect("another node takes over");
        assert_ne!(second, first);
        let not_ready: Vec<Node> = all
            .iter()
            .map(|n| {
                if n.name_any() == first {
                    node(&first, false, json!({}))
                } else {
                    n.clone()
                }
            })
            .collect();
        assert_eq!(announcer(&svc, ip, &not_ready, &[]), Some(second));
    }

    #[test]
    fn local_traffic_policy_announces_only_from_nodes_with_endpoints() {
        let ip: Ipv4Addr = "192.168.1.201".parse().expect("ip");
        let svc = service("Local", "192.168.1.201");
        let all = vec![
            node("node1", true, json!({})),
            node("node2", true, json!({})),
        ];
        assert_eq!(
            announcer(&svc, ip, &all, &[slice(&["node2"])]).as_deref(),
            Some("node2")
        );
        assert_eq!(announcer(&svc, ip, &all, &[]), None);
    }

    #[test]
    fn excluded_nodes_never_announce_and_other_classes_are_not_ours() {
        let ip: Ipv4Addr = "192.168.1.202".parse().expect("ip");
        let svc = service("Cluster", "192.168.1.202");
        let all = vec![
            node("node1", true, json!({EXCLUDE_LABEL: ""})),
            node("node2", true, json!({})),
        ];
        assert_eq!(announcer(&svc, ip, &all, &[]).as_deref(), Some("node2"));
        assert!(announced_by("node2", Some("example.com/lb"), &[svc], &all, &[]).is_empty());
        assert_eq!(label("eth0"), "eth0:lb");
        assert_eq!(label("a-very-long-ifname"), "a-very-long-ifn");
    }
}
