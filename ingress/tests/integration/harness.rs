//! Every test runs in a network namespace of its own (`ingress-t<random>`, removed when
//! the test ends): its loopback up, with the pod-like addresses 10.244.0.1-16 on it,
//! since EndpointSlices may not name loopback addresses. Inside: an apiserver on
//! 127.0.0.1, the ingress controller on free 127.0.0.1 ports, and echo backends on
//! the 10.244.0.x addresses; a test creates Services, EndpointSlices, IngressClasses
//! and Ingresses through kube-rs (playing the EndpointSlice controller) and probes
//! only with the real `curl`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// How many 10.244.0.x addresses each test namespace has.
const ADDRESSES: u8 = 16;

fn unique_netns() -> String {
    format!("ingress-t{:08x}", rand::random::<u32>())
}

/// Removes the test's namespace, also when the test panicked.
struct NetnsGuard(String);

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        if let Err(err) = netns::remove(&self.0) {
            eprintln!("removing network namespace {}: {err}", self.0);
        }
    }
}

/// Runs `test` on a runtime all of whose threads (and so the processes they start)
/// live in a fresh network namespace.
pub fn run<F, Fut>(test: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let name = unique_netns();
    netns::add(&name).expect("create the test's network namespace");
    let _guard = NetnsGuard(name.clone());
    let setup = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    setup
        .block_on(netns::netlink_in(&name, |handle| async move {
            let lo = netns::require_link(&handle, "lo").await?;
            netns::set_up(&handle, lo.header.index, "lo").await?;
            for i in 1..=ADDRESSES {
                netns::add_address(&handle, lo.header.index, pod_ip(i), 32, "lo").await?;
            }
            Ok::<_, netns::Error>(())
        }))
        .expect("set up the test's network namespace");
    let file = Arc::new(netns::open(&name).expect("open the test's network namespace"));
    let outcome = std::thread::spawn(move || {
        nix::sched::setns(&*file, nix::sched::CloneFlags::CLONE_NEWNET).expect("enter netns");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .on_thread_start(move || {
                nix::sched::setns(&*file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .expect("enter netns");
            })
            .build()
            .expect("runtime");
        runtime.block_on(test());
        runtime.shutdown_timeout(Duration::from_secs(5));
    })
    .join();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// The test namespace's address `i` (1 to 16): 10.244.0.i.
pub fn pod_ip(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 0, i)
}

pub fn from_json<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("valid object")
}

/// The apiserver and the ingress controller of one test.
pub struct Cluster {
    pub client: kube::Client,
    pub ingress: ingress::Running,
    next_ip: AtomicU8,
    _server: apiserver::Running,
    pub dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts both, the controller with `options` (its listeners moved to free
    /// loopback ports), and waits until /healthz answers 200.
    pub async fn start(options: ingress::Options) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let server = apiserver::start(apiserver::Config {
            data_dir: dir.path().join("server"),
            port: 0,
            ..Default::default()
        })
        .await
        .expect("start apiserver");
        let kubeconfig =
            kube::config::Kubeconfig::from_yaml(&server.kubeconfig).expect("kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .expect("config");
        let client = kube::Client::try_from(config).expect("client");
        let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
        let ingress = ingress::start(
            client.clone(),
            ingress::Options {
                http: loopback,
                https: loopback,
                healthz: loopback,
                ..options
            },
        )
        .await
        .expect("start ingress");
        let cluster = Cluster {
            client,
            ingress,
            next_ip: AtomicU8::new(1),
            _server: server,
            dir,
        };
        let healthz = format!("http://{}/healthz", cluster.ingress.healthz);
        let ready = eventually(20, || async {
            let out = curl(&["-sS", healthz.as_str()]).await;
            (out.status == 200 && out.body == "ok").then_some(())
        })
        .await;
        assert!(ready.is_some(), "the controller never became healthy");
        cluster
    }

    /// The IngressClass `nginx` of ingress-nginx's controller.
    pub async fn nginx_class(&self, default: bool) {
        let mut class = json!({"metadata": {"name": "nginx"},
                               "spec": {"controller": "k8s.io/ingress-nginx"}});
        if default {
            class["metadata"]["annotations"] =
                json!({"ingressclass.kubernetes.io/is-default-class": "true"});
        }
        Api::<IngressClass>::all(self.client.clone())
            .create(&PostParams::default(), &from_json(class))
            .await
            .expect("create ingressclass");
    }

    /// A Service `name` in `default` with port `http` 80 → 8080.
    pub async fn service(&self, name: &str) -> Service {
        let svc = json!({"metadata": {"name": name, "namespace": "default"},
                         "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080,
                                             "protocol": "TCP"}]}});
        Api::<Service>::namespaced(self.client.clone(), "default")
            .create(&PostParams::default(), &from_json(svc))
            .await
            .expect("create service")
    }

    /// The EndpointSlices of Service `service`: one per address, each with its port
    /// (as pods whose named target port resolves differently), ready or not.
    pub async fn endpoints(&self, service: &str, endpoints: &[(SocketAddr, bool)]) {
        let api = Api::<EndpointSlice>::namespaced(self.client.clone(), "default");
        for (i, (addr, ready)) in endpoints.iter().enumerate() {
            let slice = json!({
                "metadata": {"name": format!("{service}-{i}"),
                             "labels": {"kubernetes.io/service-name": service}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": addr.port(), "protocol": "TCP"}],
                "endpoints": [{"addresses": [addr.ip().to_string()],
                               "conditions": {"ready": ready}}],
            });
            api.patch(
                &format!("{service}-{i}"),
                &PatchParams::apply("ingress-test").force(),
                &Patch::Apply(slice_with_kind(slice)),
            )
            .await
            .expect("apply endpointslice");
        }
    }

    /// Creates or replaces Ingress `name` in `default` (server-side apply).
    pub async fn ingress(&self, name: &str, metadata: Value, spec: Value) {
        let mut meta = json!({"name": name, "namespace": "default"});
        if let (Some(meta), Some(extra)) = (meta.as_object_mut(), metadata.as_object()) {
            meta.extend(extra.clone());
        }
        let ingress = json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                             "metadata": meta, "spec": spec});
        Api::<Ingress>::namespaced(self.client.clone(), "default")
            .patch(
                name,
                &PatchParams::apply("ingress-test").force(),
                &Patch::Apply(ingress),
            )
            .await
            .expect("apply ingress");
    }

    /// A fresh test address for a backend.
    pub fn next_ip(&self) -> Ipv4Addr {
        let i = self.next_ip.fetch_add(1, Ordering::Relaxed);
        assert!(i <= ADDRESSES, "out of test addresses");
        pod_ip(i)
    }

    /// `http://127.0.0.1:<http port><path>`.
    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.ingress.http)
    }

    /// curl's arguments for a plain HTTP GET of `path` with `Host: host`.
    pub fn at(&self, host: &str, path: &str) -> Vec<String> {
        vec![
            "-H".to_string(),
            format!("Host: {host}"),
            self.http_url(path),
        ]
    }
}

fn slice_with_kind(mut slice: Value) -> Value {
    slice["apiVersion"] = json!("discovery.k8s.io/v1");
    slice["kind"] = json!("EndpointSlice");
    slice
}

/// A backend on `ip` (a free port) answering every request with JSON: its `name`,
/// the request's method and URI, and its headers.
pub async fn echo(ip: Ipv4Addr, name: &'static str) -> SocketAddr {
    slow_echo(ip, name, Duration::ZERO).await
}

/// As [`echo`], answering each request after `delay`.
pub async fn slow_echo(ip: Ipv4Addr, name: &'static str, delay: Duration) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0)).await.expect("bind backend");
    let addr = listener.local_addr().expect("backend address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(http1::Builder::new().serve_connection(
                TokioIo::new(stream),
                service_fn(move |req: Request<Incoming>| async move {
                    tokio::time::sleep(delay).await;
                    let headers: BTreeMap<String, String> = req
                        .headers()
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                        .collect();
                    let body = json!({"backend": name, "method": req.method().as_str(),
                                          "uri": req.uri().to_string(), "headers": headers});
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body.to_string()))))
                }),
            ));
        }
    });
    addr
}

/// A backend on `ip` that accepts connections and never answers.
pub async fn silent(ip: Ipv4Addr) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0)).await.expect("bind backend");
    let addr = listener.local_addr().expect("backend address");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    addr
}

/// An address on `ip` where nothing listens.
pub async fn refused(ip: Ipv4Addr) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0)).await.expect("bind");
    listener.local_addr().expect("address")
}

/// What curl got: the status and headers of the last response, and its body.
#[derive(Debug, Clone)]
pub struct Got {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: String,
    pub stderr: String,
}

impl Got {
    /// The body as JSON (the echo backends' answers).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }

    pub fn backend(&self) -> String {
        self.json()["backend"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }
}

/// Runs curl with `args` (plus `-i` and a timeout) and parses its answer.
pub async fn curl<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Got {
    let out = tokio::process::Command::new("curl")
        .args(["-i", "--max-time", "20"])
        .args(args)
        .output()
        .await
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Got {
        status,
        headers,
        body: body.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Polls `check` every 100 ms until it returns `Some`, for at most `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
