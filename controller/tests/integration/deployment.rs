//! The ReplicaSet and Deployment controllers against the in-process apiserver. The test
//! plays the kubelet: every new pod becomes Running and Ready, with a pod IP, through the
//! status subresource after a short delay (never, for images named `broken`).

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Client, ResourceExt};
use serde_json::{json, Value};

use crate::harness::{eventually, Cluster};

const REVISION: &str = "deployment.kubernetes.io/revision";
const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";

/// An apiserver with both controllers and the fake kubelet running.
async fn start() -> Cluster {
    let cluster = Cluster::start().await;
    tokio::spawn(controller::replicaset::run(cluster.client.clone()));
    tokio::spawn(controller::deployment::run(cluster.client.clone()));
    tokio::spawn(kubelet(cluster.client.clone(), Duration::from_millis(150)));
    cluster
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn image(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default()
}

/// Marks each new pod Running and Ready after `delay`, unless its image is `broken`.
async fn kubelet(client: Client, delay: Duration) {
    let mut seen = HashSet::new();
    let mut next_ip = 0u32;
    let mut pods = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    while let Some(event) = pods.next().await {
        let Ok(pod) = event else { continue };
        if pod.metadata.deletion_timestamp.is_some()
            || image(&pod) == "broken"
            || !seen.insert(pod.uid())
        {
            continue;
        }
        next_ip += 1;
        let ip = format!("10.244.{}.{}", next_ip / 250, next_ip % 250 + 2);
        let api = Api::<Pod>::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
        let name = pod.name_any();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
            let status = json!({"status": {
                "phase": "Running",
                "podIP": ip,
                "podIPs": [{"ip": ip}],
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}],
            }});
            // A pod deleted in the meantime is simply gone.
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                .await
                .ok();
        });
    }
}

fn deployment(name: &str, replicas: i32, image: &str, strategy: Value) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "annotations": {CHANGE_CAUSE: format!("image {image}")}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": strategy,
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "web", "image": image}]},
            },
        },
    }))
    .expect("a valid deployment")
}

/// Changes the image and the change-cause, as `kubectl set image --record` would.
async fn set_image(api: &Api<Deployment>, name: &str, image: &str) {
    let patch = json!({
        "metadata": {"annotations": {CHANGE_CAUSE: format!("image {image}")}},
        "spec": {"template": {"spec": {"containers": [{"name": "web", "image": image}]}}},
    });
    api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .expect("patch deployment");
}

async fn pods_of(client: &Client, selector: &str) -> Vec<Pod> {
    Api::<Pod>::default_namespaced(client.clone())
        .list(&ListParams::default().labels(selector))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

/// Whether the Deployment reports a finished rollout and runs exactly `replicas` ready
/// pods of `image`.
async fn rolled_out(client: &Client, name: &str, want_image: &str, replicas: i32) -> bool {
    let Ok(d) = Api::<Deployment>::default_namespaced(client.clone())
        .get(name)
        .await
    else {
        return false;
    };
    let status = d.status.unwrap_or_default();
    let want = Some(replicas);
    let pods = pods_of(client, &format!("app={name}")).await;
    status.observed_generation >= d.metadata.generation
        && status.updated_replicas.or(Some(0)) == want
        && status.replicas.or(Some(0)) == want
        && status.available_replicas.or(Some(0)) == want
        && pods.len() == usize::try_from(replicas).unwrap_or(0)
        && pods.iter().all(|p| is_ready(p) && image(p) == want_image)
}

async fn wait_rolled_out(client: &Client, name: &str, image: &str, replicas: i32) {
    let done = eventually(60, || async {
        rolled_out(client, name, image, replicas)
            .await
            .then_some(())
    })
    .await;
    let d = Api::<Deployment>::default_namespaced(client.clone())
        .get(name)
        .await
        .ok();
    assert!(
        done.is_some(),
        "{name} never rolled out {image}: {:?}",
        d.and_then(|d| d.status)
    );
}

/// The Deployment's ReplicaSets by the image of their template.
async fn replica_sets(client: &Client, name: &str) -> BTreeMap<String, ReplicaSet> {
    Api::<ReplicaSet>::default_namespaced(client.clone())
        .list(&ListParams::default().labels(&format!("app={name}")))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .map(|rs| {
            let image = rs
                .spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .and_then(|t| t.spec.as_ref())
                .and_then(|s| s.containers.first())
                .and_then(|c| c.image.clone())
                .unwrap_or_default();
            (image, rs)
        })
        .collect()
}

fn annotation(meta: &kube::api::ObjectMeta, key: &str) -> Option<String> {
    meta.annotations.as_ref()?.get(key).cloned()
}

/// Runs the real kubectl against the test's apiserver, off the runtime's thread.
async fn kubectl(cluster: &Cluster, args: &[&str]) -> (bool, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("kubeconfig");
    std::fs::write(&config, &cluster.server.kubeconfig).expect("write kubeconfig");
    let mut command = std::process::Command::new("kubectl");
    command.arg("--kubeconfig").arg(&config).args(args);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("kubectl task")
        .expect("run kubectl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// Pods of `selector` as a watch sees them after each event: `(image, ready)` of every
/// pod not being deleted.
type Sample = Vec<(String, bool)>;

/// Records a sample at every pod event until aborted; returns once the initial list is in.
async fn observe_pods(
    client: &Client,
    selector: &str,
) -> (Arc<Mutex<Vec<Sample>>>, tokio::task::JoinHandle<()>) {
    let samples = Arc::new(Mutex::new(Vec::new()));
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let api = Api::<Pod>::default_namespaced(client.clone());
    let config = watcher::Config::default().labels(selector);
    let recorded = samples.clone();
    let task = tokio::spawn(async move {
        let mut pods: BTreeMap<String, Pod> = BTreeMap::new();
        let mut listing = BTreeMap::new();
        let mut ready_tx = Some(ready_tx);
        let mut events = watcher(api, config).boxed();
        while let Some(event) = events.next().await {
            match event {
                Ok(Event::Init) => {
                    listing.clear();
                    continue;
                }
                Ok(Event::InitApply(pod)) => {
                    listing.insert(pod.name_any(), pod);
                    continue;
                }
                Ok(Event::InitDone) => {
                    pods = std::mem::take(&mut listing);
                    if let Some(tx) = ready_tx.take() {
                        tx.send(()).ok();
                    }
                }
                Ok(Event::Apply(pod)) if pod.metadata.deletion_timestamp.is_none() => {
                    pods.insert(pod.name_any(), pod);
                }
                Ok(Event::Apply(pod) | Event::Delete(pod)) => {
                    pods.remove(&pod.name_any());
                }
                Err(_) => continue,
            }
            let sample = pods.values().map(|p| (image(p), is_ready(p))).collect();
            recorded.lock().expect("samples").push(sample);
        }
    });
    ready_rx.await.expect("pod watch listed");
    (samples, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicaset_keeps_its_pods() {
    let cluster = start().await;
    let client = cluster.client.clone();
    let rss = Api::<ReplicaSet>::default_namespaced(client.clone());
    let pods = Api::<Pod>::default_namespaced(client.clone());
    let rs: ReplicaSet = serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": "frontend"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"tier": "frontend"}},
            "template": {
                "metadata": {"labels": {"tier": "frontend"}},
                "spec": {"containers": [{"name": "php", "image": "php:8"}]},
            },
        },
    }))
    .expect("a valid replica set");
    let rs = rss
        .create(&PostParams::default(), &rs)
        .await
        .expect("create replica set");
    let uid = rs.uid().expect("uid");

    // `n` owned pods, all ready, and a status that says so for the current generation.
    let settled = |n: usize| {
        let (rss, client, uid) = (rss.clone(), client.clone(), uid.clone());
        async move {
            let pods = pods_of(&client, "tier=frontend").await;
            let owned = pods.iter().all(|p| {
                p.owner_references().iter().any(|o| {
                    o.uid == uid
                        && o.kind == "ReplicaSet"
                        && o.controller == Some(true)
                        && o.block_owner_deletion == Some(true)
                })
            });
            let rs = rss.get("frontend").await.ok()?;
            let status = rs.status.clone()?;
            let count = i32::try_from(n).ok()?;
            let settled = pods.len() == n
                && owned
                && pods.iter().all(is_ready)
                && status.replicas == count
                && status.ready_replicas.unwrap_or(0) == count
                && status.available_replicas.unwrap_or(0) == count
                && status.fully_labeled_replicas.unwrap_or(0) == count
                && status.observed_generation == rs.metadata.generation;
            settled.then_some(pods)
        }
    };

    let created = eventually(30, || settled(3)).await.expect("three pods");
    let alphabet = "bcdfghjklmnpqrstvwxz2456789";
    for pod in &created {
        let name = pod.name_any();
        let suffix = name
            .strip_prefix("frontend-")
            .expect("named after the replica set");
        assert!(
            suffix.len() == 5 && suffix.chars().all(|c| alphabet.contains(c)),
            "{name}"
        );
        assert_eq!(pod.metadata.generate_name.as_deref(), Some("frontend-"));
    }

    // A deleted pod is replaced.
    let victim = created[0].name_any();
    pods.delete(&victim, &DeleteParams::default())
        .await
        .expect("delete pod");
    let replaced = eventually(30, || async {
        settled(3)
            .await
            .filter(|pods| pods.iter().all(|p| p.name_any() != victim))
    })
    .await;
    assert!(replaced.is_some(), "{victim} was not replaced");

    // A matching orphan is adopted, and the surplus goes.
    let orphan: Pod = serde_json::from_value(json!({
        "metadata": {"name": "stray", "labels": {"tier": "frontend"}},
        "spec": {"containers": [{"name": "php", "image": "php:8"}]},
    }))
    .expect("a valid pod");
    pods.create(&PostParams::default(), &orphan)
        .await
        .expect("create orphan");
    assert!(
        eventually(30, || settled(3)).await.is_some(),
        "orphan not adopted or surplus kept"
    );

    // A pod relabelled out of the selector is released and replaced.
    let leaving = pods_of(&client, "tier=frontend").await[0].name_any();
    let relabel = json!({"metadata": {"labels": {"tier": "debug"}}});
    pods.patch(&leaving, &PatchParams::default(), &Patch::Merge(relabel))
        .await
        .expect("relabel");
    let released = eventually(30, || async {
        let pod = pods.get(&leaving).await.ok()?;
        let free = pod.owner_references().iter().all(|o| o.uid != uid);
        (free && settled(3).await.is_some()).then_some(())
    })
    .await;
    assert!(
        released.is_some(),
        "{leaving} was not released and replaced"
    );

    for n in [0usize, 1, 2, 1, 0] {
        let scale = json!({"spec": {"replicas": n}});
        rss.patch("frontend", &PatchParams::default(), &Patch::Merge(scale))
            .await
            .expect("scale");
        let got = eventually(30, || settled(n)).await;
        assert!(
            got.is_some(),
            "never settled at {n} replicas: {:?}",
            rss.get("frontend").await.ok().and_then(|r| r.status)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicaset_counts_pods_available_after_min_ready_seconds() {
    let cluster = start().await;
    let rss = Api::<ReplicaSet>::default_namespaced(cluster.client.clone());
    let rs: ReplicaSet = serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": "slow"},
        "spec": {
            "replicas": 1,
            "minReadySeconds": 2,
            "selector": {"matchLabels": {"tier": "slow"}},
            "template": {
                "metadata": {"labels": {"tier": "slow"}},
                "spec": {"containers": [{"name": "web", "image": "nginx"}]},
            },
        },
    }))
    .expect("a valid replica set");
    rss.create(&PostParams::default(), &rs)
        .await
        .expect("create replica set");
    let counts = || async {
        let status = rss.get("slow").await.ok()?.status?;
        Some((
            status.ready_replicas.unwrap_or(0),
            status.available_replicas.unwrap_or(0),
        ))
    };
    let ready_only = eventually(30, || async { counts().await.filter(|c| c.0 == 1) }).await;
    assert_eq!(
        ready_only,
        Some((1, 0)),
        "ready but not yet available for 2 s"
    );
    let available = eventually(10, || async { counts().await.filter(|c| c.1 == 1) }).await;
    assert_eq!(
        available,
        Some((1, 1)),
        "available once ready for minReadySeconds"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_min_ready_seconds_reaches_its_replicaset_and_delays_availability() {
    let cluster = start().await;
    let client = cluster.client.clone();
    let api = Api::<Deployment>::default_namespaced(client.clone());
    let mut slow = deployment("slow", 2, "nginx:1", json!({"type": "RollingUpdate"}));
    if let Some(spec) = slow.spec.as_mut() {
        spec.min_ready_seconds = Some(3);
    }
    api.create(&PostParams::default(), &slow)
        .await
        .expect("create deployment");

    let min_ready = |rs: &ReplicaSet| rs.spec.as_ref().and_then(|s| s.min_ready_seconds);
    let rs = eventually(30, || async {
        replica_sets(&client, "slow").await.remove("nginx:1")
    })
    .await
    .expect("a ReplicaSet for the Deployment");
    assert_eq!(min_ready(&rs), Some(3), "{:?}", rs.spec);

    // Both pods Ready, neither yet available: the Deployment counts them apart.
    let counts = || async {
        let status = api.get("slow").await.ok()?.status?;
        Some((
            status.ready_replicas.unwrap_or(0),
            status.available_replicas.unwrap_or(0),
        ))
    };
    let ready_only = eventually(30, || async { counts().await.filter(|c| c.0 == 2) }).await;
    assert_eq!(
        ready_only,
        Some((2, 0)),
        "ready but not yet available for 3 s"
    );
    wait_rolled_out(&client, "slow", "nginx:1", 2).await;

    // Changing minReadySeconds updates the same ReplicaSet: no new revision.
    let patch = json!({"spec": {"minReadySeconds": 0}});
    api.patch("slow", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .expect("patch deployment");
    let updated = eventually(30, || async {
        let rss = replica_sets(&client, "slow").await;
        rss.get("nginx:1")
            .is_some_and(|rs| min_ready(rs) == Some(0))
            .then_some(())
    })
    .await;
    let rss = replica_sets(&client, "slow").await;
    assert!(
        updated.is_some(),
        "the ReplicaSet kept its minReadySeconds: {rss:?}"
    );
    assert_eq!(rss.len(), 1, "{rss:?}");
    assert_eq!(
        annotation(&rss["nginx:1"].metadata, REVISION).as_deref(),
        Some("1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_respects_max_surge_and_max_unavailable() {
    let cluster = start().await;
    let client = cluster.client.clone();
    let api = Api::<Deployment>::default_namespaced(client.clone());
    let (replicas, max_surge, max_unavailable) = (4, 1, 1);
    let strategy = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": max_surge, "maxUnavailable": max_unavailable}});
    api.create(
        &PostParams::default(),
        &deployment("web", replicas, "nginx:1", strategy),
    )
    .await
    .expect("create deployment");
    wait_rolled_out(&client, "web", "nginx:1", replicas).await;

    let (samples, observer) = observe_pods(&client, "app=web").await;
    set_image(&api, "web", "nginx:2").await;
    let (ok, status) = kubectl(
        &cluster,
        &["rollout", "status", "deployment/web", "--timeout=60s"],
    )
    .await;
    assert!(
        ok && status.ends_with("deployment \"web\" successfully rolled out\n"),
        "{status}"
    );
    wait_rolled_out(&client, "web", "nginx:2", replicas).await;
    let finished = eventually(10, || async {
        let samples = samples.lock().expect("samples");
        let last = samples.last()?;
        (last.len() == 4
            && last
                .iter()
                .all(|(image, ready)| image == "nginx:2" && *ready))
        .then_some(())
    })
    .await;
    observer.abort();
    assert!(finished.is_some(), "the watch never saw the final pods");

    let samples = samples.lock().expect("samples").clone();
    let limit = usize::try_from(replicas + max_surge).unwrap_or(0);
    let floor = usize::try_from(replicas - max_unavailable).unwrap_or(0);
    for (i, sample) in samples.iter().enumerate() {
        let available = sample.iter().filter(|(_, ready)| *ready).count();
        assert!(
            sample.len() <= limit,
            "event {i}: {} pods > {limit}: {sample:?}",
            sample.len()
        );
        assert!(
            available >= floor,
            "event {i}: {available} available < {floor}: {sample:?}"
        );
    }
    let mixed = samples.iter().any(|s| {
        s.iter().any(|(image, _)| image == "nginx:1")
            && s.iter().any(|(image, _)| image == "nginx:2")
    });
    assert!(
        mixed,
        "the rollout was not observed pod by pod: {} events",
        samples.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revisions_count_up_and_undo_reuses_the_old_replicaset() {
    let cluster = start().await;
    let client = cluster.client.clone();
    let api = Api::<Deployment>::default_namespaced(client.clone());
    api.create(
        &PostParams::default(),
        &deployment("web", 2, "nginx:1", json!({"type": "RollingUpdate"})),
    )
    .await
    .expect("create deployment");
    wait_rolled_out(&client, "web", "nginx:1", 2).await;

    let first = replica_sets(&client, "web").await;
    let rs1 = first.get("nginx:1").expect("the first replica set");
    let hash = rs1
        .labels()
        .get("pod-template-hash")
        .cloned()
        .expect("hash label");
    assert_eq!(rs1.name_any(), format!("web-{hash}"));
    let selector = rs1
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.clone())
        .unwrap_or_default();
    assert_eq!(selector.get("pod-template-hash"), Some(&hash));
    assert!(pods_of(&client, "app=web")
        .await
        .iter()
        .all(|p| p.labels().get("pod-template-hash") == Some(&hash)));
    assert_eq!(annotation(&rs1.metadata, REVISION).as_deref(), Some("1"));
    assert_eq!(
        annotation(&rs1.metadata, CHANGE_CAUSE).as_deref(),
        Some("image nginx:1")
    );

    set_image(&api, "web", "nginx:2").await;
    wait_rolled_out(&client, "web", "nginx:2", 2).await;
    let second = replica_sets(&client, "web").await;
    let revisions: Vec<_> = second
        .iter()
        .map(|(image, rs)| (image.clone(), annotation(&rs.metadata, REVISION)))
        .collect();
    assert_eq!(
        revisions,
        [
            ("nginx:1".into(), Some("1".into())),
            ("nginx:2".into(), Some("2".into()))
        ]
    );
    let d = api.get("web").await.expect("deployment");
    assert_eq!(annotation(&d.metadata, REVISION).as_deref(), Some("2"));

    // `kubectl rollout undo` puts the first template back: its ReplicaSet comes back as
    // revision 3, remembering revision 1.
    let (ok, out) = kubectl(&cluster, &["rollout", "undo", "deployment/web"]).await;
    assert!(ok, "{out}");
    wait_rolled_out(&client, "web", "nginx:1", 2).await;
    let third = replica_sets(&client, "web").await;
    assert_eq!(third.len(), 2, "no third replica set for an old template");
    let rs1 = third.get("nginx:1").expect("the first replica set");
    assert_eq!(rs1.uid(), first.get("nginx:1").and_then(|rs| rs.uid()));
    assert_eq!(annotation(&rs1.metadata, REVISION).as_deref(), Some("3"));
    assert_eq!(
        annotation(&rs1.metadata, "deployment.kubernetes.io/revision-history").as_deref(),
        Some("1")
    );
    let revision = eventually(10, || async {
        annotation(&api.get("web").await.ok()?.metadata, REVISION).filter(|r| r == "3")
    })
    .await;
    assert_eq!(revision.as_deref(), Some("3"));

    let (ok, history) = kubectl(&cluster, &["rollout", "history", "deployment/web"]).await;
    assert!(ok, "{history}");
    let rows: Vec<Vec<&str>> = history
        .lines()
        .skip(2)
        .map(|l| l.split_whitespace().collect())
        .filter(|r: &Vec<&str>| !r.is_empty())
        .collect();
    assert_eq!(
        rows,
        [vec!["2", "image", "nginx:2"], vec!["3", "image", "nginx:1"]],
        "{history}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_stops_old_pods_before_starting_new_ones() {
    let cluster = start().await;
    let client = cluster.client.clone();
    let api = Api::<Deployment>::default_namespaced(client.clone());
    api.create(
        &PostParams::default(),
        &deployment("db", 3, "postgres:15", json!({"type": "Recreate"})),
    )
    .await
    .expect("create deployment");
    wait_rolled_out(&client, "db", "postgres:15", 3).await;

    let (samples, observer) = observe_pods(&client, "app=db").await;
    set_image(&api, "db", "postgres:16").await;
    wait_rolled_out(&client, "db", "postgres:16", 3).await;
    observer.abort();
    let samples = samples.lock().expect("samples").clone();
    for (i, sample) in samples.iter().enumerate() {
        let old = sample
            .iter()
            .filter(|(image, _)| image == "postgres:15")
            .count();
        let new = sample.len() - old;
        assert!(
            old == 0 || new == 0,
            "event {i}: old and new pods together: {sample:?}"
        );
    }
    assert!(
        samples.iter().any(Vec::is_empty),
        "the old pods were not all gone before new ones came"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_deadline_is_reported() {
    let cluster = start().await;
    let client = cluster.client.clone();
    let api = Api::<Deployment>::default_namespaced(client.clone());
    let mut d = deployment("stuck", 1, "broken", json!({"type": "RollingUpdate"}));
    if let Some(spec) = d.spec.as_mut() {
        spec.progress_deadline_seconds = Some(2);
    }
    api.create(&PostParams::default(), &d)
        .await
        .expect("create deployment");
    let condition = eventually(20, || async {
        let status = api.get("stuck").await.ok()?.status?;
        let progressing = status
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "Progressing")?;
        (progressing.reason.as_deref() == Some("ProgressDeadlineExceeded")).then_some(progressing)
    })
    .await
    .expect("the deadline passed");
    assert_eq!(condition.status, "False");
    let (ok, out) = kubectl(
        &cluster,
        &["rollout", "status", "deployment/stuck", "--timeout=10s"],
    )
    .await;
    assert!(
        !ok && out.contains("exceeded its progress deadline"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_deployment_leaves_its_replicasets_to_the_garbage_collector() {
    let cluster = start().await;
    let client = cluster.client.clone();
    let api = Api::<Deployment>::default_namespaced(client.clone());
    api.create(
        &PostParams::default(),
        &deployment("web", 2, "nginx:1", json!({"type": "RollingUpdate"})),
    )
    .await
    .expect("create deployment");
    wait_rolled_out(&client, "web", "nginx:1", 2).await;
    let owner = api.get("web").await.expect("deployment").uid();
    let before = replica_sets(&client, "web").await;

    api.delete("web", &DeleteParams::default())
        .await
        .expect("delete deployment");
    let gone = eventually(10, || async {
        api.get_opt("web").await.ok().filter(Option::is_none)
    })
    .await;
    assert!(gone.is_some(), "the deployment was not deleted");
    // Once another Deployment has rolled out the controller has seen the deletion.
    api.create(
        &PostParams::default(),
        &deployment("other", 1, "nginx:1", json!({"type": "RollingUpdate"})),
    )
    .await
    .expect("create deployment");
    wait_rolled_out(&client, "other", "nginx:1", 1).await;

    let after = replica_sets(&client, "web").await;
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );
    let rs = after.get("nginx:1").expect("the replica set is left alone");
    assert_eq!(rs.spec.as_ref().and_then(|s| s.replicas), Some(2));
    assert!(
        rs.owner_references()
            .iter()
            .any(|o| Some(&o.uid) == owner.as_ref()),
        "still owned, for gc"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settled_deployment_is_not_rewritten() {
    let cluster = start().await;
    let client = cluster.client.clone();
    let api = Api::<Deployment>::default_namespaced(client.clone());
    api.create(
        &PostParams::default(),
        &deployment("web", 3, "nginx:1", json!({"type": "RollingUpdate"})),
    )
    .await
    .expect("create deployment");
    wait_rolled_out(&client, "web", "nginx:1", 3).await;
    let versions = || async {
        let d = api.get("web").await.ok()?.resource_version();
        let rss: Vec<_> = replica_sets(&client, "web")
            .await
            .values()
            .map(|rs| rs.resource_version())
            .collect();
        let pods: Vec<_> = pods_of(&client, "app=web")
            .await
            .iter()
            .map(|p| p.resource_version())
            .collect();
        Some((d, rss, pods))
    };
    let before = versions().await;
    // Another rollout keeps every controller busy; a sync loop on the first would show.
    api.create(
        &PostParams::default(),
        &deployment("other", 2, "nginx:1", json!({"type": "RollingUpdate"})),
    )
    .await
    .expect("create deployment");
    wait_rolled_out(&client, "other", "nginx:1", 2).await;
    set_image(&api, "other", "nginx:2").await;
    wait_rolled_out(&client, "other", "nginx:2", 2).await;
    assert_eq!(versions().await, before);
}
