//! Objects and certificates for the unit tests.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::ByteString;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use serde_json::{json, Value};

use crate::backend::SERVICE_NAME_LABEL;
use crate::snapshot::{Config, Objects, Snapshot};
use crate::tls;

pub fn from<T: serde::de::DeserializeOwned>(v: Value) -> Arc<T> {
    Arc::new(serde_json::from_value(v).expect("valid object"))
}

/// An Ingress in `default` of class `nginx`, created at second `created`.
pub fn ingress(name: &str, created: u32, spec: Value) -> Arc<Ingress> {
    let mut spec = spec;
    if spec.get("ingressClassName").is_none() {
        spec["ingressClassName"] = json!("nginx");
    }
    from(json!({
        "metadata": {"name": name, "namespace": "default", "resourceVersion": "1",
                     "creationTimestamp": format!("2024-01-01T00:00:{created:02}Z")},
        "spec": spec,
    }))
}

pub fn nginx_class() -> Arc<IngressClass> {
    from(json!({"metadata": {"name": "nginx"}, "spec": {"controller": "k8s.io/ingress-nginx"}}))
}

/// A ClusterIP Service in `default` with one port `http` 80 → 8080.
pub fn service(name: &str) -> Arc<Service> {
    from(json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"clusterIP": "10.96.0.50",
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]},
    }))
}

/// The EndpointSlice of [`service`] with ready endpoints at `ips`, port 8080.
pub fn slice(service: &str, ips: &[&str]) -> Arc<EndpointSlice> {
    let endpoints: Vec<Value> = ips
        .iter()
        .map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}}))
        .collect();
    from(json!({
        "metadata": {"name": format!("{service}-abcde"), "namespace": "default",
                     "labels": {SERVICE_NAME_LABEL: service}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints,
    }))
}

/// EndpointSlices of [`service`], one per ready endpoint at `addrs` (each with its
/// own port, as pods of one Service whose named `targetPort` resolves differently).
pub fn slices_at(service: &str, addrs: &[std::net::SocketAddr]) -> Vec<Arc<EndpointSlice>> {
    addrs
        .iter()
        .enumerate()
        .map(|(i, addr)| {
            from(json!({
                "metadata": {"name": format!("{service}-{i}"), "namespace": "default",
                             "labels": {SERVICE_NAME_LABEL: service}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": addr.port(), "protocol": "TCP"}],
                "endpoints": [{"addresses": [addr.ip().to_string()], "conditions": {"ready": true}}],
            }))
        })
        .collect()
}

/// A CA issuing certificates, as a user's own CA would.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pub pem: String,
}

impl TestCa {
    pub fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "test ca");
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        TestCa {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// A certificate for `names` and its key, PEM.
    pub fn issue(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, names[0].clone());
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// A `kubernetes.io/tls` Secret in `default`.
pub fn tls_secret(name: &str, cert_pem: &str, key_pem: &str) -> Arc<Secret> {
    Arc::new(Secret {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(BTreeMap::from([
            (
                tls::CERT_KEY.to_string(),
                ByteString(cert_pem.as_bytes().to_vec()),
            ),
            (
                tls::KEY_KEY.to_string(),
                ByteString(key_pem.as_bytes().to_vec()),
            ),
        ])),
        ..Secret::default()
    })
}

pub fn fake() -> Arc<rustls::sign::CertifiedKey> {
    Arc::new(tls::fake_certificate().unwrap())
}

/// A snapshot of `objects` with the default configuration (class `nginx`).
pub fn build(objects: &Objects) -> Snapshot {
    Snapshot::build(&Config::default(), objects, &fake(), None)
}
