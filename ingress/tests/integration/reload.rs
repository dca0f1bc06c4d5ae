//! Configuration changes under a continuous stream of requests: every request of the
//! stream succeeds, each on the snapshot it started with.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::harness::{curl, echo, eventually, run, slow_echo, Cluster};

/// The status codes and backends of one curl run of `urls` over one keep-alive
/// connection, as `(code, backend)` pairs.
async fn stream_once(host: &str, urls: &[String]) -> Vec<(String, String)> {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "20", "-H", &format!("Host: {host}")])
        .args(["-w", "\n@@%{http_code}\n"])
        .args(urls)
        .output()
        .await
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut results = Vec::new();
    let mut body = String::new();
    for line in text.lines() {
        match line.strip_prefix("@@") {
            Some(code) => {
                let backend = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["backend"].as_str().map(str::to_string))
                    .unwrap_or_else(|| body.clone());
                results.push((code.to_string(), backend));
                body.clear();
            }
            None => body.push_str(line),
        }
    }
    if results.len() != urls.len() {
        results.push((
            "curl failed".to_string(),
            String::from_utf8_lossy(&out.stderr).into(),
        ));
    }
    results
}

#[test]
fn changes_under_a_stream_of_requests_fail_none() {
    run(|| async {
        let cluster = Cluster::start(ingress::Options::default()).await;
        cluster.nginx_class(true).await;
        cluster.service("blue").await;
        cluster.service("green").await;
        // Slow answers keep requests in flight while the configuration changes.
        let delay = Duration::from_millis(150);
        let blue1 = slow_echo(cluster.next_ip(), "blue", delay).await;
        let blue2 = slow_echo(cluster.next_ip(), "blue", delay).await;
        let green = echo(cluster.next_ip(), "green").await;
        cluster.endpoints("blue", &[(blue1, true)]).await;
        cluster.endpoints("green", &[(green, true)]).await;
        let app = |service: &str| {
            json!({"rules": [{"host": "app.example.com", "http": {"paths": [
                {"path": "/", "pathType": "Prefix",
                 "backend": {"service": {"name": service, "port": {"number": 80}}}}]}}]})
        };
        cluster.ingress("app", json!({}), app("blue")).await;
        let ready = eventually(15, || async {
            let got = curl(&cluster.at("app.example.com", "/")).await;
            (got.status == 200).then_some(())
        })
        .await;
        assert!(ready.is_some(), "the app never answered");

        let stop = Arc::new(AtomicBool::new(false));
        let urls: Vec<String> = (0..10)
            .map(|i| cluster.http_url(&format!("/r{i}")))
            .collect();
        let mut streams = Vec::new();
        for _ in 0..4 {
            let (stop, urls) = (stop.clone(), urls.clone());
            streams.push(tokio::spawn(async move {
                let mut all = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    all.extend(stream_once("app.example.com", &urls).await);
                }
                all
            }));
        }
        let pause = || tokio::time::sleep(Duration::from_millis(700));
        pause().await;
        cluster
            .endpoints("blue", &[(blue1, true), (blue2, true)])
            .await;
        pause().await;
        cluster
            .endpoints("blue", &[(blue1, false), (blue2, true)])
            .await;
        pause().await;
        cluster.ingress("app", json!({}), app("green")).await;
        pause().await;
        cluster
            .ingress(
                "unrelated",
                json!({}),
                json!({"rules": [{"host": "other.example.com", "http": {"paths": [
                    {"path": "/", "pathType": "Prefix",
                     "backend": {"service": {"name": "blue", "port": {"number": 80}}}}]}}]}),
            )
            .await;
        pause().await;
        stop.store(true, Ordering::Relaxed);
        let mut results = Vec::new();
        for stream in streams {
            results.extend(stream.await.expect("stream task"));
        }
        let failed: Vec<&(String, String)> =
            results.iter().filter(|(code, _)| code != "200").collect();
        assert!(
            failed.is_empty(),
            "{} of {} failed: {failed:?}",
            failed.len(),
            results.len()
        );
        assert!(results.len() >= 100, "only {} requests", results.len());
        assert_eq!(results.first().map(|r| r.1.as_str()), Some("blue"));
        assert_eq!(results.last().map(|r| r.1.as_str()), Some("green"));
    });
}
