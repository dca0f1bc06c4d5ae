//! Simulated nodes with node IPAM and the scheduler: nodes register Ready, pods bound to
//! them run with addresses from their node's pod CIDR, graceful deletion completes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Instant;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use kubelet::simulated::SimulatedOptions;
use serde_json::json;

use crate::harness::{eventually, Cluster};

fn start_cluster_components(client: &Client, nodes: usize) {
    let ipam = controller::nodeipam::run(client.clone(), "10.244.0.0/16", 24);
    tokio::spawn(ipam);
    tokio::spawn(controller::scheduler::run(client.clone()));
    let opts = SimulatedOptions {
        nodes,
        ..SimulatedOptions::default()
    };
    tokio::spawn(kubelet::simulated::run(client.clone(), opts));
}

fn in_cidr(ip: &str, cidr: &str) -> bool {
    let (Ok(ip), Some((net, prefix))) = (ip.parse::<Ipv4Addr>(), cidr.split_once('/')) else {
        return false;
    };
    let (Ok(net), Ok(prefix)) = (net.parse::<Ipv4Addr>(), prefix.parse::<u32>()) else {
        return false;
    };
    let mask = u32::MAX << (32 - prefix);
    u32::from(ip) & mask == u32::from(net) & mask
}

fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Node name → (InternalIP, podCIDR), once `count` nodes are Ready with a pod CIDR.
async fn ready_nodes(client: &Client, count: usize) -> BTreeMap<String, (String, String)> {
    let nodes: Api<Node> = Api::all(client.clone());
    eventually(20, || async {
        let list = nodes.list(&ListParams::default()).await.ok()?;
        let ready: BTreeMap<String, (String, String)> = list
            .items
            .iter()
            .filter(|n| is_ready(n))
            .filter_map(|n| {
                let cidr = n.spec.as_ref()?.pod_cidr.clone()?;
                let addresses = n.status.as_ref()?.addresses.as_ref()?;
                let ip = addresses
                    .iter()
                    .find(|a| a.type_ == "InternalIP")?
                    .address
                    .clone();
                Some((n.name_any(), (ip, cidr)))
            })
            .collect();
        (ready.len() == count).then_some(ready)
    })
    .await
    .expect("the simulated nodes register Ready with a pod CIDR")
}

async fn create_pods(client: &Client, count: usize) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    for i in 0..count {
        let pod = json!({"metadata": {"name": format!("web-{i}")},
            "spec": {"containers": [{"name": "nginx", "image": "nginx:1.25"}]}});
        pods.create(
            &PostParams::default(),
            &serde_json::from_value(pod).expect("pod"),
        )
        .await
        .expect("create pod");
    }
}

fn running(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .is_some_and(|s| s.phase.as_deref() == Some("Running") && s.pod_ip.is_some())
}

async fn running_pods(client: &Client, count: usize, secs: u64) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    eventually(secs, || async {
        let list = pods.list(&ListParams::default()).await.ok()?;
        let items: Vec<Pod> = list.items.into_iter().filter(running).collect();
        (items.len() == count).then_some(items)
    })
    .await
    .expect("every pod runs")
}

/// Checks every pod's addresses against its node; returns the pod IPs.
fn check_addresses(pods: &[Pod], nodes: &BTreeMap<String, (String, String)>) -> BTreeSet<String> {
    let mut ips = BTreeSet::new();
    for pod in pods {
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .expect("bound");
        let (host_ip, cidr) = &nodes[&node];
        let status = pod.status.as_ref().expect("status");
        let ip = status.pod_ip.clone().expect("pod IP");
        assert!(
            in_cidr(&ip, cidr),
            "{} has {ip}, outside {cidr} of {node}",
            pod.name_any()
        );
        assert_eq!(status.host_ip.as_ref(), Some(host_ip));
        assert!(ips.insert(ip.clone()), "{ip} is handed out twice");
    }
    ips
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_run_on_simulated_nodes_and_graceful_deletion_completes() {
    let cluster = Cluster::start().await;
    let client = cluster.client.clone();
    start_cluster_components(&client, 3);
    let nodes = ready_nodes(&client, 3).await;
    assert_eq!(
        nodes.keys().collect::<Vec<_>>(),
        ["kubesim-node-1", "kubesim-node-2", "kubesim-node-3"]
    );
    assert_eq!(nodes["kubesim-node-1"].0, "192.168.1.11");
    let node = Api::<Node>::all(client.clone())
        .get("kubesim-node-2")
        .await
        .expect("node");
    let status = node.status.expect("status");
    let info = status.node_info.expect("nodeInfo");
    assert_eq!(
        (
            info.kubelet_version.as_str(),
            info.container_runtime_version.as_str()
        ),
        ("v1.33.0", "kubesim://simulated")
    );
    assert_eq!(status.allocatable.expect("allocatable")["pods"].0, "110");

    create_pods(&client, 9).await;
    let pods = running_pods(&client, 9, 20).await;
    check_addresses(&pods, &nodes);
    let pod = &pods[0];
    let status = pod.status.as_ref().expect("status");
    let ready: Vec<&str> = status
        .conditions
        .iter()
        .flatten()
        .filter(|c| c.status == "True")
        .map(|c| c.type_.as_str())
        .collect();
    assert_eq!(
        ready,
        [
            "PodReadyToStartContainers",
            "Initialized",
            "Ready",
            "ContainersReady",
            "PodScheduled"
        ]
    );
    let container = &status
        .container_statuses
        .as_ref()
        .expect("container statuses")[0];
    assert!(container.ready && container.started == Some(true) && container.restart_count == 0);
    assert_eq!(container.image, "docker.io/library/nginx:1.25");
    assert!(container
        .container_id
        .as_deref()
        .is_some_and(|id| id.starts_with("kubesim://")));
    assert!(container
        .state
        .as_ref()
        .and_then(|s| s.running.as_ref())
        .is_some());

    // What `kubectl delete pod` does: a graceful delete, then waiting for the pod to go.
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let name = pod.name_any();
    let started = Instant::now();
    let deleted = api
        .delete(&name, &DeleteParams::default())
        .await
        .expect("delete");
    assert!(
        deleted
            .left()
            .is_some_and(|p| p.metadata.deletion_timestamp.is_some()),
        "the kubelet finishes the deletion"
    );
    let gone = eventually(10, || async {
        api.get_opt(&name).await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(
        gone.is_some(),
        "the pod is gone well before its 30s grace period"
    );
    assert!(started.elapsed().as_secs() < 5);

    create_pods_named(&client, "late").await;
    let pods = running_pods(&client, 9, 20).await;
    check_addresses(&pods, &nodes);
}

async fn create_pods_named(client: &Client, name: &str) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod = json!({"metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": "busybox"}]}});
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(pod).expect("pod"),
    )
    .await
    .expect("create pod");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_pods_spread_over_many_nodes_run() {
    let cluster = Cluster::start().await;
    let client = cluster.client.clone();
    start_cluster_components(&client, 10);
    let nodes = ready_nodes(&client, 10).await;
    create_pods(&client, 300).await;
    let pods = running_pods(&client, 300, 60).await;
    assert_eq!(check_addresses(&pods, &nodes).len(), 300);
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for pod in &pods {
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        *per_node.entry(node).or_default() += 1;
    }
    assert!(
        per_node.values().all(|n| *n == 30),
        "spread evenly: {per_node:?}"
    );
}
