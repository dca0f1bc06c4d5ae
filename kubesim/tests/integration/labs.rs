//! The labs of `scenarios/labs/`, run as a learner runs them (`kubesim scenario run`),
//! each on a cluster of its own, and a broken scenario whose report must name the step
//! that failed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_owned()
}

fn scenario(file: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kubesim"))
        .args(["scenario", "run"])
        .arg(file)
        .current_dir(root())
        .output()
        .expect("run kubesim scenario")
}

fn lab(name: &str) {
    let out = scenario(&Path::new("scenarios/labs").join(name));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{name} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("PASS  "), "{stdout}");
    assert!(!stdout.contains("FAIL  "), "{stdout}");
}

#[test]
fn lab_01_clusterip_endpoints() {
    lab("01-clusterip-endpoints.yaml");
}

#[test]
fn lab_02_nodeport() {
    lab("02-nodeport.yaml");
}

#[test]
fn lab_03_dns() {
    lab("03-dns.yaml");
}

#[test]
fn lab_04_proxy_modes() {
    lab("04-proxy-modes.yaml");
}

#[test]
fn lab_05_session_affinity() {
    lab("05-session-affinity.yaml");
}

#[test]
fn lab_06_rolling_update() {
    lab("06-rolling-update.yaml");
}

#[test]
fn lab_07_vxlan() {
    lab("07-vxlan.yaml");
}

#[test]
fn lab_08_loadbalancer() {
    lab("08-loadbalancer.yaml");
}

#[test]
fn lab_09_ingress() {
    lab("09-ingress.yaml");
}

const BROKEN: &str = r#"
name: broken on purpose
cluster: {nodes: 1, dns: false}
steps:
- apply: |
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: hostnames}
    spec:
      replicas: 3
      selector: {matchLabels: {app: hostnames}}
      template:
        metadata: {labels: {app: hostnames}}
        spec:
          containers:
          - name: agnhost
            image: registry.k8s.io/e2e-test-images/agnhost:2.53
            args: [netexec, --http-port=8080]
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: hostnames}
    spec:
      selector: {app: hostnames}
      ports: [{port: 80, targetPort: 8080}]
- wait: {rollout: deployment/hostnames}
- kubectl: [get, svc, hostnames, -o, "jsonpath={.spec.clusterIP}"]
  save: ip
- say: Three pods cannot be four backends.
  requests: {from: host node1, url: "http://${ip}/hostname", count: 20}
  distinctBackends: 4
  timeout: 3
- kubectl: [get, pods]
"#;

#[test]
fn a_broken_scenario_fails_naming_its_step() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("broken.yaml");
    std::fs::write(&file, BROKEN).expect("write the scenario");
    let out = scenario(&file);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "the broken scenario passed:\n{stdout}"
    );
    let report = stdout
        .split("══ report ══")
        .nth(1)
        .unwrap_or_else(|| panic!("no report:\n{stdout}"));
    assert!(
        report.contains("FAIL  broken on purpose [iptables]"),
        "{report}"
    );
    assert!(
        report.contains("step 4 failed: 20 requests from host node1"),
        "{report}"
    );
    assert!(
        report.contains("expected: 4 distinct backends, got 3: hostnames-"),
        "{report}"
    );
    assert!(
        !stdout.contains("▶ step 5"),
        "a step ran after the failure:\n{stdout}"
    );
}
