//! The data source: kube-rs reflectors over Ingresses, IngressClasses, Services,
//! EndpointSlices and Secrets. Once all have listed, and after every change (a burst
//! of changes costs one rebuild), a new [`Snapshot`] replaces the current one.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::api::Api;
use kube::runtime::reflector::Store;
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Client, Resource};
use rustls::sign::CertifiedKey;
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

use crate::metrics::Metrics;
use crate::snapshot::{Config, Objects, Snapshot};

/// The shortest time between two rebuilds.
const MIN_REBUILD_INTERVAL: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
#[error("watching {kind}: {message}")]
pub struct Error {
    kind: &'static str,
    message: String,
}

/// Starts a reflector for `api` in `tasks` that wakes `changed` on every event.
fn reflect<K>(api: Api<K>, changed: &Arc<Notify>, tasks: &mut JoinSet<()>) -> Store<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + Send
        + Sync
        + serde::de::DeserializeOwned
        + 'static,
{
    let (store, writer) = reflector::store::<K>();
    let stream = reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .touched_objects();
    let changed = changed.clone();
    tasks.spawn(stream.for_each(move |_| {
        changed.notify_one();
        futures::future::ready(())
    }));
    store
}

async fn ready<K>(store: &Store<K>, kind: &'static str) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store.wait_until_ready().await.map_err(|e| Error {
        kind,
        message: e.to_string(),
    })
}

/// Keeps `state` current until a watch fails for good.
pub async fn run(
    client: Client,
    config: Config,
    fake_certificate: Arc<CertifiedKey>,
    state: watch::Sender<Arc<Snapshot>>,
    metrics: Arc<Metrics>,
) -> Result<(), Error> {
    let changed = Arc::new(Notify::new());
    // The watches stop when this future is dropped.
    let mut tasks = JoinSet::new();
    let ingresses = reflect(Api::<Ingress>::all(client.clone()), &changed, &mut tasks);
    let classes = reflect(
        Api::<IngressClass>::all(client.clone()),
        &changed,
        &mut tasks,
    );
    let services = reflect(Api::<Service>::all(client.clone()), &changed, &mut tasks);
    let slices = reflect(
        Api::<EndpointSlice>::all(client.clone()),
        &changed,
        &mut tasks,
    );
    let secrets = reflect(Api::<Secret>::all(client), &changed, &mut tasks);
    ready(&ingresses, "Ingresses").await?;
    ready(&classes, "IngressClasses").await?;
    ready(&services, "Services").await?;
    ready(&slices, "EndpointSlices").await?;
    ready(&secrets, "Secrets").await?;
    loop {
        let started = tokio::time::Instant::now();
        let objects = Objects {
            ingresses: ingresses.state(),
            classes: classes.state(),
            services: services.state(),
            slices: slices.state(),
            secrets: secrets.state(),
        };
        let previous = state.borrow().clone();
        let snapshot = Snapshot::build(
            &config,
            &objects,
            &fake_certificate,
            previous.synced.then_some(&*previous),
        );
        let known: HashSet<&String> = previous.warnings.iter().collect();
        for warning in snapshot.warnings.iter().filter(|w| !known.contains(w)) {
            tracing::warn!("{warning}");
        }
        if !previous.synced {
            tracing::info!(
                ingresses = snapshot.served.len(),
                servers = snapshot.server_count(),
                "synced; serving"
            );
        } else if snapshot.served.len() != previous.served.len() {
            tracing::info!(
                ingresses = snapshot.served.len(),
                "served ingresses changed"
            );
        }
        state.send_replace(Arc::new(snapshot));
        metrics.reloaded();
        changed.notified().await;
        tokio::time::sleep_until(started + MIN_REBUILD_INTERVAL).await;
    }
}
