//! The sync loop: Services and EndpointSlices through kube-rs reflectors; a sync at
//! most every `min_sync_period` after a change and at least every `sync_period`; the
//! first sync, a sync after a failure and a sync after the canary vanished are full
//! (every chain rewritten, stale chains found in the kernel deleted), the others
//! partial (only the service chains that changed).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Api, Client};
use tokio::sync::Notify;

use crate::healthcheck;
use crate::iptables::{self, Config, Selection};
use crate::kernel;
use crate::model::{self, Endpoint, Protocol, ServicePort, State};
use crate::nftables;
use crate::server::Status;
use crate::userspace;

/// How the proxy runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub config: Config,
    pub min_sync_period: Duration,
    pub sync_period: Duration,
}

/// Runs the proxy until a watch fails for good.
pub async fn run(
    client: Client,
    options: Options,
    status: Arc<Status>,
    mut proxier: Backend,
) -> Result<(), kernel::Error> {
    let changed = Arc::new(Notify::new());
    let (services, service_writer) = reflector::store::<Service>();
    let (slices, slice_writer) = reflector::store::<EndpointSlice>();
    let watch_services = reflector(
        service_writer,
        watcher(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .touched_objects();
    let watch_slices = reflector(
        slice_writer,
        watcher(
            Api::<EndpointSlice>::all(client),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .touched_objects();
    let (c, s) = (changed.clone(), status.clone());
    tokio::spawn(watch_services.for_each(move |_| {
        s.pending();
        c.notify_one();
        futures::future::ready(())
    }));
    let (c, s) = (changed.clone(), status.clone());
    tokio::spawn(watch_slices.for_each(move |_| {
        s.pending();
        c.notify_one();
        futures::future::ready(())
    }));
    services
        .wait_until_ready()
        .await
        .map_err(|e| kernel::Error {
            command: "watching Services".into(),
            message: e.to_string(),
        })?;
    slices.wait_until_ready().await.map_err(|e| kernel::Error {
        command: "watching EndpointSlices".into(),
        message: e.to_string(),
    })?;

    let mut health = healthcheck::Servers::new(status.clone());
    let mut last_sync: Option<Instant> = None;
    loop {
        if let Some(last) = last_sync {
            let earliest = last + options.min_sync_period;
            tokio::time::sleep_until(earliest.into()).await;
        }
        if !proxier.rules_present().await {
            proxier.force_full();
        }
        let state = model::build(
            &services
                .state()
                .iter()
                .map(|s| (**s).clone())
                .collect::<Vec<_>>(),
            &slices
                .state()
                .iter()
                .map(|s| (**s).clone())
                .collect::<Vec<_>>(),
        );
        let started = Instant::now();
        match proxier.sync(&state).await {
            Ok(kind) => {
                status.synced(started.elapsed(), kind);
                health.sync(&state, &options.config.node).await;
                tracing::info!(services = state.len(), ?kind, elapsed = ?started.elapsed(), "synced proxy rules");
            }
            Err(err) => {
                tracing::warn!(%err, "syncing proxy rules");
                proxier.force_full();
            }
        }
        last_sync = Some(Instant::now());
        tokio::select! {
            _ = changed.notified() => {}
            _ = tokio::time::sleep(options.sync_period) => if !proxier.rules_present().await {
                proxier.force_full();
            },
        }
    }
}

/// Full or partial, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncKind {
    Full,
    Partial,
}

/// The proxier of the mode the proxy runs in.
pub enum Backend {
    Iptables(Proxier),
    Nftables(nftables::Proxier),
    Userspace(userspace::Proxier),
}

impl Backend {
    async fn sync(&mut self, state: &State) -> kernel::Result<SyncKind> {
        match self {
            Backend::Iptables(proxier) => proxier.sync(state).await,
            Backend::Nftables(proxier) => proxier.sync(state).await,
            Backend::Userspace(proxier) => proxier.sync(state).await,
        }
    }

    /// Whether the rules of the last sync are still there: the canary chain, or the
    /// nftables table. The userspace proxier re-ensures its chains at every sync.
    async fn rules_present(&self) -> bool {
        match self {
            Backend::Iptables(_) => kernel::canary_alive().await,
            Backend::Nftables(_) => nftables::kernel::table_exists().await,
            Backend::Userspace(_) => true,
        }
    }

    /// Makes the next sync a full one (every userspace sync is).
    fn force_full(&mut self) {
        match self {
            Backend::Iptables(proxier) => proxier.needs_full = true,
            Backend::Nftables(proxier) => proxier.force_full(),
            Backend::Userspace(_) => {}
        }
    }
}

/// The endpoints of every UDP service port at the last sync, for conntrack.
pub type UdpEndpoints = BTreeMap<model::ServicePortName, (ServicePort, Vec<Endpoint>)>;

/// What the proxier remembers between syncs.
pub struct Proxier {
    config: Config,
    needs_full: bool,
    /// The per-service chains the last successful sync left in the kernel.
    applied: BTreeMap<String, Vec<String>>,
    udp: UdpEndpoints,
}

impl Proxier {
    pub fn new(config: Config) -> Proxier {
        Proxier {
            config,
            needs_full: true,
            applied: BTreeMap::new(),
            udp: UdpEndpoints::new(),
        }
    }

    /// Applies the rules of `state`.
    pub async fn sync(&mut self, state: &State) -> kernel::Result<SyncKind> {
        let rules = iptables::plan(state, &self.config);
        let (selection, kind) = if self.needs_full {
            kernel::ensure_base().await?;
            let existing = kernel::existing_service_chains().await?;
            (Selection::full(&rules, &existing), SyncKind::Full)
        } else {
            (Selection::partial(&rules, &self.applied), SyncKind::Partial)
        };
        kernel::restore(&iptables::render(&rules, &selection)).await?;
        self.needs_full = false;
        self.applied = rules.services;
        clear_stale_udp(&mut self.udp, state).await;
        Ok(kind)
    }
}

/// Drops UDP conntrack entries that would keep sending packets to endpoints that are
/// gone, or to nothing when a service just got its first endpoint; `previous` is what
/// the last sync saw, and becomes what this one sees.
pub(crate) async fn clear_stale_udp(previous: &mut UdpEndpoints, state: &State) {
    let current: BTreeMap<_, _> = state
        .iter()
        .filter(|(_, (port, _))| port.protocol == Protocol::Udp)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (name, (port, endpoints)) in &current {
        let ready = |eps: &[Endpoint]| -> BTreeSet<String> {
            eps.iter()
                .filter(|e| e.ready)
                .map(|e| e.ip.to_string())
                .collect()
        };
        let now = ready(endpoints);
        let before = previous
            .get(name)
            .map(|(_, eps)| ready(eps))
            .unwrap_or_default();
        let mut ips = vec![port.cluster_ip.to_string()];
        ips.extend(
            port.external_ips
                .iter()
                .chain(&port.load_balancer_ips)
                .map(|ip| ip.to_string()),
        );
        if before.is_empty() && !now.is_empty() {
            for ip in &ips {
                kernel::clear_udp_flows(ip, None).await;
            }
            if let Some(node_port) = port.node_port {
                kernel::clear_udp_node_port(node_port).await;
            }
        }
        for gone in before.difference(&now) {
            for ip in &ips {
                kernel::clear_udp_flows(ip, Some(gone)).await;
            }
        }
    }
    *previous = current;
}
