//! The answer logic, one test per section of the Kubernetes DNS-based service
//! discovery specification 1.1.0 (and per CoreDNS behaviour beyond it), over one
//! fixed cluster. Replies are rendered like dig's sections.

use std::net::SocketAddr;

use hickory_proto::op::{Edns, Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{json, Value};

use super::{answer, Outcome};
use crate::config::{Config, PodMode};
use crate::snapshot::Snapshot;
use crate::wire::{self, Decoded};

fn from_json<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("valid object")
}

fn service(ns: &str, name: &str, spec: Value) -> Service {
    from_json(json!({"metadata": {"namespace": ns, "name": name}, "spec": spec}))
}

fn slice(ns: &str, svc: &str, endpoints: Value, ports: Value) -> EndpointSlice {
    from_json(json!({
        "metadata": {"namespace": ns, "name": format!("{svc}-abc"),
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4", "endpoints": endpoints, "ports": ports,
    }))
}

fn ep(ip: &str, ready: bool, hostname: Option<&str>) -> Value {
    let mut e = json!({"addresses": [ip], "conditions": {"ready": ready}});
    if let Some(h) = hostname {
        e["hostname"] = json!(h);
    }
    e
}

/// default: web (ClusterIP, http/TCP and dns/UDP), db (headless, db-0 with a
/// hostname, one without, one not ready), empty (headless, nothing ready), ext and
/// alias (ExternalName out of and into the zone), v6 (IPv6 ClusterIP), noports;
/// kube-system: kube-dns.
fn cluster() -> Snapshot {
    let namespaces: Vec<Namespace> = ["default", "kube-system", "other"]
        .iter()
        .map(|n| from_json(json!({"metadata": {"name": n}})))
        .collect();
    let services = vec![
        service(
            "default",
            "web",
            json!({"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"], "ports": [
            {"name": "http", "port": 80, "protocol": "TCP"}, {"name": "dns", "port": 53, "protocol": "UDP"}]}),
        ),
        service(
            "default",
            "db",
            json!({"clusterIP": "None", "ports": [{"name": "mysql", "port": 3306}]}),
        ),
        service(
            "default",
            "empty",
            json!({"clusterIP": "None", "ports": [{"name": "http", "port": 80}]}),
        ),
        service(
            "default",
            "ext",
            json!({"type": "ExternalName", "externalName": "example.com"}),
        ),
        service(
            "default",
            "alias",
            json!({"type": "ExternalName", "externalName": "web.default.svc.cluster.local"}),
        ),
        service(
            "default",
            "v6",
            json!({"clusterIP": "fd00::20", "clusterIPs": ["fd00::20"], "ports": [{"port": 80}]}),
        ),
        service(
            "default",
            "noports",
            json!({"clusterIP": "10.96.0.30", "clusterIPs": ["10.96.0.30"]}),
        ),
        service(
            "kube-system",
            "kube-dns",
            json!({"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"], "ports": [
            {"name": "dns", "port": 53, "protocol": "UDP"}]}),
        ),
    ];
    let slices = vec![
        slice(
            "default",
            "web",
            json!([ep("10.244.1.5", true, None), ep("10.244.1.6", false, None)]),
            json!([{"name": "http", "port": 8080, "protocol": "TCP"}]),
        ),
        slice(
            "default",
            "db",
            json!([
                ep("10.244.1.10", true, Some("db-0")),
                ep("10.244.1.11", true, None),
                ep("10.244.1.12", false, Some("db-2"))
            ]),
            json!([{"name": "mysql", "port": 3306, "protocol": "TCP"}]),
        ),
        slice(
            "default",
            "empty",
            json!([ep("10.244.1.20", false, None)]),
            json!([{"name": "http", "port": 80}]),
        ),
    ];
    Snapshot::build(&namespaces, &services, &slices, 1700000000)
}

fn query(name: &str, qtype: RecordType) -> Message {
    let mut m = Message::query();
    m.metadata.id = 7;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    m
}

/// dig-like text of a reply: status and flags, then the non-empty sections.
fn render(m: &Message) -> String {
    let mut flags = Vec::new();
    if m.authoritative {
        flags.push("aa");
    }
    if m.truncation {
        flags.push("tc");
    }
    let status = match m.response_code {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::Refused => "REFUSED",
        ResponseCode::FormErr => "FORMERR",
        _ => "OTHER",
    };
    let mut out = format!("{status} {}", flags.join(" "))
        .trim_end()
        .to_string();
    for (title, records) in [
        ("ANSWER", &m.answers),
        ("AUTHORITY", &m.authorities),
        ("ADDITIONAL", &m.additionals),
    ] {
        if !records.is_empty() {
            out.push_str(&format!("\n;; {title}"));
            for r in records {
                out.push_str(&format!("\n{r}"));
            }
        }
    }
    out
}

fn ask_with(name: &str, qtype: RecordType, config: &Config) -> Outcome {
    answer(&query(name, qtype), Some(&cluster()), config)
}

fn check(name: &str, qtype: RecordType, expected: &str) {
    check_with(name, qtype, &Config::default(), expected);
}

fn check_with(name: &str, qtype: RecordType, config: &Config, expected: &str) {
    match ask_with(name, qtype, config) {
        Outcome::Reply(m) => assert_eq!(render(&m), expected.trim(), "{name} {qtype}"),
        other => panic!("{name} {qtype}: expected a reply, got {other:?}"),
    }
}

const SOA: &str = "cluster.local. 30 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1700000000 7200 1800 86400 30";

fn nxdomain() -> String {
    format!("NXDOMAIN aa\n;; AUTHORITY\n{SOA}")
}

fn nodata() -> String {
    format!("NOERROR aa\n;; AUTHORITY\n{SOA}")
}

#[test]
fn spec_2_2_schema_version_txt() {
    check(
        "dns-version.cluster.local.",
        RecordType::TXT,
        "NOERROR aa\n;; ANSWER\ndns-version.cluster.local. 28800 IN TXT 1.1.0",
    );
}

#[test]
fn spec_2_3_1_a_record_for_cluster_ip() {
    check(
        "web.default.svc.cluster.local.",
        RecordType::A,
        "NOERROR aa\n;; ANSWER\nweb.default.svc.cluster.local. 30 IN A 10.96.0.20",
    );
}

#[test]
fn spec_2_3_1_aaaa_for_ipv6_cluster_ip_and_nodata_for_the_other_family() {
    check(
        "v6.default.svc.cluster.local.",
        RecordType::AAAA,
        "NOERROR aa\n;; ANSWER\nv6.default.svc.cluster.local. 30 IN AAAA fd00::20",
    );
    check("v6.default.svc.cluster.local.", RecordType::A, &nodata());
    check(
        "web.default.svc.cluster.local.",
        RecordType::AAAA,
        &nodata(),
    );
}

#[test]
fn spec_2_3_1_names_are_case_insensitive_and_answered_as_asked() {
    check(
        "WEB.Default.SVC.cluster.LOCAL.",
        RecordType::A,
        "NOERROR aa\n;; ANSWER\nWEB.Default.SVC.cluster.LOCAL. 30 IN A 10.96.0.20",
    );
}

#[test]
fn spec_2_3_2_srv_for_named_ports_with_glue() {
    check(
        "_http._tcp.web.default.svc.cluster.local.",
        RecordType::SRV,
        "NOERROR aa\n;; ANSWER\n_http._tcp.web.default.svc.cluster.local. 30 IN SRV 0 100 80 web.default.svc.cluster.local.\n;; ADDITIONAL\nweb.default.svc.cluster.local. 30 IN A 10.96.0.20",
    );
    check(
        "_dns._udp.web.default.svc.cluster.local.",
        RecordType::SRV,
        "NOERROR aa\n;; ANSWER\n_dns._udp.web.default.svc.cluster.local. 30 IN SRV 0 100 53 web.default.svc.cluster.local.\n;; ADDITIONAL\nweb.default.svc.cluster.local. 30 IN A 10.96.0.20",
    );
    check(
        "_http._udp.web.default.svc.cluster.local.",
        RecordType::SRV,
        &nxdomain(),
    );
    check(
        "_https._tcp.web.default.svc.cluster.local.",
        RecordType::SRV,
        &nxdomain(),
    );
}

#[test]
fn spec_2_3_2_srv_for_the_service_name_lists_every_port() {
    check(
        "web.default.svc.cluster.local.",
        RecordType::SRV,
        "NOERROR aa\n;; ANSWER\nweb.default.svc.cluster.local. 30 IN SRV 0 50 80 web.default.svc.cluster.local.\nweb.default.svc.cluster.local. 30 IN SRV 0 50 53 web.default.svc.cluster.local.\n;; ADDITIONAL\nweb.default.svc.cluster.local. 30 IN A 10.96.0.20",
    );
}

#[test]
fn spec_2_3_3_ptr_for_cluster_ip() {
    check(
        "20.0.96.10.in-addr.arpa.",
        RecordType::PTR,
        "NOERROR aa\n;; ANSWER\n20.0.96.10.in-addr.arpa. 30 IN PTR web.default.svc.cluster.local.",
    );
}

#[test]
fn spec_2_4_1_headless_a_records_for_ready_endpoints() {
    check(
        "db.default.svc.cluster.local.",
        RecordType::A,
        "NOERROR aa\n;; ANSWER\ndb.default.svc.cluster.local. 30 IN A 10.244.1.10\ndb.default.svc.cluster.local. 30 IN A 10.244.1.11",
    );
}

#[test]
fn spec_2_4_1_headless_endpoint_hostnames_and_dashed_ips() {
    check(
        "db-0.db.default.svc.cluster.local.",
        RecordType::A,
        "NOERROR aa\n;; ANSWER\ndb-0.db.default.svc.cluster.local. 30 IN A 10.244.1.10",
    );
    check(
        "10-244-1-11.db.default.svc.cluster.local.",
        RecordType::A,
        "NOERROR aa\n;; ANSWER\n10-244-1-11.db.default.svc.cluster.local. 30 IN A 10.244.1.11",
    );
    check(
        "db-2.db.default.svc.cluster.local.",
        RecordType::A,
        &nxdomain(),
    );
}

#[test]
fn spec_2_4_1_headless_without_ready_endpoints_is_nxdomain_as_coredns() {
    check(
        "empty.default.svc.cluster.local.",
        RecordType::A,
        &nxdomain(),
    );
}

#[test]
fn spec_2_4_2_headless_srv_one_per_endpoint_with_glue() {
    check(
        "_mysql._tcp.db.default.svc.cluster.local.",
        RecordType::SRV,
        "NOERROR aa\n;; ANSWER\n_mysql._tcp.db.default.svc.cluster.local. 30 IN SRV 0 50 3306 db-0.db.default.svc.cluster.local.\n_mysql._tcp.db.default.svc.cluster.local. 30 IN SRV 0 50 3306 10-244-1-11.db.default.svc.cluster.local.\n;; ADDITIONAL\ndb-0.db.default.svc.cluster.local. 30 IN A 10.244.1.10\n10-244-1-11.db.default.svc.cluster.local. 30 IN A 10.244.1.11",
    );
}

#[test]
fn spec_2_4_3_ptr_for_endpoint_ips() {
    check(
        "10.1.244.10.in-addr.arpa.",
        RecordType::PTR,
        "NOERROR aa\n;; ANSWER\n10.1.244.10.in-addr.arpa. 30 IN PTR db-0.db.default.svc.cluster.local.",
    );
    check(
        "5.1.244.10.in-addr.arpa.",
        RecordType::PTR,
        "NOERROR aa\n;; ANSWER\n5.1.244.10.in-addr.arpa. 30 IN PTR 10-244-1-5.web.default.svc.cluster.local.",
    );
}

#[test]
fn spec_2_4_3_unknown_ptr_falls_through_and_without_fallthrough_is_nxdomain() {
    check("9.9.9.10.in-addr.arpa.", RecordType::PTR, "SERVFAIL");
    let config = Config {
        fallthrough: Vec::new(),
        ..Config::default()
    };
    let soa = "in-addr.arpa. 30 IN SOA ns.dns.in-addr.arpa. hostmaster.in-addr.arpa. 1700000000 7200 1800 86400 30";
    check_with(
        "9.9.9.10.in-addr.arpa.",
        RecordType::PTR,
        &config,
        &format!("NXDOMAIN aa\n;; AUTHORITY\n{soa}"),
    );
}

#[test]
fn spec_2_5_1_external_name_cname() {
    check(
        "ext.default.svc.cluster.local.",
        RecordType::CNAME,
        "NOERROR aa\n;; ANSWER\next.default.svc.cluster.local. 30 IN CNAME example.com.",
    );
    check(
        "ext.default.svc.cluster.local.",
        RecordType::A,
        "NOERROR aa\n;; ANSWER\next.default.svc.cluster.local. 30 IN CNAME example.com.",
    );
    check("ext.default.svc.cluster.local.", RecordType::SRV, &nodata());
}

#[test]
fn spec_2_5_1_external_name_inside_the_zone_is_followed() {
    check(
        "alias.default.svc.cluster.local.",
        RecordType::A,
        "NOERROR aa\n;; ANSWER\nalias.default.svc.cluster.local. 30 IN CNAME web.default.svc.cluster.local.\nweb.default.svc.cluster.local. 30 IN A 10.96.0.20",
    );
}

#[test]
fn spec_2_5_1_external_name_outside_is_chased_upstream_when_forwarding() {
    let upstream: SocketAddr = "127.0.0.1:5300".parse().unwrap();
    let config = Config {
        upstream: Some(upstream),
        ..Config::default()
    };
    match ask_with("ext.default.svc.cluster.local.", RecordType::A, &config) {
        Outcome::Chase {
            reply,
            target,
            upstream: to,
        } => {
            assert_eq!(reply.answers.len(), 1);
            assert_eq!(target.name().to_string(), "example.com.");
            assert_eq!(target.query_type(), RecordType::A);
            assert_eq!(to, upstream);
        }
        other => panic!("expected a chase, got {other:?}"),
    }
}

#[test]
fn spec_2_6_pod_records_insecure_and_disabled() {
    check(
        "10-244-1-99.default.pod.cluster.local.",
        RecordType::A,
        "NOERROR aa\n;; ANSWER\n10-244-1-99.default.pod.cluster.local. 30 IN A 10.244.1.99",
    );
    check(
        "10-244-1-99.nosuch.pod.cluster.local.",
        RecordType::A,
        &nxdomain(),
    );
    check(
        "not-an-ip.default.pod.cluster.local.",
        RecordType::A,
        &nxdomain(),
    );
    let disabled = Config {
        pods: PodMode::Disabled,
        ..Config::default()
    };
    check_with(
        "10-244-1-99.default.pod.cluster.local.",
        RecordType::A,
        &disabled,
        &nxdomain(),
    );
}

#[test]
fn nodata_for_existing_names_without_the_type() {
    check("web.default.svc.cluster.local.", RecordType::MX, &nodata());
    check(
        "web.default.svc.cluster.local.",
        RecordType::CNAME,
        &nodata(),
    );
    check("svc.cluster.local.", RecordType::A, &nodata());
    check("default.svc.cluster.local.", RecordType::A, &nodata());
    check("cluster.local.", RecordType::A, &nodata());
    check("pod.cluster.local.", RecordType::A, &nodata());
}

#[test]
fn nxdomain_for_names_that_do_not_exist() {
    check(
        "nosuch.default.svc.cluster.local.",
        RecordType::A,
        &nxdomain(),
    );
    check("nosuch.svc.cluster.local.", RecordType::A, &nxdomain());
    check("web.nosuch.svc.cluster.local.", RecordType::A, &nxdomain());
    check("foo.cluster.local.", RecordType::A, &nxdomain());
    check(
        "a.b.c.web.default.svc.cluster.local.",
        RecordType::A,
        &nxdomain(),
    );
    check(
        "nosuch.default.svc.cluster.local.",
        RecordType::MX,
        &nxdomain(),
    );
    check(
        "noports.default.svc.cluster.local.",
        RecordType::A,
        &nxdomain(),
    );
}

#[test]
fn soa_and_ns_at_the_apex() {
    check(
        "cluster.local.",
        RecordType::SOA,
        &format!("NOERROR aa\n;; ANSWER\n{SOA}"),
    );
    check(
        "cluster.local.",
        RecordType::NS,
        "NOERROR aa\n;; ANSWER\ncluster.local. 30 IN NS ns.dns.cluster.local.\n;; ADDITIONAL\nns.dns.cluster.local. 30 IN A 10.96.0.10",
    );
    check(
        "ns.dns.cluster.local.",
        RecordType::A,
        "NOERROR aa\n;; ANSWER\nns.dns.cluster.local. 30 IN A 10.96.0.10",
    );
}

#[test]
fn ttl_is_configurable() {
    let config = Config {
        ttl: 5,
        ..Config::default()
    };
    check_with(
        "web.default.svc.cluster.local.",
        RecordType::A,
        &config,
        "NOERROR aa\n;; ANSWER\nweb.default.svc.cluster.local. 5 IN A 10.96.0.20",
    );
}

#[test]
fn other_zone_configured() {
    let config = Config::for_zone("example.org").unwrap();
    check_with(
        "web.default.svc.example.org.",
        RecordType::A,
        &config,
        "NOERROR aa\n;; ANSWER\nweb.default.svc.example.org. 30 IN A 10.96.0.20",
    );
}

#[test]
fn transfers_are_refused() {
    check("cluster.local.", RecordType::AXFR, "REFUSED");
    check("cluster.local.", RecordType::IXFR, "REFUSED");
}

#[test]
fn outside_the_zone_servfail_without_forward_forwarded_with_it_refused_outside_the_server_block() {
    check("example.com.", RecordType::A, "SERVFAIL");
    let upstream: SocketAddr = "127.0.0.1:5300".parse().unwrap();
    let forwarding = Config {
        upstream: Some(upstream),
        ..Config::default()
    };
    assert_eq!(
        ask_with("example.com.", RecordType::A, &forwarding),
        Outcome::Forward(upstream)
    );
    let scoped = Config {
        server_zones: vec![Name::from_ascii("cluster.local.").unwrap()],
        ..Config::default()
    };
    check_with("example.com.", RecordType::A, &scoped, "REFUSED");
}

#[test]
fn servfail_until_the_first_sync() {
    let reply = answer(
        &query("web.default.svc.cluster.local.", RecordType::A),
        None,
        &Config::default(),
    );
    match reply {
        Outcome::Reply(m) => assert_eq!(m.response_code, ResponseCode::ServFail),
        other => panic!("{other:?}"),
    }
}

#[test]
fn opcodes_other_than_query_are_not_implemented() {
    let mut m = query("web.default.svc.cluster.local.", RecordType::A);
    m.metadata.op_code = OpCode::Notify;
    match answer(&m, Some(&cluster()), &Config::default()) {
        Outcome::Reply(m) => assert_eq!(m.response_code, ResponseCode::NotImp),
        other => panic!("{other:?}"),
    }
}

/// A headless service with `n` ready endpoints, for the size tests.
fn big_cluster(n: u8) -> Snapshot {
    let namespaces: Vec<Namespace> = vec![from_json(json!({"metadata": {"name": "default"}}))];
    let services = vec![service(
        "default",
        "big",
        json!({"clusterIP": "None", "ports": [{"name": "http", "port": 80}]}),
    )];
    let endpoints: Vec<Value> = (1..=n)
        .map(|i| ep(&format!("10.244.2.{i}"), true, None))
        .collect();
    let slices = vec![slice(
        "default",
        "big",
        json!(endpoints),
        json!([{"name": "http", "port": 80, "protocol": "TCP"}]),
    )];
    Snapshot::build(&namespaces, &services, &slices, 1)
}

fn reply_bytes(request: &Message, snapshot: &Snapshot, limit: usize) -> Message {
    let Outcome::Reply(reply) = answer(request, Some(snapshot), &Config::default()) else {
        panic!("expected a reply");
    };
    let bytes = wire::encode(reply, request, limit);
    assert!(bytes.len() <= limit, "{} > {limit}", bytes.len());
    Message::from_vec(&bytes).unwrap()
}

#[test]
fn truncation_over_512_bytes_without_edns() {
    let snapshot = big_cluster(60);
    let request = query("big.default.svc.cluster.local.", RecordType::A);
    let udp = reply_bytes(&request, &snapshot, wire::udp_limit(&request));
    assert!(udp.truncation);
    assert!(udp.answers.len() < 60);
    let tcp = reply_bytes(&request, &snapshot, wire::TCP_LIMIT);
    assert!(!tcp.truncation);
    assert_eq!(tcp.answers.len(), 60);
}

#[test]
fn edns_buffer_size_is_honoured_and_opt_echoed() {
    let snapshot = big_cluster(60);
    let mut request = query("big.default.svc.cluster.local.", RecordType::A);
    let mut edns = Edns::new();
    edns.set_max_payload(4096);
    request.set_edns(edns);
    assert_eq!(wire::udp_limit(&request), 4096);
    let reply = reply_bytes(&request, &snapshot, wire::udp_limit(&request));
    assert!(!reply.truncation);
    assert_eq!(reply.answers.len(), 60);
    assert_eq!(reply.edns.as_ref().map(|e| e.max_payload()), Some(4096));
    let plain = reply_bytes(
        &query("web.default.svc.cluster.local.", RecordType::A),
        &cluster(),
        512,
    );
    assert!(plain.edns.is_none());
}

#[test]
fn srv_glue_is_dropped_before_answers_are_truncated() {
    let snapshot = big_cluster(20);
    let request = query("_http._tcp.big.default.svc.cluster.local.", RecordType::SRV);
    let reply = reply_bytes(&request, &snapshot, 512);
    assert!(reply.additionals.is_empty());
    assert!(reply.truncation);
}

#[test]
fn formerr_when_only_the_header_is_readable_and_drop_otherwise() {
    let mut bytes = query("web.default.svc.cluster.local.", RecordType::A)
        .to_vec()
        .unwrap();
    bytes.truncate(20);
    match wire::decode(&bytes) {
        Decoded::FormErr(reply) => {
            let m = Message::from_vec(&reply).unwrap();
            assert_eq!(m.response_code, ResponseCode::FormErr);
            assert_eq!(m.id, 7);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(wire::decode(&bytes[..5]), Decoded::Drop));
    assert!(matches!(wire::decode(&[]), Decoded::Drop));
}

#[test]
fn no_question_or_two_questions_is_formerr() {
    let mut m = query("web.default.svc.cluster.local.", RecordType::A);
    m.queries.clear();
    let Outcome::Reply(reply) = answer(&m, Some(&cluster()), &Config::default()) else {
        panic!()
    };
    assert_eq!(reply.response_code, ResponseCode::FormErr);
}

#[test]
fn never_panics_on_arbitrary_bytes() {
    let snapshot = cluster();
    let config = Config::default();
    let seed = query("_http._tcp.web.default.svc.cluster.local.", RecordType::SRV)
        .to_vec()
        .unwrap();
    let mut x: u32 = 12345;
    for round in 0..20000 {
        let mut bytes = seed.clone();
        for _ in 0..(round % 6 + 1) {
            x = x.wrapping_mul(1103515245).wrapping_add(12345);
            let at = (x >> 8) as usize % bytes.len();
            bytes[at] = (x >> 16) as u8;
        }
        bytes.truncate(bytes.len() - round % 4);
        if let Decoded::Query(request) = wire::decode(&bytes) {
            if let Outcome::Reply(reply) = answer(&request, Some(&snapshot), &config) {
                wire::encode(reply, &request, wire::udp_limit(&request));
            }
        }
    }
}
