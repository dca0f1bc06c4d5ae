//! The specification's records through the real dig and nslookup, over UDP and TCP.

use std::net::UdpSocket;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::harness::{eventually, from_json, http_get, Cluster};

/// Waits until dig's sorted `+short` answer is `want`.
async fn until_short(cluster: &Cluster, name: &str, qtype: &str, want: &[&str]) -> bool {
    eventually(15, || async {
        (cluster.short(name, qtype, "+notcp") == want).then_some(())
    })
    .await
    .is_some()
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_ip_a_srv_ptr_over_udp_and_tcp_with_dig_and_nslookup() {
    let cluster = Cluster::start().await;
    let svc = cluster
        .create_service(
            "default",
            "web",
            json!({"selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}),
        )
        .await;
    let ip = svc.spec.unwrap().cluster_ip.unwrap();
    let name = "web.default.svc.cluster.local";
    assert!(until_short(&cluster, name, "A", &[&ip]).await, "A {ip}");
    assert_eq!(cluster.short(name, "A", "+tcp"), vec![ip.clone()]);
    assert_eq!(
        cluster.short(&format!("_http._tcp.{name}"), "SRV", "+notcp"),
        vec![format!("0 100 80 {name}.")]
    );
    let glue = cluster.answer(&[
        "+notcp",
        "+additional",
        &format!("_http._tcp.{name}"),
        "SRV",
    ]);
    assert!(glue.contains(&format!("{name}. 30 IN A {ip}")), "{glue}");
    assert_eq!(cluster.ptr(&ip), vec![format!("{name}.")]);
    assert_eq!(
        cluster.status("nosuch.default.svc.cluster.local", "A"),
        "NXDOMAIN"
    );
    assert_eq!(cluster.status(name, "MX"), "NOERROR");
    assert_eq!(cluster.status("default.svc.cluster.local", "A"), "NOERROR");
    let nodata = cluster.dig(&["+notcp", name, "AAAA"]);
    assert!(
        nodata.contains("ns.dns.cluster.local. hostmaster.cluster.local."),
        "{nodata}"
    );
    assert_eq!(
        cluster.short("dns-version.cluster.local", "TXT", "+tcp"),
        vec!["\"1.1.0\"".to_string()]
    );
    assert_eq!(cluster.status("cluster.local", "AXFR"), "no reply");
    let lookup = cluster.nslookup(&[name]);
    assert!(lookup.contains(&format!("Address: {ip}")), "{lookup}");
    let lookup = cluster.nslookup(&["-type=SRV", &format!("_http._tcp.{name}")]);
    assert!(
        lookup.contains(&format!("service = 0 100 80 {name}.")),
        "{lookup}"
    );
    let (status, body) = http_get(cluster.dns.health, "/health").await;
    assert_eq!((status, body.as_str()), (200, "OK"));
    let (status, metrics) = http_get(cluster.dns.metrics, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("proto=\"tcp\",family=\"1\",type=\"A\""),
        "{metrics}"
    );
    assert!(metrics.contains("rcode=\"NXDOMAIN\""), "{metrics}");
    assert!(metrics.contains("coredns_dns_request_duration_seconds_bucket"));
}

#[tokio::test(flavor = "multi_thread")]
async fn scaled_headless_service_changes_its_a_set_and_srv_targets() {
    let cluster = Cluster::start().await;
    cluster
        .create_service(
            "default",
            "db",
            json!({"clusterIP": "None", "selector": {"app": "db"},
            "ports": [{"name": "mysql", "port": 3306, "protocol": "TCP"}]}),
        )
        .await;
    let name = "db.default.svc.cluster.local";
    assert_eq!(cluster.status(name, "A"), "NXDOMAIN");
    cluster.create_pod("db-a", "db", "10.244.1.10", true).await;
    cluster.create_pod("db-b", "db", "10.244.1.11", true).await;
    assert!(until_short(&cluster, name, "A", &["10.244.1.10", "10.244.1.11"]).await);
    cluster.create_pod("db-c", "db", "10.244.1.12", true).await;
    assert!(
        until_short(
            &cluster,
            name,
            "A",
            &["10.244.1.10", "10.244.1.11", "10.244.1.12"]
        )
        .await
    );
    assert_eq!(
        cluster.short(&format!("_mysql._tcp.{name}"), "SRV", "+tcp"),
        vec![
            format!("0 33 3306 10-244-1-10.{name}."),
            format!("0 33 3306 10-244-1-11.{name}."),
            format!("0 33 3306 10-244-1-12.{name}."),
        ]
    );
    assert_eq!(
        cluster.ptr("10.244.1.12"),
        vec![format!("10-244-1-12.{name}.")]
    );
    cluster.report("db-b", "10.244.1.11", false).await;
    assert!(until_short(&cluster, name, "A", &["10.244.1.10", "10.244.1.12"]).await);
    for pod in ["db-a", "db-b", "db-c"] {
        cluster.delete_pod(pod).await;
    }
    let gone = eventually(15, || async {
        (cluster.status(name, "A") == "NXDOMAIN").then_some(())
    })
    .await;
    assert!(
        gone.is_some(),
        "a headless service without ready endpoints is NXDOMAIN"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn external_name_change_is_seen_after_the_ttl() {
    let cluster = Cluster::start().await;
    cluster
        .create_service(
            "default",
            "ext",
            json!({"type": "ExternalName", "externalName": "a.example.com"}),
        )
        .await;
    let name = "ext.default.svc.cluster.local";
    assert!(until_short(&cluster, name, "CNAME", &["a.example.com."]).await);
    let first = cluster.answer(&["+notcp", name, "CNAME"]);
    assert_eq!(first, format!("{name}. 30 IN CNAME a.example.com."));
    let patch = json!({"spec": {"externalName": "b.example.com"}});
    Api::<Service>::namespaced(cluster.client.clone(), "default")
        .patch("ext", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch service");
    let seen = eventually(30, || async {
        (cluster.short(name, "CNAME", "+tcp") == ["b.example.com."]).then_some(())
    })
    .await;
    assert!(
        seen.is_some(),
        "the new externalName is answered within the TTL"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn corefile_in_the_configmap_is_read_and_reloaded() {
    let cluster = Cluster::start().await;
    cluster
        .create_service(
            "default",
            "web",
            json!({"selector": {"app": "web"}, "ports": [{"port": 80}]}),
        )
        .await;
    let served = eventually(15, || async {
        (!cluster
            .short("web.default.svc.cluster.local", "A", "+notcp")
            .is_empty())
        .then_some(())
    })
    .await;
    assert!(served.is_some());
    let corefile =
        ".:53 {\n    kubernetes example.org {\n        pods disabled\n        ttl 7\n    }\n}\n";
    let cm: ConfigMap = from_json(
        json!({"metadata": {"name": "coredns", "namespace": "kube-system"},
        "data": {"Corefile": corefile}}),
    );
    Api::<ConfigMap>::namespaced(cluster.client.clone(), "kube-system")
        .create(&PostParams::default(), &cm)
        .await
        .expect("create configmap");
    let reloaded = eventually(15, || async {
        let out = cluster.answer(&["+notcp", "web.default.svc.example.org", "A"]);
        out.contains(" 7 IN A ").then_some(())
    })
    .await;
    assert!(reloaded.is_some(), "zone and ttl from the Corefile");
    assert_eq!(
        cluster.status("web.default.svc.cluster.local", "A"),
        "SERVFAIL"
    );
    assert_eq!(
        cluster.status("10-0-0-1.default.pod.example.org", "A"),
        "NXDOMAIN"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pod_records_truncation_and_formerr_on_the_wire() {
    let cluster = Cluster::start().await;
    assert_eq!(
        cluster.short("10-244-3-4.default.pod.cluster.local", "A", "+notcp"),
        vec!["10.244.3.4".to_string()]
    );
    cluster
        .create_service(
            "default",
            "big",
            json!({"clusterIP": "None", "selector": {"app": "big"},
            "ports": [{"name": "http", "port": 80}]}),
        )
        .await;
    for i in 1..=40 {
        cluster
            .create_pod(&format!("big-{i}"), "big", &format!("10.244.4.{i}"), true)
            .await;
    }
    let name = "big.default.svc.cluster.local";
    let all = eventually(20, || async {
        (cluster.short(name, "A", "+tcp").len() == 40).then_some(())
    })
    .await;
    assert!(all.is_some());
    let truncated = cluster.dig(&["+notcp", "+ignore", "+noedns", name, "A"]);
    assert!(truncated.contains("flags: qr aa tc rd"), "{truncated}");
    let retried = cluster.dig(&["+notcp", "+noedns", "+short", name, "A"]);
    assert_eq!(retried.lines().count(), 40, "dig retries over TCP after TC");
    let edns = cluster.dig(&["+notcp", "+ignore", "+bufsize=4096", name, "A"]);
    assert!(!edns.contains(" tc "), "{edns}");
    assert!(edns.contains("udp: 4096"), "{edns}");

    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let garbage = [
        0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07, b'b',
    ];
    socket.send_to(&garbage, cluster.dns.dns).unwrap();
    let mut buf = [0u8; 512];
    let (n, _) = socket.recv_from(&mut buf).expect("a FORMERR reply");
    assert!(n >= 12);
    assert_eq!(&buf[..2], &[0x12, 0x34]);
    assert_eq!(buf[3] & 0x0f, 1, "rcode FORMERR");
    socket.send_to(&[1, 2, 3], cluster.dns.dns).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(
        socket.recv_from(&mut buf).is_err(),
        "an unreadable header is dropped"
    );
}

/// An upstream on loopback that answers every A query with 192.0.2.1.
fn fake_upstream() -> std::net::SocketAddr {
    use hickory_proto::op::Message;
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{RData, Record};
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok((n, peer)) = socket.recv_from(&mut buf) {
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut reply = Message::response(query.id, query.op_code);
            reply.queries = query.queries.clone();
            if let Some(q) = query.queries.first() {
                reply.answers.push(Record::from_rdata(
                    q.name().clone(),
                    60,
                    RData::A(A::new(192, 0, 2, 1)),
                ));
            }
            let _ = socket.send_to(&reply.to_vec().unwrap(), peer);
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread")]
async fn names_outside_the_zone_and_external_name_targets_go_to_the_upstream() {
    let config = coredns_lite::Config {
        upstream: Some(fake_upstream()),
        ..coredns_lite::Config::default()
    };
    let cluster = Cluster::start_with(config).await;
    assert_eq!(
        cluster.short("example.com", "A", "+notcp"),
        vec!["192.0.2.1".to_string()]
    );
    cluster
        .create_service(
            "default",
            "ext",
            json!({"type": "ExternalName", "externalName": "db.example.com"}),
        )
        .await;
    let name = "ext.default.svc.cluster.local";
    let chased = eventually(15, || async {
        let answer = cluster.answer(&["+notcp", name, "A"]);
        (answer
            == format!("{name}. 30 IN CNAME db.example.com.\ndb.example.com. 60 IN A 192.0.2.1"))
        .then_some(())
    })
    .await;
    assert!(
        chased.is_some(),
        "{}",
        cluster.answer(&["+notcp", name, "A"])
    );
}
