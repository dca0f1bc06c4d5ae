//! One pod's life on a node: the sandbox (network namespace by the CNI plugin, the
//! pause process with the UTS and mount namespaces), init containers one after the
//! other, the containers with their restarts and probes, the status the kubelet
//! reports, and graceful termination down to a removed namespace and a deleted pod.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, EnvVar, HostIP, Pod, PodCondition, PodIP, PodStatus,
    Probe, Secret,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::ResourceExt;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::probe::{self, Kind, Timing};
use super::server::PodEntry;
use super::Context;
use crate::sandbox;
use crate::simulated::{delete_stopped, new_container_id, now, persist, resolve_image};
use crate::workload::{self, Invocation};

const FIELD_MANAGER: &str = "kubelet";
/// The interface the CNI plugin makes in every pod.
const POD_INTERFACE: &str = "eth0";
const BACKOFF_START: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Something that happened to one of the pod's processes.
#[derive(Debug)]
enum Event {
    Exited {
        index: usize,
        generation: u64,
        code: i32,
    },
    Probed {
        index: usize,
        generation: u64,
        kind: Kind,
        result: Result<(), String>,
    },
}

#[derive(Debug, Clone)]
enum State {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started_at: Time,
    },
    Terminated(ContainerStateTerminated),
}

/// One container of the pod (init or regular) and what the kubelet knows of it.
struct Slot {
    spec: Container,
    init: bool,
    state: State,
    last: Option<ContainerStateTerminated>,
    restarts: i32,
    ready: bool,
    started: bool,
    generation: u64,
    pgid: Option<Pid>,
    id: String,
    probes: Vec<JoinHandle<()>>,
    counts: BTreeMap<&'static str, (u32, u32)>,
    restart_at: Option<Instant>,
    backoff: Duration,
    /// The environment of the current instance.
    env: Vec<(String, String)>,
}

impl Slot {
    fn new(spec: Container, init: bool) -> Slot {
        Slot {
            spec,
            init,
            state: State::Waiting {
                reason: "ContainerCreating".into(),
                message: None,
            },
            last: None,
            restarts: 0,
            ready: false,
            started: false,
            generation: 0,
            pgid: None,
            id: String::new(),
            probes: Vec::new(),
            counts: BTreeMap::new(),
            restart_at: None,
            backoff: BACKOFF_START,
            env: Vec::new(),
        }
    }

    /// Records that the current instance exited with `code`, and returns its
    /// terminated state.
    fn finish(&mut self, code: i32) -> ContainerStateTerminated {
        let started_at = match &self.state {
            State::Running { started_at } => Some(started_at.clone()),
            _ => None,
        };
        self.pgid = None;
        self.ready = false;
        ContainerStateTerminated {
            exit_code: code,
            reason: Some(if code == 0 { "Completed" } else { "Error" }.into()),
            started_at,
            finished_at: Some(now()),
            container_id: Some(self.id.clone()),
            ..Default::default()
        }
    }

    fn running(&self) -> bool {
        matches!(self.state, State::Running { .. })
    }

    fn succeeded(&self) -> bool {
        matches!(&self.state, State::Terminated(t) if t.exit_code == 0)
    }

    fn status(&self) -> ContainerStatus {
        let (image, image_id) = resolve_image(self.spec.image.as_deref().unwrap_or_default());
        let state = match &self.state {
            State::Waiting { reason, message } => ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.clone()),
                    message: message.clone(),
                }),
                ..Default::default()
            },
            State::Running { started_at } => ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(started_at.clone()),
                }),
                ..Default::default()
            },
            State::Terminated(t) => ContainerState {
                terminated: Some(t.clone()),
                ..Default::default()
            },
        };
        ContainerStatus {
            name: self.spec.name.clone(),
            image,
            image_id: if self.id.is_empty() {
                String::new()
            } else {
                image_id
            },
            container_id: (!self.id.is_empty()).then(|| self.id.clone()),
            ready: self.ready,
            started: Some(self.started),
            restart_count: self.restarts,
            state: Some(state),
            last_state: Some(ContainerState {
                terminated: self.last.clone(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// The pod's sandbox: its namespace, address and pause process.
struct Sandbox {
    netns: Option<String>,
    ip: Ipv4Addr,
    dir: PathBuf,
    pause: Child,
    pause_pid: i32,
}

/// Runs the pod whose newest state `updates` carries until it is gone.
pub(super) async fn run(context: Arc<Context>, mut updates: watch::Receiver<Option<Pod>>) {
    let Some(mut pod) = updates.borrow_and_update().clone() else {
        return;
    };
    let name = format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
    let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
    if pod.metadata.deletion_timestamp.is_some()
        || matches!(phase.as_deref(), Some("Succeeded" | "Failed"))
    {
        // Nothing runs for it here: finish a deletion, or wait for one.
        loop {
            if pod.metadata.deletion_timestamp.is_some() {
                finish_deletion(&context, &pod).await;
                return;
            }
            if updates.changed().await.is_err() {
                return;
            }
            match updates.borrow_and_update().clone() {
                Some(p) => pod = p,
                None => return,
            }
        }
    }
    let mut runner = Runner::new(context.clone(), pod);
    let sandbox = loop {
        match create_sandbox(&context, &runner.pod).await {
            Ok(sandbox) => break sandbox,
            Err(err) => {
                tracing::warn!(pod = %name, error = %err, "creating the pod sandbox");
                runner.sandbox_error = Some(err);
                runner.publish().await;
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    changed = updates.changed() => {
                        let latest = updates.borrow_and_update().clone();
                        match (changed, latest) {
                            (Ok(()), Some(p)) if p.metadata.deletion_timestamp.is_none() => runner.pod = p,
                            (_, latest) => {
                                if let Some(p) = latest {
                                    finish_deletion(&context, &p).await;
                                }
                                return;
                            }
                        }
                    }
                }
            }
        }
    };
    tracing::info!(pod = %name, ip = %sandbox.ip, netns = ?sandbox.netns, "sandbox ready");
    runner.sandbox_error = None;
    runner.sandbox = Some(sandbox);
    runner.started_at = Some(now());
    runner.run(updates).await;
}

struct Runner {
    context: Arc<Context>,
    pod: Pod,
    slots: Vec<Slot>,
    sandbox: Option<Sandbox>,
    sandbox_error: Option<String>,
    started_at: Option<Time>,
    transitions: BTreeMap<&'static str, (bool, Time)>,
    published: Option<serde_json::Value>,
    events: mpsc::UnboundedSender<Event>,
    inbox: mpsc::UnboundedReceiver<Event>,
    env_error: Option<String>,
}

impl Runner {
    fn new(context: Arc<Context>, pod: Pod) -> Runner {
        let spec = pod.spec.clone().unwrap_or_default();
        let slots = spec
            .init_containers
            .unwrap_or_default()
            .into_iter()
            .map(|c| Slot::new(c, true))
            .chain(spec.containers.into_iter().map(|c| Slot::new(c, false)))
            .collect();
        let (events, inbox) = mpsc::unbounded_channel();
        Runner {
            context,
            pod,
            slots,
            sandbox: None,
            sandbox_error: None,
            started_at: None,
            transitions: BTreeMap::new(),
            published: None,
            events,
            inbox,
            env_error: None,
        }
    }

    fn restart_policy(&self) -> &str {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.as_deref())
            .unwrap_or("Always")
    }

    async fn run(mut self, mut updates: watch::Receiver<Option<Pod>>) {
        self.advance().await;
        self.publish().await;
        loop {
            let next_restart = self.slots.iter().filter_map(|s| s.restart_at).min();
            let wake = next_restart.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                changed = updates.changed() => {
                    let latest = updates.borrow_and_update().clone();
                    match (changed, latest) {
                        (Ok(()), Some(pod)) if pod.metadata.deletion_timestamp.is_none() => {
                            self.pod = pod;
                            continue;
                        }
                        (Ok(()), Some(pod)) => {
                            let grace = pod.metadata.deletion_grace_period_seconds.unwrap_or(30);
                            self.pod = pod;
                            self.terminate(Duration::from_secs(u64::try_from(grace).unwrap_or(0))).await;
                            self.teardown().await;
                            finish_deletion(&self.context, &self.pod).await;
                        }
                        _ => {
                            self.terminate(Duration::ZERO).await;
                            self.teardown().await;
                        }
                    }
                    return;
                }
                Some(event) = self.inbox.recv() => self.handle(event),
                _ = tokio::time::sleep_until(wake) => {
                    let now = Instant::now();
                    for slot in &mut self.slots {
                        if slot.restart_at.is_some_and(|at| at <= now) {
                            slot.restart_at = None;
                            slot.state = State::Waiting { reason: "ContainerCreating".into(), message: None };
                        }
                    }
                }
            }
            self.advance().await;
            if self.terminal() && self.sandbox.is_some() {
                self.teardown().await;
            }
            self.publish().await;
        }
    }

    fn terminal(&self) -> bool {
        matches!(self.phase(), "Succeeded" | "Failed")
    }

    /// Starts what should run now: the next init container, or every regular
    /// container waiting to (re)start.
    async fn advance(&mut self) {
        if self.sandbox.is_none() || self.terminal() {
            return;
        }
        let inits_done = self.slots.iter().filter(|s| s.init).all(Slot::succeeded);
        let mut to_start = Vec::new();
        for (index, slot) in self.slots.iter().enumerate() {
            let startable = matches!(&slot.state, State::Waiting { reason, .. } if reason == "ContainerCreating" || reason == "PodInitializing")
                && slot.restart_at.is_none();
            if slot.init {
                if slot.succeeded() {
                    continue;
                }
                if startable {
                    to_start.push(index);
                }
                break;
            }
            if inits_done && startable {
                to_start.push(index);
            }
        }
        for index in to_start {
            self.start(index).await;
        }
    }

    async fn start(&mut self, index: usize) {
        let env = match self.environment(index).await {
            Ok(env) => env,
            Err(message) => {
                self.env_error = Some(message.clone());
                self.slots[index].state = State::Waiting {
                    reason: "CreateContainerConfigError".into(),
                    message: Some(message),
                };
                self.slots[index].restart_at = Some(Instant::now() + BACKOFF_START);
                return;
            }
        };
        let Some(sandbox) = &self.sandbox else {
            return;
        };
        let slot = &mut self.slots[index];
        let known: std::collections::HashMap<String, String> = env.iter().cloned().collect();
        let invocation = workload::resolve_in(&slot.spec, &known).map_err(|e| e.to_string());
        let argv = match &invocation {
            Ok(Invocation::Builtin(args)) => {
                let mut argv = vec![
                    self.context.opts.binary.display().to_string(),
                    "workload".into(),
                ];
                argv.extend(args.iter().cloned());
                argv
            }
            Ok(Invocation::Component(args)) => {
                let mut argv = vec![self.context.opts.binary.display().to_string()];
                argv.extend(args.iter().cloned());
                argv
            }
            Ok(Invocation::Host { argv }) => argv.clone(),
            Err(message) => {
                slot.state = State::Waiting {
                    reason: "ErrImagePull".into(),
                    message: Some(message.clone()),
                };
                return;
            }
        };
        let log = log_path(&sandbox.dir, &slot.spec.name, slot.restarts);
        let mut command = Command::new(&self.context.opts.binary);
        command
            .arg("nsenter")
            .arg("--target")
            .arg(sandbox.pause_pid.to_string());
        if let Some(dir) = slot.spec.working_dir.as_deref().filter(|d| !d.is_empty()) {
            command.arg("--workdir").arg(dir);
        }
        command
            .arg("--")
            .args(&argv)
            .env_clear()
            .envs(env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let spawned = match tokio::fs::create_dir_all(log.parent().unwrap_or(Path::new("/"))).await
        {
            Ok(()) => command.spawn(),
            Err(e) => Err(e),
        };
        let mut child = match spawned {
            Ok(child) => child,
            Err(err) => {
                slot.state = State::Waiting {
                    reason: "RunContainerError".into(),
                    message: Some(err.to_string()),
                };
                slot.restart_at = Some(Instant::now() + slot.backoff);
                return;
            }
        };
        slot.generation += 1;
        slot.env = env;
        slot.id = new_container_id();
        slot.pgid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw);
        slot.state = State::Running { started_at: now() };
        slot.counts.clear();
        let has_startup = slot.spec.startup_probe.is_some();
        slot.started = !has_startup;
        slot.ready = !slot.init && slot.spec.readiness_probe.is_none() && !has_startup;
        if let Some(out) = child.stdout.take() {
            tokio::spawn(copy_log(out, "stdout", log.clone()));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(copy_log(err, "stderr", log));
        }
        let (events, generation) = (self.events.clone(), slot.generation);
        tokio::spawn(async move {
            let code = match child.wait().await {
                Ok(status) => exit_code(status),
                Err(_) => 128 + Signal::SIGKILL as i32,
            };
            let _ = events.send(Event::Exited {
                index,
                generation,
                code,
            });
        });
        let pod_ip = IpAddr::V4(sandbox.ip);
        let pause = sandbox.pause_pid;
        for (kind, probe) in [
            (Kind::Startup, slot.spec.startup_probe.clone()),
            (Kind::Liveness, slot.spec.liveness_probe.clone()),
            (Kind::Readiness, slot.spec.readiness_probe.clone()),
        ] {
            let Some(probe) = probe else {
                continue;
            };
            slot.probes.push(tokio::spawn(probe_loop(
                self.events.clone(),
                ProbeTarget {
                    index,
                    generation,
                    kind,
                    probe,
                    container: slot.spec.clone(),
                    pod_ip,
                    binary: self.context.opts.binary.clone(),
                    pause,
                },
            )));
        }
        tracing::info!(pod = %self.pod.name_any(), container = %slot.spec.name, ?argv, "container started");
    }

    fn handle(&mut self, event: Event) {
        let policy = self.restart_policy().to_owned();
        match event {
            Event::Exited {
                index,
                generation,
                code,
            } => {
                let slot = &mut self.slots[index];
                if slot.generation != generation {
                    return;
                }
                for probe in slot.probes.drain(..) {
                    probe.abort();
                }
                let terminated = slot.finish(code);
                let restart = match policy.as_str() {
                    "Never" => false,
                    "OnFailure" => code != 0,
                    _ => !slot.init || code != 0,
                };
                if restart {
                    slot.last = Some(terminated);
                    slot.restarts += 1;
                    slot.state = State::Waiting {
                        reason: "CrashLoopBackOff".into(),
                        message: Some(format!(
                            "back-off {}s restarting failed container={} pod={}",
                            slot.backoff.as_secs(),
                            slot.spec.name,
                            self.pod.name_any()
                        )),
                    };
                    slot.restart_at = Some(Instant::now() + slot.backoff);
                    slot.backoff = (slot.backoff * 2).min(BACKOFF_MAX);
                } else {
                    slot.state = State::Terminated(terminated);
                }
            }
            Event::Probed {
                index,
                generation,
                kind,
                result,
            } => {
                let slot = &mut self.slots[index];
                if slot.generation != generation || !slot.running() {
                    return;
                }
                if kind != Kind::Startup && !slot.started {
                    return;
                }
                let probe = match kind {
                    Kind::Startup => slot.spec.startup_probe.as_ref(),
                    Kind::Liveness => slot.spec.liveness_probe.as_ref(),
                    Kind::Readiness => slot.spec.readiness_probe.as_ref(),
                };
                let Some(timing) = probe.map(Timing::of) else {
                    return;
                };
                let key = match kind {
                    Kind::Startup => "startup",
                    Kind::Liveness => "liveness",
                    Kind::Readiness => "readiness",
                };
                let counts = slot.counts.entry(key).or_default();
                match &result {
                    Ok(()) => *counts = (counts.0 + 1, 0),
                    Err(_) => *counts = (0, counts.1 + 1),
                }
                let (successes, failures) = *counts;
                match kind {
                    Kind::Startup if successes >= 1 => {
                        slot.started = true;
                        slot.ready = slot.spec.readiness_probe.is_none() && !slot.init;
                    }
                    Kind::Readiness if successes >= timing.success_threshold => slot.ready = true,
                    Kind::Readiness if failures >= timing.failure_threshold => slot.ready = false,
                    Kind::Startup | Kind::Liveness if failures >= timing.failure_threshold => {
                        tracing::info!(
                            pod = %self.pod.name_any(),
                            container = %slot.spec.name,
                            error = ?result.err(),
                            "probe failed, killing the container"
                        );
                        if let Some(pgid) = slot.pgid {
                            let _ = killpg(pgid, Signal::SIGKILL);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// SIGTERM to every running container, SIGKILL to what still runs after `grace`.
    async fn terminate(&mut self, grace: Duration) {
        let deadline = Instant::now() + grace;
        if !grace.is_zero() {
            self.run_pre_stop_hooks(deadline).await;
        }
        for slot in &mut self.slots {
            slot.restart_at = None;
            for probe in slot.probes.drain(..) {
                probe.abort();
            }
            if let Some(pgid) = slot.pgid {
                let _ = killpg(
                    pgid,
                    if grace.is_zero() {
                        Signal::SIGKILL
                    } else {
                        Signal::SIGTERM
                    },
                );
            }
        }
        let mut killed = grace.is_zero();
        while self.slots.iter().any(|s| s.pgid.is_some()) {
            let wait_until = if killed {
                Instant::now() + Duration::from_secs(5)
            } else {
                deadline
            };
            match tokio::time::timeout_at(wait_until, self.inbox.recv()).await {
                Ok(Some(event @ Event::Exited { .. })) => {
                    if let Event::Exited {
                        index,
                        generation,
                        code,
                    } = event
                    {
                        let slot = &mut self.slots[index];
                        if slot.generation == generation {
                            slot.state = State::Terminated(slot.finish(code));
                        }
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) if killed => break,
                Err(_) => {
                    killed = true;
                    for slot in &self.slots {
                        if let Some(pgid) = slot.pgid {
                            let _ = killpg(pgid, Signal::SIGKILL);
                        }
                    }
                }
            }
        }
    }

    /// Runs the `preStop` hooks of the running containers side by side, within the
    /// grace period, as the kubelet does before it sends SIGTERM.
    async fn run_pre_stop_hooks(&self, deadline: Instant) {
        let Some(sandbox) = &self.sandbox else {
            return;
        };
        let pod_ip = IpAddr::V4(sandbox.ip);
        let hooks = self
            .slots
            .iter()
            .filter(|s| s.running())
            .filter_map(|slot| {
                let hook = slot.spec.lifecycle.as_ref()?.pre_stop.clone()?;
                let container = slot.spec.clone();
                let binary = self.context.opts.binary.clone();
                let pause = sandbox.pause_pid;
                Some(async move {
                    if let Some(sleep) = &hook.sleep {
                        let secs = u64::try_from(sleep.seconds).unwrap_or(0);
                        tokio::time::sleep(Duration::from_secs(secs)).await;
                        return;
                    }
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    let as_probe = Probe {
                        exec: hook.exec,
                        http_get: hook.http_get,
                        tcp_socket: hook.tcp_socket,
                        timeout_seconds: i32::try_from(remaining.as_secs().max(1)).ok(),
                        ..Default::default()
                    };
                    if let Err(err) =
                        probe::attempt(&as_probe, &container, pod_ip, &binary, pause).await
                    {
                        tracing::info!(container = %container.name, %err, "PreStop hook failed");
                    }
                })
            });
        let all = futures::future::join_all(hooks);
        if tokio::time::timeout_at(deadline, all).await.is_err() {
            tracing::info!(pod = %self.pod.name_any(), "PreStop hooks did not finish within the grace period");
        }
    }

    /// Stops the pause process, releases the pod's network and removes its namespace.
    async fn teardown(&mut self) {
        let Some(mut sandbox) = self.sandbox.take() else {
            return;
        };
        if self.pod.metadata.deletion_timestamp.is_some() {
            let key = format!(
                "{}/{}",
                self.pod.namespace().unwrap_or_default(),
                self.pod.name_any()
            );
            self.context.logs.remove(&key);
        }
        let _ = sandbox.pause.start_kill();
        let _ = sandbox.pause.wait().await;
        if let Some(netns) = &sandbox.netns {
            let uid = self.pod.uid().unwrap_or_default();
            if let Err(err) = cni(&self.context, "DEL", &self.pod, &uid, netns).await {
                tracing::warn!(pod = %self.pod.name_any(), error = %err, "CNI DEL");
            }
            if let Err(err) = netns::remove(netns) {
                tracing::warn!(pod = %self.pod.name_any(), error = %err, "removing the pod namespace");
            }
        }
        tracing::info!(pod = %self.pod.name_any(), "sandbox removed");
    }

    /// The container's environment, as the kubelet composes it.
    async fn environment(&self, index: usize) -> Result<Vec<(String, String)>, String> {
        let spec = &self.slots[index].spec;
        let pod = &self.pod;
        let namespace = pod.namespace().unwrap_or_default();
        let mut env: Vec<(String, String)> = vec![
            ("PATH".into(), DEFAULT_PATH.into()),
            ("HOSTNAME".into(), sandbox::hostname(pod)),
        ];
        if let Some((ip, port)) = self.context.kubernetes_service().await {
            env.extend([
                ("KUBERNETES_SERVICE_HOST".into(), ip.clone()),
                ("KUBERNETES_SERVICE_PORT".into(), port.to_string()),
                ("KUBERNETES_SERVICE_PORT_HTTPS".into(), port.to_string()),
                ("KUBERNETES_PORT".into(), format!("tcp://{ip}:{port}")),
                (
                    format!("KUBERNETES_PORT_{port}_TCP"),
                    format!("tcp://{ip}:{port}"),
                ),
                (format!("KUBERNETES_PORT_{port}_TCP_PROTO"), "tcp".into()),
                (format!("KUBERNETES_PORT_{port}_TCP_PORT"), port.to_string()),
                (format!("KUBERNETES_PORT_{port}_TCP_ADDR"), ip),
            ]);
        }
        let configmaps: Api<ConfigMap> = Api::namespaced(self.context.client.clone(), &namespace);
        let secrets: Api<Secret> = Api::namespaced(self.context.client.clone(), &namespace);
        for from in spec.env_from.iter().flatten() {
            if let Some(cm) = &from.config_map_ref {
                match configmaps
                    .get_opt(&cm.name)
                    .await
                    .map_err(|e| e.to_string())?
                {
                    Some(found) => {
                        let prefix = from.prefix.clone().unwrap_or_default();
                        for (k, v) in found.data.unwrap_or_default() {
                            set(&mut env, format!("{prefix}{k}"), v);
                        }
                    }
                    None if cm.optional == Some(true) => {}
                    None => return Err(format!("configmap \"{}\" not found", cm.name)),
                }
            }
            if let Some(secret) = &from.secret_ref {
                match secrets
                    .get_opt(&secret.name)
                    .await
                    .map_err(|e| e.to_string())?
                {
                    Some(found) => {
                        let prefix = from.prefix.clone().unwrap_or_default();
                        for (k, v) in found.data.unwrap_or_default() {
                            set(&mut env, format!("{prefix}{k}"), secret_text(&v));
                        }
                    }
                    None if secret.optional == Some(true) => {}
                    None => return Err(format!("secret \"{}\" not found", secret.name)),
                }
            }
        }
        let ip = self
            .sandbox
            .as_ref()
            .map(|s| s.ip.to_string())
            .unwrap_or_default();
        for var in spec.env.iter().flatten() {
            let value = self
                .env_value(var, (&configmaps, &secrets), &ip, &env)
                .await?;
            if let Some(value) = value {
                set(&mut env, var.name.clone(), value);
            }
        }
        Ok(env)
    }

    async fn env_value(
        &self,
        var: &EnvVar,
        (configmaps, secrets): (&Api<ConfigMap>, &Api<Secret>),
        pod_ip: &str,
        env: &[(String, String)],
    ) -> Result<Option<String>, String> {
        if let Some(value) = &var.value {
            let known: std::collections::HashMap<String, String> = env.iter().cloned().collect();
            return Ok(Some(workload::expansion::expand(value, &known)));
        }
        let Some(from) = &var.value_from else {
            return Ok(Some(String::new()));
        };
        let pod = &self.pod;
        if let Some(field) = &from.field_ref {
            let path = field.field_path.as_str();
            let spec = pod.spec.as_ref();
            let pick = |map: Option<&BTreeMap<String, String>>, key: &str| {
                map.and_then(|m| m.get(key)).cloned().unwrap_or_default()
            };
            let value = match path {
                "metadata.name" => pod.name_any(),
                "metadata.namespace" => pod.namespace().unwrap_or_default(),
                "metadata.uid" => pod.uid().unwrap_or_default(),
                "spec.nodeName" => self.context.opts.name.clone(),
                "spec.serviceAccountName" => spec
                    .and_then(|s| s.service_account_name.clone())
                    .unwrap_or_else(|| "default".into()),
                "status.hostIP" | "status.hostIPs" => self.context.opts.node_ip.to_string(),
                "status.podIP" | "status.podIPs" => pod_ip.to_owned(),
                _ => {
                    if let Some(key) = path
                        .strip_prefix("metadata.labels['")
                        .and_then(|k| k.strip_suffix("']"))
                    {
                        pick(pod.metadata.labels.as_ref(), key)
                    } else if let Some(key) = path
                        .strip_prefix("metadata.annotations['")
                        .and_then(|k| k.strip_suffix("']"))
                    {
                        pick(pod.metadata.annotations.as_ref(), key)
                    } else {
                        return Err(format!("unsupported fieldPath: {path}"));
                    }
                }
            };
            return Ok(Some(value));
        }
        if let Some(key) = &from.config_map_key_ref {
            let found = configmaps
                .get_opt(&key.name)
                .await
                .map_err(|e| e.to_string())?;
            let value = found.and_then(|cm| cm.data.and_then(|d| d.get(&key.key).cloned()));
            return match (value, key.optional) {
                (Some(v), _) => Ok(Some(v)),
                (None, Some(true)) => Ok(None),
                (None, _) => Err(format!(
                    "couldn't find key {} in ConfigMap {}/{}",
                    key.key,
                    pod.namespace().unwrap_or_default(),
                    key.name
                )),
            };
        }
        if let Some(key) = &from.secret_key_ref {
            let found = secrets
                .get_opt(&key.name)
                .await
                .map_err(|e| e.to_string())?;
            let value = found.and_then(|s| s.data.and_then(|d| d.get(&key.key).map(secret_text)));
            return match (value, key.optional) {
                (Some(v), _) => Ok(Some(v)),
                (None, Some(true)) => Ok(None),
                (None, _) => Err(format!(
                    "couldn't find key {} in Secret {}/{}",
                    key.key,
                    pod.namespace().unwrap_or_default(),
                    key.name
                )),
            };
        }
        Ok(None)
    }

    fn phase(&self) -> &'static str {
        let regular: Vec<&Slot> = self.slots.iter().filter(|s| !s.init).collect();
        let init_failed = self
            .slots
            .iter()
            .any(|s| s.init && matches!(&s.state, State::Terminated(t) if t.exit_code != 0));
        if init_failed {
            return "Failed";
        }
        let all_done = !regular.is_empty()
            && regular
                .iter()
                .all(|s| matches!(s.state, State::Terminated(_)));
        if all_done {
            return if regular.iter().all(|s| s.succeeded()) {
                "Succeeded"
            } else {
                "Failed"
            };
        }
        let any_started = regular
            .iter()
            .any(|s| s.running() || s.restarts > 0 || matches!(s.state, State::Terminated(_)));
        if self.sandbox.is_some() && any_started {
            "Running"
        } else {
            "Pending"
        }
    }

    fn condition(
        &mut self,
        type_: &'static str,
        value: bool,
        reason: Option<&str>,
    ) -> PodCondition {
        let now = now();
        let entry = self
            .transitions
            .entry(type_)
            .or_insert((value, now.clone()));
        if entry.0 != value {
            *entry = (value, now);
        }
        PodCondition {
            type_: type_.into(),
            status: if value { "True" } else { "False" }.into(),
            last_transition_time: Some(entry.1.clone()),
            reason: reason.map(str::to_owned),
            ..Default::default()
        }
    }

    fn status(&mut self) -> PodStatus {
        let phase = self.phase();
        let sandbox_ready = self.sandbox.is_some();
        let inits_done = self.slots.iter().filter(|s| s.init).all(Slot::succeeded);
        let regular_ready = self.slots.iter().filter(|s| !s.init).all(|s| s.ready);
        let terminal = matches!(phase, "Succeeded" | "Failed");
        let not_ready = (!regular_ready || terminal).then_some(if terminal {
            "PodCompleted"
        } else {
            "ContainersNotReady"
        });
        let scheduled = self
            .pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled").cloned());
        let mut conditions = vec![
            self.condition(
                "PodReadyToStartContainers",
                sandbox_ready && !terminal,
                None,
            ),
            self.condition(
                "Initialized",
                inits_done,
                (!inits_done).then_some("ContainersNotInitialized"),
            ),
            self.condition("Ready", regular_ready && !terminal, not_ready),
            self.condition("ContainersReady", regular_ready && !terminal, not_ready),
        ];
        conditions.extend(scheduled);
        let mut containers: Vec<ContainerStatus> = self
            .slots
            .iter()
            .filter(|s| !s.init)
            .map(Slot::status)
            .collect();
        containers.sort_by(|a, b| a.name.cmp(&b.name));
        let init: Vec<ContainerStatus> = self
            .slots
            .iter()
            .filter(|s| s.init)
            .map(Slot::status)
            .collect();
        let host_ip = self.context.opts.node_ip.to_string();
        let pod_ip = self.sandbox.as_ref().map(|s| s.ip.to_string());
        PodStatus {
            phase: Some(phase.into()),
            conditions: Some(conditions),
            host_ip: Some(host_ip.clone()),
            host_ips: Some(vec![HostIP { ip: host_ip }]),
            pod_ip: pod_ip.clone(),
            pod_ips: pod_ip.map(|ip| vec![PodIP { ip }]),
            start_time: self.started_at.clone().or_else(|| Some(now())),
            container_statuses: Some(containers),
            init_container_statuses: (!init.is_empty()).then_some(init),
            message: self
                .sandbox_error
                .clone()
                .or_else(|| self.env_error.clone()),
            ..Default::default()
        }
    }

    /// Tells the kubelet's server where the containers' current logs are.
    fn register_logs(&self) {
        let key = format!(
            "{}/{}",
            self.pod.namespace().unwrap_or_default(),
            self.pod.name_any()
        );
        let Some(sandbox) = &self.sandbox else {
            return;
        };
        let logs = PodEntry {
            dir: sandbox.dir.clone(),
            restarts: self
                .slots
                .iter()
                .map(|s| (s.spec.name.clone(), s.restarts))
                .collect(),
            running: self
                .slots
                .iter()
                .map(|s| (s.spec.name.clone(), s.running()))
                .collect(),
            env: self
                .slots
                .iter()
                .map(|s| (s.spec.name.clone(), s.env.clone()))
                .collect(),
            pause_pid: sandbox.pause_pid,
            binary: self.context.opts.binary.clone(),
        };
        self.context.logs.set(key, logs);
    }

    /// Writes the pod's status when it changed since the last write.
    async fn publish(&mut self) {
        self.register_logs();
        if self.sandbox.is_none()
            && self.sandbox_error.is_none()
            && !self.terminal()
            && self.started_at.is_none()
        {
            return;
        }
        let status = self.status();
        let value = match serde_json::to_value(&status) {
            Ok(v) => v,
            Err(_) => return,
        };
        let mut comparable = value.clone();
        strip_times(&mut comparable);
        if self.published.as_ref() == Some(&comparable) {
            return;
        }
        let api: Api<Pod> = Api::namespaced(
            self.context.client.clone(),
            &self.pod.namespace().unwrap_or_default(),
        );
        let name = self.pod.name_any();
        let patch = json!({ "status": value });
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        persist("pod status", || async {
            api.patch_status(&name, &params, &Patch::Merge(&patch))
                .await
                .map(|_| ())
        })
        .await;
        self.published = Some(comparable);
    }
}

/// Drops the heartbeat-like times, so a status differing only in them is not rewritten.
fn strip_times(value: &mut serde_json::Value) {
    if let Some(conditions) = value.get_mut("conditions").and_then(|c| c.as_array_mut()) {
        for c in conditions {
            if let Some(c) = c.as_object_mut() {
                c.remove("lastProbeTime");
            }
        }
    }
}

fn set(env: &mut Vec<(String, String)>, name: String, value: String) {
    env.retain(|(k, _)| *k != name);
    env.push((name, value));
}

pub(super) fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(255)
}

/// `<pod dir>/<container>/<restart count>.log`, as the kubelet lays out pod logs.
pub fn log_path(dir: &Path, container: &str, restarts: i32) -> PathBuf {
    dir.join(container).join(format!("{restarts}.log"))
}

/// Copies a container's stream into its log file in the CRI format
/// (`<RFC 3339 time> <stream> <F|P> <line>`), as `kubectl logs` reads it back.
async fn copy_log(stream: impl AsyncRead + Unpin, name: &'static str, path: PathBuf) {
    let file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .await;
    let Ok(mut file) = file else {
        tracing::warn!(path = %path.display(), "cannot open the container log");
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let (tag, body) = match line.strip_suffix(b"\n") {
            Some(body) => ("F", body),
            None => ("P", line.as_slice()),
        };
        let mut record = format!("{} {name} {tag} ", Timestamp::now()).into_bytes();
        record.extend_from_slice(body);
        record.push(b'\n');
        if file.write_all(&record).await.is_err() {
            return;
        }
    }
}

struct ProbeTarget {
    index: usize,
    generation: u64,
    kind: Kind,
    probe: Probe,
    container: Container,
    pod_ip: IpAddr,
    binary: PathBuf,
    pause: i32,
}

async fn probe_loop(events: mpsc::UnboundedSender<Event>, target: ProbeTarget) {
    let timing = Timing::of(&target.probe);
    tokio::time::sleep(timing.initial_delay).await;
    loop {
        let result = probe::attempt(
            &target.probe,
            &target.container,
            target.pod_ip,
            &target.binary,
            target.pause,
        )
        .await;
        let event = Event::Probed {
            index: target.index,
            generation: target.generation,
            kind: target.kind,
            result,
        };
        if events.send(event).is_err() {
            return;
        }
        tokio::time::sleep(timing.period).await;
    }
}

/// Makes the pod's sandbox: namespace, network (CNI ADD), `/etc` files, pause process.
async fn create_sandbox(context: &Context, pod: &Pod) -> Result<Sandbox, String> {
    let opts = &context.opts;
    let uid = pod.uid().unwrap_or_default();
    let dir = opts.data_dir.join("pods").join(&uid);
    let etc = dir.join("etc");
    tokio::fs::create_dir_all(&etc)
        .await
        .map_err(|e| format!("creating {}: {e}", etc.display()))?;
    let host_network = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    let (netns, ip) = if host_network {
        (None, opts.node_ip)
    } else {
        let short: String = uid.chars().filter(|c| *c != '-').take(12).collect();
        let name = format!("{}-pod-{short}", opts.cluster);
        if netns::path(&name).exists() {
            // Left by an interrupted start: release its network and begin again.
            cni(context, "DEL", pod, &uid, &name).await?;
            netns::remove(&name).map_err(|e| e.to_string())?;
        }
        netns::add(&name).map_err(|e| e.to_string())?;
        match cni(context, "ADD", pod, &uid, &name)
            .await
            .and_then(|r| pod_address(&r))
        {
            Ok(ip) => (Some(name), ip),
            Err(err) => {
                if let Err(cleanup) = netns::remove(&name) {
                    tracing::warn!(error = %cleanup, "removing the namespace of a failed sandbox");
                }
                return Err(format!("failed to set up the pod network: {err}"));
            }
        }
    };
    let hosts = sandbox::hosts(pod, IpAddr::V4(ip), &opts.dns);
    let resolv = sandbox::resolv_conf(pod, &opts.dns, &context.node_resolv).render();
    let hostname = sandbox::hostname(pod);
    for (file, text) in [
        ("hosts", hosts),
        ("resolv.conf", resolv),
        ("hostname", format!("{hostname}\n")),
    ] {
        tokio::fs::write(etc.join(file), text)
            .await
            .map_err(|e| format!("writing {file}: {e}"))?;
    }
    let mut command = Command::new(&opts.binary);
    command.arg("pause").arg("--etc").arg(&etc);
    let automount = pod
        .spec
        .as_ref()
        .and_then(|s| s.automount_service_account_token)
        .unwrap_or(true);
    if let (Some(account), true) = (&opts.service_account, automount) {
        let secrets = dir.join("serviceaccount");
        tokio::fs::create_dir_all(&secrets)
            .await
            .map_err(|e| format!("creating {}: {e}", secrets.display()))?;
        let namespace = pod.namespace().unwrap_or_default();
        for (file, text) in [
            ("token", account.token.as_str()),
            ("ca.crt", account.ca_pem.as_str()),
            ("namespace", namespace.as_str()),
        ] {
            tokio::fs::write(secrets.join(file), text)
                .await
                .map_err(|e| format!("writing the service account's {file}: {e}"))?;
        }
        command.arg("--service-account").arg(&secrets);
    }
    if let Some(name) = &netns {
        command
            .arg("--netns")
            .arg(netns::path(name))
            .arg("--hostname")
            .arg(&hostname);
    }
    let mut pause = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("starting the pause process: {e}"))?;
    let stdout = pause
        .stdout
        .take()
        .ok_or("the pause process has no stdout")?;
    let mut ready = String::new();
    let read = tokio::time::timeout(
        Duration::from_secs(10),
        BufReader::new(stdout).read_line(&mut ready),
    )
    .await;
    if !matches!(read, Ok(Ok(n)) if n > 0) || ready.as_bytes() != sandbox::READY {
        let _ = pause.start_kill();
        return Err("the pause process did not set the sandbox up".into());
    }
    let pause_pid = pause
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .ok_or("the pause process exited")?;
    Ok(Sandbox {
        netns,
        ip,
        dir,
        pause,
        pause_pid,
    })
}

/// The pod's address from a CNI ADD result.
fn pod_address(result: &serde_json::Value) -> Result<Ipv4Addr, String> {
    result["ips"]
        .as_array()
        .and_then(|ips| ips.first())
        .and_then(|ip| ip["address"].as_str())
        .and_then(|a| a.split('/').next())
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("the CNI result has no IPv4 address: {result}"))
}

/// Calls the CNI plugin as a container runtime does: `CNI_*` variables and the
/// network configuration on stdin.
async fn cni(
    context: &Context,
    command: &str,
    pod: &Pod,
    uid: &str,
    netns: &str,
) -> Result<serde_json::Value, String> {
    let opts = &context.opts;
    let conf = json!({
        "cniVersion": "1.1.0",
        "name": "cbr0",
        "type": "kubesim",
        "bridge": "cni0",
        "isGateway": true,
        "hairpinMode": true,
        "mtu": opts.mtu,
        "ipam": {
            "type": "host-local",
            "subnet": context.pod_cidr,
            "dataDir": opts.data_dir.join("cni").join("networks"),
        },
    });
    let args = format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={uid};K8S_POD_UID={uid}",
        pod.namespace().unwrap_or_default(),
        pod.name_any()
    );
    let plugin_dir = opts
        .binary
        .parent()
        .unwrap_or(Path::new("/"))
        .display()
        .to_string();
    let mut child = Command::new(&opts.binary)
        .arg("cni")
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", uid)
        .env("CNI_NETNS", netns::path(netns))
        .env("CNI_IFNAME", POD_INTERFACE)
        .env("CNI_ARGS", args)
        .env("CNI_PATH", plugin_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running the CNI plugin: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(conf.to_string().as_bytes())
            .await
            .map_err(|e| e.to_string())?;
    }
    let output = child.wait_with_output().await.map_err(|e| e.to_string())?;
    let reply: serde_json::Value = if output.stdout.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&output.stdout)
            .map_err(|e| format!("CNI {command} printed no JSON: {e}"))?
    };
    if output.status.success() {
        Ok(reply)
    } else {
        Err(format!(
            "CNI {command}: {} (code {})",
            reply["msg"].as_str().unwrap_or("failed"),
            reply["code"]
        ))
    }
}

/// Finishes a graceful deletion: the pod's processes are gone, so the kubelet deletes
/// the object with a grace period of 0.
async fn finish_deletion(context: &Context, pod: &Pod) {
    delete_stopped(context.client.clone(), pod).await;
    let name = pod.name_any();
    let dir = context
        .opts
        .data_dir
        .join("pods")
        .join(pod.uid().unwrap_or_default());
    if let Err(err) = tokio::fs::remove_dir_all(&dir).await {
        if err.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), error = %err, "removing the pod directory");
        }
    }
    tracing::info!(pod = %name, "deleted");
}

/// A Secret's value as an environment variable holds it: its bytes as text.
fn secret_text(value: &k8s_openapi::ByteString) -> String {
    String::from_utf8_lossy(&value.0).into_owned()
}
