//! The endpoints behind an Ingress backend (`service.name` with `port.number` or
//! `port.name`), found as kube-proxy finds them: the backend port picks a port of the
//! Service, and that port's endpoints are the ready endpoints of the Service's
//! EndpointSlices, at the slice port of the same name (the EndpointSlice controller
//! names slice ports after Service ports and gives them the resolved `targetPort`).
//! The controller proxies to these addresses directly, not through the ClusterIP.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::ServiceBackendPort;

/// The label naming the Service of an EndpointSlice.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The port of a Service backend.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BackendPort {
    Number(i32),
    Name(String),
}

impl BackendPort {
    /// `port.number` if set, else `port.name`.
    pub fn from_spec(port: &ServiceBackendPort) -> Option<BackendPort> {
        match (port.number, port.name.as_deref()) {
            (Some(number), _) => Some(BackendPort::Number(number)),
            (None, Some(name)) if !name.is_empty() => Some(BackendPort::Name(name.to_string())),
            _ => None,
        }
    }

    /// The first TCP port of `service`, the port of `--default-backend-service`.
    pub fn first_of(service: &Service) -> Option<BackendPort> {
        service
            .spec
            .as_ref()?
            .ports
            .iter()
            .flatten()
            .find(|p| is_tcp(p.protocol.as_deref()))
            .map(|p| BackendPort::Number(p.port))
    }
}

impl fmt::Display for BackendPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendPort::Number(n) => write!(f, "{n}"),
            BackendPort::Name(name) => f.write_str(name),
        }
    }
}

/// Why a backend has no endpoints at all, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    NoService,
    NoPort(BackendPort),
    ExternalName,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::NoService => f.write_str("service not found"),
            Problem::NoPort(port) => write!(f, "service has no TCP port {port}"),
            Problem::ExternalName => f.write_str("ExternalName services are not proxied"),
        }
    }
}

/// EndpointSlices by the namespace and name of their Service.
#[derive(Debug, Default)]
pub struct Slices<'a> {
    by_service: HashMap<&'a str, HashMap<&'a str, Vec<&'a EndpointSlice>>>,
}

impl<'a> Slices<'a> {
    pub fn new(slices: impl IntoIterator<Item = &'a EndpointSlice>) -> Slices<'a> {
        let mut by_service: HashMap<&str, HashMap<&str, Vec<_>>> = HashMap::new();
        for slice in slices {
            let Some(namespace) = slice.metadata.namespace.as_deref() else {
                continue;
            };
            let Some(service) = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
            else {
                continue;
            };
            by_service
                .entry(namespace)
                .or_default()
                .entry(service.as_str())
                .or_default()
                .push(slice);
        }
        Slices { by_service }
    }

    pub fn of(&self, namespace: &str, service: &str) -> &[&'a EndpointSlice] {
        self.by_service
            .get(namespace)
            .and_then(|services| services.get(service))
            .map_or(&[], Vec::as_slice)
    }
}

fn is_tcp(protocol: Option<&str>) -> bool {
    protocol.unwrap_or("TCP") == "TCP"
}

/// The ready endpoints of `port` of `service` (sorted, without duplicates), or why
/// there can be none.
pub fn endpoints(
    service: Option<&Service>,
    slices: &[&EndpointSlice],
    port: &BackendPort,
) -> Result<Vec<SocketAddr>, Problem> {
    let spec = service
        .ok_or(Problem::NoService)?
        .spec
        .as_ref()
        .ok_or(Problem::NoService)?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return Err(Problem::ExternalName);
    }
    let service_port = spec
        .ports
        .iter()
        .flatten()
        .filter(|p| is_tcp(p.protocol.as_deref()))
        .find(|p| match port {
            BackendPort::Number(n) => p.port == *n,
            BackendPort::Name(name) => p.name.as_deref() == Some(name.as_str()),
        })
        .ok_or_else(|| Problem::NoPort(port.clone()))?;
    let port_name = service_port.name.as_deref().unwrap_or_default();
    let mut addresses = Vec::new();
    for slice in slices {
        if slice.address_type == "FQDN" {
            continue;
        }
        let Some(number) = slice
            .ports
            .iter()
            .flatten()
            .filter(|p| is_tcp(p.protocol.as_deref()))
            .find(|p| p.name.as_deref().unwrap_or_default() == port_name)
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for endpoint in &slice.endpoints {
            let ready = endpoint
                .conditions
                .as_ref()
                .and_then(|c| c.ready)
                .unwrap_or(true);
            let ip = endpoint
                .addresses
                .first()
                .and_then(|a| a.parse::<IpAddr>().ok());
            if let (true, Some(ip)) = (ready, ip) {
                addresses.push(SocketAddr::new(ip, number));
            }
        }
    }
    addresses.sort();
    addresses.dedup();
    Ok(addresses)
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn from(v: Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    fn slice(name: &str, service: &str, ports: Value, endpoints: Value) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default",
                         "labels": {SERVICE_NAME_LABEL: service}},
            "addressType": "IPv4",
            "ports": ports,
            "endpoints": endpoints,
        }))
        .unwrap()
    }

    fn web() -> Service {
        from(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"ports": [
                {"name": "http", "port": 80, "targetPort": "web", "protocol": "TCP"},
                {"name": "admin", "port": 9000, "targetPort": 9090},
                {"name": "dns", "port": 53, "protocol": "UDP"},
            ]},
        }))
    }

    fn web_slices() -> Vec<EndpointSlice> {
        vec![
            slice(
                "web-a",
                "web",
                json!([{"name": "http", "port": 8080, "protocol": "TCP"},
                       {"name": "admin", "port": 9090}]),
                json!([
                    {"addresses": ["10.244.1.5"], "conditions": {"ready": true}},
                    {"addresses": ["10.244.1.6"], "conditions": {"ready": false, "terminating": true}},
                    {"addresses": ["10.244.1.7"]},
                ]),
            ),
            // A pod of the same Service whose named targetPort resolves elsewhere.
            slice(
                "web-b",
                "web",
                json!([{"name": "http", "port": 8081}]),
                json!([{"addresses": ["10.244.2.5"], "conditions": {"ready": true}},
                       {"addresses": ["10.244.1.5"], "conditions": {"ready": true}}]),
            ),
        ]
    }

    #[track_caller]
    fn check(port: BackendPort, expected: Result<Vec<&str>, Problem>) {
        let svc = web();
        let slices = web_slices();
        let index = Slices::new(&slices);
        let got = endpoints(Some(&svc), index.of("default", "web"), &port)
            .map(|v| v.iter().map(ToString::to_string).collect::<Vec<_>>());
        let expected = expected.map(|v| v.into_iter().map(String::from).collect::<Vec<_>>());
        assert_eq!(got, expected, "{port}");
    }

    #[test]
    fn ports_resolve_by_number_or_name_to_ready_endpoints_of_the_named_slice_port() {
        check(
            BackendPort::Number(80),
            Ok(vec![
                "10.244.1.5:8080",
                "10.244.1.5:8081",
                "10.244.1.7:8080",
                "10.244.2.5:8081",
            ]),
        );
        check(
            BackendPort::Name("http".into()),
            Ok(vec![
                "10.244.1.5:8080",
                "10.244.1.5:8081",
                "10.244.1.7:8080",
                "10.244.2.5:8081",
            ]),
        );
        check(
            BackendPort::Name("admin".into()),
            Ok(vec!["10.244.1.5:9090", "10.244.1.7:9090"]),
        );
        check(
            BackendPort::Number(9090),
            Err(Problem::NoPort(BackendPort::Number(9090))),
        );
        check(
            BackendPort::Number(53),
            Err(Problem::NoPort(BackendPort::Number(53))),
        );
        check(
            BackendPort::Name("metrics".into()),
            Err(Problem::NoPort(BackendPort::Name("metrics".into()))),
        );
    }

    #[test]
    fn unnamed_single_ports_and_missing_or_external_services() {
        let svc = from(json!({
            "metadata": {"name": "api", "namespace": "default"},
            "spec": {"ports": [{"port": 8080, "targetPort": 80}]},
        }));
        let slices = [slice(
            "api-x",
            "api",
            json!([{"port": 80}]),
            json!([{"addresses": ["10.244.3.3"]}]),
        )];
        let index = Slices::new(&slices);
        assert_eq!(
            endpoints(
                Some(&svc),
                index.of("default", "api"),
                &BackendPort::Number(8080)
            ),
            Ok(vec!["10.244.3.3:80".parse().unwrap()])
        );
        assert_eq!(BackendPort::first_of(&svc), Some(BackendPort::Number(8080)));
        assert!(index.of("other", "api").is_empty());
        assert_eq!(
            endpoints(None, &[], &BackendPort::Number(80)),
            Err(Problem::NoService)
        );
        let external = from(json!({
            "metadata": {"name": "ext", "namespace": "default"},
            "spec": {"type": "ExternalName", "externalName": "example.com"},
        }));
        assert_eq!(
            endpoints(Some(&external), &[], &BackendPort::Number(80)),
            Err(Problem::ExternalName)
        );
        let no_endpoints = endpoints(Some(&web()), &[], &BackendPort::Number(80));
        assert_eq!(no_endpoints, Ok(vec![]));
    }

    #[test]
    fn backend_ports_from_the_spec() {
        let number = ServiceBackendPort {
            number: Some(80),
            name: None,
        };
        let name = ServiceBackendPort {
            number: None,
            name: Some("http".into()),
        };
        assert_eq!(
            BackendPort::from_spec(&number),
            Some(BackendPort::Number(80))
        );
        assert_eq!(
            BackendPort::from_spec(&name),
            Some(BackendPort::Name("http".into()))
        );
        assert_eq!(BackendPort::from_spec(&ServiceBackendPort::default()), None);
    }
}
