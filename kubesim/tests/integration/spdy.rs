//! `kubectl exec` over SPDY/3.1: kubectl 1.27 speaks only SPDY for remote commands,
//! and newer kubectl does when WebSockets are turned off. Exit codes, separate
//! output streams, piped input, an output far larger than SPDY's flow-control
//! windows, and a terminal.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::harness::kubectl_for;
use crate::netcluster::NetCluster;

const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: shell}
spec:
  containers:
  - {name: sh, image: busybox:1.36, command: ["sleep", "infinity"]}
"#;

/// Runs `kubectl exec <args>` with the given kubectl, feeding `stdin` when given.
fn exec(cluster: &NetCluster, kubectl: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut command = cluster.command(kubectl);
    command.arg("exec").args(args);
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("run kubectl");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(input).expect("write stdin");
    }
    child.wait_with_output().expect("kubectl output")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn kubectl_exec_over_spdy() {
    let cluster = NetCluster::start(1);
    let manifest = cluster.file("shell.yaml", POD);
    cluster.ok(&["apply", "-f", &manifest]);
    cluster.wait_running("default", "shell");
    let old = kubectl_for("1.27");

    let streams = exec(
        &cluster,
        &old,
        &["shell", "--", "sh", "-c", "echo out; echo err >&2; exit 4"],
        None,
    );
    assert_eq!(text(&streams.stdout), "out\n", "{streams:?}");
    assert!(text(&streams.stderr).starts_with("err\n"), "{streams:?}");
    assert_eq!(streams.status.code(), Some(4), "{streams:?}");

    let piped = exec(
        &cluster,
        &old,
        &["-i", "shell", "--", "tr", "a-z", "A-Z"],
        Some(b"through spdy\n"),
    );
    assert_eq!(text(&piped.stdout), "THROUGH SPDY\n", "{piped:?}");
    assert!(piped.status.success(), "{piped:?}");

    let large = exec(&cluster, &old, &["shell", "--", "seq", "1", "200000"], None);
    assert!(large.status.success(), "{}", text(&large.stderr));
    let lines: Vec<String> = text(&large.stdout).lines().map(str::to_owned).collect();
    let expected: Vec<String> = (1..=200_000).map(|i| i.to_string()).collect();
    assert!(lines == expected, "{} lines of 200000", lines.len());

    let mut forced = cluster.command(&cluster.kubectl);
    let hostname = forced
        .env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false")
        .args(["exec", "shell", "--", "hostname"])
        .output()
        .expect("run kubectl");
    assert_eq!(text(&hostname.stdout), "shell\n", "{hostname:?}");

    let line = format!(
        "KUBECONFIG={} HOME={} {} --cache-dir {} exec -it shell -- sh -c tty",
        cluster.kubeconfig.display(),
        cluster.dir.path().display(),
        old.display(),
        cluster.dir.path().join("kube-cache").display(),
    );
    let terminal = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .output()
        .expect("run script");
    let shown = text(&terminal.stdout);
    assert!(
        shown.contains("/dev/pts/"),
        "a terminal in the pod: {shown}"
    );
}
