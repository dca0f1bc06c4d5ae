//! The CNI plugin called exactly as a CNI runtime calls it (`CNI_*` variables, the
//! network configuration on stdin), from inside a test "node" namespace: ADD, CHECK,
//! DEL, VERSION and the error JSON. Every namespace the test creates is removed in
//! `Drop`, also when an assertion fails; nothing runs in the root namespace.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// Test namespaces named `ks<random5>-<role>`, deleted on drop.
struct Namespaces {
    prefix: String,
    created: Vec<String>,
}

impl Namespaces {
    fn new(roles: &[&str]) -> Namespaces {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let mut seed =
            u64::from(nanos) ^ (u64::from(std::process::id()) << 32) ^ roles.len() as u64;
        let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let random: String = (0..5)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                char::from(alphabet[((seed >> 33) % alphabet.len() as u64) as usize])
            })
            .collect();
        let mut namespaces = Namespaces {
            prefix: format!("ks{random}"),
            created: Vec::new(),
        };
        for role in roles {
            let name = namespaces.name(role);
            let status = Command::new("ip")
                .args(["netns", "add", &name])
                .status()
                .expect("run ip netns add");
            assert!(status.success(), "ip netns add {name}");
            namespaces.created.push(name);
        }
        namespaces
    }

    fn name(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    fn path(&self, role: &str) -> String {
        format!("/var/run/netns/{}", self.name(role))
    }

    /// Runs a command inside the namespace of `role`.
    fn exec(&self, role: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name(role)])
            .args(args)
            .output()
            .expect("run ip netns exec")
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.created {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

struct Reply {
    success: bool,
    stdout: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {:?}", self.stdout))
    }
}

/// Calls `kubesim cni` in the node namespace with the given variables and stdin.
fn cni(ns: &Namespaces, vars: &[(&str, &str)], stdin: &str) -> Reply {
    plugin(ns, &[env!("CARGO_BIN_EXE_kubesim"), "cni"], vars, stdin)
}

/// Calls a CNI plugin (`program`) in the node namespace as a runtime does.
fn plugin(ns: &Namespaces, program: &[&str], vars: &[(&str, &str)], stdin: &str) -> Reply {
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", &ns.name("node")])
        .args(program)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CNI_PATH", "/opt/cni/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in vars {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("spawn kubesim cni");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let output = child.wait_with_output().expect("wait kubesim cni");
    Reply {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
    }
}

fn config(data_dir: &Path) -> String {
    config_version(data_dir, "1.1.0")
}

fn config_version(data_dir: &Path, version: &str) -> String {
    serde_json::json!({
        "cniVersion": version,
        "name": "kubesim",
        "type": "kubesim",
        "bridge": "cni0",
        "isGateway": true,
        "hairpinMode": true,
        "mtu": 1450,
        "ipam": {"type": "host-local", "subnet": "10.244.1.0/24", "dataDir": data_dir},
    })
    .to_string()
}

fn attach(ns: &Namespaces, command: &str, container: &str, pod: &str, conf: &str) -> Reply {
    let netns = ns.path(pod);
    cni(
        ns,
        &[
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", container),
            ("CNI_NETNS", &netns),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "K8S_POD_NAMESPACE=default;K8S_POD_NAME=p"),
        ],
        conf,
    )
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn add_check_del_two_pods_on_one_bridge() {
    let ns = Namespaces::new(&["node", "pod1", "pod2"]);
    let data = tempfile::tempdir().expect("tempdir");
    let conf = config(data.path());

    let first = attach(&ns, "ADD", "ctr1", "pod1", &conf);
    assert!(first.success, "{}", first.stdout);
    let first = first.json();
    assert_eq!(first["cniVersion"], "1.1.0");
    assert_eq!(first["ips"][0]["address"], "10.244.1.2/24");
    assert_eq!(first["ips"][0]["gateway"], "10.244.1.1");
    assert_eq!(first["routes"][0]["dst"], "0.0.0.0/0");
    let sandbox =
        &first["interfaces"][first["ips"][0]["interface"].as_u64().expect("index") as usize];
    assert_eq!(sandbox["name"], "eth0");
    assert_eq!(sandbox["sandbox"], ns.path("pod1").as_str());
    let second = attach(&ns, "ADD", "ctr2", "pod2", &conf);
    assert!(second.success, "{}", second.stdout);
    assert_eq!(second.json()["ips"][0]["address"], "10.244.1.3/24");

    let addr = stdout(&ns.exec("pod1", &["ip", "-4", "addr", "show", "eth0"]));
    assert!(addr.contains("inet 10.244.1.2/24"), "{addr}");
    assert!(addr.contains("mtu 1450"), "{addr}");
    let route = stdout(&ns.exec("pod1", &["ip", "route", "show", "default"]));
    assert!(route.contains("default via 10.244.1.1 dev eth0"), "{route}");
    let bridge = stdout(&ns.exec("node", &["ip", "-4", "addr", "show", "cni0"]));
    assert!(bridge.contains("inet 10.244.1.1/24"), "{bridge}");
    let ports = stdout(&ns.exec("node", &["ip", "-d", "link", "show", "master", "cni0"]));
    assert!(ports.contains("hairpin on"), "{ports}");
    let ping = ns.exec("pod1", &["ping", "-c1", "-W1", "10.244.1.3"]);
    assert!(ping.status.success(), "{}", stdout(&ping));

    for (container, pod) in [("ctr1", "pod1"), ("ctr2", "pod2")] {
        let check = attach(&ns, "CHECK", container, pod, &conf);
        assert!(check.success, "{}", check.stdout);
        assert_eq!(check.stdout, "");
    }

    let again = attach(&ns, "ADD", "ctr1", "pod1", &conf);
    assert!(!again.success);
    let error = again.json();
    assert_eq!(error["cniVersion"], "1.1.0");
    assert_eq!(error["code"], 100);
    assert!(
        error["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("already exists"),
        "{error}"
    );

    for _ in 0..2 {
        let del = attach(&ns, "DEL", "ctr1", "pod1", &conf);
        assert!(del.success, "{}", del.stdout);
        assert_eq!(del.stdout, "");
    }
    assert!(!data.path().join("kubesim/10.244.1.2").exists());
    assert!(data.path().join("kubesim/10.244.1.3").exists());
    assert!(!ns
        .exec("pod1", &["ip", "link", "show", "eth0"])
        .status
        .success());
    let check = attach(&ns, "CHECK", "ctr1", "pod1", &conf);
    assert!(!check.success);
    assert_eq!(check.json()["code"], 3);

    let readd = attach(&ns, "ADD", "ctr1", "pod1", &conf);
    assert!(readd.success, "{}", readd.stdout);

    let gone = cni(
        &ns,
        &[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "ctr2"),
            ("CNI_NETNS", "/var/run/netns/ks-no-such-ns"),
            ("CNI_IFNAME", "eth0"),
        ],
        &conf,
    );
    assert!(gone.success, "{}", gone.stdout);
    assert!(!data.path().join("kubesim/10.244.1.3").exists());
}

#[test]
fn version_and_error_replies() {
    let ns = Namespaces::new(&["node"]);
    let version = cni(
        &ns,
        &[("CNI_COMMAND", "VERSION")],
        r#"{"cniVersion":"1.0.0"}"#,
    );
    assert!(version.success, "{}", version.stdout);
    assert_eq!(
        version.json(),
        serde_json::json!({
            "cniVersion": "1.0.0",
            "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"],
        })
    );

    let vars = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "ctr1"),
        ("CNI_NETNS", "/var/run/netns/ks-no-such-ns"),
        ("CNI_IFNAME", "eth0"),
    ];
    let malformed = cni(&ns, &vars, "{\"cniVersion\": ");
    assert!(!malformed.success);
    assert_eq!(malformed.json()["code"], 6);
    let invalid = cni(
        &ns,
        &vars,
        r#"{"cniVersion":"1.1.0","name":"n","type":"kubesim"}"#,
    );
    assert!(!invalid.success);
    assert_eq!(invalid.json()["code"], 7);
    let no_command = cni(&ns, &[], "{}");
    assert!(!no_command.success);
    assert_eq!(no_command.json()["code"], 4);
}

/// Kills the process when dropped, so a failed test leaves no server behind.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Debian's reference `portmap` plugin chained after ours, as a conflist would chain
/// it: it takes our ADD result as `prevResult` and maps a host port to the pod.
#[test]
fn the_reference_portmap_plugin_chains_after_kubesim() {
    const PORTMAP: &str = "/usr/lib/cni/portmap";
    let ns = Namespaces::new(&["node", "pod1"]);
    let data = tempfile::tempdir().expect("tempdir");
    // Debian's plugins speak CNI up to 1.0.0.
    let conf = config_version(data.path(), "1.0.0");
    let added = attach(&ns, "ADD", "ctr1", "pod1", &conf);
    assert!(added.success, "{}", added.stdout);
    let _server = Running(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.name("pod1"),
                env!("CARGO_BIN_EXE_kubesim"),
            ])
            .args(["workload", "nginx", "--port", "80", "--version", "1.25.3"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx in the pod"),
    );
    let portmap_conf = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "kubesim",
        "type": "portmap",
        "capabilities": {"portMappings": true},
        "runtimeConfig": {"portMappings": [
            {"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}
        ]},
        "prevResult": added.json(),
    })
    .to_string();
    let netns = ns.path("pod1");
    let vars = [
        ("CNI_CONTAINERID", "ctr1"),
        ("CNI_NETNS", netns.as_str()),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/usr/lib/cni"),
    ];
    let with = |command: &'static str| {
        let mut all = vars.to_vec();
        all.push(("CNI_COMMAND", command));
        all
    };
    let mapped = plugin(&ns, &[PORTMAP], &with("ADD"), &portmap_conf);
    assert!(mapped.success, "portmap ADD: {}", mapped.stdout);
    assert_eq!(mapped.json()["ips"][0]["address"], "10.244.1.2/24");

    let page = (0..50).find_map(|_| {
        let out = ns.exec(
            "node",
            &["curl", "-s", "-m", "2", "http://10.244.1.1:18080/"],
        );
        let text = stdout(&out);
        if text.contains("Welcome to nginx!") {
            return Some(text);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        None
    });
    assert!(
        page.is_some(),
        "host port 18080 did not reach the pod's nginx"
    );
    let rules = stdout(&ns.exec("node", &["iptables-save", "-t", "nat"]));
    assert!(rules.contains("CNI-HOSTPORT-DNAT"), "{rules}");
    assert!(rules.contains("--to-destination 10.244.1.2:80"), "{rules}");

    let unmapped = plugin(&ns, &[PORTMAP], &with("DEL"), &portmap_conf);
    assert!(unmapped.success, "portmap DEL: {}", unmapped.stdout);
    let removed = attach(&ns, "DEL", "ctr1", "pod1", &conf);
    assert!(removed.success, "{}", removed.stdout);
    let rules = stdout(&ns.exec("node", &["iptables-save", "-t", "nat"]));
    assert!(!rules.contains("10.244.1.2:80"), "{rules}");
}
