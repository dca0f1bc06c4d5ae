//! A pod's life on a real node: an image kubesim cannot run, liveness restarts and
//! the previous instance's log, init containers, the environment, a terminal for
//! `kubectl exec -it`, completion, graceful termination, and a cluster that leaves
//! nothing behind even when its test fails.

use std::process::Command;

use crate::harness::eventually;
use crate::netcluster::NetCluster;

const PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: bad}
spec:
  containers:
  - {name: prom, image: quay.io/prometheus/prometheus:v2.53.0}
---
apiVersion: v1
kind: Pod
metadata: {name: flaky}
spec:
  containers:
  - name: app
    image: busybox:1.36
    command: ["sh", "-c", "echo started; exec sleep 1000"]
    livenessProbe:
      exec: {command: ["false"]}
      initialDelaySeconds: 1
      periodSeconds: 1
      failureThreshold: 1
---
apiVersion: v1
kind: Pod
metadata: {name: env, labels: {tier: demo}}
spec:
  terminationGracePeriodSeconds: 30
  initContainers:
  - {name: setup, image: busybox:1.36, command: ["sh", "-c", "echo preparing"]}
  containers:
  - name: app
    image: busybox:1.36
    command: ["sh", "-c", "trap 'echo bye; exit 0' TERM; while true; do sleep 0.1; done"]
    env:
    - name: MY_IP
      valueFrom: {fieldRef: {fieldPath: status.podIP}}
    - name: TIER
      valueFrom: {fieldRef: {fieldPath: "metadata.labels['tier']"}}
    - {name: GREETING, value: "hello from $(TIER)"}
    - name: PASSWORD
      valueFrom: {secretKeyRef: {name: creds, key: password}}
    envFrom:
    - {secretRef: {name: creds}, prefix: CREDS_}
---
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {password: s3cret, user: admin}
---
apiVersion: v1
kind: Pod
metadata: {name: once}
spec:
  restartPolicy: Never
  containers:
  - {name: job, image: busybox:1.36, command: ["sh", "-c", "echo done"]}
"#;

fn jsonpath(cluster: &NetCluster, pod: &str, path: &str) -> String {
    cluster.ok(&["get", "pod", pod, "-o", &format!("jsonpath={path}")])
}

#[test]
fn a_pods_life_on_a_real_node() {
    let cluster = NetCluster::start(1);
    cluster.ok(&["apply", "-f", &cluster.file("pods.yaml", PODS)]);

    let reason = eventually(30, || {
        let r = jsonpath(
            &cluster,
            "bad",
            "{.status.containerStatuses[0].state.waiting.reason}",
        );
        (r == "ErrImagePull").then_some(r)
    });
    assert!(reason.is_some(), "{}", cluster.logs());
    let message = jsonpath(
        &cluster,
        "bad",
        "{.status.containerStatuses[0].state.waiting.message}",
    );
    assert!(
        message.contains("nginx*"),
        "the message names what runs: {message}"
    );
    assert_eq!(jsonpath(&cluster, "bad", "{.status.phase}"), "Pending");

    let restarted = eventually(30, || {
        let n = jsonpath(
            &cluster,
            "flaky",
            "{.status.containerStatuses[0].restartCount}",
        );
        (n.parse::<u32>().unwrap_or(0) >= 1).then_some(())
    });
    assert!(
        restarted.is_some(),
        "the liveness probe did not restart flaky"
    );
    let last = jsonpath(
        &cluster,
        "flaky",
        "{.status.containerStatuses[0].lastState.terminated.exitCode}",
    );
    assert_eq!(last, "137", "killed by SIGKILL");
    let previous = cluster.ok(&["logs", "flaky", "--previous"]);
    assert_eq!(previous, "started\n");

    let ip = cluster.wait_running("default", "env");
    let init = jsonpath(
        &cluster,
        "env",
        "{.status.initContainerStatuses[0].state.terminated.reason}",
    );
    assert_eq!(init, "Completed");
    assert_eq!(cluster.ok(&["logs", "env", "-c", "setup"]), "preparing\n");
    let env = cluster.ok(&[
        "exec",
        "env",
        "--",
        "sh",
        "-c",
        "echo $MY_IP/$GREETING/$HOSTNAME/$PASSWORD/$CREDS_user",
    ]);
    assert_eq!(env.trim(), format!("{ip}/hello from demo/env/s3cret/admin"));

    let terminal = Command::new("script")
        .args([
            "-qec",
            &interactive(&cluster, "env", "tty; echo typed"),
            "/dev/null",
        ])
        .output()
        .expect("run script");
    let text = String::from_utf8_lossy(&terminal.stdout).into_owned();
    assert!(
        text.contains("/dev/pts/"),
        "a terminal inside the pod: {text}"
    );
    assert!(text.contains("typed"), "{text}");

    let done = eventually(30, || {
        (jsonpath(&cluster, "once", "{.status.phase}") == "Succeeded").then_some(())
    });
    assert!(
        done.is_some(),
        "{}",
        cluster.ok(&["get", "pod", "once", "-o", "yaml"])
    );
    assert_eq!(cluster.ok(&["logs", "once"]), "done\n");

    // The app exits on SIGTERM, so the deletion ends long before its 30s grace.
    let netns = cluster.pod_netns("default", "env");
    cluster.ok(&["delete", "pod", "env", "--wait=false"]);
    let gone = eventually(10, || {
        let out = cluster.kubectl(&["get", "pod", "env"]);
        (!out.status.success()).then_some(())
    });
    assert!(
        gone.is_some(),
        "env was not stopped by SIGTERM:\n{}",
        cluster.logs()
    );
    assert!(!std::path::Path::new("/run/netns").join(&netns).exists());
}

/// A `kubectl exec -it` command line running `script` in `pod`.
fn interactive(cluster: &NetCluster, pod: &str, script: &str) -> String {
    format!(
        "KUBECONFIG={} HOME={} {} --cache-dir {} exec -it {pod} -- sh -c '{script}'",
        cluster.kubeconfig.display(),
        cluster.dir.path().display(),
        cluster.kubectl.display(),
        cluster.dir.path().join("kube-cache").display(),
    )
}

#[test]
fn a_failed_test_leaves_no_namespace_behind() {
    let name = std::panic::catch_unwind(|| {
        let cluster = NetCluster::start(1);
        cluster.ok(&["run", "web", "--image=nginx:1.25", "--restart=Never"]);
        cluster.wait_running("default", "web");
        let name = cluster.name.clone();
        std::panic::panic_any(name)
    })
    .expect_err("the test body fails")
    .downcast::<String>()
    .expect("the cluster's name");
    let left: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .filter(|n| n.starts_with(&format!("{name}-")))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");
}
