//! flannel's VXLAN overlay between the nodes of a real namespace topology, each node
//! with a pod-like namespace behind a `cni0` bridge; probed with `ping`, `tcpdump`,
//! `ip`, `bridge` and `iptables-save`. Pod namespaces are removed by a guard, the
//! cluster by the topology's drop, also when a test fails.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeSpec, NodeStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, PostParams};
use kubelet::flannel::{
    self, apply_masquerade, ensure_device, node_annotations, sync, Changes, Device, DeviceSpec,
    Entries, FdbEntry, FlannelOptions, Neighbour, Route, DEFAULT_NETWORK, DEVICE,
};
use kubelet::topology::{Ipv4Net, Topology, TopologySpec};
use rtnetlink::{LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::harness::{eventually, Cluster};

fn unique_cluster() -> String {
    format!("fl{:05}", rand::random_range(0..100_000u32))
}

fn run(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"))
}

fn stdout(args: &[&str]) -> String {
    let out = run(args);
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ping(from: &str, to: &str) -> bool {
    run(&["ip", "netns", "exec", from, "ping", "-c1", "-W2", to])
        .status
        .success()
}

fn pod_cidr(i: usize) -> Ipv4Net {
    Ipv4Net {
        addr: Ipv4Addr::new(10, 244, u8::try_from(i).expect("small"), 0),
        prefix: 24,
    }
}

fn pod_ip(i: usize) -> String {
    format!("10.244.{i}.2")
}

/// Pod namespaces, removed on drop.
#[derive(Default)]
struct Pods(Vec<String>);

impl Drop for Pods {
    fn drop(&mut self) {
        for name in self.0.drain(..) {
            if let Err(err) = netns::kill_all(&name).and_then(|_| netns::remove(&name)) {
                eprintln!("failed to remove {name}: {err}");
            }
        }
    }
}

impl Pods {
    /// Namespace `<cluster>-pod<i>` with `eth0` 10.244.i.2/24 and a default route via
    /// `cni0` 10.244.i.1/24 in the node, joined by a veth pair.
    async fn add(&mut self, topology: &Topology, i: usize) -> String {
        let cluster = topology.cluster();
        let node = topology.node_netns(i).expect("node exists").to_owned();
        let pod = format!("{cluster}-pod{i}");
        netns::add(&pod).expect("add pod namespace");
        self.0.push(pod.clone());
        let (host_if, peer_if) = (format!("{cluster}-v{i}"), format!("{cluster}-w{i}"));
        let pod_ns = netns::open(&pod).expect("open pod namespace");
        let gateway = pod_cidr(i).host(1).expect("gateway");
        let peer = peer_if.clone();
        netns::netlink_in(&node, move |handle| async move {
            handle
                .link()
                .add(LinkBridge::new("cni0").build())
                .execute()
                .await
                .map_err(|e| netns::Error::netlink("adding cni0", e))?;
            let bridge = netns::require_link(&handle, "cni0").await?.header.index;
            netns::add_address(&handle, bridge, gateway, 24, "cni0").await?;
            netns::set_up(&handle, bridge, "cni0").await?;
            handle
                .link()
                .add(LinkVeth::new(&host_if, &peer).build())
                .execute()
                .await
                .map_err(|e| netns::Error::netlink("adding veth", e))?;
            let end = netns::require_link(&handle, &host_if).await?.header.index;
            let peer_index = netns::require_link(&handle, &peer).await?.header.index;
            handle
                .link()
                .set(
                    LinkUnspec::new_with_index(peer_index)
                        .setns_by_fd(pod_ns.as_raw_fd())
                        .build(),
                )
                .execute()
                .await
                .map_err(|e| netns::Error::netlink("moving veth", e))?;
            handle
                .link()
                .set(LinkUnspec::new_with_index(end).controller(bridge).build())
                .execute()
                .await
                .map_err(|e| netns::Error::netlink("attaching veth", e))?;
            netns::set_up(&handle, end, &host_if).await
        })
        .await
        .expect("wire the pod in its node");
        let ip: Ipv4Addr = pod_ip(i).parse().expect("ip");
        netns::netlink_in(&pod, move |handle| async move {
            let lo = netns::require_link(&handle, "lo").await?.header.index;
            netns::set_up(&handle, lo, "lo").await?;
            let index = netns::require_link(&handle, &peer_if).await?.header.index;
            handle
                .link()
                .set(
                    LinkUnspec::new_with_index(index)
                        .name("eth0".to_owned())
                        .build(),
                )
                .execute()
                .await
                .map_err(|e| netns::Error::netlink("renaming eth0", e))?;
            netns::add_address(&handle, index, ip, 24, "eth0").await?;
            netns::set_up(&handle, index, "eth0").await?;
            handle
                .route()
                .add(
                    RouteMessageBuilder::<Ipv4Addr>::new()
                        .gateway(gateway)
                        .output_interface(index)
                        .build(),
                )
                .execute()
                .await
                .map_err(|e| netns::Error::netlink("default route", e))
        })
        .await
        .expect("configure the pod");
        pod
    }
}

/// A Node as flannel's kube subnet manager sees it.
fn node_object(i: usize, ip: Ipv4Addr, annotations: BTreeMap<String, String>) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(format!("node{i}")),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            pod_cidr: Some(pod_cidr(i).to_string()),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            addresses: Some(vec![NodeAddress {
                type_: "InternalIP".to_owned(),
                address: ip.to_string(),
            }]),
            ..Default::default()
        }),
    }
}

async fn make_device(topology: &Topology, i: usize) -> Device {
    let spec = DeviceSpec {
        vni: flannel::VNI,
        port: flannel::PORT,
        local: topology.node_ip(i).expect("node ip"),
        underlay: "eth0".to_owned(),
        pod_cidr: pod_cidr(i),
    };
    netns::netlink_in(
        topology.node_netns(i).expect("node"),
        move |handle| async move { ensure_device(&handle, &spec).await },
    )
    .await
    .expect("ensure flannel.1")
}

/// The entries node `own` needs for the remote `nodes` (index, MAC).
fn expected(topology: &Topology, remotes: &[(usize, Device)]) -> Entries {
    let mut entries = Entries::default();
    for (i, device) in remotes {
        let vtep = pod_cidr(*i).addr;
        entries.neighbours.insert(Neighbour {
            ip: vtep,
            mac: device.mac,
        });
        entries.fdb.insert(FdbEntry {
            mac: device.mac,
            dst: topology.node_ip(*i).expect("ip"),
        });
        entries.routes.insert(Route {
            dst: vtep,
            prefix: 24,
            gateway: vtep,
        });
    }
    entries
}

/// Captures two VXLAN packets on node `i`'s `eth0` while `during` runs.
fn capture_vxlan(node: &str, during: impl FnOnce()) -> String {
    let mut tcpdump = Command::new("ip")
        .args([
            "netns", "exec", node, "tcpdump", "-i", "eth0", "-n", "-l", "-c", "2",
        ])
        .args(["udp", "port", "8472"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tcpdump");
    let stderr = tcpdump.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let listening = lines.any(|l| l.is_ok_and(|l| l.contains("listening on")));
    during();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while tcpdump.try_wait().expect("poll tcpdump").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = tcpdump.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = tcpdump.wait_with_output().expect("tcpdump output");
    assert!(listening, "tcpdump did not start: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn pods_reach_each_other_across_the_vxlan_overlay() {
    let cluster = unique_cluster();
    let topology = Topology::create(&TopologySpec::new(cluster.as_str(), 3))
        .await
        .expect("create topology");
    let mut pods = Pods::default();
    let mut devices = Vec::new();
    for i in 1..=3 {
        pods.add(&topology, i).await;
        devices.push((i, make_device(&topology, i).await));
    }
    let nodes: Vec<Node> = devices
        .iter()
        .map(|(i, d)| {
            let ip = topology.node_ip(*i).expect("ip");
            node_object(*i, ip, node_annotations(ip, d.mac))
        })
        .collect();
    for (i, _) in &devices {
        let ns = topology.node_netns(*i).expect("node");
        let changes = sync(ns, &format!("node{i}"), &nodes).await.expect("sync");
        let remotes: Vec<_> = devices.iter().filter(|(j, _)| j != i).copied().collect();
        assert_eq!(
            changes,
            Changes {
                add: expected(&topology, &remotes),
                remove: Entries::default()
            }
        );
    }

    let (pod1, pod3) = (&pods.0[0], &pods.0[2]);
    assert!(ping(pod1, &pod_ip(2)), "pod1 -> pod2");
    assert!(ping(pod1, &pod_ip(3)), "pod1 -> pod3");
    assert!(ping(pod3, &pod_ip(2)), "pod3 -> pod2");

    let node1 = topology.node_netns(1).expect("node1");
    let node2 = topology.node_netns(2).expect("node2");
    let captured = capture_vxlan(node2, || assert!(ping(pod1, &pod_ip(2))));
    assert!(
        captured.contains("IP 192.168.1.11.") && captured.contains("> 192.168.1.12.8472:"),
        "{captured}"
    );
    assert!(
        captured.contains("IP 192.168.1.12.") && captured.contains("> 192.168.1.11.8472:"),
        "{captured}"
    );

    let link = stdout(&["ip", "-n", node1, "-d", "link", "show", DEVICE]);
    for part in [
        "mtu 1450",
        "state UNKNOWN",
        "vxlan id 1 local 192.168.1.11 dev eth0",
        "dstport 8472 nolearning",
    ] {
        assert!(link.contains(part), "{part:?} in {link}");
    }
    let addr = stdout(&["ip", "-n", node1, "-4", "addr", "show", DEVICE]);
    assert!(addr.contains("inet 10.244.1.0/32"), "{addr}");

    let mac = |i: usize| netns::format_mac(&devices[i - 1].1.mac);
    let neigh = stdout(&["ip", "-n", node1, "neigh", "show", "dev", DEVICE]);
    let fdb = stdout(&["bridge", "-n", node1, "fdb", "show", "dev", DEVICE]);
    let routes = stdout(&["ip", "-n", node1, "-4", "route", "show", "dev", DEVICE]);
    for i in [2, 3] {
        let neighbour = format!("10.244.{i}.0 lladdr {} PERMANENT", mac(i));
        assert!(neigh.contains(&neighbour), "{neighbour:?} in {neigh}");
        let entry = format!("{} dst 192.168.1.1{i} self permanent", mac(i));
        assert!(fdb.contains(&entry), "{entry:?} in {fdb}");
        let route = format!("10.244.{i}.0/24 via 10.244.{i}.0 onlink");
        assert!(routes.contains(&route), "{route:?} in {routes}");
    }
    assert_eq!(neigh.lines().count(), 2, "{neigh}");
    assert_eq!(fdb.lines().count(), 2, "{fdb}");
    assert_eq!(routes.lines().count(), 2, "{routes}");

    // Restarting changes nothing: the device and its MAC stay, a second sync is empty.
    assert_eq!(make_device(&topology, 1).await, devices[0].1);
    let again = sync(node1, "node1", &nodes).await.expect("sync again");
    assert!(again.is_empty(), "{again:?}");

    // node3 leaves: exactly its neighbour, FDB entry and route go.
    let without3 = &nodes[..2];
    let changes = sync(node1, "node1", without3)
        .await
        .expect("sync without node3");
    assert_eq!(
        changes,
        Changes {
            add: Entries::default(),
            remove: expected(&topology, &devices[2..])
        }
    );
    let neigh = stdout(&["ip", "-n", node1, "neigh", "show", "dev", DEVICE]);
    let fdb = stdout(&["bridge", "-n", node1, "fdb", "show", "dev", DEVICE]);
    let routes = stdout(&["ip", "-n", node1, "-4", "route", "show", "dev", DEVICE]);
    assert!(
        !neigh.contains("10.244.3.0") && neigh.contains("10.244.2.0"),
        "{neigh}"
    );
    assert!(!fdb.contains(&mac(3)) && fdb.contains(&mac(2)), "{fdb}");
    assert!(
        !routes.contains("10.244.3.0/24") && routes.contains("10.244.2.0/24"),
        "{routes}"
    );
    assert!(ping(pod1, &pod_ip(2)), "pod1 -> pod2 after node3 left");
    assert!(sync(node1, "node1", without3)
        .await
        .expect("sync")
        .is_empty());

    drop(pods);
    drop(topology);
    assert!(netns::list(&format!("{cluster}-"))
        .expect("list")
        .is_empty());
}

#[tokio::test]
async fn masquerade_rules_are_installed_once() {
    let cluster = unique_cluster();
    let topology = Topology::create(&TopologySpec::new(cluster.as_str(), 1))
        .await
        .expect("create topology");
    let node = topology.node_netns(1).expect("node1");
    for _ in 0..2 {
        apply_masquerade(node, DEFAULT_NETWORK, pod_cidr(1)).expect("apply masquerade");
    }
    let saved = stdout(&["ip", "netns", "exec", node, "iptables-save", "-t", "nat"]);
    let expected = [
        ":FLANNEL-POSTRTG - [0:0]",
        r#"-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG"#,
        r#"-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN"#,
        r#"-A FLANNEL-POSTRTG -s 10.244.1.0/24 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j RETURN"#,
        r#"-A FLANNEL-POSTRTG -s 10.244.0.0/16 -d 10.244.1.0/24 -m comment --comment "flanneld masq" -j RETURN"#,
        r#"-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.1.0/24 -m comment --comment "flanneld masq" -j RETURN"#,
        r#"-A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully"#,
        r#"-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully"#,
    ];
    for line in expected {
        let count = saved.lines().filter(|l| *l == line).count();
        assert_eq!(count, 1, "{line:?} in {saved}");
    }
    let flannel_lines = saved.lines().filter(|l| l.contains("FLANNEL")).count();
    assert_eq!(flannel_lines, expected.len(), "{saved}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_follows_the_node_objects() {
    let cluster = unique_cluster();
    let topology = Topology::create(&TopologySpec::new(cluster.as_str(), 3))
        .await
        .expect("create topology");
    let mut pods = Pods::default();
    for i in 1..=3 {
        pods.add(&topology, i).await;
    }
    let api_cluster = Cluster::start().await;
    let nodes: Api<Node> = Api::all(api_cluster.client.clone());
    for i in 1..=3 {
        let node = node_object(i, topology.node_ip(i).expect("ip"), BTreeMap::new());
        nodes
            .create(&PostParams::default(), &node)
            .await
            .expect("create node");
    }
    let run_dir = tempfile::tempdir().expect("run dir");
    let tasks: Vec<_> = (1..=3)
        .map(|i| {
            let opts = FlannelOptions::new(
                format!("node{i}"),
                topology.node_netns(i).expect("node"),
                run_dir.path().join(format!("node{i}")),
            );
            tokio::spawn(flannel::run(api_cluster.client.clone(), opts))
        })
        .collect();

    let (pod1, pod3) = (pods.0[0].clone(), pods.0[2].clone());
    let reached = eventually(10, || {
        let pod1 = pod1.clone();
        async move { ping(&pod1, &pod_ip(3)).then_some(()) }
    })
    .await;
    assert!(reached.is_some(), "pod1 never reached pod3");
    assert!(ping(&pod3, &pod_ip(2)), "pod3 -> pod2");

    let node1 = nodes.get("node1").await.expect("node1");
    let annotations = node1.metadata.annotations.expect("annotations");
    assert_eq!(
        annotations["flannel.alpha.coreos.com/public-ip"],
        "192.168.1.11"
    );
    assert_eq!(
        annotations["flannel.alpha.coreos.com/backend-type"],
        "vxlan"
    );
    let env = std::fs::read_to_string(run_dir.path().join("node1/subnet.env")).expect("subnet.env");
    assert_eq!(
        env,
        "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
    );
    let node1_ns = topology.node_netns(1).expect("node1");
    let saved = stdout(&[
        "ip",
        "netns",
        "exec",
        node1_ns,
        "iptables-save",
        "-t",
        "nat",
    ]);
    assert!(saved.contains("-j FLANNEL-POSTRTG"), "{saved}");

    nodes
        .delete("node3", &DeleteParams::default())
        .await
        .expect("delete node3");
    let started = std::time::Instant::now();
    let gone = eventually(5, || async {
        let routes = [1, 2].map(|i| {
            stdout(&[
                "ip",
                "-n",
                topology.node_netns(i).expect("node"),
                "-4",
                "route",
                "show",
                "dev",
                DEVICE,
            ])
        });
        routes
            .iter()
            .all(|r| !r.contains("10.244.3.0/24") && r.contains("via"))
            .then_some(())
    })
    .await;
    assert!(gone.is_some(), "node3's route stayed");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );

    for task in &tasks {
        task.abort();
    }
    for task in tasks {
        let _ = task.await;
    }
}
