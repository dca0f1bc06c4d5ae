//! The served Ingresses' status.loadBalancer follows the --publish-service, written
//! only when it differs.

use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::harness::{eventually, run, Cluster};

#[test]
fn status_follows_the_publish_service() {
    run(|| async {
        let cluster = Cluster::start(ingress::Options {
            publish: ingress::Publish::Service(ingress::Key::new(
                "default",
                "ingress-nginx-controller",
            )),
            ..ingress::Options::default()
        })
        .await;
        cluster.nginx_class(true).await;
        let controller = cluster.service("ingress-nginx-controller").await;
        let cluster_ip = controller.spec.unwrap().cluster_ip.unwrap();
        let backend = json!({"service": {"name": "web", "port": {"number": 80}}});
        cluster
            .ingress("one", json!({}), json!({"defaultBackend": backend}))
            .await;
        cluster
            .ingress(
                "two",
                json!({}),
                json!({"rules": [{"host": "two.example.com"}]}),
            )
            .await;
        cluster
            .ingress(
                "foreign",
                json!({}),
                json!({"ingressClassName": "other", "defaultBackend": backend}),
            )
            .await;
        let api = Api::<Ingress>::namespaced(cluster.client.clone(), "default");
        let status_of = |name: &'static str| {
            let api = api.clone();
            async move {
                let ingress = api.get(name).await.expect("get ingress");
                let ips: Vec<String> = ingress
                    .status
                    .and_then(|s| s.load_balancer)
                    .and_then(|lb| lb.ingress)
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|i| i.ip)
                    .collect();
                (ips, ingress.metadata.resource_version.unwrap_or_default())
            }
        };
        let until_status = |want: Vec<String>| async move {
            eventually(15, || async {
                let (one, _) = status_of("one").await;
                let (two, _) = status_of("two").await;
                (one == want && two == want).then_some(())
            })
            .await
            .is_some()
        };
        assert!(
            until_status(vec![cluster_ip.clone()]).await,
            "ClusterIP status"
        );
        assert!(status_of("foreign").await.0.is_empty());

        let services = Api::<Service>::namespaced(cluster.client.clone(), "default");
        services
            .patch(
                "ingress-nginx-controller",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"type": "NodePort",
                                              "externalIPs": ["192.0.2.80", "192.0.2.70"]}})),
            )
            .await
            .expect("patch service");
        assert!(
            until_status(vec!["192.0.2.70".into(), "192.0.2.80".into()]).await,
            "external IPs status"
        );
        // Unrelated changes rebuild the snapshot but write nothing.
        let (_, version) = status_of("one").await;
        cluster.service("unrelated").await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(status_of("one").await.1, version);
    });
}
