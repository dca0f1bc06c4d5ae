//! apiserver throughput and watch latency, each against a baseline in the same run:
//! objects created per second through the API (kube-rs, and `kubectl apply`) against
//! raw sled insert+flush of the same bytes; watch event latency with 100 watchers.
//!
//! Run with `bench/apiserver.sh` (or `cargo bench -p kubesim --bench apiserver`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams, WatchEvent, WatchParams};

const OBJECTS: usize = 2000;
const CONCURRENCY: usize = 32;
const WATCHERS: usize = 100;
const WATCHED_WRITES: usize = 200;
const APPLY_OBJECTS: usize = 500;

fn configmap(name: &str) -> ConfigMap {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"bench": "yes"}},
        "data": {"key": "value", "other": "x".repeat(200)},
    }))
    .expect("configmap")
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

async fn run() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let kubeconfig_path = dir.path().join("kubeconfig");
    let config = apiserver::Config {
        data_dir: dir.path().join("server"),
        port: 0,
        write_kubeconfig: Some(kubeconfig_path.clone()),
        ..Default::default()
    };
    let running = apiserver::start(config).await?;
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&running.kubeconfig)?;
    let client = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?,
    )?;

    // 1. Creates through the API, CONCURRENCY in flight.
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let start = Instant::now();
    futures::stream::iter(0..OBJECTS)
        .map(|i| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &configmap(&format!("bench-{i}")))
                    .await
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    let api_rate = OBJECTS as f64 / start.elapsed().as_secs_f64();

    // Baseline: raw sled, one insert + flush per object, the same bytes.
    let sled_dir = tempfile::tempdir()?;
    let db = sled::open(sled_dir.path())?;
    let bytes = serde_json::to_vec(&configmap("baseline"))?;
    let start = Instant::now();
    for i in 0..OBJECTS {
        db.insert(
            format!("/registry/core/configmaps/default/bench-{i}"),
            bytes.as_slice(),
        )?;
        db.flush()?;
    }
    let sled_rate = OBJECTS as f64 / start.elapsed().as_secs_f64();

    // 2. `kubectl apply -f` of a file with APPLY_OBJECTS objects, against the same server.
    let mut manifest = String::new();
    for i in 0..APPLY_OBJECTS {
        manifest.push_str(&format!("---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied-{i}\n  namespace: kube-public\ndata:\n  key: value\n"));
    }
    let file = dir.path().join("apply.yaml");
    std::fs::write(&file, manifest)?;
    let kubectl = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
    let start = Instant::now();
    let out = std::process::Command::new(&kubectl)
        .env("KUBECONFIG", &kubeconfig_path)
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .args(["apply", "-f"])
        .arg(&file)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "kubectl apply failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let apply_rate = APPLY_OBJECTS as f64 / start.elapsed().as_secs_f64();

    // 3. Watch latency: WATCHERS watches, WATCHED_WRITES creates one after another.
    let watched: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-node-lease");
    let sent: Arc<std::sync::Mutex<std::collections::HashMap<String, Instant>>> =
        Default::default();
    let mut tasks = Vec::new();
    for _ in 0..WATCHERS {
        let stream = watched.watch(&WatchParams::default(), "0").await?.boxed();
        let sent = sent.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(WATCHED_WRITES);
            let mut stream = stream;
            while latencies.len() < WATCHED_WRITES {
                match stream.try_next().await {
                    Ok(Some(WatchEvent::Added(cm))) => {
                        let name = cm.metadata.name.unwrap_or_default();
                        let at = sent.lock().expect("lock").get(&name).copied();
                        if let Some(at) = at {
                            latencies.push(at.elapsed());
                        }
                    }
                    Ok(Some(_)) => {}
                    _ => break,
                }
            }
            latencies
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..WATCHED_WRITES {
        let name = format!("watched-{i}");
        sent.lock()
            .expect("lock")
            .insert(name.clone(), Instant::now());
        watched
            .create(&PostParams::default(), &configmap(&name))
            .await?;
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(tokio::time::timeout(Duration::from_secs(60), t).await??);
    }
    all.sort();
    anyhow::ensure!(
        all.len() == WATCHERS * WATCHED_WRITES,
        "watchers saw {} of {} events",
        all.len(),
        WATCHERS * WATCHED_WRITES
    );

    println!("| measurement | kubesim | baseline (same run) |");
    println!("| --- | --- | --- |");
    println!("| creates/s through the API (kube-rs, {CONCURRENCY} in flight, {OBJECTS} ConfigMaps) | {api_rate:.0} | raw sled insert+flush: {sled_rate:.0}/s |");
    println!("| creates/s through `kubectl apply -f` ({APPLY_OBJECTS} ConfigMaps, one file) | {apply_rate:.0} | — |");
    println!(
        "| watch latency, {WATCHERS} watchers x {WATCHED_WRITES} creates (create sent → event received) | p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms | — |",
        percentile(&all, 0.5).as_secs_f64() * 1e3,
        percentile(&all, 0.99).as_secs_f64() * 1e3,
        all.last().map(|d| d.as_secs_f64() * 1e3).unwrap_or_default()
    );
    running.stop().await;
    Ok(())
}
