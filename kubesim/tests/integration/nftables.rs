//! The checks of `services`, with `kubesim proxy --proxy-mode nftables` on every node:
//! cluster IPs from pods, node ports from the external host, session affinity,
//! hairpin, no-endpoint rejection, and the `ip kube-proxy` table a node shows.

use crate::netcluster::NetCluster;
use crate::services::{check_forwarding, deploy, Deployed};

#[test]
fn services_forward_in_nftables_mode() {
    let cluster = NetCluster::start_with_proxy(2, &["--proxy-mode", "nftables"]);
    let app = deploy(&cluster);
    check_forwarding(&cluster, &app);
    let Deployed { ip, nobody, .. } = &app;

    let node = cluster.node_name(1);
    let table = cluster.in_netns(&node, &["nft", "list", "table", "ip", "kube-proxy"]);
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(table.contains("map service-ips {"), "{table}");
    assert!(
        table.contains(&format!("{ip} . tcp . 80 : goto service-"))
            && table.contains("-default/web/tcp/http"),
        "{table}"
    );
    assert!(
        table.contains(&format!(
            "{nobody} . tcp . 81 comment \"default/nobody\" : goto reject-chain"
        )),
        "{table}"
    );
    assert!(table.contains("numgen random mod 3 vmap"), "{table}");
    let mode = cluster.in_netns(&node, &["curl", "-s", "http://127.0.0.1:10249/proxyMode"]);
    assert_eq!(String::from_utf8_lossy(&mode.stdout), "nftables");
}
