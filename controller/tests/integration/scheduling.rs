//! Placement and cleanup: node IPAM, the scheduler and the garbage collector against the
//! apiserver, observed through the API only.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{ConfigMap, Event, Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{json, Value};

use crate::harness::{eventually, Cluster};

fn from_json<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("valid object")
}

async fn create_node(client: &Client, name: &str, labels: Value) -> Node {
    let node = json!({
        "metadata": {"name": name, "labels": labels},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    });
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &from_json(node))
        .await
        .expect("create node")
}

async fn create_pod(client: &Client, name: &str, node_selector: Value) -> Pod {
    let pod = json!({
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": "nginx"}], "nodeSelector": node_selector},
    });
    Api::<Pod>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &from_json(pod))
        .await
        .expect("create pod")
}

fn node_of(pod: &Pod) -> Option<String> {
    pod.spec.as_ref().and_then(|s| s.node_name.clone())
}

async fn pod_cidrs(client: &Client) -> BTreeMap<String, String> {
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect("list nodes");
    nodes
        .items
        .iter()
        .filter_map(|n| {
            let cidr = n.spec.as_ref()?.pod_cidr.clone()?;
            Some((n.name_any(), cidr))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipam_gives_distinct_cidrs_and_reuses_a_freed_one() {
    let cluster = Cluster::start().await;
    let client = cluster.client.clone();
    tokio::spawn(controller::nodeipam::run(
        client.clone(),
        "10.244.0.0/16",
        24,
    ));
    for name in ["n1", "n2", "n3"] {
        create_node(&client, name, json!({})).await;
    }
    let cidrs = eventually(10, || async {
        let cidrs = pod_cidrs(&client).await;
        (cidrs.len() == 3).then_some(cidrs)
    })
    .await
    .expect("every node gets a pod CIDR");
    let distinct: BTreeSet<&str> = cidrs.values().map(String::as_str).collect();
    assert_eq!(
        distinct,
        BTreeSet::from(["10.244.0.0/24", "10.244.1.0/24", "10.244.2.0/24"])
    );
    let n2 = Api::<Node>::all(client.clone())
        .get("n2")
        .await
        .expect("n2");
    let spec = n2.spec.expect("spec");
    assert_eq!(
        spec.pod_cidrs,
        Some(vec![cidrs["n2"].clone()]),
        "podCIDRs mirrors podCIDR"
    );

    Api::<Node>::all(client.clone())
        .delete("n2", &DeleteParams::default())
        .await
        .expect("delete n2");
    create_node(&client, "n4", json!({})).await;
    let n4 = eventually(10, || async { pod_cidrs(&client).await.get("n4").cloned() })
        .await
        .expect("n4 gets a pod CIDR");
    assert_eq!(n4, cidrs["n2"], "the freed CIDR is handed out again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_spreads_pods_evenly_and_records_events() {
    let cluster = Cluster::start().await;
    let client = cluster.client.clone();
    for name in ["node-a", "node-b", "node-c"] {
        create_node(&client, name, json!({})).await;
    }
    tokio::spawn(controller::scheduler::run(client.clone()));
    for i in 1..=6 {
        create_pod(&client, &format!("web-{i}"), json!({})).await;
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let placed = eventually(10, || async {
        let list = pods.list(&ListParams::default()).await.ok()?;
        let nodes: Vec<String> = list.items.iter().filter_map(node_of).collect();
        (nodes.len() == 6).then_some(nodes)
    })
    .await
    .expect("all six pods are bound");
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for n in placed {
        *per_node.entry(n).or_default() += 1;
    }
    assert_eq!(
        per_node,
        BTreeMap::from([
            ("node-a".into(), 2),
            ("node-b".into(), 2),
            ("node-c".into(), 2)
        ])
    );

    let web1 = pods.get("web-1").await.expect("web-1");
    let scheduled = web1
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "PodScheduled")
        .expect("PodScheduled condition");
    assert_eq!(scheduled.status, "True");
    let node = node_of(&pods.get("web-1").await.expect("web-1")).expect("bound");
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let event = eventually(10, || async {
        let list = events
            .list(&ListParams::default().fields("involvedObject.name=web-1,reason=Scheduled"))
            .await
            .ok()?;
        list.items.into_iter().next()
    })
    .await
    .expect("a Scheduled event");
    assert_eq!(
        event.message.as_deref(),
        Some(format!("Successfully assigned default/web-1 to {node}").as_str())
    );
    assert_eq!(event.type_.as_deref(), Some("Normal"));
    assert_eq!(
        event.source.and_then(|s| s.component).as_deref(),
        Some("default-scheduler")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_honours_node_selector_and_reports_failed_scheduling() {
    let cluster = Cluster::start().await;
    let client = cluster.client.clone();
    create_node(&client, "node-a", json!({})).await;
    create_node(&client, "node-b", json!({"disk": "ssd"})).await;
    create_node(&client, "node-c", json!({})).await;
    tokio::spawn(controller::scheduler::run(client.clone()));
    create_pod(&client, "fast", json!({"disk": "ssd"})).await;
    create_pod(&client, "faster", json!({"disk": "nvme"})).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    let fast = eventually(10, || async { node_of(&pods.get("fast").await.ok()?) }).await;
    assert_eq!(fast.as_deref(), Some("node-b"));

    let condition = eventually(10, || async {
        let pod = pods.get("faster").await.ok()?;
        pod.status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False")
    })
    .await
    .expect("PodScheduled=False");
    let message = "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector. \
                   preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.";
    assert_eq!(condition.reason.as_deref(), Some("Unschedulable"));
    assert_eq!(condition.message.as_deref(), Some(message));
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let failed = eventually(10, || async {
        let list = events
            .list(
                &ListParams::default().fields("involvedObject.name=faster,reason=FailedScheduling"),
            )
            .await
            .ok()?;
        list.items.into_iter().next()
    })
    .await
    .expect("a FailedScheduling event");
    assert_eq!(failed.type_.as_deref(), Some("Warning"));
    assert_eq!(failed.message.as_deref(), Some(message));

    // A node that starts matching is tried at once, without waiting for the periodic retry.
    let label = json!({"metadata": {"labels": {"disk": "nvme"}}});
    Api::<Node>::all(client.clone())
        .patch("node-c", &PatchParams::default(), &Patch::Merge(&label))
        .await
        .expect("label node-c");
    let faster = eventually(10, || async { node_of(&pods.get("faster").await.ok()?) }).await;
    assert_eq!(faster.as_deref(), Some("node-c"));
}

async fn create_config_map(
    client: &Client,
    name: &str,
    owners: &[(&ConfigMap, bool)],
) -> ConfigMap {
    let refs: Vec<Value> = owners
        .iter()
        .map(|(o, block)| {
            json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "name": o.name_any(),
                "uid": o.uid().expect("owner uid"),
                "blockOwnerDeletion": block,
            })
        })
        .collect();
    let cm = json!({"metadata": {"name": name, "ownerReferences": refs}});
    Api::<ConfigMap>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &from_json(cm))
        .await
        .expect("create config map")
}

async fn exists(api: &Api<ConfigMap>, name: &str) -> bool {
    api.get_opt(name).await.expect("get config map").is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_deletes_dependents_whose_owners_are_gone() {
    let cluster = Cluster::start().await;
    let client = cluster.client.clone();
    tokio::spawn(controller::gc::run(client.clone()));
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let parent = create_config_map(&client, "parent", &[]).await;
    let other = create_config_map(&client, "other", &[]).await;
    create_config_map(&client, "child", &[(&parent, false)]).await;
    create_config_map(&client, "shared", &[(&parent, false), (&other, false)]).await;
    // A dependent whose owner never existed (a uid nobody has) goes too.
    let ghost: ConfigMap = from_json(json!({"metadata": {"name": "ghost", "uid": "0000-gone"}}));
    create_config_map(&client, "haunted", &[(&ghost, false)]).await;

    cms.delete("parent", &DeleteParams::background())
        .await
        .expect("delete parent");
    let gone = eventually(10, || async {
        (!exists(&cms, "child").await && !exists(&cms, "haunted").await).then_some(())
    })
    .await;
    assert!(
        gone.is_some(),
        "dependents of a deleted or missing owner are deleted"
    );
    let owners = eventually(10, || async {
        let shared = cms.get("shared").await.ok()?;
        let names: Vec<String> = shared
            .owner_references()
            .iter()
            .map(|o| o.name.clone())
            .collect();
        (names == ["other"]).then_some(names)
    })
    .await;
    assert!(
        owners.is_some(),
        "shared survives, without the reference to the deleted owner"
    );
    assert!(exists(&cms, "other").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_foreground_deletion_waits_for_blocking_dependents() {
    let cluster = Cluster::start().await;
    let client = cluster.client.clone();
    tokio::spawn(controller::gc::run(client.clone()));
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let parent = create_config_map(&client, "parent", &[]).await;
    create_config_map(&client, "loose", &[(&parent, false)]).await;
    create_config_map(&client, "blocker", &[(&parent, true)]).await;
    // The blocker holds on through a finalizer of its own, like a pod in its grace period.
    let hold = json!({"metadata": {"finalizers": ["example.com/hold"]}});
    cms.patch("blocker", &PatchParams::default(), &Patch::Merge(&hold))
        .await
        .expect("add finalizer");

    cms.delete("parent", &DeleteParams::foreground())
        .await
        .expect("delete parent");
    let deleting = eventually(10, || async {
        let blocker = cms.get("blocker").await.ok()?;
        (blocker.metadata.deletion_timestamp.is_some() && !exists(&cms, "loose").await)
            .then_some(())
    })
    .await;
    assert!(deleting.is_some(), "dependents are deleted first");
    let parent = cms
        .get("parent")
        .await
        .expect("parent waits for the blocker");
    assert!(parent
        .finalizers()
        .contains(&"foregroundDeletion".to_string()));

    let release = json!({"metadata": {"finalizers": null}});
    cms.patch("blocker", &PatchParams::default(), &Patch::Merge(&release))
        .await
        .expect("release blocker");
    let gone = eventually(10, || async {
        (!exists(&cms, "parent").await && !exists(&cms, "blocker").await).then_some(())
    })
    .await;
    assert!(
        gone.is_some(),
        "the owner goes once its blocking dependents are gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_orphan_propagation_keeps_dependents() {
    let cluster = Cluster::start().await;
    let client = cluster.client.clone();
    tokio::spawn(controller::gc::run(client.clone()));
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let parent = create_config_map(&client, "parent", &[]).await;
    create_config_map(&client, "child", &[(&parent, true)]).await;

    cms.delete("parent", &DeleteParams::orphan())
        .await
        .expect("delete parent");
    let gone = eventually(10, || async {
        (!exists(&cms, "parent").await).then_some(())
    })
    .await;
    assert!(
        gone.is_some(),
        "the owner goes once its dependents are released"
    );
    let child = cms.get("child").await.expect("the dependent stays");
    assert!(
        child.owner_references().is_empty(),
        "and no longer points at the owner"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pods_bound_to_a_deleted_node_are_collected() {
    let cluster = Cluster::start().await;
    let client = cluster.client.clone();
    for name in ["n1", "n2"] {
        create_node(&client, name, json!({})).await;
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    for (name, node) in [("on-n1", "n1"), ("on-n2", "n2")] {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "nginx"}]},
        }))
        .expect("pod");
        pods.create(&PostParams::default(), &pod)
            .await
            .expect("create pod");
    }
    tokio::spawn(controller::podgc::run(
        client.clone(),
        std::time::Duration::from_secs(1),
    ));
    Api::<Node>::all(client.clone())
        .delete("n2", &DeleteParams::default())
        .await
        .expect("delete n2");
    let gone = eventually(15, || async {
        pods.get_opt("on-n2")
            .await
            .expect("get")
            .is_none()
            .then_some(())
    })
    .await;
    assert!(
        gone.is_some(),
        "the pod of the deleted node was not collected"
    );
    assert!(
        pods.get_opt("on-n1").await.expect("get").is_some(),
        "a pod of a node that exists stays"
    );
}
