//! Request bodies captured from kubectl 1.33 (and one from 1.32) `kubectl create ...`
//! against a recording server. Each expected JSON is what the same kubectl printed for
//! the same command with `--dry-run=client -o json`, i.e. Go's JSON of the very object it
//! encoded, less `creationTimestamp: null`, which apimachinery 0.36 omits (`omitzero`).

use serde_json::{json, Value};

use super::{check, decode};

macro_rules! fixture {
    ($name:literal) => {
        (
            include_bytes!(concat!("testdata/", $name, ".pb")).as_slice(),
            include_str!(concat!("testdata/", $name, ".json")),
        )
    };
}

#[track_caller]
fn check_fixture((body, expected): (&[u8], &str)) {
    let expected: Value = serde_json::from_str(expected).unwrap();
    check(&decode(body), &expected);
}

#[test]
fn create_namespace() {
    check_fixture(fixture!("namespace"));
}

#[test]
fn create_namespace_kubectl_1_32() {
    let body = include_bytes!("testdata/namespace-kubectl-1.32.pb");
    let expected = json!({
        "kind": "Namespace",
        "apiVersion": "v1",
        "metadata": {"name": "demo132"},
        "spec": {},
        "status": {}
    });
    check(&decode(body), &expected);
}

#[test]
fn create_configmap_from_literals() {
    check_fixture(fixture!("configmap"));
}

#[test]
fn create_secret_generic() {
    check_fixture(fixture!("secret"));
}

#[test]
fn create_deployment_with_port_and_replicas() {
    check_fixture(fixture!("deployment"));
}

#[test]
fn create_deployment_with_two_images() {
    check_fixture(fixture!("deployment-two-images"));
}

#[test]
fn create_service_clusterip() {
    check_fixture(fixture!("service-clusterip"));
}

#[test]
fn create_service_nodeport_with_named_target_port() {
    check_fixture(fixture!("service-nodeport"));
}

#[test]
fn create_ingress() {
    check_fixture(fixture!("ingress"));
}

#[test]
fn create_ingress_with_class_default_backend_and_tls() {
    check_fixture(fixture!("ingress-tls"));
}
