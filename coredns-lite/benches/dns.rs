//! dnsperf against coredns-lite loaded with 1,000 and 10,000 Services, and in the
//! same run against NSD serving a zone with the same A records; both on 127.0.0.1.
//! Run with `bench/dns.sh` (needs `dnsperf` and `nsd`). Prints one line per run.

use std::fmt::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{stream, StreamExt};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, PostParams};
use serde_json::json;

const SECONDS: &str = "10";
const CLIENTS: &str = "10";

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Runs dnsperf and returns (queries per second, average latency in ms, lost).
fn dnsperf(port: u16, queries: &Path) -> (f64, f64, String) {
    let out = Command::new("dnsperf")
        .args([
            "-s",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-l",
            SECONDS,
            "-c",
            CLIENTS,
            "-T",
            "1",
        ])
        .arg("-d")
        .arg(queries)
        .output()
        .expect("run dnsperf");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("dnsperf printed no {key:?}:\n{text}"))
    };
    let qps: f64 = field("Queries per second:").parse().unwrap_or(0.0);
    let latency = field("Average Latency (s):");
    let avg: f64 = latency
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    (qps, avg * 1000.0, field("Queries lost:"))
}

struct Nsd(Child);

impl Drop for Nsd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// NSD on 127.0.0.1:`port` serving `cluster.local` with `records`.
fn nsd(dir: &Path, port: u16, records: &[(String, String)]) -> Nsd {
    let mut zone = String::from(
        "$ORIGIN cluster.local.\n$TTL 30\n@ IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 30\n@ IN NS ns.dns.cluster.local.\nns.dns IN A 127.0.0.1\n",
    );
    for (name, ip) in records {
        let _ = writeln!(zone, "{name}.default.svc IN A {ip}");
    }
    std::fs::write(dir.join("cluster.local.zone"), zone).expect("write zone");
    let conf = format!(
        "server:\n  ip-address: 127.0.0.1@{port}\n  port: {port}\n  username: \"\"\n  zonesdir: \"{d}\"\n  database: \"\"\n  pidfile: \"{d}/nsd.pid\"\n  xfrdfile: \"{d}/xfrd.state\"\n  zonelistfile: \"{d}/zone.list\"\n  logfile: \"{d}/nsd.log\"\n  server-count: 1\n  verbosity: 0\nremote-control:\n  control-enable: no\nzone:\n  name: cluster.local\n  zonefile: cluster.local.zone\n",
        d = dir.display()
    );
    let conf_path = dir.join("nsd.conf");
    std::fs::write(&conf_path, conf).expect("write nsd.conf");
    let child = Command::new("nsd")
        .arg("-d")
        .arg("-c")
        .arg(&conf_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nsd");
    Nsd(child)
}

/// Waits until something answers `name` on `port`.
fn wait_answering(port: u16, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let out = Command::new("dig")
            .args([
                "@127.0.0.1",
                "-p",
                &port.to_string(),
                "+short",
                "+time=1",
                "+tries=1",
                name,
                "A",
            ])
            .output()
            .expect("run dig");
        if !out.stdout.is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("nothing answers {name} on port {port}");
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = apiserver::start(apiserver::Config {
        data_dir: dir.path().join("server"),
        port: 0,
        ..Default::default()
    })
    .await
    .expect("start apiserver");
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&server.kubeconfig).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config");
    let client = kube::Client::try_from(config).expect("client");
    let dns_port = free_port();
    let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
    let dns = coredns_lite::start(
        client.clone(),
        coredns_lite::Options {
            dns: loopback(dns_port),
            health: loopback(0),
            ready: loopback(0),
            metrics: loopback(0),
            config: coredns_lite::Config::default(),
        },
    )
    .await
    .expect("start dns");
    let services = Api::<Service>::namespaced(client, "default");
    let mut created = 0usize;
    for target in [1_000usize, 10_000] {
        let started = Instant::now();
        let names: Vec<String> = (created..target).map(|i| format!("svc-{i}")).collect();
        stream::iter(names)
            .for_each_concurrent(32, |name| {
                let services = services.clone();
                async move {
                    let svc: Service = serde_json::from_value(json!({
                        "metadata": {"name": name},
                        "spec": {"ports": [{"name": "http", "port": 80}]},
                    }))
                    .expect("service");
                    services
                        .create(&PostParams::default(), &svc)
                        .await
                        .expect("create service");
                }
            })
            .await;
        created = target;
        eprintln!("created {target} services in {:?}", started.elapsed());
        let last = format!("svc-{}.default.svc.cluster.local", target - 1);
        tokio::task::spawn_blocking(move || wait_answering(dns_port, &last))
            .await
            .expect("wait");
        let mut records = Vec::new();
        for svc in services
            .list(&Default::default())
            .await
            .expect("list")
            .items
        {
            let name = svc.metadata.name.unwrap_or_default();
            if let Some(ip) = svc.spec.and_then(|s| s.cluster_ip) {
                records.push((name, ip));
            }
        }
        let queries = dir.path().join(format!("queries-{target}.txt"));
        let text: String = records
            .iter()
            .map(|(name, _)| format!("{name}.default.svc.cluster.local A\n"))
            .collect();
        std::fs::write(&queries, text).expect("write queries");
        let nsd_dir = dir.path().join(format!("nsd-{target}"));
        std::fs::create_dir_all(&nsd_dir).expect("nsd dir");
        let nsd_port = free_port();
        let nsd_server = nsd(&nsd_dir, nsd_port, &records);
        let first = format!("{}.default.svc.cluster.local", records[0].0);
        let (ours, theirs) = tokio::task::spawn_blocking(move || {
            wait_answering(nsd_port, &first);
            let ours = dnsperf(dns_port, &queries);
            let theirs = dnsperf(nsd_port, &queries);
            (ours, theirs)
        })
        .await
        .expect("dnsperf");
        drop(nsd_server);
        for (who, (qps, ms, lost)) in [("kubesim dns", ours), ("NSD 4.6.1", theirs)] {
            println!(
                "{target:>6} services  {who:<12} {qps:>10.0} QPS  avg latency {ms:.3} ms  lost {lost}"
            );
        }
    }
    drop(dns);
}
