use super::*;

const FULL: &str = r#"
name: everything
description: every action once
cluster: {nodes: 3, proxyMode: [iptables, nftables]}
steps:
- say: an inline manifest
  apply: |
    apiVersion: v1
    kind: Pod
    metadata: {name: client}
- apply: {file: scenarios/manifests/002-nodeport-out-of-range.yaml}
  expect: fail
  stderr: "provided port is not in the valid range"
- kubectl: [get, svc, web, -o, "jsonpath={.spec.clusterIP}"]
  save: ip
- exec: {pod: client, command: [curl, -s, "http://${ip}/hostname"]}
  stdout: {matches: "^web-"}
- host: {host: ext, command: [curl, -s, "http://${node1.ip}:30000/"]}
  exitCode: 0
  stdout: {contains: [nginx, Welcome]}
- wait: {rollout: deployment/web}
  timeout: 60
- wait: {condition: Ready, for: pod/client}
- wait: {dns: web.default.svc.cluster.local}
- requests: {from: pod client, url: "http://web/hostname", count: 30}
  distinctBackends: 3
  allSucceed: true
- load: {from: host ext, url: "http://${node1.ip}:30000/", name: hammer}
- stopLoad: {name: hammer, failures: 0}
- rules: {node: node1, table: nat, contains: [KUBE-SERVICES]}
  when: {proxyMode: iptables}
- rules: {node: node1, nft: true, contains: [kube-proxy]}
  when: {proxyMode: nftables}
"#;

#[test]
fn parses_every_action() {
    let scenario = Scenario::parse(FULL).expect("parses");
    assert_eq!(scenario.name, "everything");
    assert_eq!(scenario.cluster.nodes, 3);
    assert!(scenario.cluster.dns);
    assert_eq!(
        scenario.cluster.proxy_mode.to_vec(),
        vec!["iptables", "nftables"]
    );
    let kinds: Vec<&str> = scenario
        .steps
        .iter()
        .map(|s| match s.action().expect("one action") {
            Action::Apply(Apply::Inline(_)) => "inline",
            Action::Apply(Apply::File { .. }) => "file",
            Action::Kubectl(_) => "kubectl",
            Action::Exec(_) => "exec",
            Action::Host(_) => "host",
            Action::Wait(_) => "wait",
            Action::Requests(_) => "requests",
            Action::Load(_) => "load",
            Action::StopLoad(_) => "stopLoad",
            Action::Rules(_) => "rules",
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "inline", "file", "kubectl", "exec", "host", "wait", "wait", "wait", "requests",
            "load", "stopLoad", "rules", "rules"
        ]
    );
    assert_eq!(scenario.steps[0].say.as_deref(), Some("an inline manifest"));
    assert_eq!(scenario.steps[1].expect, Some(Expect::Fail));
    let Some(requests) = &scenario.steps[8].requests else {
        panic!("requests")
    };
    assert_eq!(requests.from, Source::Pod("client".into()));
    assert_eq!(requests.count, 30);
    assert!(scenario.steps[11].runs_in("iptables"));
    assert!(!scenario.steps[11].runs_in("nftables"));
    assert!(scenario.steps[2].runs_in("userspace"));
}

#[test]
fn defaults_are_two_nodes_in_iptables_mode_with_dns() {
    let scenario = Scenario::parse("name: x\nsteps: []\n").expect("parses");
    assert_eq!(scenario.cluster.nodes, 2);
    assert_eq!(scenario.cluster.proxy_mode.to_vec(), vec!["iptables"]);
    assert!(scenario.cluster.dns);
}

fn parse_error(text: &str) -> String {
    format!("{:#}", Scenario::parse(text).expect_err("must not parse"))
}

#[test]
fn rejects_malformed_scenarios() {
    let two = "name: x\nsteps:\n- {kubectl: [get, pods], exec: {pod: a, command: [true]}}\n";
    assert!(
        parse_error(two).contains("step 1: 2 actions"),
        "{}",
        parse_error(two)
    );
    let none = "name: x\nsteps:\n- say: hello\n";
    assert!(parse_error(none).contains("step 1: no action"));
    let typo = "name: x\nsteps:\n- kubectl: [get]\n  stdot: {contains: a}\n";
    assert!(parse_error(typo).contains("unknown field `stdot`"));
    let misplaced = "name: x\nsteps:\n- kubectl: [get]\n  distinctBackends: 3\n";
    assert!(parse_error(misplaced).contains("check requests"));
    let mode = "name: x\ncluster: {proxyMode: ebpf}\nsteps: []\n";
    assert!(parse_error(mode).contains("unknown proxy mode \"ebpf\""));
    let source = "name: x\nsteps:\n- requests: {from: node1, url: http://a}\n";
    assert!(parse_error(source).contains("expected `pod NAME` or `host NAME`"));
    let load = "name: x\nsteps:\n- load: {from: pod a, url: http://a, name: l}\n";
    assert!(parse_error(load).contains("load runs from a host"));
    let pattern = "name: x\nsteps:\n- kubectl: [get]\n  stdout: {matches: \"(\"}\n";
    assert!(parse_error(pattern).contains("stdout.matches"));
    let wait = "name: x\nsteps:\n- wait: {condition: Ready}\n";
    assert!(parse_error(wait).contains("wait for one of"));
}

#[test]
fn substitutes_variables() {
    let vars: BTreeMap<String, String> = [("ip", "10.96.0.1"), ("node1.ip", "192.168.1.11")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert_eq!(
        substitute("http://${ip}:80 and ${node1.ip}", &vars).expect("known"),
        "http://10.96.0.1:80 and 192.168.1.11"
    );
    assert_eq!(
        substitute("no vars $HOME", &vars).expect("none"),
        "no vars $HOME"
    );
    let err = format!("{:#}", substitute("${nope}", &vars).expect_err("unknown"));
    assert!(err.contains("unknown variable ${nope}"), "{err}");
    assert!(substitute("${ip", &vars).is_err());
    let checked = substitute_checks(
        &step("{kubectl: [get], stdout: {equals: '${ip}', matches: '^${ip}$', contains: '${ip}'}, stderr: '${ip}'}"),
        &vars,
    )
    .expect("known");
    let stdout = checked.stdout.expect("stdout");
    assert_eq!(stdout.equals.as_deref(), Some("10.96.0.1"));
    assert_eq!(stdout.matches.as_deref(), Some("^10.96.0.1$"));
    assert_eq!(
        stdout.contains,
        Some(OneOrMany::Many(vec!["10.96.0.1".into()]))
    );
    assert_eq!(checked.stderr.as_deref(), Some("10.96.0.1"));
}

fn step(yaml: &str) -> Step {
    serde_yaml::from_str(yaml).expect("a step")
}

fn output(code: i32, stdout: &str, stderr: &str) -> Output {
    Output {
        code: Some(code),
        stdout: stdout.into(),
        stderr: stderr.into(),
    }
}

#[test]
fn a_command_must_succeed_unless_told_otherwise() {
    let plain = step("kubectl: [get]");
    assert!(check_output(&plain, &output(0, "", "")).is_empty());
    assert_eq!(
        check_output(&plain, &output(1, "", "")),
        ["the command to succeed, exit code Some(1)"]
    );
    let fail = step("{kubectl: [get], expect: fail, stderr: out of range}");
    assert!(check_output(&fail, &output(1, "", "value is out of range")).is_empty());
    assert_eq!(
        check_output(&fail, &output(0, "", "")),
        [
            "the command to fail, it succeeded",
            "stderr containing \"out of range\""
        ]
    );
    let code = step("{host: {host: ext, command: [curl]}, exitCode: 28}");
    assert!(check_output(&code, &output(28, "", "")).is_empty());
    assert_eq!(
        check_output(&code, &output(0, "", "")),
        ["exit code 28, got Some(0)"]
    );
}

#[test]
fn stdout_contains_matches_and_equals() {
    let contains = step("{kubectl: [get], stdout: {contains: [a, b]}}");
    assert!(check_output(&contains, &output(0, "b a", "")).is_empty());
    assert_eq!(
        check_output(&contains, &output(0, "a", "")),
        ["stdout containing \"b\""]
    );
    let matches = step(r#"{kubectl: [get], stdout: {matches: '^10\.244\.\d+\.\d+$'}}"#);
    assert!(check_output(&matches, &output(0, "10.244.1.7", "")).is_empty());
    assert_eq!(check_output(&matches, &output(0, "10.96.0.1", "")).len(), 1);
    let equals = step("{kubectl: [get], stdout: {equals: web-1}}");
    assert!(check_output(&equals, &output(0, "web-1\n", "")).is_empty());
    assert_eq!(
        check_output(&equals, &output(0, "web-2", "")),
        ["stdout equal to \"web-1\""]
    );
}

fn answers(bodies: &[(u16, &str)]) -> String {
    bodies
        .iter()
        .map(|(code, body)| {
            format!(
                "{body}{}",
                RESPONSE_MARK.replace("%{http_code}", &format!("{code:03}"))
            )
        })
        .collect()
}

#[test]
fn parses_curl_responses() {
    let text = answers(&[(200, "web-a"), (0, ""), (200, "<html>\n<p>hi</p>\n</html>")]);
    assert_eq!(
        parse_responses(&text),
        [
            Response {
                status: 200,
                body: "web-a".into()
            },
            Response {
                status: 0,
                body: String::new()
            },
            Response {
                status: 200,
                body: "<html>\n<p>hi</p>\n</html>".into()
            },
        ]
    );
}

#[test]
fn counts_distinct_backends() {
    let three = parse_responses(&answers(&[
        (200, "web-a"),
        (200, "web-b"),
        (200, "web-c"),
        (200, "web-a"),
    ]));
    let want3 =
        step("{requests: {from: pod c, url: u, count: 4}, distinctBackends: 3, allSucceed: true}");
    assert!(check_responses(&want3, 4, &three).is_empty());
    let want4 = step("{requests: {from: pod c, url: u, count: 4}, distinctBackends: 4}");
    assert_eq!(
        check_responses(&want4, 4, &three),
        ["4 distinct backends, got 3: web-a ×2, web-b ×1, web-c ×1"]
    );
    let one = step("{requests: {from: pod c, url: u, count: 4}, oneBackend: true}");
    assert_eq!(
        check_responses(&one, 4, &three),
        ["one backend, got 3: web-a ×2, web-b ×1, web-c ×1"]
    );
    let sticky = parse_responses(&answers(&[(200, "web-b"), (200, "web-b")]));
    assert!(check_responses(&one, 2, &sticky).is_empty());
}

#[test]
fn every_request_must_succeed_and_come_back() {
    let all = step("{requests: {from: host ext, url: u, count: 3}, allSucceed: true}");
    let some_failed = parse_responses(&answers(&[(200, "a"), (0, ""), (503, "busy")]));
    assert_eq!(
        check_responses(&all, 3, &some_failed),
        ["every request to succeed, 2 of 3 failed"]
    );
    let short = parse_responses(&answers(&[(200, "a")]));
    assert_eq!(check_responses(&all, 3, &short), ["3 responses, got 1"]);
    assert_eq!(backends(&some_failed).len(), 1, "failures are no backend");
}

#[test]
fn a_background_client_must_not_fail() {
    assert_eq!(
        load_results("200\n200\n000\n\n"),
        (3, vec!["000".to_owned()])
    );
    assert!(check_load(0, "200\n200\n").is_empty());
    assert_eq!(
        check_load(0, "200\n502\n"),
        ["at most 0 failed requests, 1 of 2 failed: [\"502\"]"]
    );
    assert!(check_load(1, "200\n502\n").is_empty());
    assert_eq!(
        check_load(0, ""),
        ["the client to have made requests, it made none"]
    );
}

#[test]
fn rules_must_contain_every_fragment() {
    let nat = "-A KUBE-SERVICES -d 10.96.0.20/32 -p tcp -j KUBE-SVC-ABC\n-A KUBE-NODEPORTS -p tcp --dport 30000 -j KUBE-EXT-ABC\n";
    let want = vec!["KUBE-SVC-".to_owned(), "--dport 30000".to_owned()];
    assert!(check_rules(nat, &want).is_empty());
    let want = vec!["KUBE-SVC-".to_owned(), "statistic".to_owned()];
    assert_eq!(check_rules(nat, &want), ["a rule containing \"statistic\""]);
}
