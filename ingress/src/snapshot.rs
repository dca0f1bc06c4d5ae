//! The routing snapshot: every served Ingress folded into servers (one per host) with
//! their locations, the upstreams behind them, the certificates by host and the status
//! to publish. [`Snapshot::build`] is a pure function of the watched objects; the
//! controller swaps the whole snapshot on change, and a request keeps the snapshot it
//! started with, so a change never disturbs a request in flight.
//!
//! Ingresses merge as ingress-nginx merges them. They are taken oldest first (by
//! creation time, then namespace and name). Each rule host becomes a server; rules
//! without a host belong to the catch-all server `_`, which also answers every host
//! that has no server of its own. A path already defined for a server (same path and
//! type) by an older Ingress keeps the older backend. A request that matches no path
//! of its server gets the server's default backend: the `spec.defaultBackend` of the
//! first Ingress that named the host, else the `--default-backend-service`, else 404.
//! For the catch-all server it is the `defaultBackend` of the first Ingress that has
//! one and no rules or a rule without host (ingress-nginx takes only Ingresses without
//! rules there, though it means an Ingress's `defaultBackend` to serve all its rules;
//! kubesim follows the specification, which sends a request matching none of an
//! Ingress's rules to its `defaultBackend`).
//!
//! A host gets HTTPS with the certificate of the first `spec.tls` entry listing it
//! (an entry without hosts covers the hosts of its Ingress's rules); a Secret that is
//! missing or unusable leaves the host on the default certificate, as ingress-nginx
//! does. Plain HTTP requests for such a host are redirected to HTTPS.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{
    Ingress, IngressBackend, IngressClass, IngressLoadBalancerIngress,
};
use rustls::sign::CertifiedKey;

use crate::backend::{self, BackendPort, Slices};
use crate::class::{Class, Selector};
use crate::host::HostMap;
use crate::path::{self, PathRule, PathType};
use crate::status;
use crate::tls::{self, Certificates};
use crate::Key;

/// The name of the catch-all server, as nginx writes it.
pub const CATCH_ALL: &str = "_";

/// Where the controller publishes its address in the Ingresses' status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Publish {
    /// No status is written.
    #[default]
    Nothing,
    /// `--publish-service`: the addresses of this Service.
    Service(Key),
    /// `--publish-status-address`: these IPs or host names.
    Addresses(Vec<String>),
}

/// The controller's settings that shape a snapshot.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub class: Class,
    /// `--default-backend-service`.
    pub default_backend: Option<Key>,
    /// `--default-ssl-certificate`.
    pub default_certificate: Option<Key>,
    pub publish: Publish,
}

/// The objects a snapshot is built from, as the watches hold them.
#[derive(Debug, Clone, Default)]
pub struct Objects {
    pub ingresses: Vec<Arc<Ingress>>,
    pub classes: Vec<Arc<IngressClass>>,
    pub services: Vec<Arc<Service>>,
    pub slices: Vec<Arc<EndpointSlice>>,
    pub secrets: Vec<Arc<Secret>>,
}

/// Where a request goes.
#[derive(Debug, Clone)]
pub enum Backend {
    /// The built-in default backend: 404.
    NotFound,
    /// A Service port's endpoints (none: 503).
    Upstream(Arc<Upstream>),
}

/// The endpoints of one Service port, balanced round robin.
#[derive(Debug)]
pub struct Upstream {
    /// `namespace-service-port`, as ingress-nginx names upstreams.
    pub name: String,
    /// The Service's name.
    pub service: String,
    pub endpoints: Vec<SocketAddr>,
    next: AtomicUsize,
}

impl Upstream {
    pub fn new(name: String, service: String, endpoints: Vec<SocketAddr>) -> Upstream {
        Upstream {
            name,
            service,
            endpoints,
            next: AtomicUsize::new(0),
        }
    }

    /// The endpoints in the order one request tries them: all of them, starting at
    /// the next in round-robin order.
    pub fn attempts(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        let n = self.endpoints.len().max(1);
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        self.endpoints
            .iter()
            .cycle()
            .skip(start)
            .take(self.endpoints.len())
            .copied()
    }
}

/// A path of a server and its backend.
#[derive(Debug, Clone)]
pub struct Location {
    pub rule: PathRule,
    pub backend: Backend,
    /// The Ingress that defined it.
    pub ingress: Key,
}

/// One host (or the catch-all `_`).
#[derive(Debug, Clone)]
pub struct Server {
    pub name: String,
    pub locations: Vec<Location>,
    /// For requests matching no location.
    pub default_backend: Backend,
    /// The Ingress whose `defaultBackend` that is, if one.
    pub default_ingress: Option<Key>,
    /// Whether the host is served over HTTPS (and plain HTTP redirects there).
    pub tls: bool,
}

impl Server {
    fn new(name: &str, default_backend: Backend, default_ingress: Option<Key>) -> Server {
        Server {
            name: name.to_string(),
            locations: Vec::new(),
            default_backend,
            default_ingress,
            tls: false,
        }
    }
}

/// The outcome of routing a request.
#[derive(Debug, Clone, Copy)]
pub struct Route<'a> {
    pub server: &'a Server,
    /// The matching location, or `None` for the server's default backend.
    pub location: Option<&'a Location>,
    pub backend: &'a Backend,
}

/// An Ingress this controller serves, as its status stands.
#[derive(Debug, Clone, PartialEq)]
pub struct Served {
    pub key: Key,
    pub resource_version: Option<String>,
    pub status: Vec<IngressLoadBalancerIngress>,
}

/// Everything a request, a handshake or the status writer needs; immutable once built.
#[derive(Debug)]
pub struct Snapshot {
    /// False only for the empty snapshot served before the watches have synced.
    pub synced: bool,
    servers: HostMap<Server>,
    catch_all: Server,
    upstreams: HashMap<String, Arc<Upstream>>,
    pub certificates: Certificates,
    /// The served Ingresses, oldest first.
    pub served: Vec<Served>,
    /// The `status.loadBalancer.ingress` every served Ingress should have; `None` when
    /// nothing is to be published.
    pub status: Option<Vec<IngressLoadBalancerIngress>>,
    /// Problems met while building (missing Services, Secrets, ports), for the log.
    pub warnings: Vec<String>,
}

impl Snapshot {
    /// The snapshot before the first sync: every request 404, the default certificate.
    pub fn empty(default_certificate: Arc<CertifiedKey>) -> Snapshot {
        Snapshot {
            synced: false,
            servers: HostMap::default(),
            catch_all: Server::new(CATCH_ALL, Backend::NotFound, None),
            upstreams: HashMap::new(),
            certificates: Certificates::new(default_certificate),
            served: Vec::new(),
            status: None,
            warnings: Vec::new(),
        }
    }

    /// Folds `objects` into a snapshot. `fake_certificate` is the default certificate
    /// unless `--default-ssl-certificate` names a usable Secret; `previous` passes on
    /// the round-robin positions of upstreams that still exist.
    pub fn build(
        config: &Config,
        objects: &Objects,
        fake_certificate: &Arc<CertifiedKey>,
        previous: Option<&Snapshot>,
    ) -> Snapshot {
        Builder::new(config, objects, previous).build(fake_certificate)
    }

    /// The server, location and backend for a request to `host` (see
    /// [`crate::host::request_host`]) and `path` (see [`crate::path::normalize`]).
    pub fn route(&self, host: &str, path: &str) -> Route<'_> {
        let server = self.servers.get(host).unwrap_or(&self.catch_all);
        let location = path::best(server.locations.iter().map(|l| (&l.rule, l)), path);
        Route {
            server,
            location,
            backend: location.map_or(&server.default_backend, |l| &l.backend),
        }
    }

    /// The number of servers, the catch-all included.
    pub fn server_count(&self) -> usize {
        self.servers.len() + 1
    }

    pub fn upstream(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.upstreams.get(name)
    }
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<Key> {
    Some(Key {
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone()?,
    })
}

struct Builder<'a> {
    config: &'a Config,
    objects: &'a Objects,
    previous: Option<&'a Snapshot>,
    services: HashMap<(String, String), &'a Service>,
    slices: Slices<'a>,
    upstreams: HashMap<String, Arc<Upstream>>,
    warnings: Vec<String>,
}

impl<'a> Builder<'a> {
    fn new(config: &'a Config, objects: &'a Objects, previous: Option<&'a Snapshot>) -> Self {
        let services = objects
            .services
            .iter()
            .filter_map(|s| {
                Some((
                    (s.metadata.namespace.clone()?, s.metadata.name.clone()?),
                    &**s,
                ))
            })
            .collect();
        Builder {
            config,
            objects,
            previous,
            services,
            slices: Slices::new(objects.slices.iter().map(|s| &**s)),
            upstreams: HashMap::new(),
            warnings: Vec::new(),
        }
    }

    /// The upstream of `port` of Service `namespace/name`, made once per snapshot.
    fn upstream(&mut self, namespace: &str, name: &str, port: Option<BackendPort>) -> Backend {
        let service = self
            .services
            .get(&(namespace.to_string(), name.to_string()))
            .copied();
        let port = port.or_else(|| service.and_then(BackendPort::first_of));
        let upstream_name = match &port {
            Some(port) => format!("{namespace}-{name}-{port}"),
            None => format!("{namespace}-{name}"),
        };
        if let Some(existing) = self.upstreams.get(&upstream_name) {
            return Backend::Upstream(existing.clone());
        }
        let resolved = match &port {
            Some(port) => backend::endpoints(service, self.slices.of(namespace, name), port),
            None if service.is_none() => Err(backend::Problem::NoService),
            None => Ok(Vec::new()),
        };
        let endpoints = resolved.unwrap_or_else(|problem| {
            self.warnings
                .push(format!("service {namespace}/{name}: {problem}"));
            Vec::new()
        });
        let upstream = Upstream::new(upstream_name.clone(), name.to_string(), endpoints);
        if let Some(old) = self.previous.and_then(|p| p.upstreams.get(&upstream_name)) {
            upstream
                .next
                .store(old.next.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        let upstream = Arc::new(upstream);
        self.upstreams.insert(upstream_name, upstream.clone());
        Backend::Upstream(upstream)
    }

    fn ingress_backend(&mut self, ingress: &Key, backend: &IngressBackend) -> Option<Backend> {
        let Some(service) = &backend.service else {
            self.warnings.push(format!(
                "ingress {ingress}: resource backends are not supported"
            ));
            return None;
        };
        let port = service.port.as_ref().and_then(BackendPort::from_spec);
        if port.is_none() {
            self.warnings.push(format!(
                "ingress {ingress}: backend service {} has no port",
                service.name
            ));
            return None;
        }
        Some(self.upstream(&ingress.namespace, &service.name, port))
    }

    fn secret(&self, key: &Key) -> Option<&'a Secret> {
        self.objects
            .secrets
            .iter()
            .find(|s| {
                s.metadata.namespace.as_deref() == Some(key.namespace.as_str())
                    && s.metadata.name.as_deref() == Some(key.name.as_str())
            })
            .map(|s| &**s)
    }

    fn certificate(&mut self, key: &Key) -> Option<Arc<CertifiedKey>> {
        let Some(secret) = self.secret(key) else {
            self.warnings.push(format!("secret {key} not found"));
            return None;
        };
        match tls::from_secret(secret) {
            Ok(certified) => Some(Arc::new(certified)),
            Err(err) => {
                self.warnings.push(format!("secret {key}: {err}"));
                None
            }
        }
    }

    fn build(mut self, fake_certificate: &Arc<CertifiedKey>) -> Snapshot {
        let selector = Selector::new(
            &self.config.class,
            self.objects.classes.iter().map(|c| &**c),
        );
        let mut ingresses: Vec<(Key, &'a Ingress)> = self
            .objects
            .ingresses
            .iter()
            .filter(|i| selector.selects(i))
            .filter_map(|i| Some((key_of(&i.metadata)?, &**i)))
            .collect();
        ingresses.sort_by(|(ka, a), (kb, b)| {
            let created = |i: &Ingress| i.metadata.creation_timestamp.as_ref().map(|t| t.0);
            created(a).cmp(&created(b)).then_with(|| ka.cmp(kb))
        });

        let global_default = match self.config.default_backend.clone() {
            Some(key) => self.upstream(&key.namespace, &key.name, None),
            None => Backend::NotFound,
        };
        let mut catch_all = Server::new(CATCH_ALL, global_default.clone(), None);
        let mut servers: HostMap<Server> = HostMap::default();

        // Servers, with their default backends.
        for (key, ingress) in &ingresses {
            let Some(spec) = &ingress.spec else { continue };
            let own_default = spec
                .default_backend
                .as_ref()
                .and_then(|b| self.ingress_backend(key, b));
            let rules = spec.rules.as_deref().unwrap_or_default();
            let names_catch_all = rules.is_empty()
                || rules
                    .iter()
                    .any(|r| r.host.as_deref().unwrap_or("").is_empty());
            if let Some(backend) = &own_default {
                if names_catch_all && catch_all.default_ingress.is_none() {
                    catch_all.default_backend = backend.clone();
                    catch_all.default_ingress = Some(key.clone());
                }
            }
            for host in rules.iter().filter_map(|r| r.host.as_deref()) {
                if host.is_empty() {
                    continue;
                }
                servers.get_or_insert_with(host, || match &own_default {
                    Some(backend) => Server::new(host, backend.clone(), Some(key.clone())),
                    None => Server::new(host, global_default.clone(), None),
                });
            }
        }

        // Locations.
        for (key, ingress) in &ingresses {
            let Some(spec) = &ingress.spec else { continue };
            for rule in spec.rules.iter().flatten() {
                let host = rule.host.as_deref().filter(|h| !h.is_empty());
                for http_path in rule.http.iter().flat_map(|h| &h.paths) {
                    let path_rule = PathRule::new(
                        PathType::from_spec(http_path.path_type.as_str()),
                        http_path.path.as_deref().unwrap_or("/"),
                    );
                    let server = match host {
                        Some(host) => servers.get_or_insert_with(host, || {
                            Server::new(host, global_default.clone(), None)
                        }),
                        None => &mut catch_all,
                    };
                    if let Some(existing) = server.locations.iter().find(|l| l.rule == path_rule) {
                        self.warnings.push(format!(
                            "ingress {key}: path {path_rule} of server {} is already defined by ingress {}",
                            server.name, existing.ingress
                        ));
                        continue;
                    }
                    let Some(backend) = self.ingress_backend(key, &http_path.backend) else {
                        continue;
                    };
                    server.locations.push(Location {
                        rule: path_rule,
                        backend,
                        ingress: key.clone(),
                    });
                }
            }
        }

        // Certificates.
        let default_certificate = match self.config.default_certificate.clone() {
            Some(key) => self
                .certificate(&key)
                .unwrap_or_else(|| fake_certificate.clone()),
            None => fake_certificate.clone(),
        };
        let mut certificates = Certificates::new(default_certificate.clone());
        let mut tls_hosts: HashSet<String> = HashSet::new();
        for (key, ingress) in &ingresses {
            let Some(spec) = &ingress.spec else { continue };
            for entry in spec.tls.iter().flatten() {
                let listed: Vec<&str> = entry.hosts.iter().flatten().map(String::as_str).collect();
                let hosts: Vec<&str> = if listed.is_empty() {
                    spec.rules
                        .iter()
                        .flatten()
                        .filter_map(|r| r.host.as_deref())
                        .filter(|h| !h.is_empty())
                        .collect()
                } else {
                    listed
                };
                let mut certificate = None;
                for host in hosts {
                    let host = host.to_ascii_lowercase();
                    if tls_hosts.contains(&host) {
                        continue;
                    }
                    let certified = match (&certificate, entry.secret_name.as_deref()) {
                        (Some(c), _) => Clone::clone(c),
                        (None, Some(name)) if !name.is_empty() => {
                            let secret = Key {
                                namespace: key.namespace.clone(),
                                name: name.to_string(),
                            };
                            let c = self
                                .certificate(&secret)
                                .unwrap_or_else(|| default_certificate.clone());
                            certificate = Some(c.clone());
                            c
                        }
                        (None, _) => default_certificate.clone(),
                    };
                    certificates.insert(&host, certified);
                    tls_hosts.insert(host);
                }
            }
        }
        for host in &tls_hosts {
            if let Some(server) = servers.get_pattern_mut(host) {
                server.tls = true;
            }
        }

        let served = ingresses
            .iter()
            .map(|(key, ingress)| Served {
                key: key.clone(),
                resource_version: ingress.metadata.resource_version.clone(),
                status: ingress
                    .status
                    .as_ref()
                    .and_then(|s| s.load_balancer.as_ref())
                    .and_then(|lb| lb.ingress.clone())
                    .unwrap_or_default(),
            })
            .collect();
        let status = match &self.config.publish {
            Publish::Nothing => None,
            Publish::Addresses(addresses) => Some(status::from_addresses(addresses)),
            Publish::Service(key) => match self
                .services
                .get(&(key.namespace.clone(), key.name.clone()))
            {
                Some(service) => Some(status::from_service(service)),
                None => {
                    self.warnings
                        .push(format!("publish service {key} not found"));
                    None
                }
            },
        };
        Snapshot {
            synced: true,
            servers,
            catch_all,
            upstreams: self.upstreams,
            certificates,
            served,
            status,
            warnings: self.warnings,
        }
    }
}

#[cfg(test)]
mod tests;
