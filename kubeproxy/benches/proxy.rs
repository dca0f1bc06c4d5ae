//! kube-proxy's rule programming, measured inside fresh network namespaces of this
//! benchmark (`kpb<pid>-…`, removed at the end, also on failure):
//! 1. a full sync of N services × 5 endpoints against a raw `iptables-restore` of the
//!    very same rules (the baseline: the kernel's and the tool's share of the time);
//! 2. one endpoint change at N services (a partial sync);
//! 3. the connect latency of a new TCP connection through the last service's cluster
//!    IP with 10 services and with N (iptables walks KUBE-SERVICES rule by rule).
//!
//! Run with `bench/proxy.sh`; `SERVICES` overrides the sizes (comma-separated).

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kubeproxy::iptables::{self, Config, Selection};
use kubeproxy::model::{Endpoint, Protocol, ServicePort, ServicePortName, State};
use kubeproxy::proxier::Proxier;

const ENDPOINTS: usize = 5;
const BACKEND_PORT: u16 = 8080;

/// The benchmark's namespaces, removed on drop.
struct Namespaces(Vec<String>);

impl Namespaces {
    fn add(&mut self, name: String) -> String {
        netns::add(&name).expect("create a network namespace");
        self.0.push(name.clone());
        name
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = netns::kill_all(name);
            let _ = netns::remove(name);
        }
    }
}

fn state(services: usize) -> State {
    (0..services)
        .map(|i| {
            let i = u32::try_from(i).expect("small");
            let name = ServicePortName {
                namespace: "bench".into(),
                name: format!("svc-{i}"),
                port: "http".into(),
            };
            let port = ServicePort {
                name: name.clone(),
                protocol: Protocol::Tcp,
                cluster_ip: Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + 16 + i),
                port: 80,
                node_port: None,
                external_ips: Vec::new(),
                load_balancer_ips: Vec::new(),
                affinity_seconds: None,
                external_policy_local: false,
                internal_policy_local: false,
                health_check_node_port: None,
            };
            let endpoints = (1..=ENDPOINTS)
                .map(|e| Endpoint {
                    ip: Ipv4Addr::new(10, 200, 0, u8::try_from(e).expect("small")),
                    port: BACKEND_PORT,
                    ready: true,
                    serving: true,
                    terminating: false,
                    node: Some("bench".into()),
                })
                .collect();
            (name, (port, endpoints))
        })
        .collect()
}

fn config() -> Config {
    Config {
        node: "bench".into(),
        cluster_cidr: Some("10.244.0.0/16".into()),
        masquerade_all: false,
    }
}

/// Runs `f` on a thread inside the namespace `name`.
fn inside<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> T {
    let ns = netns::open(name).expect("open the namespace");
    netns::run_in(&ns, || Ok::<_, netns::Error>(f())).expect("work in the namespace")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn restore_raw(text: &str) -> Duration {
    let started = Instant::now();
    let mut child = Command::new("iptables-restore")
        .args(["-w", "5", "--noflush"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("iptables-restore");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write rules");
    assert!(
        child.wait().expect("wait").success(),
        "iptables-restore failed"
    );
    started.elapsed()
}

/// Backend addresses on the namespace's loopback and a listener, so connections
/// through the cluster IPs complete inside the namespace.
fn backends() -> TcpListener {
    let run = |args: &[&str]| {
        let status = Command::new("ip").args(args).status().expect("ip");
        assert!(status.success(), "ip {args:?}");
    };
    run(&["link", "set", "lo", "up"]);
    for e in 1..=ENDPOINTS {
        run(&["addr", "add", &format!("10.200.0.{e}/32"), "dev", "lo"]);
    }
    // Cluster IPs need a route before the nat OUTPUT chain rewrites them.
    run(&["route", "add", "10.96.0.0/12", "dev", "lo"]);
    TcpListener::bind(("0.0.0.0", BACKEND_PORT)).expect("listen")
}

/// The median time of `rounds` new connections to `addr`.
fn connect_latency(addr: SocketAddr, listener: &TcpListener, rounds: usize) -> Duration {
    let mut times: Vec<Duration> = (0..rounds)
        .map(|_| {
            let started = Instant::now();
            let stream =
                TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
            let took = started.elapsed();
            let _accepted = listener.accept().expect("accept");
            drop(stream);
            took
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

fn main() {
    let sizes: Vec<usize> = std::env::var("SERVICES")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let pid = std::process::id();
    let mut namespaces = Namespaces(Vec::new());
    println!("| services × {ENDPOINTS} endpoints | kubesim full sync | raw iptables-restore (same rules) | ratio | one endpoint change (partial sync) | rules |");
    println!("|---|---|---|---|---|---|");
    let mut latency_rows = Vec::new();
    for (round, &n) in sizes.iter().enumerate() {
        let ours = namespaces.add(format!("kpb{pid}-o{round}"));
        let raw = namespaces.add(format!("kpb{pid}-r{round}"));
        let state = state(n);
        let rules = iptables::plan(&state, &config());
        let text = iptables::render(&rules, &Selection::full(&rules, &BTreeSet::new()));
        let rule_count = text.lines().filter(|l| l.starts_with("-A ")).count();
        let baseline = inside(&raw, || restore_raw(&text));
        let (full, partial, latency) = inside(&ours, || {
            let rt = runtime();
            let mut proxier = Proxier::new(config());
            let started = Instant::now();
            rt.block_on(proxier.sync(&state)).expect("full sync");
            let full = started.elapsed();
            let mut changed = state.clone();
            if let Some((_, endpoints)) = changed.values_mut().next() {
                endpoints[0].ip = Ipv4Addr::new(10, 200, 0, 9);
            }
            let started = Instant::now();
            rt.block_on(proxier.sync(&changed)).expect("partial sync");
            let partial = started.elapsed();
            let listener = backends();
            let last = state
                .values()
                .last()
                .map(|(p, _)| p.cluster_ip)
                .expect("a service");
            let latency = connect_latency(SocketAddr::from((last, 80)), &listener, 200);
            (full, partial, latency)
        });
        println!(
            "| {n} | {} | {} | {:.2}× | {} | {rule_count} |",
            ms(full),
            ms(baseline),
            full.as_secs_f64() / baseline.as_secs_f64(),
            ms(partial)
        );
        latency_rows.push((n, latency));
    }
    let small = namespaces.add(format!("kpb{pid}-s"));
    let state10 = state(10);
    let latency10 = inside(&small, || {
        let rt = runtime();
        rt.block_on(Proxier::new(config()).sync(&state10))
            .expect("sync");
        let listener = backends();
        let last = state10
            .values()
            .last()
            .map(|(p, _)| p.cluster_ip)
            .expect("a service");
        connect_latency(SocketAddr::from((last, 80)), &listener, 200)
    });
    println!();
    println!("| services | connect through the last service's cluster IP (median of 200) |");
    println!("|---|---|");
    println!("| 10 | {} |", us(latency10));
    for (n, latency) in latency_rows {
        println!("| {n} | {} |", us(latency));
    }
}
