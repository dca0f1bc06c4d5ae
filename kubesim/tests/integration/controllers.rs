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

/// The ENDPOINTS column of `kubectl get endpoints <service>`, one `ip:port` per entry.
fn listed_endpoints(cluster: &Cluster, service: &str) -> (BTreeSet<String>, String) {
    let table = cluster.ok(&["get", "endpoints", service]);
    let listed = table
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_default()
        .split(',')
        .map(str::to_string)
        .collect();
    (listed, table)
}

/// Runs `kubectl rollout status` and asserts that it reports the rollout finished.
fn rolled_out(cluster: &Cluster, deployment: &str) -> String {
    let status = cluster.ok(&[
        "rollout",
        "status",
        &format!("deployment/{deployment}"),
        "--timeout=90s",
    ]);
    assert!(
        status.ends_with(&format!(
            "deployment \"{deployment}\" successfully rolled out\n"
        )),
        "{status}\n{}",
        cluster.logs()
    );
    status
}

/// `kubectl get <what> -o jsonpath=<path>`.
fn jsonpath(cluster: &Cluster, what: &[&str], path: &str) -> String {
    let path = format!("jsonpath={path}");
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    args.extend_from_slice(&["-o", &path]);
    cluster.ok(&args)
}

/// Waits until the controller has recorded the Deployment's current generation.
fn observed(cluster: &Cluster, deployment: &str) {
    let seen = eventually(30, || {
        let generations = jsonpath(
            cluster,
            &["deployment", deployment],
            "{.metadata.generation} {.status.observedGeneration}",
        );
        let generations: Vec<&str> = generations.split_whitespace().collect();
        (generations.len() == 2 && generations[0] == generations[1]).then_some(())
    });
    assert!(
        seen.is_some(),
        "the controller never observed {deployment}: {}",
        cluster.logs()
    );
}

/// `kubectl rollout history`'s rows as (revision, change-cause).
fn history(cluster: &Cluster, deployment: &str) -> Vec<(String, String)> {
    let text = cluster.ok(&["rollout", "history", &format!("deployment/{deployment}")]);
    text.lines()
        .filter_map(|l| {
            let mut cells = l.split_whitespace();
            let revision = cells.next()?;
            revision.parse::<u32>().ok()?;
            Some((revision.to_string(), cells.collect::<Vec<_>>().join(" ")))
        })
        .collect()
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
    // `kubectl get endpoints` shows podIP:targetPort.
    let (listed, table) = listed_endpoints(&cluster, "nginx-svc");
    let expected: BTreeSet<String> = pods.iter().map(|ip| format!("{ip}:80")).collect();
    assert_eq!(listed, expected, "{table}");

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
fn seed_002_service_endpoints_carry_the_target_port_not_the_service_port() {
    let cluster = Cluster::start(2);
    for file in ["000-nginx.yaml", "002-test-nginx-service.yaml"] {
        let out = cluster.apply(file);
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let ready = eventually(30, || {
        let (pods, endpoints, slices) = ips(&cluster, "app=nginx", "test-nginx-service");
        (pods.len() == 3 && pods == endpoints && pods == slices).then_some(pods)
    });
    let pods = ready.unwrap_or_else(|| {
        panic!(
            "endpoints never matched the pods: {:?}\n{}",
            ips(&cluster, "app=nginx", "test-nginx-service"),
            cluster.logs()
        )
    });
    assert_eq!(
        jsonpath(
            &cluster,
            &["service", "test-nginx-service"],
            "{.spec.ports[0].port}->{.spec.ports[0].targetPort}"
        ),
        "8080->80"
    );
    // Port 8080 is the Service's; the endpoints are the pods' port 80.
    let (listed, table) = listed_endpoints(&cluster, "test-nginx-service");
    let expected: BTreeSet<String> = pods.iter().map(|ip| format!("{ip}:80")).collect();
    assert_eq!(listed, expected, "{table}");
    assert!(!table.contains(":8080"), "{table}");
    assert_eq!(
        jsonpath(
            &cluster,
            &["endpoints", "test-nginx-service"],
            "{.subsets[*].ports[*].port}"
        ),
        "80"
    );
    assert_eq!(
        jsonpath(
            &cluster,
            &[
                "endpointslices",
                "-l",
                "kubernetes.io/service-name=test-nginx-service"
            ],
            "{.items[*].ports[*].port}"
        ),
        "80"
    );
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

    assert_eq!(
        history(&cluster, "roller"),
        [
            ("1".to_string(), "first".to_string()),
            ("2".to_string(), "upgrade to 1.16.1".to_string())
        ]
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

const PAUSABLE: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: pausable
spec:
  replicas: 2
  selector:
    matchLabels:
      app: pausable
  template:
    metadata:
      labels:
        app: pausable
    spec:
      containers:
      - name: web
        image: nginx:1.14.2
";

/// Each ReplicaSet of `app=pausable` as `replicas image restartedAt` (the last empty
/// when the template has no such annotation).
fn pausable_replica_sets(cluster: &Cluster) -> BTreeSet<String> {
    let rows = jsonpath(
        cluster,
        &["rs", "-l", "app=pausable"],
        "{range .items[*]}{.spec.replicas} {.spec.template.spec.containers[0].image} \
         {.spec.template.metadata.annotations.kubectl\\.kubernetes\\.io/restartedAt}{\"\\n\"}{end}",
    );
    rows.lines().map(|l| l.trim().to_string()).collect()
}

#[test]
fn rollout_pause_resume_and_restart_through_kubectl() {
    let cluster = Cluster::start(2);
    let path = cluster.file("pausable.yaml", PAUSABLE);
    cluster.ok(&["apply", "-f", &path]);
    rolled_out(&cluster, "pausable");

    // Paused: a new template is recorded but not rolled out.
    assert_eq!(
        cluster.ok(&["rollout", "pause", "deployment/pausable"]),
        "deployment.apps/pausable paused\n"
    );
    cluster.ok(&["set", "image", "deployment/pausable", "web=nginx:1.16.1"]);
    observed(&cluster, "pausable");
    assert_eq!(
        pausable_replica_sets(&cluster),
        BTreeSet::from(["2 nginx:1.14.2".to_string()]),
        "no new ReplicaSet while paused"
    );
    assert_eq!(
        jsonpath(
            &cluster,
            &["deployment", "pausable"],
            "{.status.conditions[?(@.type==\"Progressing\")].reason}"
        ),
        "DeploymentPaused"
    );
    let waiting = cluster.ok(&["rollout", "status", "deployment/pausable", "--watch=false"]);
    assert_eq!(
        waiting,
        "Waiting for deployment \"pausable\" rollout to finish: 0 out of 2 new replicas have been updated...\n"
    );
    assert_eq!(
        jsonpath(
            &cluster,
            &["pods", "-l", "app=pausable"],
            "{.items[*].spec.containers[0].image}"
        ),
        "nginx:1.14.2 nginx:1.14.2"
    );

    // Resumed: the new ReplicaSet takes over.
    assert_eq!(
        cluster.ok(&["rollout", "resume", "deployment/pausable"]),
        "deployment.apps/pausable resumed\n"
    );
    rolled_out(&cluster, "pausable");
    let replaced = eventually(30, || {
        let rss = pausable_replica_sets(&cluster);
        (rss == BTreeSet::from(["0 nginx:1.14.2".to_string(), "2 nginx:1.16.1".to_string()]))
            .then_some(())
    });
    assert!(replaced.is_some(), "{:?}", pausable_replica_sets(&cluster));
    let progressing = eventually(30, || {
        let reason = jsonpath(
            &cluster,
            &["deployment", "pausable"],
            "{.status.conditions[?(@.type==\"Progressing\")].reason}",
        );
        (reason == "NewReplicaSetAvailable").then_some(())
    });
    assert!(
        progressing.is_some(),
        "{}",
        cluster.ok(&["get", "deployment", "pausable", "-o", "yaml"])
    );

    // Restarted: the same image in a new ReplicaSet, its template stamped by kubectl.
    assert_eq!(
        cluster.ok(&["rollout", "restart", "deployment/pausable"]),
        "deployment.apps/pausable restarted\n"
    );
    let restarted_at = jsonpath(
        &cluster,
        &["deployment", "pausable"],
        "{.spec.template.metadata.annotations.kubectl\\.kubernetes\\.io/restartedAt}",
    );
    assert!(!restarted_at.is_empty());
    rolled_out(&cluster, "pausable");
    let expected = BTreeSet::from([
        "0 nginx:1.14.2".to_string(),
        "0 nginx:1.16.1".to_string(),
        format!("2 nginx:1.16.1 {restarted_at}"),
    ]);
    let rolled = eventually(30, || {
        (pausable_replica_sets(&cluster) == expected).then_some(())
    });
    assert!(rolled.is_some(), "{:?}", pausable_replica_sets(&cluster));
    assert_eq!(
        jsonpath(
            &cluster,
            &["deployment", "pausable"],
            "{.metadata.annotations.deployment\\.kubernetes\\.io/revision}"
        ),
        "3"
    );
    let pods = eventually(30, || {
        let stamps = jsonpath(
            &cluster,
            &["pods", "-l", "app=pausable"],
            "{.items[*].metadata.annotations.kubectl\\.kubernetes\\.io/restartedAt}",
        );
        (stamps.split_whitespace().collect::<Vec<_>>() == [restarted_at.as_str(); 2]).then_some(())
    });
    assert!(
        pods.is_some(),
        "the pods were not replaced: {}",
        cluster.ok(&["get", "pods", "-l", "app=pausable", "-o", "yaml"])
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

#[test]
fn seed_003_rolling_update_waits_min_ready_seconds_and_keeps_the_service_served() {
    // On a fresh server: after 003-replicaset.yaml its nodePort 30000 is taken.
    let cluster = Cluster::start(2);
    let out = cluster.apply("003-rolling-update.yaml");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created = eventually(30, || {
        let rs = jsonpath(
            &cluster,
            &["rs", "-l", "app=web"],
            "{.items[*].spec.minReadySeconds}",
        );
        (!rs.is_empty()).then_some(rs)
    });
    assert_eq!(
        created.as_deref(),
        Some("5"),
        "the ReplicaSet carries the Deployment's minReadySeconds"
    );
    // All four pods Ready before any is available: availability waits minReadySeconds.
    let held = eventually(30, || {
        let counts = jsonpath(
            &cluster,
            &["deployment", "example-2"],
            "{.status.readyReplicas},{.status.availableReplicas}",
        );
        let (ready, available) = counts.split_once(',')?;
        (ready == "4" && available.parse::<i32>().unwrap_or(0) < 4).then_some(())
    });
    assert!(held.is_some(), "{}", cluster.logs());
    rolled_out(&cluster, "example-2");
    assert_eq!(
        history(&cluster, "example-2"),
        [("1".to_string(), "nginx".to_string())]
    );

    // The seed's exercise: a rolling update while the Service keeps ready endpoints.
    cluster.ok(&["set", "image", "deployment/example-2", "web=nginx:1.16.1"]);
    cluster.ok(&[
        "annotate",
        "deployment/example-2",
        "kubernetes.io/change-cause=nginx 1.16.1",
        "--overwrite",
    ]);
    let (status, fewest) = std::thread::scope(|scope| {
        let rollout = scope.spawn(|| rolled_out(&cluster, "example-2"));
        let mut fewest = usize::MAX;
        while !rollout.is_finished() {
            let ready = jsonpath(
                &cluster,
                &["endpoints", "ex2-svc-external"],
                "{.subsets[*].addresses[*].ip}",
            );
            fewest = fewest.min(ready.split_whitespace().count());
            std::thread::sleep(Duration::from_millis(100));
        }
        (rollout.join().expect("rollout status"), fewest)
    });
    assert!(
        status.contains("Waiting for deployment \"example-2\" rollout to finish"),
        "{status}"
    );
    assert!(
        fewest >= 3,
        "fewer ready endpoints than replicas - maxUnavailable: {fewest}"
    );
    assert_eq!(
        history(&cluster, "example-2"),
        [
            ("1".to_string(), "nginx".to_string()),
            ("2".to_string(), "nginx 1.16.1".to_string())
        ]
    );
    let replaced = eventually(30, || {
        let images = jsonpath(
            &cluster,
            &["pods", "-l", "app=web"],
            "{.items[*].spec.containers[0].image}",
        );
        let (pods, endpoints, _) = ips(&cluster, "app=web", "ex2-svc-external");
        (images.split_whitespace().collect::<Vec<_>>() == ["nginx:1.16.1"; 4] && pods == endpoints)
            .then_some(())
    });
    assert!(
        replaced.is_some(),
        "{}",
        cluster.ok(&["get", "pods,endpoints", "-o", "wide"])
    );
    assert_eq!(
        words(&jsonpath(
            &cluster,
            &["rs", "-l", "app=web"],
            "{range .items[*]}{.spec.replicas}/{.spec.minReadySeconds} {end}"
        )),
        words("4/5 0/5")
    );
}
