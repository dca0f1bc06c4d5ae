//! A cluster whose nodes are real, as `kubesim up` starts it ([`kubesim::cluster`]),
//! with kubectl and the pods' namespaces at hand. Every test cluster has a name of its
//! own, so tests run in parallel; dropping the handle kills every process and removes
//! every namespace of the cluster, also when the test failed.

use std::process::{Command, Output};

use kubelet::topology::Topology;
use kubesim::cluster::{Cluster, Spec};

use crate::harness::{eventually, ApiServer};

pub struct NetCluster {
    /// Dropped first: the processes stop before the temporary directory goes.
    cluster: Cluster,
    pub server: ApiServer,
    pub name: String,
}

/// A cluster name no other test uses: `t` and six random lowercase characters.
fn unique_name() -> String {
    let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let random: String = (0..6)
        .map(|_| char::from(alphabet[rand_index(alphabet.len())]))
        .collect();
    format!("t{random}")
}

fn rand_index(len: usize) -> usize {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    (h.finish() % len as u64) as usize
}

impl NetCluster {
    /// Starts a cluster of `nodes` nodes and waits until every node is Ready with a
    /// pod CIDR.
    pub fn start(nodes: usize) -> NetCluster {
        NetCluster::start_with_proxy(nodes, &[])
    }

    /// As [`NetCluster::start`], with `proxy_flags` added to every node's
    /// `kubesim proxy`, e.g. `["--proxy-mode", "userspace"]`.
    pub fn start_with_proxy(nodes: usize, proxy_flags: &[&str]) -> NetCluster {
        NetCluster::start_spec(nodes, proxy_flags, &[], false, false)
    }

    /// As [`NetCluster::start`], with `controller_flags` added to `kubesim controller`.
    pub fn start_with_controller(nodes: usize, controller_flags: &[&str]) -> NetCluster {
        NetCluster::start_spec(nodes, &[], controller_flags, false, false)
    }

    /// As [`NetCluster::start`], with the cluster DNS installed and ready.
    pub fn start_with_dns(nodes: usize) -> NetCluster {
        NetCluster::start_spec(nodes, &[], &[], true, false)
    }

    /// As [`NetCluster::start`], with the cluster DNS and the ingress controller
    /// installed and ready.
    pub fn start_with_ingress(nodes: usize) -> NetCluster {
        NetCluster::start_spec(nodes, &[], &[], true, true)
    }

    fn start_spec(
        nodes: usize,
        proxy_flags: &[&str],
        controller_flags: &[&str],
        dns: bool,
        ingress: bool,
    ) -> NetCluster {
        let name = unique_name();
        let dir = tempfile::tempdir().expect("temp dir");
        let spec = Spec {
            name: name.clone(),
            nodes,
            data_dir: dir.path().join("cluster"),
            binary: env!("CARGO_BIN_EXE_kubesim").into(),
            proxy_flags: proxy_flags.iter().map(|f| f.to_string()).collect(),
            controller_flags: controller_flags.iter().map(|f| f.to_string()).collect(),
            dns,
            ingress,
        };
        let cluster = Cluster::up(spec).unwrap_or_else(|e| panic!("kubesim up: {e:#}"));
        let server = ApiServer::attach(dir, cluster.kubeconfig().to_owned());
        NetCluster {
            cluster,
            server,
            name,
        }
    }

    /// The name of node `i` (from 1), which is also its namespace's name.
    pub fn node_name(&self, i: usize) -> String {
        self.cluster.node_name(i).expect("node exists")
    }

    pub fn node_ip(&self, i: usize) -> String {
        self.topology().node_ip(i).expect("node exists").to_string()
    }

    pub fn topology(&self) -> &Topology {
        self.cluster.topology().expect("topology lives until drop")
    }

    /// Kills the component `name` (e.g. `proxy-<node>`), as a crash would.
    pub fn stop(&mut self, name: &str) {
        self.cluster.stop(name);
    }

    /// Kills the component `name` and starts it again with the same command line.
    pub fn restart(&mut self, name: &str) {
        self.cluster.restart(name).expect("restart the component");
    }

    /// The log of the component `name` so far.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(
            self.dir
                .path()
                .join("cluster/logs")
                .join(format!("{name}.log")),
        )
        .unwrap_or_default()
    }

    /// The netns of a pod, as the kubelet names it.
    pub fn pod_netns(&self, namespace: &str, pod: &str) -> String {
        let uid = self.ok(&[
            "get",
            "pod",
            "-n",
            namespace,
            pod,
            "-o",
            "jsonpath={.metadata.uid}",
        ]);
        let short: String = uid.chars().filter(|c| *c != '-').take(12).collect();
        format!("{}-pod-{short}", self.name)
    }

    /// Runs a command inside the named network namespace `netns`.
    pub fn in_netns(&self, netns: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", netns])
            .args(args)
            .output()
            .expect("run ip netns exec")
    }

    /// Waits until the pod is Running with an IP, and returns the IP.
    pub fn wait_running(&self, namespace: &str, pod: &str) -> String {
        let ip = eventually(60, || {
            let out = self.kubectl(&[
                "get",
                "pod",
                "-n",
                namespace,
                pod,
                "-o",
                "jsonpath={.status.phase} {.status.podIP}",
            ]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let mut words = text.split_whitespace();
            match (words.next(), words.next()) {
                (Some("Running"), Some(ip)) => Some(ip.to_owned()),
                _ => None,
            }
        });
        ip.unwrap_or_else(|| {
            panic!(
                "pod {namespace}/{pod} did not run:\n{}\n{}",
                self.ok(&["get", "pod", "-n", namespace, pod, "-o", "yaml"]),
                self.logs()
            )
        })
    }

    /// The tail of every component's log, for failure messages.
    pub fn logs(&self) -> String {
        self.cluster.logs()
    }
}

impl std::ops::Deref for NetCluster {
    type Target = ApiServer;
    fn deref(&self) -> &ApiServer {
        &self.server
    }
}
