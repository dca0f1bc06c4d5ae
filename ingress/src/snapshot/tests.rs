use serde_json::{json, Value};

use super::*;
use crate::path::normalize;
use crate::testing::{build, fake, ingress, nginx_class, service, slice, tls_secret, TestCa};

/// Where a request goes: `server path (type) -> upstream`, or `server default -> …`;
/// the built-in default backend is `404`.
fn routed(snapshot: &Snapshot, host: &str, path: &str) -> String {
    let route = snapshot.route(host, &normalize(path));
    let backend = match route.backend {
        Backend::NotFound => "404".to_string(),
        Backend::Upstream(u) => u.name.clone(),
    };
    match route.location {
        Some(location) => format!("{} {} -> {backend}", route.server.name, location.rule),
        None => format!("{} default -> {backend}", route.server.name),
    }
}

fn backend(service: &str) -> Value {
    json!({"service": {"name": service, "port": {"number": 80}}})
}

fn objects(ingresses: Vec<Arc<Ingress>>) -> Objects {
    Objects {
        ingresses,
        classes: vec![nginx_class()],
        ..Objects::default()
    }
}

/// The examples of the "Path types" section of the Kubernetes Ingress documentation:
/// one Ingress with the listed paths (path `i` to Service `s<i>`) and a default
/// backend; which path serves each request, or `None` for the default backend.
#[test]
fn path_type_examples_of_the_kubernetes_documentation() {
    type Example<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str], Option<usize>);
    let examples: &[Example] = &[
        (&[("Prefix", "/")], &["/", "/foo", "/aaa/bbb/ccc"], Some(0)),
        (&[("Exact", "/foo")], &["/foo"], Some(0)),
        (&[("Exact", "/foo")], &["/bar"], None),
        (&[("Exact", "/foo")], &["/foo/"], None),
        (&[("Exact", "/foo/")], &["/foo"], None),
        (&[("Prefix", "/foo")], &["/foo", "/foo/"], Some(0)),
        (&[("Prefix", "/foo/")], &["/foo", "/foo/"], Some(0)),
        (&[("Prefix", "/aaa/bb")], &["/aaa/bbb"], None),
        (&[("Prefix", "/aaa/bbb")], &["/aaa/bbb"], Some(0)),
        // The trailing slash of the path is ignored …
        (&[("Prefix", "/aaa/bbb/")], &["/aaa/bbb"], Some(0)),
        // … and so is the request's.
        (&[("Prefix", "/aaa/bbb")], &["/aaa/bbb/"], Some(0)),
        (&[("Prefix", "/aaa/bbb")], &["/aaa/bbb/ccc"], Some(0)),
        // Elements, not strings.
        (&[("Prefix", "/aaa/bbb")], &["/aaa/bbbxyz"], None),
        (
            &[("Prefix", "/"), ("Prefix", "/aaa")],
            &["/aaa/ccc"],
            Some(1),
        ),
        (
            &[("Prefix", "/"), ("Prefix", "/aaa"), ("Prefix", "/aaa/bbb")],
            &["/aaa/bbb"],
            Some(2),
        ),
        (
            &[("Prefix", "/"), ("Prefix", "/aaa"), ("Prefix", "/aaa/bbb")],
            &["/ccc"],
            Some(0),
        ),
        (&[("Prefix", "/aaa")], &["/ccc"], None),
        // Exact wins over Prefix of the same path, in either order.
        (&[("Prefix", "/foo"), ("Exact", "/foo")], &["/foo"], Some(1)),
        (&[("Exact", "/foo"), ("Prefix", "/foo")], &["/foo"], Some(0)),
        (
            &[("Exact", "/foo"), ("Prefix", "/foo")],
            &["/foo/bar"],
            Some(1),
        ),
        // ImplementationSpecific is read as Prefix.
        (
            &[("ImplementationSpecific", "/foo")],
            &["/foo/bar"],
            Some(0),
        ),
        (&[("ImplementationSpecific", "/foo")], &["/foobar"], None),
    ];
    for (paths, requests, expected) in examples {
        let http_paths: Vec<Value> = paths
            .iter()
            .enumerate()
            .map(|(i, (kind, path))| {
                json!({"path": path, "pathType": kind, "backend": backend(&format!("s{i}"))})
            })
            .collect();
        let snapshot = build(&objects(vec![ingress(
            "examples",
            0,
            json!({"defaultBackend": backend("fallback"),
                   "rules": [{"http": {"paths": http_paths}}]}),
        )]));
        let want = match expected {
            Some(i) => format!("default-s{i}-80"),
            None => "default-fallback-80".to_string(),
        };
        for request in *requests {
            let route = snapshot.route("any.example.com", &normalize(request));
            let got = match route.backend {
                Backend::Upstream(u) => u.name.clone(),
                Backend::NotFound => "404".to_string(),
            };
            assert_eq!(got, want, "paths {paths:?}, request {request}");
        }
    }
}

#[test]
fn hosts_exact_wildcard_and_catch_all() {
    let snapshot = build(&objects(vec![ingress(
        "hosts",
        0,
        json!({"rules": [
            {"host": "foo.bar.com", "http": {"paths": [
                {"path": "/", "pathType": "Prefix", "backend": backend("exact")}]}},
            {"host": "*.foo.com", "http": {"paths": [
                {"path": "/", "pathType": "Prefix", "backend": backend("wild")}]}},
            {"http": {"paths": [
                {"path": "/any", "pathType": "Prefix", "backend": backend("anyhost")}]}},
        ]}),
    )]));
    let table = [
        (
            "foo.bar.com",
            "/x",
            "foo.bar.com / (Prefix) -> default-exact-80",
        ),
        (
            "FOO.bar.com",
            "/x",
            "foo.bar.com / (Prefix) -> default-exact-80",
        ),
        (
            "bar.foo.com",
            "/x",
            "*.foo.com / (Prefix) -> default-wild-80",
        ),
        (
            "baz.bar.foo.com",
            "/any",
            "_ /any (Prefix) -> default-anyhost-80",
        ),
        ("foo.com", "/any", "_ /any (Prefix) -> default-anyhost-80"),
        ("foo.com", "/x", "_ default -> 404"),
        (
            "10.0.0.1",
            "/any/thing",
            "_ /any (Prefix) -> default-anyhost-80",
        ),
        // A host with a server of its own does not fall back to the catch-all's
        // paths (ingress-nginx: one nginx server per host).
        (
            "foo.bar.com",
            "/any",
            "foo.bar.com / (Prefix) -> default-exact-80",
        ),
    ];
    for (host, path, expected) in table {
        assert_eq!(routed(&snapshot, host, path), expected, "{host}{path}");
    }
    assert_eq!(snapshot.server_count(), 3);
}

#[test]
fn ingresses_merge_per_host_and_the_oldest_keeps_a_shared_path() {
    let newer = ingress(
        "newer",
        20,
        json!({"rules": [{"host": "shop.example.com", "http": {"paths": [
            {"path": "/cart", "pathType": "Prefix", "backend": backend("cart-v2")},
            {"path": "/pay", "pathType": "Exact", "backend": backend("pay")},
        ]}}]}),
    );
    let older = ingress(
        "older",
        10,
        json!({"rules": [{"host": "shop.example.com", "http": {"paths": [
            {"path": "/cart/", "pathType": "Prefix", "backend": backend("cart")},
            {"path": "/", "pathType": "Prefix", "backend": backend("front")},
        ]}}]}),
    );
    let snapshot = build(&objects(vec![newer, older]));
    for (path, expected) in [
        (
            "/cart/items",
            "shop.example.com /cart (Prefix) -> default-cart-80",
        ),
        ("/pay", "shop.example.com /pay (Exact) -> default-pay-80"),
        (
            "/pay/more",
            "shop.example.com / (Prefix) -> default-front-80",
        ),
    ] {
        assert_eq!(routed(&snapshot, "shop.example.com", path), expected);
    }
    assert!(
        snapshot.warnings.iter().any(|w| w.contains(
            "ingress default/newer: path /cart (Prefix) of server shop.example.com \
             is already defined by ingress default/older"
        )),
        "{:?}",
        snapshot.warnings
    );
    assert_eq!(
        snapshot
            .served
            .iter()
            .map(|s| s.key.name.as_str())
            .collect::<Vec<_>>(),
        ["older", "newer"]
    );
}

#[test]
fn default_backends_per_host_catch_all_and_flag() {
    let with_rules = ingress(
        "with-rules",
        1,
        json!({"defaultBackend": backend("own-default"),
               "rules": [{"host": "a.example.com", "http": {"paths": [
                   {"path": "/app", "pathType": "Prefix", "backend": backend("app")}]}}]}),
    );
    let later_same_host = ingress(
        "later",
        2,
        json!({"defaultBackend": backend("later-default"),
               "rules": [{"host": "a.example.com", "http": {"paths": [
                   {"path": "/other", "pathType": "Prefix", "backend": backend("other")}]}}]}),
    );
    let without_host = ingress(
        "b",
        3,
        json!({"rules": [{"host": "b.example.com", "http": {"paths": [
            {"path": "/app", "pathType": "Prefix", "backend": backend("app")}]}}]}),
    );
    let snapshot = build(&objects(vec![
        with_rules.clone(),
        later_same_host.clone(),
        without_host.clone(),
    ]));
    assert_eq!(
        routed(&snapshot, "a.example.com", "/nothing"),
        "a.example.com default -> default-own-default-80"
    );
    assert_eq!(
        routed(&snapshot, "a.example.com", "/other/x"),
        "a.example.com /other (Prefix) -> default-other-80"
    );
    assert_eq!(
        routed(&snapshot, "b.example.com", "/nothing"),
        "b.example.com default -> 404"
    );
    // A defaultBackend beside rules does not take unknown hosts.
    assert_eq!(routed(&snapshot, "c.example.com", "/"), "_ default -> 404");

    // An Ingress with only a defaultBackend takes the catch-all server.
    let catch_all = ingress(
        "catch-all",
        4,
        json!({"defaultBackend": backend("everything")}),
    );
    let snapshot = build(&objects(vec![
        with_rules.clone(),
        without_host.clone(),
        catch_all,
    ]));
    assert_eq!(
        routed(&snapshot, "c.example.com", "/"),
        "_ default -> default-everything-80"
    );
    assert_eq!(
        routed(&snapshot, "b.example.com", "/nothing"),
        "b.example.com default -> 404"
    );

    // --default-backend-service answers what no Ingress does.
    let config = Config {
        default_backend: Some(Key::new("ingress-nginx", "fallback")),
        ..Config::default()
    };
    let mut objs = objects(vec![with_rules, without_host]);
    objs.services.push(crate::testing::from(json!({
        "metadata": {"name": "fallback", "namespace": "ingress-nginx"},
        "spec": {"ports": [{"name": "http", "port": 8080}]},
    })));
    let snapshot = Snapshot::build(&config, &objs, &fake(), None);
    assert_eq!(
        routed(&snapshot, "c.example.com", "/"),
        "_ default -> ingress-nginx-fallback-8080"
    );
    assert_eq!(
        routed(&snapshot, "b.example.com", "/nothing"),
        "b.example.com default -> ingress-nginx-fallback-8080"
    );
}

#[test]
fn only_ingresses_of_our_class_are_served() {
    let ours = ingress(
        "ours",
        0,
        json!({"rules": [{"host": "a.example.com", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": backend("a")}]}}]}),
    );
    let theirs = ingress(
        "theirs",
        0,
        json!({"ingressClassName": "traefik",
               "rules": [{"host": "b.example.com", "http": {"paths": [
                   {"path": "/", "pathType": "Prefix", "backend": backend("b")}]}}]}),
    );
    let snapshot = build(&objects(vec![ours, theirs]));
    assert_eq!(routed(&snapshot, "b.example.com", "/"), "_ default -> 404");
    assert_eq!(
        routed(&snapshot, "a.example.com", "/"),
        "a.example.com / (Prefix) -> default-a-80"
    );
    assert_eq!(snapshot.served.len(), 1);
}

#[test]
fn upstreams_hold_ready_endpoints_and_balance_round_robin_across_rebuilds() {
    let mut objs = objects(vec![ingress(
        "web",
        0,
        json!({"rules": [{"http": {"paths": [
            {"path": "/", "pathType": "Prefix",
             "backend": {"service": {"name": "web", "port": {"name": "http"}}}},
            {"path": "/missing", "pathType": "Prefix", "backend": backend("missing")},
            {"path": "/badport", "pathType": "Prefix",
             "backend": {"service": {"name": "web", "port": {"number": 81}}}},
        ]}}]}),
    )]);
    objs.services.push(service("web"));
    objs.slices
        .push(slice("web", &["10.244.1.3", "10.244.1.2"]));
    let snapshot = build(&objs);
    let upstream = snapshot.upstream("default-web-http").expect("upstream");
    let first: Vec<String> = upstream.attempts().map(|e| e.to_string()).collect();
    assert_eq!(first, ["10.244.1.2:8080", "10.244.1.3:8080"]);
    let second: Vec<String> = upstream.attempts().map(|e| e.to_string()).collect();
    assert_eq!(second, ["10.244.1.3:8080", "10.244.1.2:8080"]);
    let rebuilt = Snapshot::build(&Config::default(), &objs, &fake(), Some(&snapshot));
    let third: Vec<String> = rebuilt
        .upstream("default-web-http")
        .unwrap()
        .attempts()
        .map(|e| e.to_string())
        .collect();
    assert_eq!(third, ["10.244.1.2:8080", "10.244.1.3:8080"]);
    assert!(snapshot
        .upstream("default-missing-80")
        .unwrap()
        .endpoints
        .is_empty());
    assert!(snapshot
        .upstream("default-web-81")
        .unwrap()
        .endpoints
        .is_empty());
    assert_eq!(
        snapshot.warnings,
        [
            "service default/missing: service not found",
            "service default/web: service has no TCP port 81",
        ]
    );
}

#[test]
fn tls_hosts_get_their_certificates_and_https() {
    let ca = TestCa::new();
    let (a_cert, a_key) = ca.issue(&["a.example.com"]);
    let (rules_cert, rules_key) = ca.issue(&["r.example.com"]);
    let mut objs = objects(vec![
        ingress(
            "a",
            0,
            json!({"tls": [{"hosts": ["a.example.com", "*.wild.example.com"], "secretName": "a-tls"},
                    {"hosts": ["broken.example.com"], "secretName": "absent"}],
            "rules": [
                {"host": "a.example.com", "http": {"paths": [
                    {"path": "/", "pathType": "Prefix", "backend": backend("a")}]}},
                {"host": "*.wild.example.com", "http": {"paths": [
                    {"path": "/", "pathType": "Prefix", "backend": backend("w")}]}},
                {"host": "broken.example.com", "http": {"paths": [
                    {"path": "/", "pathType": "Prefix", "backend": backend("b")}]}},
                {"host": "plain.example.com", "http": {"paths": [
                    {"path": "/", "pathType": "Prefix", "backend": backend("p")}]}},
            ]}),
        ),
        ingress(
            "r",
            1,
            json!({"tls": [{"secretName": "r-tls"}],
                   "rules": [{"host": "r.example.com", "http": {"paths": [
                       {"path": "/", "pathType": "Prefix", "backend": backend("r")}]}}]}),
        ),
    ]);
    objs.secrets = vec![
        tls_secret("a-tls", &a_cert, &a_key),
        tls_secret("r-tls", &rules_cert, &rules_key),
    ];
    let fake = fake();
    let snapshot = Snapshot::build(&Config::default(), &objs, &fake, None);
    let der = |key: &Arc<CertifiedKey>| key.cert[0].to_vec();
    let pem_der = |pem: &str| {
        rustls_pemfile::certs(&mut pem.as_bytes())
            .next()
            .unwrap()
            .unwrap()
            .to_vec()
    };
    let certs = &snapshot.certificates;
    assert_eq!(der(&certs.resolve(Some("a.example.com"))), pem_der(&a_cert));
    // One Secret for both hosts of the entry: its first certificate.
    assert_eq!(
        der(&certs.resolve(Some("x.wild.example.com"))),
        pem_der(&a_cert)
    );
    assert_eq!(
        der(&certs.resolve(Some("r.example.com"))),
        pem_der(&rules_cert)
    );
    for unknown in [Some("plain.example.com"), Some("broken.example.com"), None] {
        assert_eq!(der(&certs.resolve(unknown)), der(&fake), "{unknown:?}");
    }
    let tls_of = |host: &str| snapshot.route(host, "/").server.tls;
    assert!(tls_of("a.example.com"));
    assert!(tls_of("x.wild.example.com"));
    assert!(tls_of("broken.example.com"));
    assert!(tls_of("r.example.com"));
    assert!(!tls_of("plain.example.com"));
    let secrets: Vec<&String> = snapshot
        .warnings
        .iter()
        .filter(|w| w.starts_with("secret"))
        .collect();
    assert_eq!(secrets, ["secret default/absent not found"]);
}

#[test]
fn the_default_certificate_comes_from_its_secret_when_usable() {
    let ca = TestCa::new();
    let (cert, key) = ca.issue(&["default.example.com"]);
    let (_, other_key) = ca.issue(&["other.example.com"]);
    let mut objs = objects(Vec::new());
    objs.secrets = vec![
        tls_secret("default-cert", &cert, &key),
        tls_secret("mismatched", &cert, &other_key),
    ];
    let fake = fake();
    let with = |name: &str| {
        let config = Config {
            default_certificate: Some(Key::new("default", name)),
            ..Config::default()
        };
        Snapshot::build(&config, &objs, &fake, None)
    };
    let snapshot = with("default-cert");
    assert_ne!(
        snapshot.certificates.resolve(Some("anything")).cert[0],
        fake.cert[0]
    );
    let snapshot = with("mismatched");
    assert_eq!(
        snapshot.certificates.resolve(Some("anything")).cert[0],
        fake.cert[0]
    );
    assert_eq!(
        snapshot.warnings,
        ["secret default/mismatched: tls.key is not the key of the certificate in tls.crt"]
    );
}

#[test]
fn status_is_published_where_it_differs() {
    let mut objs = objects(vec![
        ingress("fresh", 0, json!({"defaultBackend": backend("a")})),
        crate::testing::from(json!({
            "metadata": {"name": "current", "namespace": "default", "resourceVersion": "7"},
            "spec": {"ingressClassName": "nginx", "defaultBackend": backend("a")},
            "status": {"loadBalancer": {"ingress": [{"ip": "10.96.0.80"}]}},
        })),
        ingress(
            "foreign",
            0,
            json!({"ingressClassName": "other", "defaultBackend": backend("a")}),
        ),
    ]);
    objs.services.push(crate::testing::from(json!({
        "metadata": {"name": "ingress-nginx-controller", "namespace": "ingress-nginx"},
        "spec": {"type": "NodePort", "clusterIP": "10.96.0.80", "ports": [{"port": 80}]},
    })));
    let publish = |publish| Config {
        publish,
        ..Config::default()
    };
    let snapshot = Snapshot::build(
        &publish(Publish::Service(Key::new(
            "ingress-nginx",
            "ingress-nginx-controller",
        ))),
        &objs,
        &fake(),
        None,
    );
    let updates: Vec<(String, Vec<Option<String>>)> = status::updates(&snapshot)
        .into_iter()
        .map(|(key, lb)| (key.to_string(), lb.into_iter().map(|a| a.ip).collect()))
        .collect();
    assert_eq!(
        updates,
        [(
            "default/fresh".to_string(),
            vec![Some("10.96.0.80".to_string())]
        )]
    );
    let snapshot = Snapshot::build(&publish(Publish::Nothing), &objs, &fake(), None);
    assert!(status::updates(&snapshot).is_empty());
    let snapshot = Snapshot::build(
        &publish(Publish::Service(Key::new("ingress-nginx", "absent"))),
        &objs,
        &fake(),
        None,
    );
    assert!(status::updates(&snapshot).is_empty());
    assert_eq!(
        snapshot.warnings.last().map(String::as_str),
        Some("publish service ingress-nginx/absent not found")
    );
    let snapshot = Snapshot::build(
        &publish(Publish::Addresses(vec!["localhost".into()])),
        &objs,
        &fake(),
        None,
    );
    assert_eq!(status::updates(&snapshot).len(), 2);
}
