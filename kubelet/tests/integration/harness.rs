//! An apiserver on a free loopback port with its own data directory, and a kube-rs
//! client for it. Everything stops when the test's runtime ends.

use std::future::Future;
use std::time::Duration;

pub struct Cluster {
    pub client: kube::Client,
    _server: apiserver::Running,
    _dir: tempfile::TempDir,
}

impl Cluster {
    pub async fn start() -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = apiserver::Config {
            data_dir: dir.path().join("server"),
            port: 0,
            ..Default::default()
        };
        let server = apiserver::start(config).await.expect("start apiserver");
        let kubeconfig =
            kube::config::Kubeconfig::from_yaml(&server.kubeconfig).expect("kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .expect("config");
        let client = kube::Client::try_from(config).expect("client");
        Cluster {
            client,
            _server: server,
            _dir: dir,
        }
    }
}

/// Polls `check` every 50 ms until it returns `Some`, for at most `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
