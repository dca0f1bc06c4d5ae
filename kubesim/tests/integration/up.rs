//! `kubesim up`, `status`, `exec`, `logs` and `down` as a user runs them: the cluster
//! runs in the background after `up` returns, answers kubectl, and `down` — even after
//! the control plane was killed with SIGKILL — leaves the host exactly as it was
//! (links and firewall rules of the root namespace, the list of named namespaces).

use std::process::{Command, Output};

use crate::harness::kubectl_for;

fn kubesim(user_config: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kubesim"))
        .args(args)
        .env("KUBECONFIG", user_config)
        .output()
        .expect("run kubesim")
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What the host shows of itself: its links and its firewall rules.
fn host() -> (String, String) {
    let links = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .expect("ip link");
    let rules = Command::new("iptables-save")
        .output()
        .expect("iptables-save");
    let strip_counters = |s: String| {
        s.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split(" [").next().unwrap_or(l).to_owned())
            .collect::<Vec<_>>()
            .join("\n")
    };
    (text(&links), strip_counters(text(&rules)))
}

/// Runs `kubesim down` when dropped, so a failed test leaves no cluster running.
struct Down<'a>(&'a dyn Fn(&[&str]) -> Output, String, String);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        (self.0)(&["down", "--name", &self.1, "--data-dir", &self.2]);
    }
}

#[test]
fn up_leaves_a_cluster_running_and_down_removes_it_all() {
    let root = tempfile::tempdir().expect("temp dir");
    let data = root.path().join("upt");
    let data = data.to_str().expect("utf-8");
    let name = format!("u{}", std::process::id() % 100_000);
    let user_config = root.path().join("user.kubeconfig");
    let kubesim = |args: &[&str]| kubesim(&user_config, args);
    let before = host();

    let up = kubesim(&["up", "--name", &name, "--nodes", "2", "--data-dir", data]);
    let _down = Down(&kubesim, name.clone(), data.to_owned());
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let export = text(&up);
    let kubeconfig = export
        .trim()
        .strip_prefix("export KUBECONFIG=")
        .unwrap_or_else(|| panic!("up printed {export:?}"))
        .to_owned();

    let nodes = Command::new(kubectl_for("1.33"))
        .env("KUBECONFIG", &kubeconfig)
        .args(["get", "nodes", "-o", "name"])
        .output()
        .expect("kubectl");
    assert_eq!(text(&nodes).lines().count(), 2, "{}", text(&nodes));
    // Merged into the user's kubeconfig as kind does, and current there.
    let context = Command::new(kubectl_for("1.33"))
        .env("KUBECONFIG", &user_config)
        .args(["config", "current-context"])
        .output()
        .expect("kubectl config");
    assert_eq!(text(&context).trim(), format!("kubesim-{name}"));
    let status = kubesim(&["status", "--root", root.path().to_str().expect("utf-8")]);
    assert!(
        text(&status).contains(&format!("{name} ")),
        "{}",
        text(&status)
    );
    assert!(text(&status).contains("10/10 up"), "{}", text(&status));
    let routes = kubesim(&["exec", "--name", &name, "node1", "--", "ip", "route"]);
    assert!(text(&routes).contains("dev flannel.1"), "{}", text(&routes));
    let log = kubesim(&["logs", "--name", &name, "--data-dir", data, "apiserver"]);
    assert!(text(&log).contains("apiserver listening"), "{}", text(&log));
    let missing = kubesim(&["exec", "--name", &name, "node9", "--", "true"]);
    assert!(!missing.status.success());

    // The control plane crashes (kill -9); down still removes everything.
    let state = std::fs::read_to_string(std::path::Path::new(data).join("cluster.json"))
        .expect("cluster.json");
    let state: serde_json::Value = serde_json::from_str(&state).expect("json");
    for component in state["components"].as_array().into_iter().flatten() {
        if matches!(component["name"].as_str(), Some("apiserver" | "controller")) {
            let pid = component["pid"]
                .as_i64()
                .and_then(|p| i32::try_from(p).ok())
                .expect("pid");
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            )
            .expect("kill -9");
        }
    }
    let down = kubesim(&["down", "--name", &name, "--data-dir", data]);
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    let left: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .filter(|n| n.starts_with(&format!("{name}-")))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "namespaces left: {left:?}");
    assert!(
        !std::path::Path::new(data).exists(),
        "the data directory is left"
    );
    let after = host();
    assert_eq!(before.0, after.0, "the host's links changed");
    assert_eq!(before.1, after.1, "the host's firewall rules changed");
}

/// A start that failed before it recorded its processes: `down` still finds them by the
/// data directory their command lines name, and stops them.
#[test]
fn down_stops_components_no_state_records() {
    let root = tempfile::tempdir().expect("temp dir");
    let data = root.path().join("crashed");
    let data = data.to_str().expect("utf-8").to_owned();
    let kubeconfig = format!("{data}/kubeconfig");
    let mut apiserver = Command::new(env!("CARGO_BIN_EXE_kubesim"))
        .args(["apiserver", "--https-listen-port", "0", "--data-dir"])
        .arg(format!("{data}/server"))
        .args(["--write-kubeconfig", &kubeconfig])
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start an apiserver");
    let pid = apiserver.id();
    let started = crate::harness::eventually(30, || {
        std::path::Path::new(&kubeconfig).exists().then_some(())
    });
    assert!(started.is_some(), "the apiserver did not start");
    let name = format!("c{}", std::process::id() % 100_000);
    let down = Command::new(env!("CARGO_BIN_EXE_kubesim"))
        .args(["down", "--name", &name, "--data-dir", &data])
        .env("KUBECONFIG", root.path().join("user.kubeconfig"))
        .output()
        .expect("kubesim down");
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    let stopped = crate::harness::eventually(10, || apiserver.try_wait().ok().flatten());
    if stopped.is_none() {
        let _ = apiserver.kill();
        let _ = apiserver.wait();
        panic!("down left the apiserver (pid {pid}) running");
    }
    assert!(!std::path::Path::new(&data).exists());
}
