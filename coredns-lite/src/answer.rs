//! The answer to one query, as CoreDNS's kubernetes plugin (and the server around
//! it) gives it: a pure function of the request, the [`Snapshot`] and the [`Config`].
//!
//! Names inside a cluster zone are parsed as the plugin's `parseRequest` does
//! (`[_port._proto.|endpoint.]service.namespace.svc|pod.zone`) and looked up as its
//! `findServices` / `findPods` do; a name that does not exist is NXDOMAIN, a name that
//! exists without records of the asked type is NODATA (NOERROR, no answer), both with
//! the zone's SOA in the authority section.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

use hickory_proto::op::{Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::config::{is_reverse, Config, PodMode};
use crate::snapshot::{Kind, Snapshot};

/// The schema version `dns-version.<zone>` answers (the specification's version).
pub const DNS_SCHEMA_VERSION: &str = "1.1.0";
/// The TTL CoreDNS gives the `dns-version` record.
const VERSION_TTL: u32 = 28800;
/// How many CNAMEs an ExternalName chain may follow inside the zone.
const MAX_CNAME_CHAIN: usize = 8;

/// What the server does with a query.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Send this reply.
    Reply(Message),
    /// Send this reply after appending the upstream's answers for `target` (the
    /// target of an ExternalName outside the cluster zones).
    Chase {
        reply: Message,
        target: Query,
        upstream: SocketAddr,
    },
    /// Not a cluster name: relay the query to the upstream and its answer back.
    Forward(SocketAddr),
}

/// The name does not exist (CoreDNS's `errNoItems` and friends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NameError;

/// What a lookup found: the owner name the plugin gives it (`key`), and an address
/// or a name (an ExternalName's target) with a port.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Found {
    key: Name,
    host: Host,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    Ip(IpAddr),
    Name(Name),
}

/// Records for the answer and additional sections, and an outside name to chase.
#[derive(Debug, Default)]
struct Records {
    answers: Vec<Record>,
    additionals: Vec<Record>,
    chase: Option<Name>,
}

/// A request inside a zone, as `parseRequest` splits it.
#[derive(Debug, Default, PartialEq, Eq)]
struct Request {
    pod_or_svc: String,
    namespace: String,
    service: String,
    endpoint: String,
    port: String,
    protocol: String,
}

/// Answers one query. `snapshot` is `None` until the first sync of the watches.
pub fn answer(request: &Message, snapshot: Option<&Snapshot>, config: &Config) -> Outcome {
    let mut reply = Message::response(request.id, request.op_code);
    reply.metadata.recursion_desired = request.recursion_desired;
    reply.metadata.checking_disabled = request.checking_disabled;
    reply.queries = request.queries.clone();
    if request.op_code != OpCode::Query {
        return rcode(reply, ResponseCode::NotImp);
    }
    let [query] = request.queries.as_slice() else {
        return rcode(reply, ResponseCode::FormErr);
    };
    let qname = query.name().to_lowercase();
    if !config.server_zones.iter().any(|z| z.zone_of(&qname)) {
        return rcode(reply, ResponseCode::Refused);
    }
    let Some(zone) = config
        .zones
        .iter()
        .filter(|z| z.zone_of(&qname))
        .max_by_key(|z| z.num_labels())
    else {
        return next_plugin(reply, config);
    };
    if matches!(query.query_type(), RecordType::AXFR | RecordType::IXFR) {
        return rcode(reply, ResponseCode::Refused);
    }
    let Some(snapshot) = snapshot else {
        return rcode(reply, ResponseCode::ServFail);
    };
    let lookup = Lookup {
        snapshot,
        config,
        zone,
    };
    match lookup.serve(query.name(), &qname, query.query_type()) {
        Err(NameError) => {
            if config.fallthrough.iter().any(|z| z.zone_of(&qname)) {
                return next_plugin(reply, config);
            }
            reply.metadata.authoritative = true;
            reply.metadata.response_code = ResponseCode::NXDomain;
            reply.authorities.push(lookup.soa());
            Outcome::Reply(reply)
        }
        Ok(records) if records.answers.is_empty() => {
            reply.metadata.authoritative = true;
            reply.authorities.push(lookup.soa());
            Outcome::Reply(reply)
        }
        Ok(records) => {
            reply.metadata.authoritative = true;
            reply.answers = records.answers;
            reply.additionals = records.additionals;
            match (records.chase, config.upstream) {
                (Some(target), Some(upstream)) => Outcome::Chase {
                    reply,
                    target: Query::query(target, query.query_type()),
                    upstream,
                },
                _ => Outcome::Reply(reply),
            }
        }
    }
}

fn rcode(mut reply: Message, code: ResponseCode) -> Outcome {
    reply.metadata.response_code = code;
    Outcome::Reply(reply)
}

/// What the plugin after kubernetes does: `forward` when configured; without one,
/// CoreDNS's "no next plugin found", a SERVFAIL.
fn next_plugin(reply: Message, config: &Config) -> Outcome {
    match config.upstream {
        Some(upstream) => Outcome::Forward(upstream),
        None => {
            tracing::debug!(query = ?reply.queries.first().map(|q| q.name().to_string()), "no forward configured for a name outside the cluster zones");
            rcode(reply, ResponseCode::ServFail)
        }
    }
}

/// Lower-case labels of `name` below `zone`, leftmost first.
fn base_labels(name: &Name, zone: &Name) -> Vec<String> {
    let keep = usize::from(name.num_labels() - zone.num_labels());
    name.iter()
        .take(keep)
        .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
        .collect()
}

fn strip_underscore(label: &str) -> String {
    label.strip_prefix('_').unwrap_or(label).to_string()
}

/// `parseRequest`: `[_port._proto.|endpoint.]service.namespace.(svc|pod)`.
fn parse_request(labels: &[String]) -> Result<Request, NameError> {
    let mut r = Request::default();
    let mut rest = labels.iter().rev();
    let Some(last) = rest.next() else {
        return Ok(r);
    };
    if last != "svc" && last != "pod" {
        return Err(NameError);
    }
    let Some(namespace) = rest.next() else {
        // `svc.<zone>` and `pod.<zone>` are NODATA, like the apex.
        return Ok(r);
    };
    r.pod_or_svc = last.clone();
    r.namespace = namespace.clone();
    let Some(service) = rest.next() else {
        return Ok(r);
    };
    r.service = service.clone();
    let rest: Vec<&String> = rest.rev().collect();
    match rest.as_slice() {
        [] => {}
        [endpoint] => r.endpoint = (*endpoint).clone(),
        [port, protocol] => {
            r.port = strip_underscore(port);
            r.protocol = strip_underscore(protocol);
        }
        _ => return Err(NameError),
    }
    Ok(r)
}

/// An empty request field matches anything; otherwise names compare without case.
fn matches(want: &str, have: &str) -> bool {
    want.is_empty() || want.eq_ignore_ascii_case(have)
}

fn join(labels: &[&str], zone: &Name) -> Name {
    Name::from_labels(labels.iter().map(|l| l.as_bytes()))
        .and_then(|n| n.append_domain(zone))
        .unwrap_or_else(|_| zone.clone())
}

fn address_record(name: &Name, ttl: u32, ip: IpAddr) -> Record {
    let rdata = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(name.clone(), ttl, rdata)
}

fn family_matches(ip: IpAddr, qtype: RecordType) -> bool {
    matches!(
        (ip, qtype),
        (IpAddr::V4(_), RecordType::A) | (IpAddr::V6(_), RecordType::AAAA)
    )
}

/// The name an ExternalName points to, if it is a well-formed domain name rather
/// than an address.
fn external_target(external: &str) -> Option<Name> {
    if external.parse::<IpAddr>().is_ok() {
        return None;
    }
    let mut name = Name::from_ascii(external).ok()?;
    name.set_fqdn(true);
    Some(name)
}

struct Lookup<'a> {
    snapshot: &'a Snapshot,
    config: &'a Config,
    zone: &'a Name,
}

impl Lookup<'_> {
    /// The SOA CoreDNS builds for the zone.
    fn soa(&self) -> Record {
        let ttl = self.config.ttl.min(300);
        let soa = SOA::new(
            join(&["ns", "dns"], self.zone),
            join(&["hostmaster"], self.zone),
            self.snapshot.serial,
            7200,
            1800,
            86400,
            ttl,
        );
        Record::from_rdata(self.zone.clone(), ttl, RData::SOA(soa))
    }

    /// `ns.dns.<zone>`, the name CoreDNS gives itself.
    fn ns_name(&self) -> Name {
        join(&["ns", "dns"], self.zone)
    }

    /// The addresses behind `ns.dns.<zone>`: the ClusterIPs of `kube-system/kube-dns`.
    fn ns_addresses(&self) -> Vec<IpAddr> {
        match self
            .snapshot
            .service("kube-system", "kube-dns")
            .map(|s| &s.kind)
        {
            Some(Kind::ClusterIp(ips)) => ips.clone(),
            _ => Vec::new(),
        }
    }

    /// The handler's switch on the query type.
    fn serve(&self, qname: &Name, lower: &Name, qtype: RecordType) -> Result<Records, NameError> {
        match qtype {
            RecordType::A | RecordType::AAAA => self.address(qname, lower, qtype, 0),
            RecordType::TXT => self.txt(qname, lower),
            RecordType::CNAME => self.cname(qname, lower),
            RecordType::PTR => self.ptr(qname, lower),
            RecordType::SRV => self.srv(qname, lower),
            RecordType::SOA if lower == self.zone => Ok(Records {
                answers: vec![self.soa()],
                ..Records::default()
            }),
            RecordType::NS if lower == self.zone => Ok(self.ns(qname)),
            _ => self
                .address(qname, lower, RecordType::A, 0)
                .map(|_| Records::default()),
        }
    }

    /// The kubernetes plugin's `Services`: the special names, then `Records`.
    fn services(&self, lower: &Name, qtype: RecordType) -> Result<Vec<Found>, NameError> {
        if *lower == self.ns_name() {
            return Ok(self
                .ns_addresses()
                .into_iter()
                .map(|ip| Found {
                    key: lower.clone(),
                    host: Host::Ip(ip),
                    port: None,
                })
                .collect());
        }
        let found = self.records(lower)?;
        if qtype == RecordType::SRV {
            return Ok(found
                .into_iter()
                .filter(|f| matches!(f.host, Host::Ip(_)))
                .collect());
        }
        Ok(found)
    }

    /// `Records`: a request inside the zone, to services or pods.
    fn records(&self, lower: &Name) -> Result<Vec<Found>, NameError> {
        let r = parse_request(&base_labels(lower, self.zone))?;
        if r.pod_or_svc.is_empty() {
            return Ok(Vec::new());
        }
        if is_reverse(lower) {
            return Err(NameError);
        }
        if r.pod_or_svc == "pod" {
            return self.pods(&r);
        }
        self.find_services(&r)
    }

    fn namespace_exists(&self, namespace: &str) -> bool {
        self.snapshot.namespaces.contains(namespace)
    }

    /// `findPods`, for `pods insecure` and `pods disabled`.
    fn pods(&self, r: &Request) -> Result<Vec<Found>, NameError> {
        if self.config.pods == PodMode::Disabled || !self.namespace_exists(&r.namespace) {
            return Err(NameError);
        }
        if r.service.is_empty() {
            return Ok(Vec::new());
        }
        if !r.endpoint.is_empty() || !r.port.is_empty() {
            return Err(NameError);
        }
        let dashed = &r.service;
        let text = if dashed.matches('-').count() == 3 && !dashed.contains("--") {
            dashed.replace('-', ".")
        } else {
            dashed.replace('-', ":")
        };
        let ip: IpAddr = text.parse().map_err(|_| NameError)?;
        Ok(vec![Found {
            key: join(&[dashed, &r.namespace, "pod"], self.zone),
            host: Host::Ip(ip),
            port: None,
        }])
    }

    /// `findServices`: ExternalName, headless (and endpoint names), ClusterIP.
    fn find_services(&self, r: &Request) -> Result<Vec<Found>, NameError> {
        if !self.namespace_exists(&r.namespace) {
            return Err(NameError);
        }
        if r.service.is_empty() {
            return Ok(Vec::new());
        }
        let svc = self
            .snapshot
            .service(&r.namespace, &r.service)
            .ok_or(NameError)?;
        let service_key = join(&[&svc.name, &svc.namespace, "svc"], self.zone);
        let mut found = Vec::new();
        match &svc.kind {
            Kind::ExternalName(external) => {
                if let (true, Some(target)) = (r.endpoint.is_empty(), external_target(external)) {
                    found.push(Found {
                        key: service_key,
                        host: Host::Name(target),
                        port: None,
                    });
                }
            }
            kind if *kind == Kind::Headless || !r.endpoint.is_empty() => {
                for subset in &svc.subsets {
                    for address in &subset.addresses {
                        let label = address.label();
                        if !matches(&r.endpoint, &label) {
                            continue;
                        }
                        for port in &subset.ports {
                            if !(matches(&r.port, &port.name)
                                && matches(&r.protocol, &port.protocol))
                            {
                                continue;
                            }
                            found.push(Found {
                                key: join(&[&label, &svc.name, &svc.namespace, "svc"], self.zone),
                                host: Host::Ip(address.ip),
                                port: port.port,
                            });
                        }
                    }
                }
            }
            Kind::ClusterIp(ips) => {
                for port in &svc.ports {
                    if !(matches(&r.port, &port.name) && matches(&r.protocol, &port.protocol)) {
                        continue;
                    }
                    for ip in ips {
                        found.push(Found {
                            key: service_key.clone(),
                            host: Host::Ip(*ip),
                            port: port.port,
                        });
                    }
                }
            }
            Kind::Headless => {}
        }
        if found.is_empty() {
            return Err(NameError);
        }
        Ok(found)
    }

    /// `plugin.A` / `plugin.AAAA`: addresses of the family asked, and CNAMEs for
    /// ExternalNames (followed inside the zone, chased upstream outside it).
    fn address(
        &self,
        qname: &Name,
        lower: &Name,
        qtype: RecordType,
        depth: usize,
    ) -> Result<Records, NameError> {
        let ttl = self.config.ttl;
        let mut records = Records::default();
        let mut seen = HashSet::new();
        for found in self.services(lower, qtype)? {
            match found.host {
                Host::Ip(ip) => {
                    if family_matches(ip, qtype) && seen.insert(ip) {
                        records.answers.push(address_record(qname, ttl, ip));
                    }
                }
                Host::Name(target) => {
                    let target_lower = target.to_lowercase();
                    if target_lower == *lower || depth >= MAX_CNAME_CHAIN {
                        continue;
                    }
                    let cname =
                        Record::from_rdata(qname.clone(), ttl, RData::CNAME(CNAME(target.clone())));
                    if self.zone.zone_of(&target_lower) {
                        if let Ok(next) = self.address(&target, &target_lower, qtype, depth + 1) {
                            if !next.answers.is_empty() {
                                records.answers.push(cname);
                                records.answers.extend(next.answers);
                                records.chase = next.chase;
                            }
                        }
                        continue;
                    }
                    records.answers.push(cname);
                    records.chase = Some(target);
                }
            }
        }
        Ok(records)
    }

    /// `dns-version.<zone>` TXT; any other existing name is NODATA, the rest NXDOMAIN.
    fn txt(&self, qname: &Name, lower: &Name) -> Result<Records, NameError> {
        if base_labels(lower, self.zone) == ["dns-version"] {
            let txt = TXT::new(vec![DNS_SCHEMA_VERSION.to_string()]);
            return Ok(Records {
                answers: vec![Record::from_rdata(
                    qname.clone(),
                    VERSION_TTL,
                    RData::TXT(txt),
                )],
                ..Records::default()
            });
        }
        match self.records(lower) {
            Ok(found) if !found.is_empty() => Ok(Records::default()),
            _ => Err(NameError),
        }
    }

    /// `plugin.CNAME`: the first service's target when it is a name.
    fn cname(&self, qname: &Name, lower: &Name) -> Result<Records, NameError> {
        let found = self.services(lower, RecordType::CNAME)?;
        let mut records = Records::default();
        if let Some(Found {
            host: Host::Name(target),
            ..
        }) = found.into_iter().next()
        {
            records.answers.push(Record::from_rdata(
                qname.clone(),
                self.config.ttl,
                RData::CNAME(CNAME(target)),
            ));
        }
        Ok(records)
    }

    /// `Reverse`: the Service owning a ClusterIP, else every Service with a ready
    /// endpoint at the address (named `<endpoint>.<svc>.<ns>.svc.<primary zone>`).
    fn ptr(&self, qname: &Name, lower: &Name) -> Result<Records, NameError> {
        let ip = match lower.parse_arpa_name() {
            Ok(net) if net.prefix_len() == net.max_prefix_len() => net.addr(),
            _ => {
                self.records(lower)?;
                return Ok(Records::default());
            }
        };
        let primary = self.config.primary_zone().unwrap_or(self.zone);
        let mut targets = Vec::new();
        if let Some(svc) = self.snapshot.service_for_cluster_ip(ip) {
            targets.push(join(&[&svc.name, &svc.namespace, "svc"], primary));
        } else {
            for svc in self.snapshot.services_for_endpoint_ip(ip) {
                for subset in &svc.subsets {
                    for address in subset.addresses.iter().filter(|a| a.ip == ip) {
                        let target = join(
                            &[&address.label(), &svc.name, &svc.namespace, "svc"],
                            primary,
                        );
                        if !targets.contains(&target) {
                            targets.push(target);
                        }
                    }
                }
            }
        }
        if targets.is_empty() {
            return Err(NameError);
        }
        Ok(Records {
            answers: targets
                .into_iter()
                .map(|t| Record::from_rdata(qname.clone(), self.config.ttl, RData::PTR(PTR(t))))
                .collect(),
            ..Records::default()
        })
    }

    /// `plugin.SRV`: one record per port (per endpoint for headless), weights
    /// `100 / n`, addresses of the targets in the additional section.
    fn srv(&self, qname: &Name, lower: &Name) -> Result<Records, NameError> {
        let found = self.services(lower, RecordType::SRV)?;
        let ttl = self.config.ttl;
        let weight = u16::try_from(100 / found.len().max(1)).unwrap_or(1).max(1);
        let mut records = Records::default();
        let mut seen_srv = HashSet::new();
        let mut seen_glue = HashSet::new();
        for f in found {
            let (Host::Ip(ip), Some(port)) = (f.host, f.port) else {
                continue;
            };
            if seen_srv.insert((f.key.clone(), port)) {
                let srv = SRV::new(0, weight, port, f.key.clone());
                records
                    .answers
                    .push(Record::from_rdata(qname.clone(), ttl, RData::SRV(srv)));
            }
            if seen_glue.insert((f.key.clone(), ip)) {
                records.additionals.push(address_record(&f.key, ttl, ip));
            }
        }
        Ok(records)
    }

    /// The apex NS: `ns.dns.<zone>`, with its addresses as glue.
    fn ns(&self, qname: &Name) -> Records {
        let ttl = self.config.ttl;
        let ns_name = self.ns_name();
        Records {
            answers: vec![Record::from_rdata(
                qname.clone(),
                ttl,
                RData::NS(NS(ns_name.clone())),
            )],
            additionals: self
                .ns_addresses()
                .into_iter()
                .map(|ip| address_record(&ns_name, ttl, ip))
                .collect(),
            chase: None,
        }
    }
}

#[cfg(test)]
mod tests;
