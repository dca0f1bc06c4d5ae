//! Scenarios: the labs a learner runs with `kubesim scenario run FILE…`. A scenario is
//! a YAML file naming a cluster (nodes, kube-proxy mode) and a list of steps, each an
//! action (apply a manifest, run kubectl, a command in a pod or a host, wait, send
//! requests, run a background client, read the proxy's rules) with commentary and
//! assertions. The runner ([`run`]) starts a fresh cluster for each scenario, prints
//! every step with its output, and ends with a pass/fail report.
//!
//! This module holds the format and the pure parts: parsing, variable substitution
//! and the evaluation of every assertion. It does not touch the cluster.

mod run;

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context};
use serde::Deserialize;

pub use run::run_files;

/// `kubesim scenario …`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run scenarios, each on a fresh cluster of its own (torn down at the end), and
    /// report which passed; exits non-zero when one failed.
    Run {
        /// Scenario files, e.g. scenarios/labs/01-clusterip-endpoints.yaml.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// Runs the command; the process's exit code.
pub fn main(command: Command) -> i32 {
    let Command::Run { files } = command;
    let result = std::env::current_exe()
        .context("finding the kubesim executable")
        .and_then(|binary| run_files(&files, &binary));
    match result {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(err) => {
            eprintln!("Error: {err:#}");
            1
        }
    }
}

/// The kube-proxy modes a scenario can ask for.
const PROXY_MODES: [&str; 4] = ["iptables", "nftables", "userspace", "ipvs"];

/// A scenario file.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    /// Commentary for the learner, printed before the first step.
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub cluster: ClusterSpec,
    pub steps: Vec<Step>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterSpec {
    #[serde(default = "default_nodes")]
    pub nodes: usize,
    /// One mode, or a list: the scenario then runs once per mode, on a cluster each.
    #[serde(default)]
    pub proxy_mode: OneOrMany,
    /// Install the cluster DNS (CoreDNS behind kube-dns).
    #[serde(default = "default_true")]
    pub dns: bool,
    /// Install the ingress controller (ingress-nginx behind a LoadBalancer Service).
    #[serde(default)]
    pub ingress: bool,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec {
            nodes: default_nodes(),
            proxy_mode: OneOrMany::default(),
            dns: true,
            ingress: false,
        }
    }
}

fn default_nodes() -> usize {
    2
}

fn default_true() -> bool {
    true
}

/// A string or a list of strings.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl Default for OneOrMany {
    fn default() -> Self {
        OneOrMany::One("iptables".into())
    }
}

impl OneOrMany {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(one) => vec![one.clone()],
            OneOrMany::Many(many) => many.clone(),
        }
    }
}

/// One step: commentary, exactly one action, and the assertions on its outcome.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Step {
    /// Commentary printed before the step.
    pub say: Option<String>,
    /// Run the step only in these kube-proxy modes.
    pub when: Option<When>,
    /// Seconds to keep retrying until the assertions hold (waits: until done).
    pub timeout: Option<u64>,
    /// Store the step's stdout (trimmed) as `${NAME}` for later steps.
    pub save: Option<String>,

    pub apply: Option<Apply>,
    pub kubectl: Option<Vec<String>>,
    pub exec: Option<InPod>,
    pub host: Option<OnHost>,
    pub wait: Option<Wait>,
    pub requests: Option<Requests>,
    pub load: Option<Load>,
    pub stop_load: Option<StopLoad>,
    pub rules: Option<Rules>,

    /// `fail` when the command must fail (the default is `succeed`).
    pub expect: Option<Expect>,
    pub exit_code: Option<i32>,
    pub stdout: Option<TextCheck>,
    /// A substring the command's stderr must contain.
    pub stderr: Option<String>,
    pub distinct_backends: Option<usize>,
    pub one_backend: Option<bool>,
    pub all_succeed: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct When {
    pub proxy_mode: OneOrMany,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Expect {
    Succeed,
    Fail,
}

/// An inline manifest, or a file (relative to the working directory or to a parent
/// of the scenario's directory).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Apply {
    Inline(String),
    File { file: PathBuf },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InPod {
    pub pod: String,
    pub command: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OnHost {
    /// node1, node2, …, ext or underlay.
    pub host: String,
    pub command: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Wait {
    /// `deployment/NAME`: until the rollout is complete.
    pub rollout: Option<String>,
    /// A condition type (Ready) that must be True on `for`.
    pub condition: Option<String>,
    #[serde(rename = "for")]
    pub target: Option<String>,
    /// A name the cluster DNS must answer (asked from node 1).
    pub dns: Option<String>,
}

/// Where requests come from: `pod NAME` or `host NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Source {
    Pod(String),
    Host(String),
}

impl TryFrom<String> for Source {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        match text.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["pod", name] => Ok(Source::Pod((*name).to_owned())),
            ["host", name] => Ok(Source::Host((*name).to_owned())),
            _ => Err(format!("{text:?}: expected `pod NAME` or `host NAME`")),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Requests {
    pub from: Source,
    pub url: String,
    #[serde(default = "default_count")]
    pub count: usize,
}

fn default_count() -> usize {
    10
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Load {
    pub from: Source,
    pub url: String,
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StopLoad {
    pub name: String,
    /// How many requests may fail.
    #[serde(default)]
    pub failures: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rules {
    pub node: String,
    /// The iptables table (nat by default); ignored with `nft`.
    pub table: Option<String>,
    /// Read `nft list ruleset` instead of `iptables-save`.
    #[serde(default)]
    pub nft: bool,
    pub contains: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TextCheck {
    /// Substrings that must all appear.
    pub contains: Option<OneOrMany>,
    /// A regular expression that must match the output, trimmed.
    pub matches: Option<String>,
    /// The whole output, trimmed.
    pub equals: Option<String>,
}

/// A step's action, as the runner dispatches on it.
#[derive(Debug)]
pub enum Action<'a> {
    Apply(&'a Apply),
    Kubectl(&'a [String]),
    Exec(&'a InPod),
    Host(&'a OnHost),
    Wait(&'a Wait),
    Requests(&'a Requests),
    Load(&'a Load),
    StopLoad(&'a StopLoad),
    Rules(&'a Rules),
}

impl Step {
    /// The step's one action.
    pub fn action(&self) -> anyhow::Result<Action<'_>> {
        let actions: Vec<Action<'_>> = [
            self.apply.as_ref().map(Action::Apply),
            self.kubectl.as_deref().map(Action::Kubectl),
            self.exec.as_ref().map(Action::Exec),
            self.host.as_ref().map(Action::Host),
            self.wait.as_ref().map(Action::Wait),
            self.requests.as_ref().map(Action::Requests),
            self.load.as_ref().map(Action::Load),
            self.stop_load.as_ref().map(Action::StopLoad),
            self.rules.as_ref().map(Action::Rules),
        ]
        .into_iter()
        .flatten()
        .collect();
        match actions.len() {
            1 => Ok(actions.into_iter().next().context("one action")?),
            0 => bail!(
                "no action (apply, kubectl, exec, host, wait, requests, load, stopLoad or rules)"
            ),
            n => bail!("{n} actions; a step has exactly one"),
        }
    }

    /// Whether the step runs in this kube-proxy mode.
    pub fn runs_in(&self, mode: &str) -> bool {
        self.when
            .as_ref()
            .is_none_or(|w| w.proxy_mode.to_vec().iter().any(|m| m == mode))
    }

    fn validate(&self) -> anyhow::Result<()> {
        let action = self.action()?;
        let command = matches!(
            action,
            Action::Apply(_) | Action::Kubectl(_) | Action::Exec(_) | Action::Host(_)
        );
        let output = self.expect.is_some()
            || self.exit_code.is_some()
            || self.stdout.is_some()
            || self.stderr.is_some();
        if output && !command {
            bail!(
                "expect, exitCode, stdout and stderr check commands (apply, kubectl, exec, host)"
            );
        }
        let responses = self.distinct_backends.is_some()
            || self.one_backend.is_some()
            || self.all_succeed.is_some();
        if responses && !matches!(action, Action::Requests(_)) {
            bail!("distinctBackends, oneBackend and allSucceed check requests");
        }
        // A pattern with variables is checked once they are known.
        if let Some(pattern) = self
            .stdout
            .as_ref()
            .and_then(|c| c.matches.as_deref())
            .filter(|p| !p.contains("${"))
        {
            regex::Regex::new(pattern).with_context(|| format!("stdout.matches {pattern:?}"))?;
        }
        if let Action::Load(load) = action {
            if !matches!(load.from, Source::Host(_)) {
                bail!("load runs from a host (`from: host ext`)");
            }
        }
        if let Action::Wait(wait) = action {
            let kinds = [
                wait.rollout.is_some(),
                wait.condition.is_some() && wait.target.is_some(),
                wait.dns.is_some(),
            ];
            if kinds.iter().filter(|k| **k).count() != 1 {
                bail!("wait for one of: rollout, condition with for, dns");
            }
        }
        Ok(())
    }
}

impl Scenario {
    /// Parses and checks a scenario: every step has one action and assertions that fit it.
    pub fn parse(text: &str) -> anyhow::Result<Scenario> {
        let scenario: Scenario = serde_yaml::from_str(text)?;
        if scenario.cluster.nodes == 0 {
            bail!("cluster.nodes must be at least 1");
        }
        for mode in scenario.cluster.proxy_mode.to_vec() {
            if !PROXY_MODES.contains(&mode.as_str()) {
                bail!(
                    "unknown proxy mode {mode:?} (one of {})",
                    PROXY_MODES.join(", ")
                );
            }
        }
        for (i, step) in scenario.steps.iter().enumerate() {
            step.validate().with_context(|| format!("step {}", i + 1))?;
        }
        Ok(scenario)
    }
}

/// Replaces every `${NAME}` in `text` by its value.
pub fn substitute(text: &str, vars: &BTreeMap<String, String>) -> anyhow::Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .with_context(|| format!("unclosed ${{ in {text:?}"))?;
        let name = &after[..end];
        let value = vars.get(name).with_context(|| {
            let known: Vec<&str> = vars.keys().map(String::as_str).collect();
            format!("unknown variable ${{{name}}} (known: {})", known.join(", "))
        })?;
        out.push_str(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The step with the variables of its output assertions replaced.
pub fn substitute_checks(step: &Step, vars: &BTreeMap<String, String>) -> anyhow::Result<Step> {
    let mut step = step.clone();
    if let Some(check) = &mut step.stdout {
        check.contains = match &check.contains {
            Some(contains) => Some(OneOrMany::Many(
                contains
                    .to_vec()
                    .iter()
                    .map(|c| substitute(c, vars))
                    .collect::<anyhow::Result<_>>()?,
            )),
            None => None,
        };
        check.matches = check
            .matches
            .as_deref()
            .map(|m| substitute(m, vars))
            .transpose()?;
        check.equals = check
            .equals
            .as_deref()
            .map(|e| substitute(e, vars))
            .transpose()?;
    }
    step.stderr = step
        .stderr
        .as_deref()
        .map(|e| substitute(e, vars))
        .transpose()?;
    Ok(step)
}

/// What a command printed and how it ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// What went wrong with a command's outcome; empty when every assertion holds.
pub fn check_output(step: &Step, out: &Output) -> Vec<String> {
    let mut failures = Vec::new();
    match (step.exit_code, step.expect) {
        (Some(code), _) => {
            if out.code != Some(code) {
                failures.push(format!("exit code {code}, got {:?}", out.code));
            }
        }
        (None, Some(Expect::Fail)) => {
            if out.code == Some(0) {
                failures.push("the command to fail, it succeeded".into());
            }
        }
        (None, Some(Expect::Succeed) | None) => {
            if out.code != Some(0) {
                failures.push(format!("the command to succeed, exit code {:?}", out.code));
            }
        }
    }
    if let Some(check) = &step.stdout {
        failures.extend(check_text("stdout", check, &out.stdout));
    }
    if let Some(want) = &step.stderr {
        if !out.stderr.contains(want.as_str()) {
            failures.push(format!("stderr containing {want:?}"));
        }
    }
    failures
}

/// The failures of one text check.
pub fn check_text(what: &str, check: &TextCheck, text: &str) -> Vec<String> {
    let mut failures = Vec::new();
    for want in check.contains.iter().flat_map(OneOrMany::to_vec) {
        if !text.contains(&want) {
            failures.push(format!("{what} containing {want:?}"));
        }
    }
    if let Some(pattern) = &check.matches {
        match regex::Regex::new(pattern) {
            Ok(re) if re.is_match(text.trim()) => {}
            Ok(_) => failures.push(format!("{what} matching /{pattern}/")),
            Err(err) => failures.push(format!("a valid pattern /{pattern}/: {err}")),
        }
    }
    if let Some(want) = &check.equals {
        if text.trim() != want.trim() {
            failures.push(format!("{what} equal to {want:?}"));
        }
    }
    failures
}

/// Written by curl after each response body (`-w`), so bodies and codes can be told
/// apart in one stream.
pub const RESPONSE_MARK: &str = "\n@@%{http_code}@@\n";

/// One answer: its HTTP status (0 when there was none) and its body, trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

impl Response {
    pub fn succeeded(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Splits the output of repeated `curl -w RESPONSE_MARK` into responses.
pub fn parse_responses(text: &str) -> Vec<Response> {
    let mut responses = Vec::new();
    let mut body = Vec::new();
    for line in text.lines() {
        let status = line
            .strip_prefix("@@")
            .and_then(|l| l.strip_suffix("@@"))
            .and_then(|code| code.parse::<u16>().ok());
        match status {
            Some(status) => responses.push(Response {
                status,
                body: std::mem::take(&mut body).join("\n").trim().to_owned(),
            }),
            None => body.push(line),
        }
    }
    responses
}

/// What went wrong with a batch of responses; empty when every assertion holds.
pub fn check_responses(step: &Step, expected: usize, responses: &[Response]) -> Vec<String> {
    let mut failures = Vec::new();
    if responses.len() != expected {
        failures.push(format!("{expected} responses, got {}", responses.len()));
    }
    let backends = backends(responses);
    if step.all_succeed == Some(true) {
        let failed = responses.iter().filter(|r| !r.succeeded()).count();
        if failed > 0 {
            failures.push(format!(
                "every request to succeed, {failed} of {} failed",
                responses.len()
            ));
        }
    }
    if let Some(want) = step.distinct_backends {
        if backends.len() != want {
            failures.push(format!(
                "{want} distinct backends, got {}: {}",
                backends.len(),
                summary(&backends)
            ));
        }
    }
    if step.one_backend == Some(true) && backends.len() != 1 {
        failures.push(format!(
            "one backend, got {}: {}",
            backends.len(),
            summary(&backends)
        ));
    }
    failures
}

/// How many successful answers each backend (body) gave.
pub fn backends(responses: &[Response]) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for response in responses.iter().filter(|r| r.succeeded()) {
        *seen.entry(response.body.clone()).or_insert(0) += 1;
    }
    seen
}

/// `name ×count, …`.
pub fn summary(backends: &BTreeMap<String, usize>) -> String {
    if backends.is_empty() {
        return "none".into();
    }
    backends
        .iter()
        .map(|(name, n)| format!("{name} ×{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The requests a background client made and the ones that failed (status not 2xx),
/// from one status code a line.
pub fn load_results(codes: &str) -> (usize, Vec<String>) {
    let codes: Vec<&str> = codes
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let failed = codes
        .iter()
        .filter(|c| !c.starts_with('2'))
        .map(|c| (*c).to_owned())
        .collect();
    (codes.len(), failed)
}

/// What went wrong with a background client's results.
pub fn check_load(allowed: usize, codes: &str) -> Vec<String> {
    let (total, failed) = load_results(codes);
    let mut failures = Vec::new();
    if total == 0 {
        failures.push("the client to have made requests, it made none".into());
    }
    if failed.len() > allowed {
        failures.push(format!(
            "at most {allowed} failed requests, {} of {total} failed: {failed:?}",
            failed.len()
        ));
    }
    failures
}

/// The rule fragments missing from a ruleset.
pub fn check_rules(ruleset: &str, contains: &[String]) -> Vec<String> {
    contains
        .iter()
        .filter(|want| !ruleset.contains(want.as_str()))
        .map(|want| format!("a rule containing {want:?}"))
        .collect()
}

#[cfg(test)]
mod tests;
