//! An apiserver on a free loopback port, the EndpointSlice controller, and
//! coredns-lite on 127.0.0.1 with free ports; a test plays the kubelet. Everything
//! stops when the test's runtime ends.

use std::future::Future;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{json, Value};

pub struct Cluster {
    pub client: kube::Client,
    pub dns: coredns_lite::Running,
    _server: apiserver::Running,
    _dir: tempfile::TempDir,
}

pub fn from_json<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("valid object")
}

impl Cluster {
    pub async fn start() -> Cluster {
        Cluster::start_with(coredns_lite::Config::default()).await
    }

    pub async fn start_with(config: coredns_lite::Config) -> Cluster {
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
        let kube_config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .expect("config");
        let client = kube::Client::try_from(kube_config).expect("client");
        tokio::spawn(controller::endpointslice::run(client.clone()));
        let loopback = ([127, 0, 0, 1], 0).into();
        let dns = coredns_lite::start(
            client.clone(),
            coredns_lite::Options {
                dns: loopback,
                health: loopback,
                ready: loopback,
                metrics: loopback,
                config,
            },
        )
        .await
        .expect("start dns");
        let cluster = Cluster {
            client,
            dns,
            _server: server,
            _dir: dir,
        };
        let ready = eventually(20, || async {
            (http_get(cluster.dns.ready, "/ready").await.0 == 200).then_some(())
        })
        .await;
        assert!(ready.is_some(), "dns never became ready");
        cluster
    }

    /// Runs dig against the server with `args` after the usual `@127.0.0.1 -p PORT`.
    pub fn dig(&self, args: &[&str]) -> String {
        let port = self.dns.dns.port().to_string();
        let out = Command::new("dig")
            .args(["@127.0.0.1", "-p", &port, "+time=2", "+tries=1"])
            .args(args)
            .output()
            .expect("run dig");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// dig's answer section (`+noall +answer`), whitespace collapsed to single spaces.
    pub fn answer(&self, args: &[&str]) -> String {
        let mut all = vec!["+noall", "+answer"];
        all.extend_from_slice(args);
        self.dig(&all)
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The PTR names of `ip`, sorted.
    pub fn ptr(&self, ip: &str) -> Vec<String> {
        let mut lines: Vec<String> = self
            .dig(&["+notcp", "+short", "-x", ip])
            .lines()
            .map(str::to_string)
            .collect();
        lines.sort();
        lines
    }

    /// dig `+short`, lines sorted.
    pub fn short(&self, name: &str, qtype: &str, transport: &str) -> Vec<String> {
        let mut lines: Vec<String> = self
            .dig(&[transport, "+short", name, qtype])
            .lines()
            .map(str::to_string)
            .collect();
        lines.sort();
        lines
    }

    /// The `status:` dig prints.
    pub fn status(&self, name: &str, qtype: &str) -> String {
        let out = self.dig(&["+notcp", name, qtype]);
        out.split("status: ")
            .nth(1)
            .and_then(|s| s.split(',').next())
            .unwrap_or("no reply")
            .to_string()
    }

    pub fn nslookup(&self, args: &[&str]) -> String {
        let port = format!("-port={}", self.dns.dns.port());
        let out = Command::new("nslookup")
            .arg(port)
            .args(args)
            .arg("127.0.0.1")
            .output()
            .expect("run nslookup");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub async fn create_service(&self, ns: &str, name: &str, spec: Value) -> Service {
        let svc = json!({"metadata": {"name": name, "namespace": ns}, "spec": spec});
        Api::<Service>::namespaced(self.client.clone(), ns)
            .create(&PostParams::default(), &from_json(svc))
            .await
            .expect("create service")
    }

    /// A pod labelled `app=<app>` reported running at `ip`, ready or not.
    pub async fn create_pod(&self, name: &str, app: &str, ip: &str, ready: bool) {
        let pods = Api::<Pod>::namespaced(self.client.clone(), "default");
        let pod = json!({
            "metadata": {"name": name, "labels": {"app": app}},
            "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "nginx"}]},
        });
        pods.create(&PostParams::default(), &from_json(pod))
            .await
            .expect("create pod");
        self.report(name, ip, ready).await;
    }

    pub async fn report(&self, name: &str, ip: &str, ready: bool) {
        let status = json!({"status": {
            "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" },
                            "lastTransitionTime": k8s_openapi::jiff::Timestamp::now().to_string()}],
        }});
        Api::<Pod>::namespaced(self.client.clone(), "default")
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .expect("patch pod status");
    }

    pub async fn delete_pod(&self, name: &str) {
        Api::<Pod>::namespaced(self.client.clone(), "default")
            .delete(name, &DeleteParams::default().grace_period(0))
            .await
            .expect("delete pod");
    }
}

/// A plain HTTP/1.0 GET: (status, body).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return (0, String::new());
    };
    let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return (0, String::new());
    }
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text).await;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
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
