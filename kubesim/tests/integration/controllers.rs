//! The control plane end to end: apiserver, `kubesim controller` and simulated nodes,
//! driven and observed with the real kubectl and kube-rs.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::runtime::{watcher, WatchStreamExt};

use crate::harness::{eventually, manifest, Cluster};

fn words(s: &str) -> BTreeSet<String> {
    s.split_whitespace().map(str::to_string).collect()
}

/// The pod IPs of `selector`, and the IPs in the Service's Endpoints and EndpointSlices.
fn ips(
    cluster: &Cluster,
    selector: &str,
    service: &str,
) -> (BTreeSet<String>, BTreeSet<String>, BTreeSet<String>) {
    let pods = cluster.ok(&[
        "get",
        "pods",
        "-l",
        selector,
        "--field-selector",
        "status.phase=Running",
        "-o",
        "jsonpath={.items[*].status.podIP}",
    ]);
    let endpoints = cluster.ok(&[
        "get",
        "endpoints",
        service,
        "-o",
        "jsonpath={.subsets[*].addresses[*].ip}",
    ]);
    let slices = cluster.ok(&[
        "get",
        "endpointslices",
        "-l",
        &format!("kubernetes.io/service-name={service}"),
        "-o",
        "jsonpath={.items[*].endpoints[*].addresses[*]}",
    ]);
    (words(&pods), words(&endpoints), words(&slices))
}

#[test]
fn seed_000_deployment_runs_and_its_service_lists_the_pods() {
    let cluster = Cluster::start(2);
    cluster.ok(&[
        "apply",
        "-f",
        manifest("000-nginx.yaml").to_str().expect("utf-8"),
    ]);
    let status = cluster.ok(&[
        "rollout",
        "status",
        "deployment/nginx-deployment",
        "--timeout=60s",
    ]);
    assert!(
        status.ends_with("deployment \"nginx-deployment\" successfully rolled out\n"),
        "{status}\n{}",
        cluster.logs()
    );

    let wide = cluster.ok(&["get", "pods", "-o", "wide"]);
    let rows: Vec<&str> = wide.lines().skip(1).collect();
    assert_eq!(rows.len(), 3, "{wide}");
    for row in &rows {
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert!(cells[0].starts_with("nginx-deployment-"), "{wide}");
        assert_eq!((cells[1], cells[2]), ("1/1", "Running"), "{wide}");
        assert!(
            cells[5].starts_with("10.244."),
            "pod IP from the node's podCIDR: {wide}"
        );
        assert!(cells[6].starts_with("kubesim-node-"), "{wide}");
    }

    let ready = eventually(20, || {
        let (pods, endpoints, slices) = ips(&cluster, "app=nginx", "nginx-svc");
        (pods.len() == 3 && pods == endpoints && pods == slices).then_some(pods)
    });
    let pods = ready.unwrap_or_else(|| {
        panic!(
            "endpoints never matched the pods: {:?}\n{}",
            ips(&cluster, "app=nginx", "nginx-svc"),
            cluster.logs()
        )
    });
    // `kubectl get endpoints` shows podIP:targetPort, as in seed 002.
    let table = cluster.ok(&["get", "endpoints", "nginx-svc"]);
    let listed = table
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_default()
        .to_string();
    let expected: BTreeSet<String> = pods.iter().map(|ip| format!("{ip}:80")).collect();
    assert_eq!(
        listed
            .split(',')
            .map(str::to_string)
            .collect::<BTreeSet<_>>(),
        expected,
        "{table}"
    );

    // Deleting the Deployment takes its ReplicaSet and pods with it.
    cluster.ok(&["delete", "deployment", "nginx-deployment"]);
    let gone = eventually(30, || {
        let rest = cluster.ok(&["get", "replicasets,pods", "-l", "app=nginx", "-o", "name"]);
        rest.trim().is_empty().then_some(())
    });
    assert!(gone.is_some(), "{}", cluster.ok(&["get", "all"]));
    let emptied = eventually(20, || {
        ips(&cluster, "app=nginx", "nginx-svc")
            .1
            .is_empty()
            .then_some(())
    });
    assert!(emptied.is_some(), "endpoints still list pods");
}

#[test]
fn scaling_keeps_endpoints_and_slices_exact_and_unready_pods_move_aside() {
    let cluster = Cluster::start(3);
    cluster.ok(&[
        "apply",
        "-f",
        manifest("000-nginx.yaml").to_str().expect("utf-8"),
    ]);
    for replicas in [0, 1, 2, 1, 0, 2] {
        cluster.ok(&[
            "scale",
            "deployment/nginx-deployment",
            &format!("--replicas={replicas}"),
        ]);
        let matched = eventually(30, || {
            let (pods, endpoints, slices) = ips(&cluster, "app=nginx", "nginx-svc");
            let all = cluster.ok(&["get", "pods", "-l", "app=nginx", "-o", "name"]);
            (pods.len() == replicas
                && all.lines().count() == replicas
                && pods == endpoints
                && pods == slices)
                .then_some(())
        });
        assert!(
            matched.is_some(),
            "at {replicas} replicas: {:?}\n{}",
            ips(&cluster, "app=nginx", "nginx-svc"),
            cluster.logs()
        );
    }

    // A pod reported unready moves to notReadyAddresses and to ready:false in its slice.
    let pod = cluster.ok(&[
        "get",
        "pods",
        "-l",
        "app=nginx",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ]);
    let ip = cluster.ok(&["get", "pod", &pod, "-o", "jsonpath={.status.podIP}"]);
    let unready = r#"{"status":{"conditions":[{"type":"Ready","status":"False"},{"type":"ContainersReady","status":"False"}]}}"#;
    cluster.ok(&[
        "patch",
        "pod",
        &pod,
        "--subresource=status",
        "--type=strategic",
        "-p",
        unready,
    ]);
    let moved = eventually(20, || {
        let not_ready = cluster.ok(&[
            "get",
            "endpoints",
            "nginx-svc",
            "-o",
            "jsonpath={.subsets[*].notReadyAddresses[*].ip}",
        ]);
        let slice = cluster.ok(&[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=nginx-svc",
            "-o",
            &format!(
                "jsonpath={{.items[*].endpoints[?(@.addresses[0]==\"{ip}\")].conditions.ready}}"
            ),
        ]);
        (not_ready.trim() == ip && slice.trim() == "false").then_some(())
    });
    assert!(
        moved.is_some(),
        "{}",
        cluster.ok(&["get", "endpoints", "nginx-svc", "-o", "yaml"])
    );
}

const ROLLING: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: roller
  annotations:
    kubernetes.io/change-cause: first
spec:
  replicas: 4
  minReadySeconds: 1
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 25%
      maxUnavailable: 25%
  selector:
    matchLabels:
      app: roller
  template:
    metadata:
      labels:
        app: roller
    spec:
      containers:
      - name: web
        image: nginx:1.14.2
        ports:
        - containerPort: 80
";

#[tokio::test(flavor = "multi_thread")]
async fn rolling_update_respects_surge_and_unavailability_and_rollout_commands_work() {
    let cluster = Cluster::start(2);
    let path = cluster.file("roller.yaml", ROLLING);
    cluster.ok(&["apply", "-f", &path]);
    let first = cluster.ok(&["rollout", "status", "deployment/roller", "--timeout=60s"]);
    assert!(
        first.ends_with("deployment \"roller\" successfully rolled out\n"),
        "{first}"
    );

    // Watch the Deployment's status at every event while the image changes.
    let client = cluster.client().await;
    let api: kube::Api<Deployment> = kube::Api::namespaced(client, "default");
    let events = watcher(
        api,
        watcher::Config::default().fields("metadata.name=roller"),
    )
    .applied_objects();
    let observer = tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut events = std::pin::pin!(events);
        while let Ok(Some(event)) =
            tokio::time::timeout(Duration::from_secs(90), events.next()).await
        {
            let d = match event {
                Ok(d) => d,
                Err(e) => panic!("watch failed: {e:?}"),
            };
            let observed =
                d.status.as_ref().and_then(|s| s.observed_generation) >= d.metadata.generation;
            let status = d.status.unwrap_or_default();
            seen.push((
                status.replicas.unwrap_or(0),
                status.available_replicas.unwrap_or(0),
                status.updated_replicas.unwrap_or(0),
            ));
            let done = observed
                && d.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get("deployment.kubernetes.io/revision"))
                    .map(String::as_str)
                    == Some("2")
                && status.updated_replicas == Some(4)
                && status.available_replicas == Some(4)
                && status.replicas == Some(4);
            if done {
                break;
            }
        }
        seen
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.ok(&["set", "image", "deployment/roller", "web=nginx:1.16.1"]);
    cluster.ok(&[
        "annotate",
        "deployment/roller",
        "kubernetes.io/change-cause=upgrade to 1.16.1",
        "--overwrite",
    ]);
    let second = cluster.ok(&["rollout", "status", "deployment/roller", "--timeout=90s"]);
    assert!(
        second.contains("Waiting for deployment \"roller\" rollout to finish"),
        "progress is reported: {second}"
    );
    assert!(
        second.ends_with("deployment \"roller\" successfully rolled out\n"),
        "{second}"
    );
    let seen = observer.await.expect("observer");
    assert!(seen.len() > 3, "{seen:?}");
    for (replicas, available, _) in &seen {
        assert!(
            *replicas <= 5,
            "more than replicas + maxSurge pods: {seen:?}"
        );
        assert!(
            *available >= 3,
            "fewer than replicas - maxUnavailable available: {seen:?}"
        );
    }

    let history = cluster.ok(&["rollout", "history", "deployment/roller"]);
    let lines: Vec<Vec<&str>> = history
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l.first() == Some(&"1") && l.get(1) == Some(&"first")),
        "{history}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.first() == Some(&"2") && l[1..].join(" ") == "upgrade to 1.16.1"),
        "{history}"
    );

    cluster.ok(&["rollout", "undo", "deployment/roller"]);
    let third = cluster.ok(&["rollout", "status", "deployment/roller", "--timeout=90s"]);
    assert!(
        third.ends_with("deployment \"roller\" successfully rolled out\n"),
        "{third}"
    );
    assert_eq!(
        cluster.ok(&[
            "get",
            "deployment",
            "roller",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}"
        ]),
        "nginx:1.14.2"
    );
    assert_eq!(
        cluster.ok(&[
            "get",
            "deployment",
            "roller",
            "-o",
            "jsonpath={.metadata.annotations.deployment\\.kubernetes\\.io/revision}"
        ]),
        "3"
    );
    let rs = cluster.ok(&[
        "get",
        "rs",
        "-l",
        "app=roller",
        "-o",
        "jsonpath={range .items[*]}{.spec.replicas} {end}",
    ]);
    assert_eq!(
        words(&rs),
        words("4 0"),
        "one ReplicaSet per template, the old one at 0: {rs}"
    );
}

#[test]
fn seed_003_replicaset_keeps_four_pods_behind_its_node_port() {
    let cluster = Cluster::start(2);
    let out = cluster.apply("003-replicaset.yaml");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let four = eventually(30, || {
        let (pods, endpoints, _) = ips(&cluster, "app=web", "ex1-svc-external");
        (pods.len() == 4 && pods == endpoints).then_some(pods)
    });
    assert!(four.is_some(), "{}", cluster.logs());
    let victim = cluster.ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ]);
    cluster.ok(&["delete", "pod", &victim]);
    let replaced = eventually(30, || {
        let names = cluster.ok(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "--field-selector",
            "status.phase=Running",
            "-o",
            "name",
        ]);
        (names.lines().count() == 4 && !names.contains(&victim)).then_some(())
    });
    assert!(replaced.is_some(), "the ReplicaSet replaces a deleted pod");
    let rs = cluster.ok(&["get", "rs", "example-1"]);
    let cells: Vec<&str> = rs
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(cells[1..4], ["4", "4", "4"], "{rs}");
}
