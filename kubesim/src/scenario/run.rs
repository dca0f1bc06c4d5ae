//! The runner: a fresh cluster per scenario (and per kube-proxy mode), the steps in
//! order with their commentary and output, and a report. The cluster is torn down when
//! the run ends, whatever happened.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::{
    check_load, check_output, check_responses, check_rules, parse_responses, Action, Apply, Output,
    Scenario, Source, Step, RESPONSE_MARK,
};
use crate::cluster::{Cluster, Spec};

/// How long a step with assertions is retried, unless it says otherwise.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a wait waits, unless it says otherwise.
const DEFAULT_WAIT: Duration = Duration::from_secs(120);
/// The longest any one command may run.
const COMMAND_LIMIT: &str = "90";
/// The most output lines shown for a step.
const SHOWN_LINES: usize = 40;
const KUBE_DNS: &str = "10.96.0.10";

/// Runs every scenario of `files` and prints a report; whether all passed.
pub fn run_files(files: &[PathBuf], binary: &Path) -> anyhow::Result<bool> {
    let mut results = Vec::new();
    for file in files {
        let text =
            fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let scenario =
            Scenario::parse(&text).with_context(|| format!("parsing {}", file.display()))?;
        for mode in scenario.cluster.proxy_mode.to_vec() {
            let started = Instant::now();
            let outcome = run_one(&scenario, file, &mode, binary);
            results.push((scenario.name.clone(), mode, outcome, started.elapsed()));
        }
    }
    println!("\n══ report ══");
    let mut all = true;
    for (name, mode, outcome, took) in &results {
        let took = took.as_secs_f64();
        match outcome {
            Ok(steps) => println!("PASS  {name} [{mode}]: {steps} steps ({took:.0}s)"),
            Err(err) => {
                all = false;
                println!("FAIL  {name} [{mode}] ({took:.0}s): {err:#}");
                if let Some(failure) = err.downcast_ref::<Failure>() {
                    failure.evidence.print();
                    for expected in &failure.evidence.failures {
                        println!("  expected: {expected}");
                    }
                }
            }
        }
    }
    Ok(all)
}

/// A step that did not hold, with its evidence.
#[derive(Debug)]
struct Failure {
    step: usize,
    title: String,
    evidence: Evidence,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "step {} failed: {}", self.step, self.title)
    }
}

impl std::error::Error for Failure {}

/// What a step ran and saw, and what it expected that did not hold.
#[derive(Debug, Default)]
struct Evidence {
    command: String,
    output: Output,
    /// Extra lines for the learner (e.g. which backend answered how often).
    notes: Vec<String>,
    failures: Vec<String>,
}

impl Evidence {
    fn print(&self) {
        if !self.command.is_empty() {
            println!("  $ {}", self.command);
        }
        for line in shown(&self.output.stdout) {
            println!("  │ {line}");
        }
        for line in shown(&self.output.stderr) {
            println!("  ! {line}");
        }
        for note in &self.notes {
            println!("  → {note}");
        }
    }
}

fn shown(text: &str) -> Vec<&str> {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    if lines.len() <= SHOWN_LINES {
        return lines;
    }
    let mut head = lines[..SHOWN_LINES].to_vec();
    head.push("…");
    head
}

/// A background client.
struct Hammer {
    child: Child,
    stop: PathBuf,
    codes: PathBuf,
}

impl Hammer {
    fn finish(mut self) -> anyhow::Result<String> {
        fs::write(&self.stop, "")?;
        self.child.wait()?;
        Ok(fs::read_to_string(&self.codes)?)
    }
}

struct Run<'a> {
    /// Dropped first: the cluster goes before its data directory.
    cluster: Cluster,
    dir: tempfile::TempDir,
    file: &'a Path,
    vars: BTreeMap<String, String>,
    loads: HashMap<String, Hammer>,
}

/// Runs one scenario in one proxy mode; the number of steps run, or the failure.
fn run_one(scenario: &Scenario, file: &Path, mode: &str, binary: &Path) -> anyhow::Result<usize> {
    println!("\n══ {} [{} mode] ══", scenario.name, mode);
    for line in scenario.description.trim().lines() {
        println!("  {line}");
    }
    let dir = tempfile::Builder::new()
        .prefix("kubesim-scenario")
        .tempdir()?;
    let name = unique_name();
    println!(
        "\nStarting cluster {name}: {} nodes, kube-proxy in {mode} mode …",
        scenario.cluster.nodes
    );
    let cluster = Cluster::up(Spec {
        name: name.clone(),
        nodes: scenario.cluster.nodes,
        data_dir: dir.path().join("cluster"),
        binary: binary.to_owned(),
        proxy_flags: vec!["--proxy-mode".into(), mode.into()],
        controller_flags: Vec::new(),
        dns: scenario.cluster.dns,
        ingress: scenario.cluster.ingress,
    })
    .context("starting the cluster")?;
    let mut vars = BTreeMap::new();
    vars.insert("cluster".to_owned(), name.clone());
    vars.insert("proxyMode".to_owned(), mode.to_owned());
    for i in 1..=scenario.cluster.nodes {
        vars.insert(format!("node{i}"), cluster.node_name(i)?);
        let ip = cluster.topology()?.node_ip(i).context("node exists")?;
        vars.insert(format!("node{i}.ip"), ip.to_string());
    }
    vars.insert(
        "ext.ip".to_owned(),
        cluster.topology()?.external_ip().to_string(),
    );
    let mut run = Run {
        cluster,
        dir,
        file,
        vars,
        loads: HashMap::new(),
    };
    let result = run.steps(scenario, mode);
    for (_, hammer) in run.loads.drain() {
        let _ = hammer.finish();
    }
    if result.is_err() {
        println!(
            "\n(the cluster's logs are summarised below)\n{}",
            tail(&run.cluster.logs(), 60)
        );
    }
    drop(run);
    result
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A cluster name no other run uses: `s` and seven base-36 digits.
fn unique_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut n = u64::from(std::process::id()) * 1_000_000_007 + u64::from(nanos);
    let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut name = String::from("s");
    for _ in 0..7 {
        name.push(char::from(digits[(n % 36) as usize]));
        n /= 36;
    }
    name
}

impl Run<'_> {
    fn steps(&mut self, scenario: &Scenario, mode: &str) -> anyhow::Result<usize> {
        let mut ran = 0;
        for (i, step) in scenario.steps.iter().enumerate() {
            let number = i + 1;
            if !step.runs_in(mode) {
                continue;
            }
            ran += 1;
            if let Some(say) = &step.say {
                println!();
                for line in say.trim().lines() {
                    println!("  {line}");
                }
            }
            let title = self.title(step)?;
            println!("▶ step {number}: {title}");
            std::io::stdout().flush()?;
            let evidence = self.step(step)?;
            evidence.print();
            if evidence.failures.is_empty() {
                println!("  ✔ ok");
                if let Some(var) = &step.save {
                    self.vars
                        .insert(var.clone(), evidence.output.stdout.trim().to_owned());
                }
                continue;
            }
            println!("  ✘ expected:");
            for failure in &evidence.failures {
                println!("    - {failure}");
            }
            return Err(Failure {
                step: number,
                title,
                evidence,
            }
            .into());
        }
        Ok(ran)
    }

    fn subst(&self, text: &str) -> anyhow::Result<String> {
        super::substitute(text, &self.vars)
    }

    fn subst_all(&self, args: &[String]) -> anyhow::Result<Vec<String>> {
        args.iter().map(|a| self.subst(a)).collect()
    }

    /// One line saying what the step does.
    fn title(&self, step: &Step) -> anyhow::Result<String> {
        Ok(match step.action()? {
            Action::Apply(Apply::File { file }) => format!("apply {}", file.display()),
            Action::Apply(Apply::Inline(_)) => "apply a manifest".into(),
            Action::Kubectl(args) => format!("kubectl {}", self.subst_all(args)?.join(" ")),
            Action::Exec(e) => format!(
                "in pod {}: {}",
                e.pod,
                self.subst_all(&e.command)?.join(" ")
            ),
            Action::Host(h) => format!(
                "on host {}: {}",
                h.host,
                self.subst_all(&h.command)?.join(" ")
            ),
            Action::Wait(w) => match (&w.rollout, &w.condition, &w.target, &w.dns) {
                (Some(r), _, _, _) => format!("wait for the rollout of {r}"),
                (_, Some(c), Some(t), _) => format!("wait until {t} is {c}"),
                (_, _, _, Some(d)) => format!("wait until the cluster DNS answers {d}"),
                _ => "wait".into(),
            },
            Action::Requests(r) => format!(
                "{} requests from {} to {}",
                r.count,
                source(&r.from),
                self.subst(&r.url)?
            ),
            Action::Load(l) => format!(
                "start client {} from {} on {}",
                l.name,
                source(&l.from),
                self.subst(&l.url)?
            ),
            Action::StopLoad(s) => format!("stop client {}", s.name),
            Action::Rules(r) if r.nft => format!("nft rules on {}", r.node),
            Action::Rules(r) => format!(
                "iptables rules ({} table) on {}",
                r.table.as_deref().unwrap_or("nat"),
                r.node
            ),
        })
    }

    fn netns(&self, host: &str) -> String {
        format!("{}-{host}", self.cluster.name())
    }

    fn kubectl(&self, args: &[String]) -> Command {
        let mut cmd = limited("kubectl");
        cmd.env("KUBECONFIG", self.cluster.kubeconfig()).args(args);
        cmd
    }

    fn on_host(&self, host: &str, argv: &[String]) -> Command {
        let mut cmd = limited("ip");
        cmd.args(["netns", "exec", &self.netns(host)]).args(argv);
        cmd
    }

    fn from(&self, source: &Source, argv: &[String]) -> Command {
        match source {
            Source::Pod(pod) => {
                let mut args = vec!["exec".to_owned(), pod.clone(), "--".to_owned()];
                args.extend_from_slice(argv);
                self.kubectl(&args)
            }
            Source::Host(host) => self.on_host(host, argv),
        }
    }

    fn step(&mut self, step: &Step) -> anyhow::Result<Evidence> {
        let step = &super::substitute_checks(step, &self.vars)?;
        let timeout = step.timeout.map(Duration::from_secs);
        match step.action()? {
            Action::Apply(apply) => {
                let text = match apply {
                    Apply::Inline(text) => text.clone(),
                    Apply::File { file } => {
                        let path = self.resolve(file)?;
                        fs::read_to_string(&path)
                            .with_context(|| format!("reading {}", path.display()))?
                    }
                };
                let manifest = self.dir.path().join("manifest.yaml");
                fs::write(&manifest, self.subst(&text)?)?;
                let args = vec![
                    "apply".to_owned(),
                    "-f".to_owned(),
                    manifest.display().to_string(),
                ];
                let shown = match apply {
                    Apply::File { file } => format!("kubectl apply -f {}", file.display()),
                    Apply::Inline(_) => {
                        for line in text.trim().lines() {
                            println!("  ┊ {line}");
                        }
                        "kubectl apply -f -".into()
                    }
                };
                self.retry(step, timeout, || {
                    let mut evidence = run(&mut self.kubectl(&args))?;
                    evidence.command = shown.clone();
                    Ok(evidence)
                })
            }
            Action::Kubectl(args) => {
                let args = self.subst_all(args)?;
                self.retry(step, timeout, || run(&mut self.kubectl(&args)))
            }
            Action::Exec(e) => {
                let source = Source::Pod(e.pod.clone());
                let argv = self.subst_all(&e.command)?;
                self.retry(step, timeout, || run(&mut self.from(&source, &argv)))
            }
            Action::Host(h) => {
                let argv = self.subst_all(&h.command)?;
                self.retry(step, timeout, || run(&mut self.on_host(&h.host, &argv)))
            }
            Action::Wait(wait) => self.wait(wait, timeout.unwrap_or(DEFAULT_WAIT)),
            Action::Requests(requests) => {
                let url = self.subst(&requests.url)?;
                let script = format!(
                    "for i in $(seq {}); do curl -s -m 2 -w '{RESPONSE_MARK}' '{url}'; done",
                    requests.count
                );
                let argv = vec!["sh".to_owned(), "-c".to_owned(), script];
                self.retry(step, timeout, || {
                    let mut evidence = run(&mut self.from(&requests.from, &argv))?;
                    let responses = parse_responses(&evidence.output.stdout);
                    let backends = super::backends(&responses);
                    let ok = responses.iter().filter(|r| r.succeeded()).count();
                    evidence.command = format!(
                        "{} × curl {url} from {}",
                        requests.count,
                        source(&requests.from)
                    );
                    evidence.output.stdout.clear();
                    evidence.notes.push(format!(
                        "{ok} of {} answered; by backend: {}",
                        responses.len(),
                        super::summary(&backends)
                    ));
                    evidence.failures = check_responses(step, requests.count, &responses);
                    Ok(evidence)
                })
            }
            Action::Load(load) => {
                if self.loads.contains_key(&load.name) {
                    bail!("client {} is already running", load.name);
                }
                let Source::Host(host) = &load.from else {
                    bail!("load runs from a host");
                };
                let url = self.subst(&load.url)?;
                let stop = self.dir.path().join(format!("{}.stop", load.name));
                let codes = self.dir.path().join(format!("{}.codes", load.name));
                let script = format!(
                    "while [ ! -e '{}' ]; do curl -s -o /dev/null -w '%{{http_code}}\\n' -m 2 '{url}'; done",
                    stop.display()
                );
                let child = Command::new("ip")
                    .args(["netns", "exec", &self.netns(host), "sh", "-c", &script])
                    .stdout(fs::File::create(&codes)?)
                    .stderr(Stdio::null())
                    .spawn()
                    .context("starting the client")?;
                self.loads
                    .insert(load.name.clone(), Hammer { child, stop, codes });
                Ok(Evidence {
                    notes: vec![format!(
                        "client {} sends one request at a time until stopped",
                        load.name
                    )],
                    ..Evidence::default()
                })
            }
            Action::StopLoad(stop) => {
                let hammer = self
                    .loads
                    .remove(&stop.name)
                    .with_context(|| format!("no client {} is running", stop.name))?;
                let codes = hammer.finish()?;
                let (total, failed) = super::load_results(&codes);
                Ok(Evidence {
                    notes: vec![format!(
                        "{total} requests, {} failed{}",
                        failed.len(),
                        if failed.is_empty() {
                            String::new()
                        } else {
                            format!(" (codes {failed:?})")
                        }
                    )],
                    failures: check_load(stop.failures, &codes),
                    ..Evidence::default()
                })
            }
            Action::Rules(rules) => {
                let argv: Vec<String> = if rules.nft {
                    vec!["nft".into(), "list".into(), "ruleset".into()]
                } else {
                    vec![
                        "iptables-save".into(),
                        "-t".into(),
                        rules.table.clone().unwrap_or_else(|| "nat".into()),
                    ]
                };
                let contains = self.subst_all(&rules.contains)?;
                self.retry(step, timeout, || {
                    let mut evidence = run(&mut self.on_host(&rules.node, &argv))?;
                    evidence.failures = check_rules(&evidence.output.stdout, &contains);
                    evidence.output.stdout = relevant(&evidence.output.stdout, &contains);
                    Ok(evidence)
                })
            }
        }
    }

    /// Runs `attempt` until its evidence has no failure (command steps: also checked
    /// against the step's output assertions) or the timeout passes.
    fn retry(
        &self,
        step: &Step,
        timeout: Option<Duration>,
        mut attempt: impl FnMut() -> anyhow::Result<Evidence>,
    ) -> anyhow::Result<Evidence> {
        let deadline = Instant::now() + timeout.unwrap_or(DEFAULT_TIMEOUT);
        let command = matches!(
            step.action()?,
            Action::Apply(_) | Action::Kubectl(_) | Action::Exec(_) | Action::Host(_)
        );
        loop {
            let mut evidence = attempt()?;
            if command {
                evidence.failures = check_output(step, &evidence.output);
            }
            if evidence.failures.is_empty() || Instant::now() > deadline {
                return Ok(evidence);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn wait(&self, wait: &super::Wait, timeout: Duration) -> anyhow::Result<Evidence> {
        if let Some(rollout) = &wait.rollout {
            let args = vec![
                "rollout".to_owned(),
                "status".to_owned(),
                self.subst(rollout)?,
                format!("--timeout={}s", timeout.as_secs()),
            ];
            let mut evidence = run(&mut self.kubectl(&args))?;
            if evidence.output.code != Some(0) {
                evidence
                    .failures
                    .push(format!("the rollout of {rollout} to complete"));
            }
            return Ok(evidence);
        }
        let deadline = Instant::now() + timeout;
        let (cmd, want): (Box<dyn Fn() -> Command + '_>, String) =
            match (&wait.condition, &wait.target, &wait.dns) {
                (Some(condition), Some(target), _) => {
                    let args = vec![
                        "get".to_owned(),
                        self.subst(target)?,
                        "-o".to_owned(),
                        format!(
                            "jsonpath={{.status.conditions[?(@.type==\"{condition}\")].status}}"
                        ),
                    ];
                    (
                        Box::new(move || self.kubectl(&args)),
                        format!("{target} to be {condition}"),
                    )
                }
                (_, _, Some(name)) => {
                    let argv = vec![
                        "dig".to_owned(),
                        "+short".to_owned(),
                        "+time=1".to_owned(),
                        "+tries=1".to_owned(),
                        format!("@{KUBE_DNS}"),
                        self.subst(name)?,
                    ];
                    (
                        Box::new(move || self.on_host("node1", &argv)),
                        format!("an answer for {name}"),
                    )
                }
                _ => bail!("nothing to wait for"),
            };
        let dns = wait.dns.is_some();
        loop {
            let mut evidence = run(&mut cmd())?;
            let out = evidence.output.stdout.trim();
            let done = if dns {
                evidence.output.code == Some(0) && !out.is_empty()
            } else {
                out == "True"
            };
            if done {
                return Ok(evidence);
            }
            if Instant::now() > deadline {
                evidence
                    .failures
                    .push(format!("{want} within {}s", timeout.as_secs()));
                return Ok(evidence);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// A manifest file, relative to the working directory or to the scenario file's
    /// directory or one of its parents.
    fn resolve(&self, file: &Path) -> anyhow::Result<PathBuf> {
        if file.is_absolute() || file.exists() {
            return Ok(file.to_owned());
        }
        let dir = self.file.parent().unwrap_or(Path::new("."));
        dir.ancestors()
            .map(|d| d.join(file))
            .find(|p| p.exists())
            .with_context(|| format!("no file {} here or above {}", file.display(), dir.display()))
    }
}

/// The rule lines worth showing: those with a wanted fragment (all when none has).
fn relevant(ruleset: &str, contains: &[String]) -> String {
    let lines: Vec<&str> = ruleset
        .lines()
        .filter(|l| contains.iter().any(|c| l.contains(c.as_str())))
        .collect();
    if lines.is_empty() {
        ruleset.to_owned()
    } else {
        lines.join("\n")
    }
}

fn source(source: &Source) -> String {
    match source {
        Source::Pod(p) => format!("pod {p}"),
        Source::Host(h) => format!("host {h}"),
    }
}

/// A command killed when it runs longer than [`COMMAND_LIMIT`] seconds.
fn limited(program: &str) -> Command {
    let mut cmd = Command::new("timeout");
    cmd.args(["--kill-after=5", COMMAND_LIMIT, program]);
    cmd
}

/// Runs a command to its end and keeps what it printed.
fn run(cmd: &mut Command) -> anyhow::Result<Evidence> {
    let shown = {
        let mut args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        // Leave out the time limit's own arguments.
        if cmd.get_program() == "timeout" {
            args.drain(..2);
        }
        args.iter()
            .map(|a| {
                if a.contains(' ') || a.is_empty() {
                    format!("'{a}'")
                } else {
                    a.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {shown}"))?;
    Ok(Evidence {
        command: shown,
        output: Output {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        },
        ..Evidence::default()
    })
}
