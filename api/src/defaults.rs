//! Defaulting as the real apiserver applies it on create and update: the `SetDefaults_*`
//! functions of k8s.io/kubernetes `pkg/apis/{core,apps,networking,discovery}/v1`, the
//! generated walkers that reach every nested pod spec, container, probe and port, the
//! few registry steps that behave like defaults (service IP families, the namespace
//! finalizer), and the one conversion that changes what is stored (a Secret's
//! `stringData` folded into `data`), rewritten over `serde_json::Value`.
//!
//! A field is defaulted only where Go would decode it as unset: an absent or `null` pointer,
//! slice or map, and additionally `""` for Go strings and `0` for Go integers. A value of
//! the wrong JSON type is left as it is for validation to report.
//!
//! **Invariant:** defaulting is idempotent (twice equals once) and never panics.
//!
//! Not here: cluster IP and node port allocation, pod and workload status set by registry
//! strategies, and the canonical rounding of resource quantities.

use base64::Engine as _;
use serde_json::{json, Map, Value};

type Object = Map<String, Value>;

/// Applies the defaults the real apiserver applies on create and update (SetDefaults_* in
/// k8s.io/kubernetes pkg/apis/*/v1/defaults.go and the generated zz_generated.defaults.go).
pub fn apply_defaults(kind: &str, obj: &mut serde_json::Value) {
    let Some(obj) = obj.as_object_mut() else {
        return;
    };
    match kind {
        "Pod" => pod(obj),
        "Deployment" => deployment(obj),
        "ReplicaSet" => replica_set(obj),
        "Service" => service(obj),
        "Namespace" => namespace(obj),
        "Node" => node(obj),
        "Endpoints" => endpoints(obj),
        "EndpointSlice" => endpoint_slice(obj),
        "NetworkPolicy" => network_policy(obj),
        "IngressClass" => ingress_class(obj),
        "Secret" => secret(obj),
        _ => {}
    }
}

/// The object under `key`, if it is one.
fn child<'a>(m: &'a mut Object, key: &str) -> Option<&'a mut Object> {
    m.get_mut(key).and_then(Value::as_object_mut)
}

/// The object under `key`, created empty when absent or null, as Go materialises a struct.
fn child_or_default<'a>(m: &'a mut Object, key: &str) -> Option<&'a mut Object> {
    let value = m.entry(key).or_insert(Value::Null);
    if value.is_null() {
        *value = Value::Object(Object::new());
    }
    value.as_object_mut()
}

/// The array under `key`, created empty when absent or null.
fn array_or_default<'a>(m: &'a mut Object, key: &str) -> Option<&'a mut Vec<Value>> {
    let value = m.entry(key).or_insert(Value::Null);
    if value.is_null() {
        *value = Value::Array(Vec::new());
    }
    value.as_array_mut()
}

/// The elements of the array under `key` that are objects.
fn items<'a>(m: &'a mut Object, key: &str) -> impl Iterator<Item = &'a mut Object> {
    m.get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
}

fn str_at<'a>(m: &'a Object, key: &str) -> Option<&'a str> {
    m.get(key).and_then(Value::as_str)
}

/// Defaults a Go pointer, slice or map field: set when absent or null.
fn default_ptr(m: &mut Object, key: &str, value: impl Into<Value>) {
    if m.get(key).is_none_or(Value::is_null) {
        m.insert(key.to_owned(), value.into());
    }
}

/// Defaults a Go string field: set when absent, null or empty.
fn default_str(m: &mut Object, key: &str, value: &str) {
    if m.get(key)
        .is_none_or(|v| v.is_null() || v.as_str() == Some(""))
    {
        m.insert(key.to_owned(), value.into());
    }
}

/// Defaults a Go integer field: set when absent, null or zero.
fn default_int(m: &mut Object, key: &str, value: i64) {
    if m.get(key)
        .is_none_or(|v| v.is_null() || v.as_i64() == Some(0))
    {
        m.insert(key.to_owned(), value.into());
    }
}

fn pod(obj: &mut Object) {
    let Some(spec) = child_or_default(obj, "spec") else {
        return;
    };
    // Pod-only rules: a pod template keeps its spec as written for these.
    for list in ["initContainers", "containers"] {
        for container in items(spec, list) {
            requests_from_limits(container);
        }
    }
    default_ptr(spec, "enableServiceLinks", true);
    if spec.get("hostNetwork") == Some(&Value::Bool(true)) {
        for list in ["initContainers", "containers"] {
            for container in items(spec, list) {
                host_ports_from_container_ports(container);
            }
        }
    }
    pod_spec(spec);
}

fn requests_from_limits(container: &mut Object) {
    let Some(resources) = child(container, "resources") else {
        return;
    };
    let Some(limits) = resources
        .get("limits")
        .and_then(Value::as_object)
        .filter(|limits| !limits.is_empty())
        .cloned()
    else {
        return;
    };
    if let Some(requests) = child_or_default(resources, "requests") {
        for (name, quantity) in limits {
            requests.entry(name).or_insert(quantity);
        }
    }
}

fn host_ports_from_container_ports(container: &mut Object) {
    for port in items(container, "ports") {
        if let Some(container_port) = port.get("containerPort").filter(|p| p.is_i64()).cloned() {
            if port
                .get("hostPort")
                .is_none_or(|v| v.is_null() || v.as_i64() == Some(0))
            {
                port.insert("hostPort".to_owned(), container_port);
            }
        }
    }
}

fn pod_template(spec: &mut Object) {
    if let Some(pod) = child_or_default(spec, "template").and_then(|t| child_or_default(t, "spec"))
    {
        pod_spec(pod);
    }
}

fn pod_spec(spec: &mut Object) {
    default_str(spec, "dnsPolicy", "ClusterFirst");
    default_str(spec, "restartPolicy", "Always");
    default_ptr(spec, "securityContext", json!({}));
    default_ptr(spec, "terminationGracePeriodSeconds", 30);
    default_str(spec, "schedulerName", "default-scheduler");
    for volume in items(spec, "volumes") {
        pod_volume(volume);
    }
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        for c in items(spec, list) {
            container(c);
        }
    }
}

fn container(c: &mut Object) {
    let policy = pull_policy(str_at(c, "image").unwrap_or_default());
    default_str(c, "imagePullPolicy", policy);
    default_str(c, "terminationMessagePath", "/dev/termination-log");
    default_str(c, "terminationMessagePolicy", "File");
    for port in items(c, "ports") {
        default_str(port, "protocol", "TCP");
    }
    for env in items(c, "env") {
        if let Some(field_ref) = child(env, "valueFrom").and_then(|from| child(from, "fieldRef")) {
            default_str(field_ref, "apiVersion", "v1");
        }
    }
    child_or_default(c, "resources");
    for name in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = child(c, name) {
            probe(p);
        }
    }
    if let Some(lifecycle) = child(c, "lifecycle") {
        for hook in ["postStart", "preStop"] {
            if let Some(get) = child(lifecycle, hook).and_then(|h| child(h, "httpGet")) {
                http_get(get);
            }
        }
    }
}

fn probe(p: &mut Object) {
    default_int(p, "timeoutSeconds", 1);
    default_int(p, "periodSeconds", 10);
    default_int(p, "successThreshold", 1);
    default_int(p, "failureThreshold", 3);
    if let Some(get) = child(p, "httpGet") {
        http_get(get);
    }
    if let Some(grpc) = child(p, "grpc") {
        default_ptr(grpc, "service", "");
    }
}

fn http_get(get: &mut Object) {
    default_str(get, "path", "/");
    default_str(get, "scheme", "HTTP");
}

fn pod_volume(volume: &mut Object) {
    if volume.iter().all(|(key, v)| key == "name" || v.is_null()) {
        volume.insert("emptyDir".to_owned(), json!({}));
    }
    if let Some(host_path) = child(volume, "hostPath") {
        default_ptr(host_path, "type", "");
    }
    for source in ["secret", "configMap", "downwardAPI", "projected"] {
        if let Some(s) = child(volume, source) {
            default_ptr(s, "defaultMode", 0o644);
        }
    }
    if let Some(downward) = child(volume, "downwardAPI") {
        downward_api_items(downward);
    }
    if let Some(projected) = child(volume, "projected") {
        for source in items(projected, "sources") {
            if let Some(downward) = child(source, "downwardAPI") {
                downward_api_items(downward);
            }
            if let Some(token) = child(source, "serviceAccountToken") {
                default_ptr(token, "expirationSeconds", 3600);
            }
        }
    }
    if let Some(claim) = child(volume, "ephemeral")
        .and_then(|e| child(e, "volumeClaimTemplate"))
        .and_then(|t| child_or_default(t, "spec"))
    {
        default_ptr(claim, "volumeMode", "Filesystem");
    }
    if let Some(image) = child(volume, "image") {
        let policy = pull_policy(str_at(image, "reference").unwrap_or_default());
        default_str(image, "pullPolicy", policy);
    }
}

fn downward_api_items(downward: &mut Object) {
    for item in items(downward, "items") {
        if let Some(field_ref) = child(item, "fieldRef") {
            default_str(field_ref, "apiVersion", "v1");
        }
    }
}

/// `Always` when the image reference names the `latest` tag, explicitly or by having
/// neither tag nor digest; `IfNotPresent` otherwise, including for unparseable references.
fn pull_policy(image: &str) -> &'static str {
    if image_tag(image) == Some("latest") {
        "Always"
    } else {
        "IfNotPresent"
    }
}

/// The tag of a docker image reference, `latest` when it has neither tag nor digest, and
/// `None` when it has only a digest or does not parse.
fn image_tag(image: &str) -> Option<&str> {
    let (rest, digest) = match image.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (image, None),
    };
    if digest.is_some_and(|d| !is_digest(d)) {
        return None;
    }
    let last = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last..].find(':') {
        Some(i) => (&rest[..last + i], Some(&rest[last + i + 1..])),
        None => (rest, None),
    };
    if name.len() > 255 || !is_repository(name) || tag.is_some_and(|t| !is_tag(t)) {
        return None;
    }
    match (tag, digest) {
        (Some(tag), _) => Some(tag),
        (None, None) => Some("latest"),
        (None, Some(_)) => None,
    }
}

/// `[domain/]path`, where the first component is a domain when it has a dot or a port, is
/// `localhost`, or has upper-case letters (which a path may not).
fn is_repository(name: &str) -> bool {
    let path = match name.split_once('/') {
        Some((first, path))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            if !is_domain(first) {
                return false;
            }
            path
        }
        _ => name,
    };
    path.split('/').all(is_path_component)
}

/// `host[:port]`, the host a dotted name of alphanumeric-and-hyphen labels or a bracketed
/// IPv6 address.
fn is_domain(domain: &str) -> bool {
    let split = if domain.starts_with('[') {
        domain.find(']').map(|i| i + 1)
    } else {
        Some(domain.find(':').unwrap_or(domain.len()))
    };
    let Some(split) = split else {
        return false;
    };
    let (host, port) = domain.split_at(split);
    let port_ok = port.is_empty()
        || port
            .strip_prefix(':')
            .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(ipv6) => !ipv6.is_empty() && ipv6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':'),
        None => host.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        }),
    };
    port_ok && host_ok
}

/// Lower-case alphanumeric runs joined by `.`, `_`, `__` or any number of `-`.
fn is_path_component(component: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = component.as_bytes();
    bytes.first().is_some_and(|&b| alnum(b))
        && bytes.last().is_some_and(|&b| alnum(b))
        && component
            .split(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            .all(|sep| matches!(sep, "" | "." | "_" | "__") || sep.bytes().all(|b| b == b'-'))
}

fn is_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    tag.len() <= 128
        && tag.bytes().next().is_some_and(word)
        && tag.bytes().all(|b| word(b) || b == b'.' || b == b'-')
}

fn is_digest(digest: &str) -> bool {
    let Some((algorithm, encoded)) = digest.split_once(':') else {
        return false;
    };
    algorithm.split(['-', '_', '+', '.']).all(|part| {
        part.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
            && part.bytes().all(|b| b.is_ascii_alphanumeric())
    }) && encoded.len() >= 32
        && encoded.bytes().all(|b| b.is_ascii_hexdigit())
}

fn deployment(obj: &mut Object) {
    let Some(spec) = child_or_default(obj, "spec") else {
        return;
    };
    default_ptr(spec, "replicas", 1);
    if let Some(strategy) = child_or_default(spec, "strategy") {
        default_str(strategy, "type", "RollingUpdate");
        if str_at(strategy, "type") == Some("RollingUpdate") {
            if let Some(rolling) = child_or_default(strategy, "rollingUpdate") {
                default_ptr(rolling, "maxUnavailable", "25%");
                default_ptr(rolling, "maxSurge", "25%");
            }
        }
    }
    default_ptr(spec, "revisionHistoryLimit", 10);
    default_ptr(spec, "progressDeadlineSeconds", 600);
    pod_template(spec);
}

fn replica_set(obj: &mut Object) {
    if let Some(spec) = child_or_default(obj, "spec") {
        default_ptr(spec, "replicas", 1);
        pod_template(spec);
    }
}

fn service(obj: &mut Object) {
    let Some(spec) = child_or_default(obj, "spec") else {
        return;
    };
    default_str(spec, "sessionAffinity", "None");
    match str_at(spec, "sessionAffinity") {
        Some("None") => {
            spec.shift_remove("sessionAffinityConfig");
        }
        Some("ClientIP") => {
            if let Some(client_ip) = child_or_default(spec, "sessionAffinityConfig")
                .and_then(|config| child_or_default(config, "clientIP"))
            {
                default_ptr(client_ip, "timeoutSeconds", 10800);
            }
        }
        _ => {}
    }
    default_str(spec, "type", "ClusterIP");
    for port in items(spec, "ports") {
        default_str(port, "protocol", "TCP");
        let target_unset = port
            .get("targetPort")
            .is_none_or(|t| t.is_null() || t.as_i64() == Some(0) || t.as_str() == Some(""));
        if target_unset {
            if let Some(number) = port.get("port").filter(|p| p.is_i64()).cloned() {
                port.insert("targetPort".to_owned(), number);
            }
        }
    }
    let service_type = str_at(spec, "type").unwrap_or_default().to_owned();
    let has_external_ips = spec
        .get("externalIPs")
        .and_then(Value::as_array)
        .is_some_and(|ips| !ips.is_empty());
    let externally_accessible = matches!(service_type.as_str(), "NodePort" | "LoadBalancer")
        || (service_type == "ClusterIP" && has_external_ips);
    if externally_accessible {
        default_str(spec, "externalTrafficPolicy", "Cluster");
    }
    if matches!(
        service_type.as_str(),
        "ClusterIP" | "NodePort" | "LoadBalancer"
    ) {
        default_ptr(spec, "internalTrafficPolicy", "Cluster");
    }
    if service_type != "ExternalName" {
        ip_families(spec);
    }
    if service_type == "LoadBalancer" {
        default_ptr(spec, "allocateLoadBalancerNodePorts", true);
        if let Some(balancer) = child(obj, "status").and_then(|s| child(s, "loadBalancer")) {
            for ingress in items(balancer, "ingress") {
                if str_at(ingress, "ip").is_some_and(|ip| !ip.is_empty()) {
                    default_ptr(ingress, "ipMode", "VIP");
                }
            }
        }
    }
}

/// Fills `ipFamilyPolicy` and `ipFamilies` the way the service registry does on a
/// single-stack IPv4 cluster: families follow the given cluster IPs, else IPv4; a headless
/// service without a selector asks for both families.
fn ip_families(spec: &mut Object) {
    let cluster_ips: Vec<String> = match spec
        .get("clusterIPs")
        .and_then(Value::as_array)
        .filter(|ips| !ips.is_empty())
    {
        Some(ips) => ips
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        None => str_at(spec, "clusterIP")
            .filter(|ip| !ip.is_empty())
            .map(str::to_owned)
            .into_iter()
            .collect(),
    };
    let headless = cluster_ips.first().is_some_and(|ip| ip == "None");
    let selectorless = spec
        .get("selector")
        .and_then(Value::as_object)
        .is_none_or(Object::is_empty);
    let both_families = headless && selectorless;
    let policy = if both_families {
        "RequireDualStack"
    } else {
        "SingleStack"
    };
    default_ptr(spec, "ipFamilyPolicy", policy);
    let single_stack = str_at(spec, "ipFamilyPolicy") == Some("SingleStack");
    let Some(families) = array_or_default(spec, "ipFamilies") else {
        return;
    };
    for (i, ip) in cluster_ips
        .iter()
        .take_while(|ip| *ip != "None")
        .enumerate()
    {
        if i >= families.len() {
            let family = if ip.contains(':') { "IPv6" } else { "IPv4" };
            families.push(family.into());
        }
    }
    if families.is_empty() {
        families.push("IPv4".into());
    }
    if both_families && !single_stack && families.len() < 2 {
        let other = if families[0].as_str() == Some("IPv4") {
            "IPv6"
        } else {
            "IPv4"
        };
        families.push(other.into());
    }
}

/// The label every named namespace carries, and the finalizer that makes deletion wait
/// for the namespace's contents to go. The finalizer is only added while the namespace is
/// not terminating, so removing it through `/finalize` sticks.
fn namespace(obj: &mut Object) {
    let metadata = obj.get("metadata").and_then(Value::as_object);
    let name = metadata
        .and_then(|m| str_at(m, "name"))
        .filter(|name| !name.is_empty())
        .map(str::to_owned);
    let terminating = metadata
        .and_then(|m| m.get("deletionTimestamp"))
        .is_some_and(|t| !t.is_null());
    if let Some(name) = name {
        if let Some(labels) = child(obj, "metadata").and_then(|m| child_or_default(m, "labels")) {
            labels.insert("kubernetes.io/metadata.name".to_owned(), name.into());
        }
    }
    if !terminating {
        if let Some(finalizers) =
            child_or_default(obj, "spec").and_then(|spec| array_or_default(spec, "finalizers"))
        {
            if !finalizers.iter().any(|f| f.as_str() == Some("kubernetes")) {
                finalizers.push("kubernetes".into());
            }
        }
    }
    if let Some(status) = child_or_default(obj, "status") {
        default_str(status, "phase", "Active");
    }
}

fn node(obj: &mut Object) {
    let Some(status) = child(obj, "status") else {
        return;
    };
    let capacity = status
        .get("capacity")
        .filter(|c| c.as_object().is_some_and(|c| !c.is_empty()))
        .cloned();
    if let Some(capacity) = capacity {
        default_ptr(status, "allocatable", capacity);
    }
}

fn endpoints(obj: &mut Object) {
    for subset in items(obj, "subsets") {
        for port in items(subset, "ports") {
            default_str(port, "protocol", "TCP");
        }
    }
}

fn endpoint_slice(obj: &mut Object) {
    for port in items(obj, "ports") {
        default_ptr(port, "name", "");
        default_ptr(port, "protocol", "TCP");
    }
}

fn network_policy(obj: &mut Object) {
    let Some(spec) = child_or_default(obj, "spec") else {
        return;
    };
    let no_types = spec
        .get("policyTypes")
        .is_none_or(|t| t.is_null() || t.as_array().is_some_and(Vec::is_empty));
    if no_types {
        let has_egress = spec
            .get("egress")
            .and_then(Value::as_array)
            .is_some_and(|rules| !rules.is_empty());
        let types = if has_egress {
            json!(["Ingress", "Egress"])
        } else {
            json!(["Ingress"])
        };
        spec.insert("policyTypes".to_owned(), types);
    }
    for direction in ["ingress", "egress"] {
        for rule in items(spec, direction) {
            for port in items(rule, "ports") {
                default_ptr(port, "protocol", "TCP");
            }
        }
    }
}

fn ingress_class(obj: &mut Object) {
    if let Some(parameters) = child(obj, "spec").and_then(|spec| child(spec, "parameters")) {
        default_ptr(parameters, "scope", "Cluster");
    }
}

/// `SetDefaults_Secret`, then what the conversion of a v1 Secret into the stored form does:
/// every `stringData` entry overwrites the `data` entry of its key, base64-encoded, and
/// `stringData` itself is never kept. A `stringData` or `data` that is not a map (of
/// strings) is left for decoding to refuse.
fn secret(obj: &mut Object) {
    default_str(obj, "type", "Opaque");
    let encoded: Option<Vec<(String, Value)>> = match obj.get("stringData") {
        None => return,
        Some(Value::Null) => Some(Vec::new()),
        Some(Value::Object(entries)) => entries
            .iter()
            .map(|(key, value)| {
                let text = value.as_str()?;
                let bytes = base64::engine::general_purpose::STANDARD.encode(text);
                Some((key.clone(), Value::String(bytes)))
            })
            .collect(),
        Some(_) => None,
    };
    let Some(encoded) = encoded else {
        return;
    };
    if !encoded.is_empty() {
        let Some(data) = child_or_default(obj, "data") else {
            return;
        };
        data.extend(encoded);
    }
    obj.remove("stringData");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Defaults `input` as `kind`, compares with `expected`, then defaults the result again
    /// and requires it unchanged: every case also checks idempotence.
    fn check(kind: &str, input: Value, expected: Value) {
        let mut once = input;
        apply_defaults(kind, &mut once);
        assert_eq!(
            once,
            expected,
            "{kind} defaulted to\n{}",
            serde_json::to_string_pretty(&once).unwrap()
        );
        let mut twice = once.clone();
        apply_defaults(kind, &mut twice);
        assert_eq!(twice, once, "defaulting {kind} twice differs from once");
    }

    fn pull_policy_of(image: Value) -> Value {
        let mut pod = json!({"spec": {"containers": [{"name": "c", "image": image}]}});
        apply_defaults("Pod", &mut pod);
        pod["spec"]["containers"][0]["imagePullPolicy"].clone()
    }

    #[test]
    fn nginx_deployment_seed_gets_the_full_template() {
        check(
            "Deployment",
            json!({
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "nginx-deployment", "labels": {"app": "nginx"}},
                "spec": {
                    "replicas": 3,
                    "selector": {"matchLabels": {"app": "nginx"}},
                    "template": {
                        "metadata": {"labels": {"app": "nginx"}},
                        "spec": {"containers": [{
                            "name": "nginx",
                            "image": "nginx:1.14.2",
                            "ports": [{"containerPort": 80}]
                        }]}
                    }
                }
            }),
            json!({
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "nginx-deployment", "labels": {"app": "nginx"}},
                "spec": {
                    "replicas": 3,
                    "selector": {"matchLabels": {"app": "nginx"}},
                    "strategy": {
                        "type": "RollingUpdate",
                        "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}
                    },
                    "revisionHistoryLimit": 10,
                    "progressDeadlineSeconds": 600,
                    "template": {
                        "metadata": {"labels": {"app": "nginx"}},
                        "spec": {
                            "containers": [{
                                "name": "nginx",
                                "image": "nginx:1.14.2",
                                "ports": [{"containerPort": 80, "protocol": "TCP"}],
                                "imagePullPolicy": "IfNotPresent",
                                "terminationMessagePath": "/dev/termination-log",
                                "terminationMessagePolicy": "File",
                                "resources": {}
                            }],
                            "dnsPolicy": "ClusterFirst",
                            "restartPolicy": "Always",
                            "securityContext": {},
                            "terminationGracePeriodSeconds": 30,
                            "schedulerName": "default-scheduler"
                        }
                    }
                }
            }),
        );
    }

    #[test]
    fn deployment_keeps_explicit_choices() {
        check(
            "Deployment",
            json!({"spec": {
                "replicas": 0,
                "strategy": {"type": "Recreate"},
                "revisionHistoryLimit": 0,
                "template": {"spec": {
                    "restartPolicy": "Always",
                    "terminationGracePeriodSeconds": 0,
                    "containers": []
                }}
            }}),
            json!({"spec": {
                "replicas": 0,
                "strategy": {"type": "Recreate"},
                "revisionHistoryLimit": 0,
                "progressDeadlineSeconds": 600,
                "template": {"spec": {
                    "restartPolicy": "Always",
                    "terminationGracePeriodSeconds": 0,
                    "containers": [],
                    "dnsPolicy": "ClusterFirst",
                    "securityContext": {},
                    "schedulerName": "default-scheduler"
                }}
            }}),
        );
        check(
            "Deployment",
            json!({"spec": {"strategy": {"rollingUpdate": {"maxSurge": 0}}}}),
            json!({"spec": {
                "replicas": 1,
                "strategy": {
                    "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "25%"},
                    "type": "RollingUpdate"
                },
                "revisionHistoryLimit": 10,
                "progressDeadlineSeconds": 600,
                "template": {"spec": {
                    "dnsPolicy": "ClusterFirst",
                    "restartPolicy": "Always",
                    "securityContext": {},
                    "terminationGracePeriodSeconds": 30,
                    "schedulerName": "default-scheduler"
                }}
            }}),
        );
    }

    #[test]
    fn replica_set_template_gets_pod_spec_defaults_but_not_pod_only_ones() {
        check(
            "ReplicaSet",
            json!({"spec": {"template": {"spec": {
                "hostNetwork": true,
                "containers": [{
                    "name": "app",
                    "image": "app:v1",
                    "ports": [{"containerPort": 8080}],
                    "resources": {"limits": {"cpu": "1"}}
                }]
            }}}}),
            json!({"spec": {
                "replicas": 1,
                "template": {"spec": {
                    "hostNetwork": true,
                    "containers": [{
                        "name": "app",
                        "image": "app:v1",
                        "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                        "resources": {"limits": {"cpu": "1"}},
                        "imagePullPolicy": "IfNotPresent",
                        "terminationMessagePath": "/dev/termination-log",
                        "terminationMessagePolicy": "File"
                    }],
                    "dnsPolicy": "ClusterFirst",
                    "restartPolicy": "Always",
                    "securityContext": {},
                    "terminationGracePeriodSeconds": 30,
                    "schedulerName": "default-scheduler"
                }}
            }}),
        );
    }

    #[test]
    fn pod_defaults_reach_probes_volumes_env_and_pod_only_rules() {
        check(
            "Pod",
            json!({
                "metadata": {"name": "web"},
                "spec": {
                    "hostNetwork": true,
                    "initContainers": [{
                        "name": "init",
                        "image": "busybox",
                        "resources": {"limits": {"cpu": "100m"}}
                    }],
                    "containers": [{
                        "name": "app",
                        "image": "example.com/app:v1",
                        "ports": [
                            {"containerPort": 8080},
                            {"containerPort": 9090, "protocol": "UDP", "hostPort": 19090}
                        ],
                        "env": [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                        "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"cpu": "250m"}},
                        "livenessProbe": {"httpGet": {"port": 8080}},
                        "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 5, "timeoutSeconds": 0},
                        "startupProbe": {"grpc": {"port": 9090}},
                        "lifecycle": {"preStop": {"httpGet": {"port": 8080, "path": "/quit"}}}
                    }],
                    "volumes": [
                        {"name": "scratch"},
                        {"name": "cfg", "configMap": {"name": "cfg"}},
                        {"name": "host", "hostPath": {"path": "/var/log"}},
                        {"name": "token", "projected": {"sources": [
                            {"serviceAccountToken": {"path": "token"}},
                            {"downwardAPI": {"items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}}
                        ]}}
                    ]
                }
            }),
            json!({
                "metadata": {"name": "web"},
                "spec": {
                    "hostNetwork": true,
                    "initContainers": [{
                        "name": "init",
                        "image": "busybox",
                        "resources": {"limits": {"cpu": "100m"}, "requests": {"cpu": "100m"}},
                        "imagePullPolicy": "Always",
                        "terminationMessagePath": "/dev/termination-log",
                        "terminationMessagePolicy": "File"
                    }],
                    "containers": [{
                        "name": "app",
                        "image": "example.com/app:v1",
                        "ports": [
                            {"containerPort": 8080, "hostPort": 8080, "protocol": "TCP"},
                            {"containerPort": 9090, "protocol": "UDP", "hostPort": 19090}
                        ],
                        "env": [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name", "apiVersion": "v1"}}}],
                        "resources": {
                            "limits": {"cpu": "500m", "memory": "128Mi"},
                            "requests": {"cpu": "250m", "memory": "128Mi"}
                        },
                        "livenessProbe": {
                            "httpGet": {"port": 8080, "path": "/", "scheme": "HTTP"},
                            "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3
                        },
                        "readinessProbe": {
                            "tcpSocket": {"port": 8080},
                            "periodSeconds": 5, "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3
                        },
                        "startupProbe": {
                            "grpc": {"port": 9090, "service": ""},
                            "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3
                        },
                        "lifecycle": {"preStop": {"httpGet": {"port": 8080, "path": "/quit", "scheme": "HTTP"}}},
                        "imagePullPolicy": "IfNotPresent",
                        "terminationMessagePath": "/dev/termination-log",
                        "terminationMessagePolicy": "File"
                    }],
                    "volumes": [
                        {"name": "scratch", "emptyDir": {}},
                        {"name": "cfg", "configMap": {"name": "cfg", "defaultMode": 420}},
                        {"name": "host", "hostPath": {"path": "/var/log", "type": ""}},
                        {"name": "token", "projected": {"defaultMode": 420, "sources": [
                            {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}},
                            {"downwardAPI": {"items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name", "apiVersion": "v1"}}]}}
                        ]}}
                    ],
                    "enableServiceLinks": true,
                    "dnsPolicy": "ClusterFirst",
                    "restartPolicy": "Always",
                    "securityContext": {},
                    "terminationGracePeriodSeconds": 30,
                    "schedulerName": "default-scheduler"
                }
            }),
        );
    }

    #[test]
    fn pod_keeps_explicit_values() {
        let pod = json!({"spec": {
            "enableServiceLinks": false,
            "dnsPolicy": "Default",
            "restartPolicy": "Never",
            "schedulerName": "custom",
            "securityContext": {"runAsUser": 1000},
            "terminationGracePeriodSeconds": 0,
            "containers": [{
                "name": "c",
                "image": "nginx",
                "imagePullPolicy": "Never",
                "terminationMessagePath": "/tmp/log",
                "terminationMessagePolicy": "FallbackToLogsOnError",
                "resources": {"requests": {"cpu": "1"}},
                "livenessProbe": {
                    "exec": {"command": ["true"]},
                    "timeoutSeconds": 5, "periodSeconds": 7, "successThreshold": 1, "failureThreshold": 9
                }
            }]
        }});
        check("Pod", pod.clone(), pod);
    }

    #[test]
    fn image_pull_policy_is_always_only_for_the_latest_tag() {
        let digest = "sha256:0d17b565c37bcbd895e9d92315a05c1c3c9a29f762b011a10c54a66cd53c9b31";
        let cases = [
            ("nginx", "Always"),
            ("nginx:latest", "Always"),
            ("docker.io/library/nginx", "Always"),
            ("localhost:5000/team/app", "Always"),
            ("[::1]:5000/app", "Always"),
            ("Registry.Example/app", "Always"),
            ("nginx:1.14.2", "IfNotPresent"),
            ("registry.example.com:5000/team/app:v2", "IfNotPresent"),
            ("localhost:5000", "IfNotPresent"),
            ("my_org/my-app__x:Latest", "IfNotPresent"),
            ("Nginx", "IfNotPresent"),
            ("nginx:", "IfNotPresent"),
            ("nginx:latest@sha256:short", "IfNotPresent"),
            ("bad host/app", "IfNotPresent"),
            ("", "IfNotPresent"),
        ];
        for (image, expected) in cases {
            assert_eq!(
                pull_policy_of(json!(image)),
                json!(expected),
                "image {image:?}"
            );
        }
        assert_eq!(
            pull_policy_of(json!(format!("nginx@{digest}"))),
            json!("IfNotPresent")
        );
        assert_eq!(
            pull_policy_of(json!(format!("nginx:latest@{digest}"))),
            json!("Always")
        );
        assert_eq!(
            pull_policy_of(json!(format!("nginx:1.25@{digest}"))),
            json!("IfNotPresent")
        );
        assert_eq!(pull_policy_of(Value::Null), json!("IfNotPresent"));
    }

    #[test]
    fn service_seed_with_target_port() {
        check(
            "Service",
            json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "web"},
                "spec": {"selector": {"app": "web"}, "ports": [{"port": 8080, "targetPort": 80}]}
            }),
            json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "web"},
                "spec": {
                    "selector": {"app": "web"},
                    "ports": [{"port": 8080, "targetPort": 80, "protocol": "TCP"}],
                    "sessionAffinity": "None",
                    "type": "ClusterIP",
                    "internalTrafficPolicy": "Cluster",
                    "ipFamilyPolicy": "SingleStack",
                    "ipFamilies": ["IPv4"]
                }
            }),
        );
    }

    #[test]
    fn node_port_service_seed() {
        check(
            "Service",
            json!({"spec": {
                "type": "NodePort",
                "selector": {"app": "web"},
                "ports": [{"port": 80, "targetPort": 8080}]
            }}),
            json!({"spec": {
                "type": "NodePort",
                "selector": {"app": "web"},
                "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}],
                "sessionAffinity": "None",
                "externalTrafficPolicy": "Cluster",
                "internalTrafficPolicy": "Cluster",
                "ipFamilyPolicy": "SingleStack",
                "ipFamilies": ["IPv4"]
            }}),
        );
    }

    #[test]
    fn named_port_without_target_port_targets_the_port_number() {
        check(
            "Service",
            json!({"spec": {
                "selector": {"app": "web"},
                "ports": [
                    {"name": "http", "port": 80},
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 0},
                    {"name": "metrics", "port": 9090, "targetPort": ""},
                    {"name": "grpc", "port": 9000, "targetPort": "grpc-port"}
                ]
            }}),
            json!({"spec": {
                "selector": {"app": "web"},
                "ports": [
                    {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 80},
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                    {"name": "metrics", "port": 9090, "targetPort": 9090, "protocol": "TCP"},
                    {"name": "grpc", "port": 9000, "targetPort": "grpc-port", "protocol": "TCP"}
                ],
                "sessionAffinity": "None",
                "type": "ClusterIP",
                "internalTrafficPolicy": "Cluster",
                "ipFamilyPolicy": "SingleStack",
                "ipFamilies": ["IPv4"]
            }}),
        );
    }

    #[test]
    fn load_balancer_service() {
        check(
            "Service",
            json!({
                "spec": {"type": "LoadBalancer", "ports": [{"port": 443}], "externalTrafficPolicy": "Local"},
                "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}, {"hostname": "lb.example"}]}}
            }),
            json!({
                "spec": {
                    "type": "LoadBalancer",
                    "ports": [{"port": 443, "protocol": "TCP", "targetPort": 443}],
                    "externalTrafficPolicy": "Local",
                    "sessionAffinity": "None",
                    "internalTrafficPolicy": "Cluster",
                    "ipFamilyPolicy": "SingleStack",
                    "ipFamilies": ["IPv4"],
                    "allocateLoadBalancerNodePorts": true
                },
                "status": {"loadBalancer": {"ingress": [
                    {"ip": "192.0.2.10", "ipMode": "VIP"},
                    {"hostname": "lb.example"}
                ]}}
            }),
        );
    }

    #[test]
    fn session_affinity_config_follows_the_affinity() {
        check(
            "Service",
            json!({"spec": {"sessionAffinity": "ClientIP", "clusterIP": "10.96.0.20"}}),
            json!({"spec": {
                "sessionAffinity": "ClientIP",
                "clusterIP": "10.96.0.20",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 10800}},
                "type": "ClusterIP",
                "internalTrafficPolicy": "Cluster",
                "ipFamilyPolicy": "SingleStack",
                "ipFamilies": ["IPv4"]
            }}),
        );
        check(
            "Service",
            json!({"spec": {
                "sessionAffinity": "None",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}},
                "type": "ExternalName",
                "externalName": "db.example.com"
            }}),
            json!({"spec": {
                "sessionAffinity": "None",
                "type": "ExternalName",
                "externalName": "db.example.com"
            }}),
        );
    }

    #[test]
    fn ip_families_follow_cluster_ips_and_headlessness() {
        let defaulted = |spec: Value| {
            let mut svc = json!({ "spec": spec });
            apply_defaults("Service", &mut svc);
            (
                svc["spec"]["ipFamilyPolicy"].clone(),
                svc["spec"]["ipFamilies"].clone(),
            )
        };
        assert_eq!(
            defaulted(json!({"clusterIP": "None"})),
            (json!("RequireDualStack"), json!(["IPv4", "IPv6"]))
        );
        assert_eq!(
            defaulted(json!({"clusterIP": "None", "selector": {"app": "db"}})),
            (json!("SingleStack"), json!(["IPv4"]))
        );
        assert_eq!(
            defaulted(json!({"clusterIPs": ["fd00::10"]})),
            (json!("SingleStack"), json!(["IPv6"]))
        );
        assert_eq!(
            defaulted(json!({"clusterIP": "None", "ipFamilyPolicy": "SingleStack"})),
            (json!("SingleStack"), json!(["IPv4"]))
        );
        assert_eq!(
            defaulted(json!({"clusterIP": "None", "ipFamilies": ["IPv6"]})),
            (json!("RequireDualStack"), json!(["IPv6", "IPv4"]))
        );
        assert_eq!(
            defaulted(json!({"type": "ExternalName", "externalName": "x.example"})),
            (Value::Null, Value::Null)
        );
    }

    #[test]
    fn external_ips_make_a_cluster_ip_service_take_an_external_policy() {
        let mut svc = json!({"spec": {"externalIPs": ["192.0.2.1"], "ports": [{"port": 80}]}});
        apply_defaults("Service", &mut svc);
        assert_eq!(svc["spec"]["externalTrafficPolicy"], json!("Cluster"));
        let mut plain = json!({"spec": {"ports": [{"port": 80}]}});
        apply_defaults("Service", &mut plain);
        assert_eq!(plain["spec"].get("externalTrafficPolicy"), None);
    }

    #[test]
    fn namespace_gets_label_finalizer_and_phase() {
        check(
            "Namespace",
            json!({"metadata": {"name": "dev"}}),
            json!({
                "metadata": {"name": "dev", "labels": {"kubernetes.io/metadata.name": "dev"}},
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"}
            }),
        );
        check(
            "Namespace",
            json!({
                "metadata": {"name": "dev", "labels": {"kubernetes.io/metadata.name": "spoof"}},
                "spec": {"finalizers": ["example.com/cleanup"]}
            }),
            json!({
                "metadata": {"name": "dev", "labels": {"kubernetes.io/metadata.name": "dev"}},
                "spec": {"finalizers": ["example.com/cleanup", "kubernetes"]},
                "status": {"phase": "Active"}
            }),
        );
    }

    #[test]
    fn terminating_namespace_is_not_refinalized() {
        let ns = json!({
            "metadata": {
                "name": "dev",
                "labels": {"kubernetes.io/metadata.name": "dev"},
                "deletionTimestamp": "2024-05-01T00:00:00Z"
            },
            "spec": {},
            "status": {"phase": "Terminating"}
        });
        check("Namespace", ns.clone(), ns);
    }

    #[test]
    fn node_allocatable_defaults_to_capacity() {
        check(
            "Node",
            json!({"status": {"capacity": {"cpu": "2", "pods": "110"}}}),
            json!({"status": {"capacity": {"cpu": "2", "pods": "110"}, "allocatable": {"cpu": "2", "pods": "110"}}}),
        );
        let reserved =
            json!({"status": {"capacity": {"cpu": "2"}, "allocatable": {"cpu": "1900m"}}});
        check("Node", reserved.clone(), reserved);
    }

    #[test]
    fn endpoint_ports_default_to_tcp() {
        check(
            "Endpoints",
            json!({"subsets": [{"addresses": [{"ip": "10.0.0.5"}], "ports": [{"port": 80}, {"port": 53, "protocol": "UDP"}]}]}),
            json!({"subsets": [{"addresses": [{"ip": "10.0.0.5"}], "ports": [
                {"port": 80, "protocol": "TCP"},
                {"port": 53, "protocol": "UDP"}
            ]}]}),
        );
        check(
            "EndpointSlice",
            json!({"addressType": "IPv4", "endpoints": [], "ports": [{"port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"}]}),
            json!({"addressType": "IPv4", "endpoints": [], "ports": [
                {"port": 80, "name": "", "protocol": "TCP"},
                {"name": "dns", "port": 53, "protocol": "UDP"}
            ]}),
        );
    }

    #[test]
    fn network_policy_types_follow_the_rules_present() {
        check(
            "NetworkPolicy",
            json!({"spec": {"podSelector": {}, "ingress": [{"ports": [{"port": 80}]}]}}),
            json!({"spec": {
                "podSelector": {},
                "ingress": [{"ports": [{"port": 80, "protocol": "TCP"}]}],
                "policyTypes": ["Ingress"]
            }}),
        );
        check(
            "NetworkPolicy",
            json!({"spec": {"podSelector": {}, "egress": [{"ports": [{"port": 53, "protocol": "UDP"}]}], "policyTypes": []}}),
            json!({"spec": {
                "podSelector": {},
                "egress": [{"ports": [{"port": 53, "protocol": "UDP"}]}],
                "policyTypes": ["Ingress", "Egress"]
            }}),
        );
        let egress_only = json!({"spec": {"podSelector": {}, "policyTypes": ["Egress"]}});
        check("NetworkPolicy", egress_only.clone(), egress_only);
    }

    #[test]
    fn ingress_class_parameters_are_cluster_scoped_and_ingress_is_untouched() {
        check(
            "IngressClass",
            json!({"spec": {"controller": "example.com/ingress", "parameters": {"kind": "Params", "name": "p"}}}),
            json!({"spec": {"controller": "example.com/ingress", "parameters": {"kind": "Params", "name": "p", "scope": "Cluster"}}}),
        );
        let ingress = json!({"spec": {"rules": [{"http": {"paths": [{"path": "/", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}});
        check("Ingress", ingress.clone(), ingress);
        let config = json!({"metadata": {"name": "c"}});
        check("ConfigMap", config.clone(), config);
    }

    #[test]
    fn secret_type_defaults_to_opaque() {
        check(
            "Secret",
            json!({"data": {}}),
            json!({"data": {}, "type": "Opaque"}),
        );
        let tls = json!({"type": "kubernetes.io/tls"});
        check("Secret", tls.clone(), tls);
    }

    #[test]
    fn secret_string_data_is_folded_into_data_and_dropped() {
        check(
            "Secret",
            json!({"data": {"a": "eA==", "b": "eQ=="}, "stringData": {"b": "two", "c": "three"}}),
            json!({"type": "Opaque", "data": {"a": "eA==", "b": "dHdv", "c": "dGhyZWU="}}),
        );
        check(
            "Secret",
            json!({"type": "kubernetes.io/basic-auth", "stringData": {"username": "admin"}}),
            json!({"type": "kubernetes.io/basic-auth", "data": {"username": "YWRtaW4="}}),
        );
        for empty in [json!(null), json!({})] {
            check(
                "Secret",
                json!({"stringData": empty}),
                json!({"type": "Opaque"}),
            );
        }
        for odd in [
            json!({"type": "Opaque", "data": "x", "stringData": {"k": "v"}}),
            json!({"type": "Opaque", "stringData": {"k": 1}}),
            json!({"type": "Opaque", "stringData": ["k"]}),
        ] {
            check("Secret", odd.clone(), odd);
        }
    }

    #[test]
    fn wrong_types_are_left_for_validation() {
        for kind in [
            "Pod",
            "Deployment",
            "ReplicaSet",
            "Service",
            "Namespace",
            "Node",
            "Endpoints",
            "EndpointSlice",
            "NetworkPolicy",
            "IngressClass",
            "Secret",
        ] {
            let odd = json!({"metadata": "m", "spec": "s", "status": 1, "type": 7, "subsets": "x", "ports": 2});
            check(kind, odd.clone(), odd);
            check(
                kind,
                json!(["not", "an", "object"]),
                json!(["not", "an", "object"]),
            );
        }
        check(
            "Pod",
            json!({"spec": {
                "securityContext": "x",
                "terminationGracePeriodSeconds": "30",
                "volumes": "none",
                "containers": [5, {
                    "image": "nginx",
                    "imagePullPolicy": 3,
                    "ports": "80",
                    "resources": "big",
                    "livenessProbe": {"timeoutSeconds": "1", "httpGet": "/"}
                }]
            }}),
            json!({"spec": {
                "securityContext": "x",
                "terminationGracePeriodSeconds": "30",
                "volumes": "none",
                "containers": [5, {
                    "image": "nginx",
                    "imagePullPolicy": 3,
                    "ports": "80",
                    "resources": "big",
                    "livenessProbe": {
                        "timeoutSeconds": "1", "httpGet": "/",
                        "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3
                    },
                    "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File"
                }],
                "enableServiceLinks": true,
                "dnsPolicy": "ClusterFirst",
                "restartPolicy": "Always",
                "schedulerName": "default-scheduler"
            }}),
        );
        check(
            "Service",
            json!({"spec": {"type": 3, "ports": [{"port": "http"}], "ipFamilies": "IPv4"}}),
            json!({"spec": {
                "type": 3,
                "ports": [{"port": "http", "protocol": "TCP"}],
                "ipFamilies": "IPv4",
                "sessionAffinity": "None",
                "ipFamilyPolicy": "SingleStack"
            }}),
        );
    }
}
