//! The cluster topology in real network namespaces, probed only with `ip` and `ping`:
//! every test uses a cluster name of its own and leaves no namespace behind.

use std::process::{Command, Output};

use kubelet::topology::{remove_cluster, Error, Topology, TopologySpec};

fn unique_cluster() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
    let suffix: String = (0..5)
        .map(|_| char::from(ALPHABET[rand::random_range(0..ALPHABET.len())]))
        .collect();
    format!("t{suffix}")
}

fn run(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"))
}

fn netns_list() -> Vec<String> {
    let out = run(&["ip", "netns", "list"]);
    assert!(out.status.success(), "ip netns list: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .collect()
}

fn namespaces_of(cluster: &str) -> Vec<String> {
    let prefix = format!("{cluster}-");
    let mut names: Vec<_> = netns_list()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    names.sort();
    names
}

fn ping(from: &str, to: &str) {
    let out = run(&["ip", "netns", "exec", from, "ping", "-c1", "-W1", to]);
    assert!(
        out.status.success(),
        "ping {to} from {from}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn two_nodes_reach_each_other_the_gateway_and_the_external_host() {
    let cluster = unique_cluster();
    let topology = Topology::create(&TopologySpec::new(cluster.as_str(), 2))
        .await
        .expect("create topology");
    let node1 = topology.node_netns(1).expect("node exists").to_owned();
    let node2 = topology.node_netns(2).expect("node exists").to_owned();
    let mut expected = vec![
        format!("{cluster}-ext"),
        format!("{cluster}-node1"),
        format!("{cluster}-node2"),
        format!("{cluster}-underlay"),
    ];
    expected.sort();
    assert_eq!(namespaces_of(&cluster), expected);
    assert_eq!(topology.underlay_netns(), format!("{cluster}-underlay"));
    assert_eq!(topology.external_netns(), format!("{cluster}-ext"));
    assert_eq!(topology.node_netns(3), None);

    let addr = run(&["ip", "-n", &node1, "-4", "addr", "show", "eth0"]);
    let addr = String::from_utf8_lossy(&addr.stdout);
    assert!(addr.contains("inet 192.168.1.11/24"), "{addr}");
    assert!(addr.contains("state UP"), "{addr}");
    let route = run(&["ip", "-n", &node2, "-4", "route", "show", "default"]);
    let route = String::from_utf8_lossy(&route.stdout);
    assert!(
        route.contains("default via 192.168.1.1 dev eth0"),
        "{route}"
    );
    let gw = run(&[
        "ip",
        "-n",
        topology.underlay_netns(),
        "-4",
        "addr",
        "show",
        "br0",
    ]);
    assert!(String::from_utf8_lossy(&gw.stdout).contains("inet 192.168.1.1/24"));
    let forward = run(&[
        "ip",
        "netns",
        "exec",
        &node1,
        "cat",
        "/proc/sys/net/ipv4/ip_forward",
    ]);
    assert_eq!(String::from_utf8_lossy(&forward.stdout).trim(), "1");

    let node1_ip = topology.node_ip(1).expect("node 1").to_string();
    let node2_ip = topology.node_ip(2).expect("node 2").to_string();
    assert_eq!(node2_ip, "192.168.1.12");
    assert_eq!(topology.external_ip().to_string(), "192.168.1.100");
    ping(&node1, &node2_ip);
    ping(&node1, &topology.gateway().to_string());
    ping(topology.external_netns(), &node1_ip);
    ping(topology.external_netns(), &node2_ip);

    drop(topology);
    assert_eq!(namespaces_of(&cluster), Vec::<String>::new());
}

#[tokio::test]
async fn remove_cluster_cleans_a_detached_topology() {
    let cluster = unique_cluster();
    let topology = Topology::create(&TopologySpec::new(cluster.as_str(), 2))
        .await
        .expect("create topology");
    let mut names = topology.detach();
    names.sort();
    assert_eq!(namespaces_of(&cluster), names);
    assert_eq!(remove_cluster(&cluster).expect("remove cluster"), 4);
    assert_eq!(namespaces_of(&cluster), Vec::<String>::new());
    assert_eq!(remove_cluster(&cluster).expect("remove again"), 0);
}

#[tokio::test]
async fn a_taken_cluster_name_is_refused_and_the_cluster_left_intact() {
    let cluster = unique_cluster();
    let spec = TopologySpec::new(cluster.as_str(), 2);
    let first = Topology::create(&spec).await.expect("create topology");
    let before = namespaces_of(&cluster);
    let err = Topology::create(&spec)
        .await
        .expect_err("second cluster with the same name");
    assert!(matches!(err, Error::Exists(_)), "{err}");
    assert!(err.to_string().contains("already exists"), "{err}");
    assert_eq!(namespaces_of(&cluster), before);
    ping(
        first.node_netns(1).expect("node exists"),
        &first.node_ip(2).expect("node 2").to_string(),
    );
    drop(first);
    assert_eq!(namespaces_of(&cluster), Vec::<String>::new());
}

#[tokio::test]
async fn invalid_cluster_names_are_refused() {
    for name in ["Bad", "much-too-long", ""] {
        let err = Topology::create(&TopologySpec::new(name, 1))
            .await
            .expect_err("invalid name");
        assert!(matches!(err, Error::InvalidName { .. }), "{err}");
        assert!(matches!(
            remove_cluster(name),
            Err(Error::InvalidName { .. })
        ));
    }
}
