//! The data source: kube-rs reflectors over Namespaces, Services, EndpointSlices and
//! the ConfigMap `kube-system/coredns`. Once all four have listed, and after every
//! change, a new [`State`] (snapshot and configuration) is published.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::reflector::Store;
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Client, Resource};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

use crate::config::{self, Config};
use crate::server::State;
use crate::snapshot::Snapshot;

/// The shortest time between two rebuilds, so a burst of changes costs one.
const MIN_REBUILD_INTERVAL: Duration = Duration::from_millis(50);
/// The ConfigMap holding the Corefile.
const CONFIGMAP_NAMESPACE: &str = "kube-system";
const CONFIGMAP_NAME: &str = "coredns";

#[derive(Debug, thiserror::Error)]
#[error("watching {kind}: {message}")]
pub struct Error {
    kind: &'static str,
    message: String,
}

/// Starts a reflector for `api` in `tasks` that wakes `changed` on every event.
fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    changed: &Arc<Notify>,
    tasks: &mut JoinSet<()>,
) -> Store<K>
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
    let stream = reflector(writer, watcher(api, config))
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

/// The configuration the Corefile in `configmaps` gives, else `defaults`; a Corefile
/// that does not parse keeps `previous`, as CoreDNS's `reload` does.
fn configuration<'a>(
    configmaps: impl IntoIterator<Item = &'a ConfigMap>,
    defaults: &Config,
    previous: Option<&Config>,
) -> Config {
    let corefile = configmaps
        .into_iter()
        .filter_map(|cm| cm.data.as_ref()?.get(config::COREFILE_KEY))
        .next();
    let Some(text) = corefile else {
        return defaults.clone();
    };
    match config::parse_corefile(text) {
        Ok(parsed) => parsed,
        Err(err) => {
            tracing::warn!(%err, "ConfigMap kube-system/coredns: keeping the previous configuration");
            previous.cloned().unwrap_or_else(|| defaults.clone())
        }
    }
}

fn now_serial() -> u32 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    u32::try_from(secs).unwrap_or(u32::MAX)
}

/// Keeps `state` current until a watch fails for good.
pub async fn run(
    client: Client,
    defaults: Config,
    state: watch::Sender<State>,
) -> Result<(), Error> {
    let changed = Arc::new(Notify::new());
    // The watches stop when this future is dropped.
    let mut tasks = JoinSet::new();
    let namespaces = reflect(
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
        &changed,
        &mut tasks,
    );
    let services = reflect(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
        &changed,
        &mut tasks,
    );
    let slices = reflect(
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default(),
        &changed,
        &mut tasks,
    );
    let configmaps = reflect(
        Api::<ConfigMap>::namespaced(client, CONFIGMAP_NAMESPACE),
        watcher::Config::default().fields(&format!("metadata.name={CONFIGMAP_NAME}")),
        &changed,
        &mut tasks,
    );
    ready(&namespaces, "Namespaces").await?;
    ready(&services, "Services").await?;
    ready(&slices, "EndpointSlices").await?;
    ready(&configmaps, "ConfigMap kube-system/coredns").await?;
    loop {
        let started = tokio::time::Instant::now();
        let previous = state.borrow().config.clone();
        let first = state.borrow().snapshot.is_none();
        let config = configuration(
            configmaps.state().iter().map(|o| &**o),
            &defaults,
            (!first).then_some(&*previous),
        );
        if first || config != *previous {
            tracing::info!(zones = ?config.zones.iter().map(|z| z.to_string()).collect::<Vec<_>>(), ttl = config.ttl, pods = ?config.pods, upstream = ?config.upstream, "configuration");
            if config.upstream.is_none() {
                tracing::info!("no forward: names outside the cluster zones are answered SERVFAIL");
            }
        }
        let snapshot = Snapshot::build(
            namespaces.state().iter().map(|o| &**o),
            services.state().iter().map(|o| &**o),
            slices.state().iter().map(|o| &**o),
            now_serial(),
        );
        if first {
            tracing::info!(services = snapshot.len(), "synced; serving");
        }
        state.send_replace(State {
            snapshot: Some(Arc::new(snapshot)),
            config: Arc::new(config),
        });
        changed.notified().await;
        tokio::time::sleep_until(started + MIN_REBUILD_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn configmap(corefile: &str) -> ConfigMap {
        ConfigMap {
            data: Some(BTreeMap::from([(
                config::COREFILE_KEY.to_string(),
                corefile.to_string(),
            )])),
            ..ConfigMap::default()
        }
    }

    #[test]
    fn corefile_wins_over_defaults_and_a_broken_one_keeps_the_previous() {
        let defaults = Config::default();
        assert_eq!(configuration([], &defaults, None), defaults);
        let good = configmap(".:53 {\n kubernetes cluster.local {\n  ttl 5\n }\n}\n");
        let parsed = configuration([&good], &defaults, None);
        assert_eq!(parsed.ttl, 5);
        let broken = configmap(".:53 {\n kubernetes cluster.local {\n");
        assert_eq!(configuration([&broken], &defaults, Some(&parsed)), parsed);
    }
}
