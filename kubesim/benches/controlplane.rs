//! Control-plane scale with simulated nodes (everything in one process, over HTTPS):
//! 1. time for 10,000 pods of one Deployment across 100 nodes to be Running and listed
//!    in the Service's EndpointSlices;
//! 2. endpoints update latency (a pod turns ready → its Endpoints list it) with 1,000
//!    Services, p50/p99.
//!
//! Run with `bench/controlplane.sh` (or `cargo bench -p kubesim --bench controlplane`).
//! `PODS`, `NODES` and `SERVICES` override the sizes.

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run())
}

async fn client_for(running: &apiserver::Running) -> anyhow::Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&running.kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

async fn run() -> anyhow::Result<()> {
    let pods = env("PODS", 10_000);
    let nodes = env("NODES", 100);
    let services = env("SERVICES", 1_000);
    let dir = tempfile::tempdir()?;
    let config = apiserver::Config {
        data_dir: dir.path().join("server"),
        port: 0,
        ..Default::default()
    };
    let running = apiserver::start(config).await?;
    let client = client_for(&running).await?;
    let options = controller::Options {
        cluster_cidr: "10.244.0.0/16".into(),
        node_cidr_mask_size: 24,
        ..Default::default()
    };
    tokio::spawn(controller::run(client.clone(), options));
    let sim = kubelet::simulated::SimulatedOptions {
        nodes,
        name_prefix: "kubesim-node-".into(),
        first_ip: std::net::Ipv4Addr::new(192, 168, 1, 11),
        ..Default::default()
    };
    tokio::spawn(kubelet::simulated::run(client.clone(), sim));

    // 1. PODS pods of one Deployment behind one Service.
    let svc: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "scale"},
        "spec": {"selector": {"app": "scale"}, "ports": [{"port": 80, "targetPort": 80}]},
    }))?;
    Api::<Service>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &svc)
        .await?;
    let deploy: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "scale"},
        "spec": {
            "replicas": pods,
            "selector": {"matchLabels": {"app": "scale"}},
            "template": {"metadata": {"labels": {"app": "scale"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}},
        },
    }))?;
    let start = Instant::now();
    Api::<Deployment>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &deploy)
        .await?;
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let slice_api: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let (mut running_at, mut listed_at) = (None, None);
    while running_at.is_none() || listed_at.is_none() {
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(900),
            "gave up after 15 minutes"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
        if running_at.is_none() {
            let list = pod_api
                .list_metadata(
                    &ListParams::default()
                        .labels("app=scale")
                        .fields("status.phase=Running"),
                )
                .await?;
            if list.items.len() == pods {
                running_at = Some(start.elapsed());
            }
        }
        if listed_at.is_none() {
            let slices = slice_api
                .list(&ListParams::default().labels("kubernetes.io/service-name=scale"))
                .await?;
            let ready: usize = slices
                .items
                .iter()
                .map(|s| {
                    s.endpoints
                        .iter()
                        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false))
                        .count()
                })
                .sum();
            if ready == pods {
                listed_at = Some(start.elapsed());
            }
        }
    }
    let running_at = running_at.unwrap_or_default();
    let listed_at = listed_at.unwrap_or_default();

    // 2. SERVICES services, each selecting one pod; measure pod ready → Endpoints.
    let ns = "latency";
    let ns_obj = serde_json::from_value(serde_json::json!({"metadata": {"name": ns}}))?;
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns_obj)
        .await?;
    let svc_api: Api<Service> = Api::namespaced(client.clone(), ns);
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), ns);
    futures::stream::iter(0..services)
        .map(|i| {
            let (svc_api, pod_api) = (svc_api.clone(), pod_api.clone());
            async move {
                let svc: Service = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": format!("svc-{i}")},
                    "spec": {"selector": {"svc": format!("s{i}")}, "ports": [{"port": 80}]},
                }))?;
                svc_api.create(&PostParams::default(), &svc).await?;
                let pod: Pod = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": format!("pod-{i}"), "labels": {"svc": format!("s{i}")}},
                    "spec": {"containers": [{"name": "c", "image": "nginx"}]},
                }))?;
                pod_api.create(&PostParams::default(), &pod).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?;
    let ep_api: Api<Endpoints> = Api::namespaced(client.clone(), ns);
    // Wait until every Service lists its (simulated-ready) pod.
    let settle = Instant::now();
    loop {
        anyhow::ensure!(
            settle.elapsed() < Duration::from_secs(600),
            "services did not settle"
        );
        let eps = ep_api.list(&ListParams::default()).await?;
        let full = eps
            .items
            .iter()
            .filter(|e| {
                e.subsets
                    .iter()
                    .flatten()
                    .any(|s| s.addresses.as_ref().is_some_and(|a| !a.is_empty()))
            })
            .count();
        if full == services {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Flip readiness off and on for a sample of pods; time each "on" until listed.
    let samples = 200.min(services);
    let mut latencies = Vec::with_capacity(samples);
    let status = |ready: &str| serde_json::json!({"status": {"conditions": [{"type": "Ready", "status": ready}, {"type": "ContainersReady", "status": ready}]}});
    for i in 0..samples {
        let name = format!("pod-{i}");
        pod_api
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Strategic(status("False")),
            )
            .await?;
        loop {
            let ep = ep_api.get(&format!("svc-{i}")).await?;
            if ep
                .subsets
                .iter()
                .flatten()
                .all(|s| s.addresses.as_ref().is_none_or(|a| a.is_empty()))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let at = Instant::now();
        pod_api
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Strategic(status("True")),
            )
            .await?;
        loop {
            let ep = ep_api.get(&format!("svc-{i}")).await?;
            if ep
                .subsets
                .iter()
                .flatten()
                .any(|s| s.addresses.as_ref().is_some_and(|a| !a.is_empty()))
            {
                latencies.push(at.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    latencies.sort();

    println!("| measurement | kubesim | reference |");
    println!("| --- | --- | --- |");
    println!(
        "| {pods} pods of one Deployment on {nodes} simulated nodes: all Running | {:.1} s ({:.0} pods/s) | KWOK's published figure: 20 pods/s |",
        running_at.as_secs_f64(),
        pods as f64 / running_at.as_secs_f64()
    );
    println!(
        "| … and all ready in the Service's EndpointSlices | {:.1} s | — |",
        listed_at.as_secs_f64()
    );
    println!(
        "| endpoints update latency with {services} Services (pod ready → Endpoints lists it, {samples} samples) | p50 {:.1} ms, p99 {:.1} ms | — |",
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3
    );
    running.stop().await;
    Ok(())
}
