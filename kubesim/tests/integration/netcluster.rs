//! A cluster whose nodes are real: the topology's namespaces (underlay, nodes, an
//! external host), the apiserver on loopback and inside the underlay at the gateway
//! address, the controller, and per node a kubelet (and flannel) running inside the
//! node's namespace. Every test cluster has a name of its own, so tests run in
//! parallel; dropping the handle kills every process and removes every namespace of
//! the cluster, also when the test failed.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

use kubelet::topology::{remove_cluster, Topology, TopologySpec};

use crate::harness::{eventually, ApiServer};

pub struct NetCluster {
    pub server: ApiServer,
    pub name: String,
    topology: Option<Topology>,
    /// Each component's name, its command line and its process.
    components: Vec<(String, Vec<String>, Child)>,
    /// The kubeconfig the node components use: the apiserver at the gateway address.
    pub node_kubeconfig: PathBuf,
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
        let name = unique_name();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let topology = runtime
            .block_on(Topology::create(&TopologySpec::new(name.clone(), nodes)))
            .expect("create the cluster's namespaces");
        let gateway = topology.gateway().to_string();
        let underlay = topology.underlay_netns().to_owned();
        let server = ApiServer::start_with(&[
            "--underlay-netns",
            &underlay,
            "--advertise-address",
            &gateway,
        ]);
        let admin = std::fs::read_to_string(&server.kubeconfig).expect("kubeconfig");
        let node_kubeconfig = server.dir.path().join("node.kubeconfig");
        std::fs::write(
            &node_kubeconfig,
            admin.replace("https://127.0.0.1:", &format!("https://{gateway}:")),
        )
        .expect("write the node kubeconfig");
        let mut cluster = NetCluster {
            server,
            name,
            topology: Some(topology),
            components: Vec::new(),
            node_kubeconfig,
        };
        let admin = cluster.server.kubeconfig.clone();
        cluster.spawn("controller", &["controller", "--kubeconfig"], &admin);
        for i in 1..=nodes {
            let node = cluster.node_name(i);
            let ip = cluster.node_ip(i);
            let data = cluster.server.dir.path().join(&node);
            let data = data.to_str().expect("utf-8 path").to_owned();
            let kubeconfig = cluster.node_kubeconfig.clone();
            let cluster_name = cluster.name.clone();
            cluster.spawn(
                &format!("kubelet-{node}"),
                &[
                    "kubelet",
                    "--netns",
                    &node,
                    "--node-name",
                    &node,
                    "--node-ip",
                    &ip,
                    "--cluster",
                    &cluster_name,
                    "--data-dir",
                    &data,
                    "--kubeconfig",
                ],
                &kubeconfig,
            );
            let mut proxy = vec![
                "proxy",
                "--netns",
                &node,
                "--hostname-override",
                &node,
                "--metrics-bind-address",
                "0.0.0.0:10249",
            ];
            proxy.extend_from_slice(proxy_flags);
            proxy.push("--kubeconfig");
            cluster.spawn(&format!("proxy-{node}"), &proxy, &kubeconfig);
            let run_dir = format!("{data}/flannel");
            cluster.spawn(
                &format!("flannel-{node}"),
                &[
                    "flannel",
                    "--netns",
                    &node,
                    "--node-name",
                    &node,
                    "--run-dir",
                    &run_dir,
                    "--kubeconfig",
                ],
                &kubeconfig,
            );
        }
        let ready = eventually(60, || {
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

    /// The name of node `i` (from 1), which is also its namespace's name.
    pub fn node_name(&self, i: usize) -> String {
        self.topology()
            .node_netns(i)
            .expect("node exists")
            .to_owned()
    }

    pub fn node_ip(&self, i: usize) -> String {
        self.topology().node_ip(i).expect("node exists").to_string()
    }

    pub fn topology(&self) -> &Topology {
        self.topology.as_ref().expect("topology lives until drop")
    }

    fn spawn(&mut self, name: &str, args: &[&str], kubeconfig: &std::path::Path) {
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        args.push(kubeconfig.to_str().expect("utf-8 path").to_owned());
        let child = self.launch(name, &args);
        self.components.push((name.to_owned(), args, child));
    }

    fn launch(&self, name: &str, args: &[String]) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.server.dir.path().join(format!("{name}.log")))
            .expect("log file");
        Command::new(env!("CARGO_BIN_EXE_kubesim"))
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start kubesim {name}: {e}"))
    }

    /// Kills the component `name` (e.g. `proxy-<node>`), as a crash would.
    pub fn stop(&mut self, name: &str) {
        for (component, _, child) in &mut self.components {
            if component == name {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// Kills the component `name` and starts it again with the same command line.
    pub fn restart(&mut self, name: &str) {
        self.stop(name);
        let args = self
            .components
            .iter()
            .find(|(component, _, _)| component == name)
            .map(|(_, args, _)| args.clone())
            .unwrap_or_else(|| panic!("no component {name}"));
        let child = self.launch(name, &args);
        let entry = self
            .components
            .iter_mut()
            .find(|(c, _, _)| c == name)
            .expect("the component was found above");
        entry.2 = child;
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
        std::iter::once("apiserver".to_owned())
            .chain(self.components.iter().map(|(n, _, _)| n.clone()))
            .map(|n| {
                let text = std::fs::read_to_string(self.server.dir.path().join(format!("{n}.log")))
                    .unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                format!(
                    "--- {n} ---\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl std::ops::Deref for NetCluster {
    type Target = ApiServer;
    fn deref(&self) -> &ApiServer {
        &self.server
    }
}

impl Drop for NetCluster {
    fn drop(&mut self) {
        for (_, _, child) in &mut self.components {
            let _ = child.kill();
            let _ = child.wait();
        }
        drop(self.topology.take());
        // Pod namespaces and any process left in the cluster's namespaces.
        if let Err(err) = remove_cluster(&self.name) {
            eprintln!("removing cluster {}: {err}", self.name);
        }
    }
}
