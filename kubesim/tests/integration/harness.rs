//! Starts `kubesim apiserver` on a free port with its own data directory, and runs
//! kubectl against it. The server is killed when the handle drops, also on failure.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const KUBECTL_DIR: &str = "/usr/lib/google-cloud-sdk/bin";

/// The kubectl binary for a minor version, e.g. `kubectl_for("1.27")`; falls back to
/// `kubectl` on PATH for the default version when the versioned one is absent.
pub fn kubectl_for(version: &str) -> PathBuf {
    let versioned = Path::new(KUBECTL_DIR).join(format!("kubectl.{version}"));
    if versioned.exists() || version != "1.32" {
        versioned
    } else {
        PathBuf::from("kubectl")
    }
}

pub fn manifest(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios/manifests")
        .join(name)
}

pub struct ApiServer {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    pub kubectl: PathBuf,
    flags: Vec<String>,
}

impl ApiServer {
    pub fn start() -> ApiServer {
        ApiServer::start_with(&[])
    }

    /// kubectl and clients for a server someone else runs, with `dir` as the
    /// directory for manifests and kubectl's cache.
    pub fn attach(dir: tempfile::TempDir, kubeconfig: PathBuf) -> ApiServer {
        ApiServer {
            child: None,
            dir,
            kubeconfig,
            kubectl: kubectl_for("1.32"),
            flags: Vec::new(),
        }
    }

    /// Starts the server with extra flags.
    pub fn start_with(flags: &[&str]) -> ApiServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let kubeconfig = dir.path().join("kubeconfig");
        let mut server = ApiServer {
            child: None,
            dir,
            kubeconfig,
            kubectl: kubectl_for("1.32"),
            flags: flags.iter().map(|f| f.to_string()).collect(),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let _ = std::fs::remove_file(&self.kubeconfig);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("apiserver.log"))
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_kubesim"))
            .args(["apiserver", "--https-listen-port", "0", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .arg("--write-kubeconfig")
            .arg(&self.kubeconfig)
            .args(&self.flags)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start kubesim apiserver");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.kubeconfig.exists() {
            assert!(
                Instant::now() < deadline,
                "apiserver did not write its kubeconfig: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("apiserver.log")).unwrap_or_default()
    }

    /// Kills the server with SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub fn command(&self, kubectl: &Path) -> Command {
        let mut cmd = Command::new(kubectl);
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.dir.path())
            .arg("--cache-dir")
            .arg(self.dir.path().join("kube-cache"));
        cmd
    }

    /// Runs the default kubectl with `args`.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.command(&self.kubectl)
            .args(args)
            .output()
            .expect("run kubectl")
    }

    /// Runs kubectl and returns stdout, failing the test with stderr if it failed.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs kubectl expecting failure and returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            !out.status.success(),
            "kubectl {args:?} should fail, printed:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn apply(&self, file: &str) -> Output {
        let path = manifest(file);
        self.kubectl(&["apply", "-f", path.to_str().expect("utf-8 path")])
    }

    /// Writes `yaml` to a file in the server's directory and returns its path.
    pub fn file(&self, name: &str, yaml: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, yaml).expect("write manifest");
        path.to_string_lossy().into_owned()
    }

    /// A kube-rs client for this server.
    pub async fn client(&self) -> kube::Client {
        let config =
            kube::config::Kubeconfig::read_from(&self.kubeconfig).expect("read kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(config, &Default::default())
            .await
            .expect("kube config");
        kube::Client::try_from(config).expect("kube client")
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// An apiserver plus `kubesim controller` and `kubesim kubelet --simulated` processes:
/// a control plane with simulated nodes. Every process is killed on drop.
pub struct Cluster {
    pub server: ApiServer,
    components: Vec<Child>,
}

impl Cluster {
    pub fn start(nodes: usize) -> Cluster {
        let server = ApiServer::start();
        let mut cluster = Cluster {
            server,
            components: Vec::new(),
        };
        cluster.spawn("controller", &["controller"]);
        cluster.spawn(
            "kubelet",
            &["kubelet", "--simulated", "--nodes", &nodes.to_string()],
        );
        let ready = eventually(30, || {
            let out = cluster.server.kubectl(&[
                "get",
                "nodes",
                "-o",
                "jsonpath={.items[*].spec.podCIDR}",
            ]);
            let cidrs = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .count();
            (cidrs == nodes).then_some(())
        });
        assert!(
            ready.is_some(),
            "nodes did not register with pod CIDRs:\n{}",
            cluster.logs()
        );
        cluster
    }

    fn spawn(&mut self, name: &str, args: &[&str]) {
        let log = std::fs::File::create(self.server.dir.path().join(format!("{name}.log")))
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_kubesim"))
            .args(args)
            .arg("--kubeconfig")
            .arg(&self.server.kubeconfig)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start kubesim {name}: {e}"));
        self.components.push(child);
    }

    /// Every component's log, for failure messages.
    pub fn logs(&self) -> String {
        ["apiserver", "controller", "kubelet"]
            .iter()
            .map(|n| {
                let text = std::fs::read_to_string(self.server.dir.path().join(format!("{n}.log")))
                    .unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                format!(
                    "--- {n} ---\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl std::ops::Deref for Cluster {
    type Target = ApiServer;
    fn deref(&self) -> &ApiServer {
        &self.server
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in &mut self.components {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Polls `f` until it returns `Some`, for at most `secs` seconds.
pub fn eventually<T>(secs: u64, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
