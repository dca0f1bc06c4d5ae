//! kube-proxy's rule programming in iptables and nftables mode, measured inside fresh
//! network namespaces of this benchmark (`kpb<pid>-…`, removed at the end, also on
//! failure):
//! 1. a full sync of N services × 5 endpoints against a raw `iptables-restore` (or
//!    `nft -f`) of the very same rules: the baseline is the tool's and the kernel's
//!    share of the time;
//! 2. one endpoint change at N services (a partial sync);
//! 3. the connect latency of a new TCP connection through the last service's cluster
//!    IP with 10 services and with N (iptables walks KUBE-SERVICES rule by rule,
//!    nftables looks the service up in a map).
//!
//! Run with `bench/proxy.sh`; `SERVICES` overrides the sizes (comma-separated).

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kubeproxy::iptables::{self, Config, Selection};
use kubeproxy::model::{Endpoint, Protocol, ServicePort, ServicePortName, State};
use kubeproxy::nftables;
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
                source_ranges: Vec::new(),
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
        node_ip: None,
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

fn restore_raw(program: &str, args: &[&str], text: &str) -> Duration {
    let started = Instant::now();
    let mut child = Command::new(program)
        .args(args)
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

#[derive(Debug, Clone, Copy)]
enum Mode {
    Iptables,
    Nftables,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Iptables => "iptables",
            Mode::Nftables => "nftables",
        }
    }

    /// The rules of a full sync as text, and the raw tool that loads them.
    fn raw(self, state: &State) -> (String, &'static str, &'static [&'static str]) {
        match self {
            Mode::Iptables => {
                let rules = iptables::plan(state, &config());
                let text = iptables::render(&rules, &Selection::full(&rules, &BTreeSet::new()));
                (text, "iptables-restore", &["-w", "5", "--noflush"])
            }
            Mode::Nftables => {
                let text = nftables::Proxier::new(config().into())
                    .transaction(state)
                    .text;
                (text, "nft", &["-f", "-"])
            }
        }
    }
}

/// A proxier of either mode, driven as the sync loop drives it.
enum Any {
    Iptables(Proxier),
    Nftables(nftables::Proxier),
}

impl Any {
    fn new(mode: Mode) -> Any {
        match mode {
            Mode::Iptables => Any::Iptables(Proxier::new(config())),
            Mode::Nftables => Any::Nftables(nftables::Proxier::new(config().into())),
        }
    }

    fn sync(&mut self, rt: &tokio::runtime::Runtime, state: &State) {
        match self {
            Any::Iptables(p) => rt.block_on(p.sync(state)).map(drop),
            Any::Nftables(p) => rt.block_on(p.sync(state)).map(drop),
        }
        .expect("sync");
    }
}

/// Full sync, partial sync and connect latency of `mode` at `state`, in namespace `ns`.
fn measure(mode: Mode, ns: &str, state: &State) -> (Duration, Duration, Duration) {
    inside(ns, || {
        let rt = runtime();
        let mut proxier = Any::new(mode);
        let started = Instant::now();
        proxier.sync(&rt, state);
        let full = started.elapsed();
        let mut changed = state.clone();
        if let Some((_, endpoints)) = changed.values_mut().next() {
            endpoints[0].ip = Ipv4Addr::new(10, 200, 0, 9);
        }
        let started = Instant::now();
        proxier.sync(&rt, &changed);
        let partial = started.elapsed();
        let listener = backends();
        let last = state
            .values()
            .last()
            .map(|(p, _)| p.cluster_ip)
            .expect("a service");
        let latency = connect_latency(SocketAddr::from((last, 80)), &listener, 200);
        (full, partial, latency)
    })
}

fn main() {
    let sizes: Vec<usize> = std::env::var("SERVICES")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let pid = std::process::id();
    let mut namespaces = Namespaces(Vec::new());
    println!("| mode | services × {ENDPOINTS} endpoints | kubesim full sync | raw load of the same rules | ratio | one endpoint change | rules |");
    println!("|---|---|---|---|---|---|---|");
    let mut latency_rows = Vec::new();
    for mode in [Mode::Iptables, Mode::Nftables] {
        let small = namespaces.add(format!("kpb{pid}-{}s", mode.name()));
        let (_, _, latency10) = measure(mode, &small, &state(10));
        latency_rows.push((mode, 10, latency10));
        for (round, &n) in sizes.iter().enumerate() {
            let ours = namespaces.add(format!("kpb{pid}-{}o{round}", mode.name()));
            let raw = namespaces.add(format!("kpb{pid}-{}r{round}", mode.name()));
            let state = state(n);
            let (text, program, args) = mode.raw(&state);
            let rule_count = text
                .lines()
                .filter(|l| l.starts_with("-A ") || l.starts_with("add rule"))
                .count();
            let baseline = inside(&raw, || restore_raw(program, args, &text));
            let (full, partial, latency) = measure(mode, &ours, &state);
            println!(
                "| {} | {n} | {} | {} ({program}) | {:.2}× | {} | {rule_count} |",
                mode.name(),
                ms(full),
                ms(baseline),
                full.as_secs_f64() / baseline.as_secs_f64(),
                ms(partial)
            );
            latency_rows.push((mode, n, latency));
        }
    }
    println!();
    println!("| mode | services | connect through the last service's cluster IP (median of 200) |");
    println!("|---|---|---|");
    for (mode, n, latency) in latency_rows {
        println!("| {} | {n} | {} |", mode.name(), us(latency));
    }
}
