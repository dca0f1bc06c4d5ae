//! Object validation with the real apiserver's rules and words: the checks of
//! k8s.io/apimachinery `pkg/api/validation` and `pkg/util/validation`, and of
//! k8s.io/kubernetes `pkg/apis/{core,apps,discovery,networking}/validation` (v1.31), rewritten
//! over `serde_json::Value` so that `kubectl` sees the same `Invalid value: …` lines.
//!
//! Validation sees an object as the real one does after defaulting: a field that the
//! apiserver defaults (`spec.type`, `protocol`, `sessionAffinity`, `restartPolicy`, a
//! Deployment's strategy, …) is read with its default when absent or empty, so validating
//! before or after [`crate::defaults`] gives the same answer.
//!
//! Not here: decoding errors (a string where an integer belongs is read as absent), checks
//! whose message embeds a Go pointer address or a `cmp.Diff` (pod spec immutability, taint
//! duplicates), volume source internals, resource quantities and security contexts.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use base64::Engine as _;
use serde_json::{Map, Value};

use crate::field::{BadValue, ErrorType, FieldError};

type Errs = Vec<FieldError>;

static NULL: Value = Value::Null;

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_FMT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const DNS1035_LABEL_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";
const DNS1035_LABEL_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character";
const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const WILDCARD_FMT: &str = "\\*\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const WILDCARD_MSG: &str = "a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS subdomain, which must consist of lower case alphanumeric characters, '-' or '.' and end with an alphanumeric character";
const CONFIG_KEY_FMT: &str = "[-._a-zA-Z0-9]+";
const CONFIG_KEY_MSG: &str =
    "a valid config key must consist of alphanumeric characters, '-', '_' or '.'";
const PERCENT_FMT: &str = "[0-9]+%";
const PERCENT_MSG: &str =
    "a valid percent string must be a numeric string followed by an ending '%'";
const ENV_NAME_FMT: &str = "[-._a-zA-Z][-._a-zA-Z0-9]*";
const ENV_NAME_MSG: &str = "a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit";
const HTTP_PATH_FMT: &str = "[A-Za-z0-9/\\-._~%!$&'()*+,;=:]+";

const FIELD_IMMUTABLE: &str = "field is immutable";
const IS_NEGATIVE: &str = "must be greater than or equal to 0";
const INVALID_IP: &str = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)";
const INVALID_CIDR: &str = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)";
const SELECTOR_MISMATCH: &str = "`selector` does not match template `labels`";

/// Total size of all annotation keys and values (256 KiB), as `TotalAnnotationSizeLimitB`.
pub const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;
/// Maximum total size of a ConfigMap's or a Secret's data (1 MiB), `core.MaxSecretSize`.
pub const MAX_SECRET_SIZE: usize = 1024 * 1024;
const MAX_AFFINITY_TIMEOUT: i64 = 86400;

// ---------------------------------------------------------------------------------------
// Entry points
// ---------------------------------------------------------------------------------------

/// Validates an object about to be created, as the kind's `Validate*Create` does.
///
/// Errors whose text repeats are reported once, as apimachinery's `ToAggregate` does.
pub fn validate_create(kind: &str, obj: &Value) -> Vec<FieldError> {
    let errs = match kind {
        "Namespace" => namespace(obj),
        "Node" => node(obj),
        "Pod" => pod(obj),
        "Service" => service(obj),
        "Endpoints" => endpoints(obj),
        "ConfigMap" => config_map(obj),
        "Secret" => secret(obj),
        "Event" => event(obj),
        "Deployment" => deployment(obj),
        "ReplicaSet" => replica_set(obj),
        "EndpointSlice" => endpoint_slice(obj),
        "Ingress" => ingress_create(obj),
        "IngressClass" => ingress_class(obj),
        "NetworkPolicy" => network_policy(obj),
        _ => object_meta(obj, Scope::Unknown, NameRule::Subdomain),
    };
    dedup(errs)
}

/// Validates an update of `old` into `new`, as the registry strategy's `ValidateUpdate`
/// does for the kind, immutable fields included.
///
/// For a Service, the allocated values the client left out must already be carried over
/// ([`crate::alloc::ServiceAllocator::allocate_update`] does it), as the real registry
/// does before validating.
pub fn validate_update(kind: &str, new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    match kind {
        "Namespace" => {
            errs.extend(namespace(new));
            errs.extend(object_meta_update(new, old));
        }
        "Node" => {
            errs.extend(node(new));
            errs.extend(object_meta_update(new, old));
            errs.extend(node_update(new, old));
        }
        "EndpointSlice" => {
            errs.extend(endpoint_slice(new));
            let (n, o) = (str_of(new, "addressType"), str_of(old, "addressType"));
            if n != o {
                errs.push(FieldError::invalid("addressType", n, FIELD_IMMUTABLE));
            }
            errs.extend(object_meta_update(new, old));
        }
        _ => {
            errs.extend(object_meta_update(new, old));
            match kind {
                "Service" => {
                    errs.extend(service_update(new, old));
                    errs.extend(service(new));
                }
                "ConfigMap" => {
                    errs.extend(config_map_update(new, old));
                    errs.extend(config_map(new));
                }
                "Secret" => {
                    errs.extend(secret_update(new, old));
                    errs.extend(secret(new));
                }
                "Deployment" => {
                    errs.extend(deployment(new));
                    errs.extend(selector_immutable(new, old));
                }
                "ReplicaSet" => {
                    errs.extend(replica_set(new));
                    errs.extend(selector_immutable(new, old));
                }
                "IngressClass" => {
                    let (n, o) = (
                        str_of(child(new, "spec"), "controller"),
                        str_of(child(old, "spec"), "controller"),
                    );
                    if n != o {
                        errs.push(FieldError::invalid("spec.controller", n, FIELD_IMMUTABLE));
                    }
                    errs.extend(ingress_class(new));
                }
                "Ingress" => errs.extend(ingress(new)),
                _ => errs.extend(validate_create(kind, new)),
            }
        }
    }
    dedup(errs)
}

fn dedup(errs: Errs) -> Errs {
    let mut seen = HashSet::new();
    errs.into_iter()
        .filter(|e| seen.insert(e.to_string()))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Format checks (k8s.io/apimachinery/pkg/util/validation)
// ---------------------------------------------------------------------------------------

/// `IsDNS1123Subdomain`: lower-case RFC 1123 subdomain of at most 253 characters.
pub fn is_dns1123_subdomain(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 253 {
        errs.push(max_len_error(253));
    }
    if !subdomain_ok(s) {
        errs.push(regex_error(
            DNS1123_SUBDOMAIN_MSG,
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    errs
}

/// `IsDNS1123Label`: lower-case RFC 1123 label of at most 63 characters.
pub fn is_dns1123_label(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !label_ok(s) {
        if subdomain_ok(s) {
            errs.push("must not contain dots".to_string());
        } else {
            errs.push(regex_error(
                DNS1123_LABEL_MSG,
                DNS1123_LABEL_FMT,
                &["my-name", "123-abc"],
            ));
        }
    }
    errs
}

/// `IsDNS1035Label`: like an RFC 1123 label but starting with a letter.
pub fn is_dns1035_label(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !(label_ok(s) && s.as_bytes().first().is_some_and(u8::is_ascii_lowercase)) {
        errs.push(regex_error(
            DNS1035_LABEL_MSG,
            DNS1035_LABEL_FMT,
            &["my-name", "abc-123"],
        ));
    }
    errs
}

/// `IsQualifiedName`: a label key, an optional DNS subdomain prefix and a name part.
pub fn is_qualified_name(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                errs.extend(
                    is_dns1123_subdomain(prefix)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            *name
        }
        _ => {
            errs.push(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(QUALIFIED_NAME_MSG, QUALIFIED_NAME_FMT, &["MyName", "my.name", "123-abc"])
            ));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errs.push(format!("name part {}", max_len_error(63)));
    }
    if !qualified_part_ok(name) {
        errs.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_MSG,
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errs
}

/// `IsValidLabelValue`: empty, or a qualified-name part of at most 63 characters.
pub fn is_valid_label_value(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !(value.is_empty() || qualified_part_ok(value)) {
        errs.push(regex_error(
            LABEL_VALUE_MSG,
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

/// `IsValidPortName`: an IANA_SVC_NAME (at most 15 characters, at least one letter).
pub fn is_valid_port_name(port: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if port.len() > 15 {
        errs.push(max_len_error(15));
    }
    let b = port.as_bytes();
    if b.is_empty()
        || !b
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
    {
        errs.push(
            "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".to_string(),
        );
    }
    if !b.iter().any(u8::is_ascii_lowercase) {
        errs.push("must contain at least one letter (a-z)".to_string());
    }
    if port.contains("--") {
        errs.push("must not contain consecutive hyphens".to_string());
    }
    if b.first() == Some(&b'-') || b.last() == Some(&b'-') {
        errs.push("must not begin or end with a hyphen".to_string());
    }
    errs
}

/// `IsValidPortNum`: 1 to 65535.
pub fn is_valid_port_num(port: i64) -> Vec<String> {
    if (1..=65535).contains(&port) {
        Vec::new()
    } else {
        vec![inclusive_range_error(1, 65535)]
    }
}

/// `IsConfigMapKey`: a key of a ConfigMap's `data` or `binaryData`.
pub fn is_config_map_key(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 253 {
        errs.push(max_len_error(253));
    }
    let charset_ok = !value.is_empty()
        && value
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_'));
    if !charset_ok {
        errs.push(regex_error(
            CONFIG_KEY_MSG,
            CONFIG_KEY_FMT,
            &["key.name", "KEY_NAME", "key-name"],
        ));
    }
    errs.extend(ch_dir_prefix(value));
    errs
}

/// Validates a `metadata.labels`-like map: qualified-name keys, label values.
pub fn validate_labels(labels: &Value, field: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(map) = labels.as_object() else {
        return errs;
    };
    for (k, v) in map {
        errs.extend(label_name(k, field));
        if let Some(v) = v.as_str() {
            for msg in is_valid_label_value(v) {
                errs.push(FieldError::invalid(field, v, msg));
            }
        }
    }
    errs
}

/// Validates `metadata.annotations`: case-insensitive qualified-name keys and a total size
/// of at most 256 KiB.
pub fn validate_annotations(annotations: &Value, field: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(map) = annotations.as_object() else {
        return errs;
    };
    let mut total = 0usize;
    for (k, v) in map {
        for msg in is_qualified_name(&k.to_lowercase()) {
            errs.push(FieldError::invalid(field, k.as_str(), msg));
        }
        total += k.len() + v.as_str().map_or(0, str::len);
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        errs.push(FieldError::too_long(field, TOTAL_ANNOTATION_SIZE_LIMIT));
    }
    errs
}

fn label_ok(s: &str) -> bool {
    let b = s.as_bytes();
    let edge = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    match (b.first(), b.last()) {
        (Some(&first), Some(&last)) => {
            edge(first) && edge(last) && b.iter().all(|&c| edge(c) || c == b'-')
        }
        _ => false,
    }
}

fn subdomain_ok(s: &str) -> bool {
    s.split('.').all(label_ok)
}

pub(crate) fn qualified_part_ok(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

fn is_wildcard_dns1123_subdomain(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 253 {
        errs.push(max_len_error(253));
    }
    if !s.strip_prefix("*.").is_some_and(subdomain_ok) {
        errs.push(regex_error(WILDCARD_MSG, WILDCARD_FMT, &["*.example.com"]));
    }
    errs
}

fn is_valid_percent(s: &str) -> Vec<String> {
    let ok = s
        .strip_suffix('%')
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()));
    if ok {
        Vec::new()
    } else {
        vec![regex_error(PERCENT_MSG, PERCENT_FMT, &["1%", "93%"])]
    }
}

fn is_env_var_name(s: &str) -> Vec<String> {
    let b = s.as_bytes();
    let first_ok = b
        .first()
        .is_some_and(|c| c.is_ascii_alphabetic() || matches!(c, b'-' | b'.' | b'_'));
    let mut errs = Vec::new();
    if !(first_ok
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_')))
    {
        errs.push(regex_error(
            ENV_NAME_MSG,
            ENV_NAME_FMT,
            &["my.env-name", "MY_ENV.NAME", "MyEnvName1"],
        ));
    }
    errs.extend(ch_dir_prefix(s));
    errs
}

fn ch_dir_prefix(s: &str) -> Option<String> {
    match s {
        "." => Some("must not be '.'".to_string()),
        ".." => Some("must not be '..'".to_string()),
        _ if s.starts_with("..") => Some("must not start with '..'".to_string()),
        _ => None,
    }
}

fn max_len_error(n: usize) -> String {
    format!("must be no more than {n} characters")
}

fn inclusive_range_error(lo: i64, hi: i64) -> String {
    format!("must be between {lo} and {hi}, inclusive")
}

fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    if examples.is_empty() {
        return format!("{msg} (regex used for validation is '{fmt}')");
    }
    let shown: Vec<String> = examples.iter().map(|e| format!("'{e}', ")).collect();
    format!(
        "{msg} (e.g. {}regex used for validation is '{fmt}')",
        shown.join(" or ")
    )
}

// ---------------------------------------------------------------------------------------
// IP addresses, as Go's net.ParseIP / ParseCIDR read them
// ---------------------------------------------------------------------------------------

/// Parses an IP as `netutils.ParseIPSloppy` does: IPv4 octets may carry leading zeros.
pub(crate) fn parse_ip(s: &str) -> Option<IpAddr> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() == 4
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|c| c.is_ascii_digit()))
    {
        let mut octets = [0u8; 4];
        for (slot, part) in octets.iter_mut().zip(&parts) {
            *slot = part.parse().ok()?;
        }
        return Some(IpAddr::V4(Ipv4Addr::from(octets)));
    }
    s.parse::<Ipv6Addr>()
        .ok()
        .map(|v6| match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        })
}

fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (ip, bits) = s.split_once('/')?;
    if bits.is_empty() || bits.len() > 3 || !bits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let bits: u8 = bits.parse().ok()?;
    let ip = parse_ip(ip)?;
    let max = if ip.is_ipv4() && !ip.to_string().contains(':') {
        32
    } else {
        128
    };
    (bits <= max).then_some((ip, bits))
}

fn cidr_contains(net: (IpAddr, u8), other: (IpAddr, u8)) -> bool {
    match (net.0, other.0) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = if net.1 == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(net.1))
            };
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = if net.1 == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(net.1))
            };
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

fn valid_ip(path: &str, value: &str) -> Errs {
    match parse_ip(value) {
        Some(_) => Vec::new(),
        None => vec![FieldError::invalid(path, value, INVALID_IP)],
    }
}

fn valid_cidr(path: &str, value: &str) -> Errs {
    match parse_cidr(value) {
        Some(_) => Vec::new(),
        None => vec![FieldError::invalid(path, value, INVALID_CIDR)],
    }
}

/// `ValidateNonSpecialIP`: no unspecified, loopback or link-local addresses.
fn non_special_ip(path: &str, value: &str) -> Errs {
    let Some(ip) = parse_ip(value) else {
        return vec![FieldError::invalid(
            path,
            value,
            "must be a valid IP address",
        )];
    };
    let mut errs = Vec::new();
    let (unspecified, loopback, link_local, link_local_mc) = match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            (
                v4.is_unspecified(),
                o[0] == 127,
                o[0] == 169 && o[1] == 254,
                o[0] == 224 && o[1] == 0 && o[2] == 0,
            )
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            (
                v6.is_unspecified(),
                v6.is_loopback(),
                s[0] & 0xffc0 == 0xfe80,
                s[0] & 0xff0f == 0xff02,
            )
        }
    };
    if unspecified {
        errs.push(FieldError::invalid(
            path,
            value,
            format!("may not be unspecified ({value})"),
        ));
    }
    if loopback {
        errs.push(FieldError::invalid(
            path,
            value,
            "may not be in the loopback range (127.0.0.0/8, ::1/128)",
        ));
    }
    if link_local {
        errs.push(FieldError::invalid(
            path,
            value,
            "may not be in the link-local range (169.254.0.0/16, fe80::/10)",
        ));
    }
    if link_local_mc {
        errs.push(FieldError::invalid(
            path,
            value,
            "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)",
        ));
    }
    errs
}

// ---------------------------------------------------------------------------------------
// Go `%#v` renderings of composite values, as field.Error prints them
// ---------------------------------------------------------------------------------------

/// A string as Go's `%q` prints it.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `[]string{"a", "b"}`, or `[]string(nil)` for an absent list.
pub(crate) fn go_strings(items: Option<&[String]>) -> String {
    match items {
        None => "[]string(nil)".to_string(),
        Some(items) => format!(
            "[]string{{{}}}",
            items
                .iter()
                .map(|s| go_quote(s))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// `map[string]string{"a":"b"}` with sorted keys, or `map[string]string(nil)`.
fn go_string_map(map: Option<&Map<String, Value>>) -> String {
    match map {
        None => "map[string]string(nil)".to_string(),
        Some(map) => {
            let sorted: BTreeMap<&String, &str> = map
                .iter()
                .map(|(k, v)| (k, v.as_str().unwrap_or("")))
                .collect();
            let body: Vec<String> = sorted
                .iter()
                .map(|(k, v)| format!("{}:{}", go_quote(k), go_quote(v)))
                .collect();
            format!("map[string]string{{{}}}", body.join(", "))
        }
    }
}

fn go_int_or_string(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => format!(
            "intstr.IntOrString{{Type:1, IntVal:0, StrVal:{}}}",
            go_quote(s)
        ),
        Some(v) => format!(
            "intstr.IntOrString{{Type:0, IntVal:{}, StrVal:\"\"}}",
            v.as_i64().unwrap_or(0)
        ),
        None => "intstr.IntOrString{Type:0, IntVal:0, StrVal:\"\"}".to_string(),
    }
}

fn go_label_selector(sel: &Value) -> String {
    let labels = go_string_map(sel.get("matchLabels").and_then(Value::as_object));
    let exprs = match sel.get("matchExpressions").and_then(Value::as_array) {
        None => "[]v1.LabelSelectorRequirement(nil)".to_string(),
        Some(list) => {
            let items: Vec<String> = list
                .iter()
                .map(|e| {
                    let values = e
                        .get("values")
                        .and_then(Value::as_array)
                        .map(|vs| strings(vs));
                    format!(
                        "v1.LabelSelectorRequirement{{Key:{}, Operator:{}, Values:{}}}",
                        go_quote(str_of(e, "key")),
                        go_quote(str_of(e, "operator")),
                        go_strings(values.as_deref())
                    )
                })
                .collect();
            format!("[]v1.LabelSelectorRequirement{{{}}}", items.join(", "))
        }
    };
    format!("v1.LabelSelector{{MatchLabels:{labels}, MatchExpressions:{exprs}}}")
}

// ---------------------------------------------------------------------------------------
// JSON access and paths
// ---------------------------------------------------------------------------------------

fn child<'a>(v: &'a Value, key: &str) -> &'a Value {
    v.get(key).unwrap_or(&NULL)
}

fn present(v: &Value, key: &str) -> bool {
    v.get(key).is_some_and(|x| !x.is_null())
}

pub(crate) fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

pub(crate) fn str_or<'a>(v: &'a Value, key: &str, default: &'a str) -> &'a str {
    match str_of(v, key) {
        "" => default,
        s => s,
    }
}

pub(crate) fn int_of(v: &Value, key: &str) -> Option<i64> {
    v.get(key).and_then(Value::as_i64)
}

pub(crate) fn list_of<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

pub(crate) fn strings(list: &[Value]) -> Vec<String> {
    list.iter()
        .map(|v| v.as_str().unwrap_or("").to_string())
        .collect()
}

fn idx(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

fn invalid_go(path: &str, go: impl Into<String>, detail: impl Into<String>) -> FieldError {
    FieldError::invalid_go(path, go, detail)
}

fn not_supported(path: &str, value: &str, supported: &[&str]) -> FieldError {
    FieldError::not_supported(path, value, supported)
}

fn non_negative(path: &str, value: Option<i64>) -> Errs {
    match value {
        Some(v) if v < 0 => vec![FieldError::invalid(path, v, IS_NEGATIVE)],
        _ => Vec::new(),
    }
}

fn label_name(key: &str, path: &str) -> Errs {
    is_qualified_name(key)
        .into_iter()
        .map(|m| FieldError::invalid(path, key, m))
        .collect()
}

fn dns1123_label(value: &str, path: &str) -> Errs {
    is_dns1123_label(value)
        .into_iter()
        .map(|m| FieldError::invalid(path, value, m))
        .collect()
}

fn dns1123_subdomain(value: &str, path: &str) -> Errs {
    is_dns1123_subdomain(value)
        .into_iter()
        .map(|m| FieldError::invalid(path, value, m))
        .collect()
}

fn qualified_name(value: &str, path: &str) -> Errs {
    label_name(value, path)
}

/// `ValidatePortNumOrName` over a JSON int-or-string.
fn port_num_or_name(v: Option<&Value>, path: &str) -> Errs {
    match v {
        Some(Value::String(s)) => is_valid_port_name(s)
            .into_iter()
            .map(|m| FieldError::invalid(path, s.as_str(), m))
            .collect(),
        other => {
            let n = other.and_then(Value::as_i64).unwrap_or(0);
            is_valid_port_num(n)
                .into_iter()
                .map(|m| FieldError::invalid(path, n, m))
                .collect()
        }
    }
}

// ---------------------------------------------------------------------------------------
// Object metadata
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    Namespaced,
    Cluster,
    Unknown,
}

#[derive(Clone, Copy)]
enum NameRule {
    Subdomain,
    Dns1123Label,
    Dns1035Label,
}

impl NameRule {
    /// The kind's `ValidateNameFunc`; a prefix (generateName) may end with a dash.
    fn check(self, name: &str, prefix: bool) -> Vec<String> {
        let masked;
        let name = if prefix && name.len() > 1 && name.ends_with('-') {
            let kept = String::from_utf8_lossy(&name.as_bytes()[..name.len() - 2]);
            masked = format!("{kept}a");
            masked.as_str()
        } else {
            name
        };
        match self {
            NameRule::Subdomain => is_dns1123_subdomain(name),
            NameRule::Dns1123Label => is_dns1123_label(name),
            NameRule::Dns1035Label => is_dns1035_label(name),
        }
    }
}

const STANDARD_FINALIZERS: [&str; 3] = ["kubernetes", "orphan", "foregroundDeletion"];

/// `ValidateObjectMeta` (apimachinery) plus the core finalizer-name check.
///
/// A name is not required when `generateName` is set: the apiserver derives the name
/// from it before validating. A cluster-scoped object must reach here without a
/// namespace, as the real `BeforeCreate` clears it.
fn object_meta(obj: &Value, scope: Scope, rule: NameRule) -> Errs {
    let meta = child(obj, "metadata");
    let mut errs = Vec::new();
    let generate_name = str_of(meta, "generateName");
    if !generate_name.is_empty() {
        for msg in rule.check(generate_name, true) {
            errs.push(FieldError::invalid(
                "metadata.generateName",
                generate_name,
                msg,
            ));
        }
    }
    let name = str_of(meta, "name");
    if name.is_empty() {
        if generate_name.is_empty() {
            errs.push(FieldError::required(
                "metadata.name",
                "name or generateName is required",
            ));
        }
    } else {
        for msg in rule.check(name, false) {
            errs.push(FieldError::invalid("metadata.name", name, msg));
        }
    }
    let namespace = str_of(meta, "namespace");
    match scope {
        Scope::Namespaced if namespace.is_empty() => {
            errs.push(FieldError::required("metadata.namespace", ""))
        }
        Scope::Namespaced => {
            for msg in NameRule::Dns1123Label.check(namespace, false) {
                errs.push(FieldError::invalid("metadata.namespace", namespace, msg));
            }
        }
        Scope::Cluster if !namespace.is_empty() => {
            errs.push(FieldError::forbidden(
                "metadata.namespace",
                "not allowed on this type",
            ));
        }
        _ => {}
    }
    errs.extend(meta_common(meta));
    let finalizers = strings(list_of(meta, "finalizers"));
    for f in &finalizers {
        errs.extend(qualified_name(f, "metadata.finalizers"));
    }
    if finalizers.iter().any(|f| f == "orphan")
        && finalizers.iter().any(|f| f == "foregroundDeletion")
    {
        errs.push(invalid_go(
            "metadata.finalizers",
            go_strings(Some(&finalizers)),
            "finalizer orphan and foregroundDeletion cannot be both set",
        ));
    }
    errs.extend(kube_finalizer_names(&finalizers, "metadata.finalizers"));
    errs
}

/// Labels, annotations and owner references: checked on create and update alike.
fn meta_common(meta: &Value) -> Errs {
    let mut errs = non_negative("metadata.generation", int_of(meta, "generation"));
    errs.extend(validate_labels(child(meta, "labels"), "metadata.labels"));
    errs.extend(validate_annotations(
        child(meta, "annotations"),
        "metadata.annotations",
    ));
    for owner in list_of(meta, "ownerReferences") {
        let path = "metadata.ownerReferences";
        let api_version = str_of(owner, "apiVersion");
        let version = api_version.rsplit('/').next().unwrap_or("");
        if version.is_empty() {
            errs.push(FieldError::invalid(
                format!("{path}.apiVersion"),
                api_version,
                "version must not be empty",
            ));
        }
        for (key, what) in [("kind", "kind"), ("name", "name"), ("uid", "uid")] {
            if str_of(owner, key).is_empty() {
                errs.push(FieldError::invalid(
                    format!("{path}.{key}"),
                    "",
                    format!("{what} must not be empty"),
                ));
            }
        }
    }
    errs
}

fn kube_finalizer_names(finalizers: &[String], path: &str) -> Errs {
    finalizers
        .iter()
        .enumerate()
        .filter(|(_, f)| !f.contains('/') && !STANDARD_FINALIZERS.contains(&f.as_str()))
        .map(|(i, f)| {
            FieldError::invalid(
                idx(path, i),
                f.as_str(),
                "name is neither a standard finalizer name nor is it fully qualified",
            )
        })
        .collect()
}

/// `ValidateObjectMetaUpdate`: identity fields are immutable; a value the client left
/// empty (namespace or uid filled in by the server) counts as unchanged.
fn object_meta_update(new: &Value, old: &Value) -> Errs {
    let (nm, om) = (child(new, "metadata"), child(old, "metadata"));
    let mut errs = Vec::new();
    if present(om, "deletionTimestamp") {
        let old_set: BTreeSet<String> = strings(list_of(om, "finalizers")).into_iter().collect();
        let extra: BTreeSet<String> = strings(list_of(nm, "finalizers"))
            .into_iter()
            .filter(|f| !old_set.contains(f))
            .collect();
        if !extra.is_empty() {
            let list: Vec<String> = extra.into_iter().collect();
            errs.push(FieldError::forbidden(
                "metadata.finalizers",
                format!(
                    "no new finalizers can be added if the object is being deleted, found new finalizers {}",
                    go_strings(Some(&list))
                ),
            ));
        }
    }
    for key in ["name", "namespace", "uid"] {
        let (n, o) = (str_of(nm, key), str_of(om, key));
        let unchanged = n == o || (key != "name" && n.is_empty());
        if !unchanged {
            errs.push(FieldError::invalid(
                format!("metadata.{key}"),
                n,
                FIELD_IMMUTABLE,
            ));
        }
    }
    errs.extend(meta_common(nm));
    errs.extend(kube_finalizer_names(
        &strings(list_of(nm, "finalizers")),
        "metadata.finalizers",
    ));
    errs
}

/// `ValidateLabelSelector` over a JSON `LabelSelector`.
fn label_selector(sel: &Value, path: &str) -> Errs {
    let mut errs = validate_labels(child(sel, "matchLabels"), &format!("{path}.matchLabels"));
    for (i, expr) in list_of(sel, "matchExpressions").iter().enumerate() {
        let p = idx(&format!("{path}.matchExpressions"), i);
        let values = list_of(expr, "values");
        match str_of(expr, "operator") {
            "In" | "NotIn" => {
                if values.is_empty() {
                    errs.push(FieldError::required(
                        format!("{p}.values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    ));
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    errs.push(FieldError::forbidden(
                        format!("{p}.values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    ));
                }
            }
            op => errs.push(FieldError::invalid(
                format!("{p}.operator"),
                op,
                "not a valid selector operator",
            )),
        }
        errs.extend(label_name(str_of(expr, "key"), &format!("{p}.key")));
        for (j, v) in values.iter().enumerate() {
            let v = v.as_str().unwrap_or("");
            for msg in is_valid_label_value(v) {
                errs.push(FieldError::invalid(idx(&format!("{p}.values"), j), v, msg));
            }
        }
    }
    errs
}

/// Whether a selector that passed [`label_selector`] matches `labels`.
fn selector_matches(sel: &Value, labels: Option<&Map<String, Value>>) -> bool {
    let get = |k: &str| labels.and_then(|m| m.get(k)).and_then(Value::as_str);
    let by_labels = child(sel, "matchLabels")
        .as_object()
        .is_none_or(|m| m.iter().all(|(k, v)| get(k) == v.as_str()));
    let by_exprs = list_of(sel, "matchExpressions").iter().all(|e| {
        let value = get(str_of(e, "key"));
        let values = strings(list_of(e, "values"));
        match str_of(e, "operator") {
            "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
            "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
            "Exists" => value.is_some(),
            _ => value.is_none(),
        }
    });
    by_labels && by_exprs
}

fn selector_is_empty(sel: &Value) -> bool {
    child(sel, "matchLabels")
        .as_object()
        .is_none_or(Map::is_empty)
        && list_of(sel, "matchExpressions").is_empty()
}

// ---------------------------------------------------------------------------------------
// Namespace, Node, Event, ConfigMap, Secret, Endpoints
// ---------------------------------------------------------------------------------------

fn namespace(obj: &Value) -> Errs {
    let mut errs = object_meta(obj, Scope::Cluster, NameRule::Dns1123Label);
    let finalizers = strings(list_of(child(obj, "spec"), "finalizers"));
    for f in &finalizers {
        errs.extend(qualified_name(f, "spec.finalizers"));
    }
    errs.extend(
        finalizers
            .iter()
            .filter(|f| !f.contains('/') && !STANDARD_FINALIZERS.contains(&f.as_str()))
            .map(|f| {
                FieldError::invalid(
                    "spec.finalizers",
                    f.as_str(),
                    "name is neither a standard finalizer name nor is it fully qualified",
                )
            }),
    );
    errs
}

fn node_pod_cidrs(obj: &Value) -> Vec<String> {
    let spec = child(obj, "spec");
    match list_of(spec, "podCIDRs") {
        [] if !str_of(spec, "podCIDR").is_empty() => vec![str_of(spec, "podCIDR").to_string()],
        list => strings(list),
    }
}

fn node(obj: &Value) -> Errs {
    let mut errs = object_meta(obj, Scope::Cluster, NameRule::Subdomain);
    for (i, taint) in list_of(child(obj, "spec"), "taints").iter().enumerate() {
        let p = idx("metadata.taints", i);
        errs.extend(label_name(str_of(taint, "key"), &format!("{p}.key")));
        let value = str_of(taint, "value");
        let msgs = is_valid_label_value(value);
        if !msgs.is_empty() {
            errs.push(FieldError::invalid(
                format!("{p}.value"),
                value,
                msgs.join(";"),
            ));
        }
        match str_of(taint, "effect") {
            "" => errs.push(FieldError::required(format!("{p}.effect"), "")),
            "NoSchedule" | "PreferNoSchedule" | "NoExecute" => {}
            effect => errs.push(not_supported(
                &format!("{p}.effect"),
                effect,
                &["NoSchedule", "PreferNoSchedule", "NoExecute"],
            )),
        }
    }
    let cidrs = node_pod_cidrs(obj);
    for (i, cidr) in cidrs.iter().enumerate() {
        errs.extend(valid_cidr(&idx("spec.podCIDRs", i), cidr));
    }
    if cidrs.len() > 1 {
        let parsed: Vec<_> = cidrs.iter().filter_map(|c| parse_cidr(c)).collect();
        let v4 = parsed.iter().filter(|(ip, _)| ip.is_ipv4()).count();
        let dual = parsed.len() == cidrs.len() && v4 >= 1 && v4 < parsed.len();
        if !dual || cidrs.len() > 2 {
            errs.push(invalid_go(
                "spec.podCIDRs",
                go_strings(Some(&cidrs)),
                "may specify no more than one CIDR for each IP family",
            ));
        }
        let mut seen = HashSet::new();
        for (i, c) in cidrs.iter().enumerate() {
            if !seen.insert(c) {
                errs.push(FieldError::duplicate(idx("spec.podCIDRs", i), c.as_str()));
            }
        }
    }
    errs
}

fn node_update(new: &Value, old: &Value) -> Errs {
    let mut errs = Vec::new();
    let (n, o) = (node_pod_cidrs(new), node_pod_cidrs(old));
    let msg = "node updates may not change podCIDR except from \"\" to valid";
    if !o.is_empty() {
        if o.len() != n.len() {
            errs.push(FieldError::forbidden("spec.podCIDRs", msg));
        } else {
            errs.extend(
                o.iter()
                    .zip(&n)
                    .filter(|(a, b)| a != b)
                    .map(|_| FieldError::forbidden("spec.podCIDRs", msg)),
            );
        }
    }
    let (np, op) = (
        str_of(child(new, "spec"), "providerID"),
        str_of(child(old, "spec"), "providerID"),
    );
    if !op.is_empty() && op != np {
        errs.push(FieldError::forbidden(
            "spec.providerID",
            "node updates may not change providerID except from \"\" to valid",
        ));
    }
    errs
}

/// core/v1 Events get only the legacy checks, as `ValidateEventCreate` for that version.
fn event(obj: &Value) -> Errs {
    let mut errs = Vec::new();
    let namespace = str_of(child(obj, "metadata"), "namespace");
    let involved = str_of(child(obj, "involvedObject"), "namespace");
    if !present(obj, "eventTime") {
        let mismatch = if involved.is_empty() {
            !matches!(namespace, "" | "default")
        } else {
            namespace != involved
        };
        if mismatch {
            errs.push(FieldError::invalid(
                "involvedObject.namespace",
                involved,
                "does not match event.namespace",
            ));
        }
    }
    errs.extend(dns1123_subdomain(namespace, "namespace"));
    errs
}

fn config_map(obj: &Value) -> Errs {
    let mut errs = object_meta(obj, Scope::Namespaced, NameRule::Subdomain);
    let data = child(obj, "data").as_object();
    let binary = child(obj, "binaryData").as_object();
    let mut total = 0usize;
    for (key, value) in data.into_iter().flatten() {
        let path = format!("data[{key}]");
        for msg in is_config_map_key(key) {
            errs.push(FieldError::invalid(path.as_str(), key.as_str(), msg));
        }
        if binary.is_some_and(|b| b.contains_key(key)) {
            errs.push(FieldError::invalid(
                path.as_str(),
                key.as_str(),
                "duplicate of key present in binaryData",
            ));
        }
        total += value.as_str().map_or(0, str::len);
    }
    for (key, value) in binary.into_iter().flatten() {
        for msg in is_config_map_key(key) {
            errs.push(FieldError::invalid(
                format!("binaryData[{key}]"),
                key.as_str(),
                msg,
            ));
        }
        total += value.as_str().map_or(0, base64_decoded_len);
    }
    if total > MAX_SECRET_SIZE {
        errs.push(FieldError::too_long("", MAX_SECRET_SIZE));
    }
    errs
}

fn base64_decoded_len(s: &str) -> usize {
    let padding = s.bytes().rev().take_while(|&c| c == b'=').count();
    (s.len() / 4 * 3).saturating_sub(padding)
}

fn config_map_update(new: &Value, old: &Value) -> Errs {
    let mut errs = Vec::new();
    if child(old, "immutable").as_bool() == Some(true) {
        let msg = "field is immutable when `immutable` is set";
        if child(new, "immutable").as_bool() != Some(true) {
            errs.push(FieldError::forbidden("immutable", msg));
        }
        for key in ["data", "binaryData"] {
            if empty_as_null(child(new, key)) != empty_as_null(child(old, key)) {
                errs.push(FieldError::forbidden(key, msg));
            }
        }
    }
    errs
}

/// The annotation a `kubernetes.io/service-account-token` Secret names its account by.
const SERVICE_ACCOUNT_NAME_KEY: &str = "kubernetes.io/service-account.name";

fn secret(obj: &Value) -> Errs {
    let mut errs = object_meta(obj, Scope::Namespaced, NameRule::Subdomain);
    let data = child(obj, "data");
    let mut total = 0usize;
    for (key, value) in data.as_object().into_iter().flatten() {
        for msg in is_config_map_key(key) {
            errs.push(FieldError::invalid(
                format!("data[{key}]"),
                key.as_str(),
                msg,
            ));
        }
        total += value.as_str().map_or(0, base64_decoded_len);
    }
    if total > MAX_SECRET_SIZE {
        errs.push(FieldError::too_long("data", MAX_SECRET_SIZE));
    }
    let has = |key: &str| data.get(key).is_some();
    let required = |key: &str| FieldError::required(format!("data[{key}]"), "");
    match str_of(obj, "type") {
        "kubernetes.io/service-account-token" => {
            let annotations = child(child(obj, "metadata"), "annotations");
            if str_of(annotations, SERVICE_ACCOUNT_NAME_KEY).is_empty() {
                errs.push(FieldError::required(
                    format!("metadata.annotations[{SERVICE_ACCOUNT_NAME_KEY}]"),
                    "",
                ));
            }
        }
        "kubernetes.io/dockercfg" => errs.extend(docker_config(data, ".dockercfg")),
        "kubernetes.io/dockerconfigjson" => {
            errs.extend(docker_config(data, ".dockerconfigjson"));
        }
        "kubernetes.io/basic-auth" if !has("username") && !has("password") => {
            errs.push(required("username"));
            errs.push(required("password"));
        }
        "kubernetes.io/ssh-auth"
            if secret_bytes(data, "ssh-privatekey").is_none_or(|b| b.is_empty()) =>
        {
            errs.push(required("ssh-privatekey"));
        }
        "kubernetes.io/tls" => {
            for key in ["tls.crt", "tls.key"] {
                if !has(key) {
                    errs.push(required(key));
                }
            }
        }
        _ => {}
    }
    errs
}

/// A docker config Secret's `data[key]`: present, and a JSON object as Go decodes one.
fn docker_config(data: &Value, key: &str) -> Option<FieldError> {
    if data.get(key).is_none() {
        return Some(FieldError::required(format!("data[{key}]"), ""));
    }
    let msg = go_json_map_error(&secret_bytes(data, key)?)?;
    Some(FieldError::invalid(
        format!("data[{key}]"),
        "<secret contents redacted>",
        msg,
    ))
}

/// The decoded bytes of `data[key]`; `None` when absent or not base64 (decoding refuses
/// such a Secret before validation).
fn secret_bytes(data: &Value, key: &str) -> Option<Vec<u8>> {
    match data.get(key)? {
        Value::Null => Some(Vec::new()),
        value => base64::engine::general_purpose::STANDARD
            .decode(value.as_str()?)
            .ok(),
    }
}

fn secret_update(new: &Value, old: &Value) -> Errs {
    let mut errs = Vec::new();
    let (n, o) = (child(new, "type"), child(old, "type"));
    if n != o {
        errs.push(FieldError::invalid("type", n.clone(), FIELD_IMMUTABLE));
    }
    if child(old, "immutable").as_bool() == Some(true) {
        let msg = "field is immutable when `immutable` is set";
        if child(new, "immutable").as_bool() != Some(true) {
            errs.push(FieldError::forbidden("immutable", msg));
        }
        if empty_as_null(child(new, "data")) != empty_as_null(child(old, "data")) {
            errs.push(FieldError::forbidden("data", msg));
        }
    }
    errs
}

/// Why Go's `json.Unmarshal` refuses `input` as a `map[string]interface{}`, in its words:
/// the syntax check of the whole input first, then the type of the top-level value.
fn go_json_map_error(input: &[u8]) -> Option<String> {
    if let Err(msg) = go_json_syntax(input) {
        return Some(msg);
    }
    let first = input
        .iter()
        .find(|c| !matches!(c, b' ' | b'\t' | b'\r' | b'\n'))?;
    let kind = match first {
        b'{' | b'n' => return None,
        b'[' => "array",
        b'"' => "string",
        b't' | b'f' => "bool",
        _ => "number",
    };
    Some(format!(
        "json: cannot unmarshal {kind} into Go value of type map[string]interface {{}}"
    ))
}

/// Go's JSON scanner (`encoding/json` `checkValid`): the first syntax error in the words
/// of its `SyntaxError`, or `unexpected end of JSON input`. Like Go, the end of the input
/// is read as one more space, so `1.` ends with the error about that space.
fn go_json_syntax(input: &[u8]) -> Result<(), String> {
    /// What the innermost open object or array expects after a value.
    #[derive(Clone, Copy)]
    enum Frame {
        Key,
        Value,
        Array,
    }
    #[derive(Clone, Copy)]
    enum State {
        Value,
        ValueOrEmpty,
        Key,
        KeyOrEmpty,
        End,
        Str,
        Escape,
        Hex(u8),
        Minus,
        Int,
        Zero,
        Dot,
        Fraction,
        Exponent,
        ExponentSign,
        ExponentDigits,
        Literal(&'static str, usize),
    }
    const MAX_DEPTH: usize = 10_000;
    fn invalid(c: u8, context: &str) -> String {
        let quoted = match c {
            b'\'' => "'\\''".to_string(),
            b'"' => "'\"'".to_string(),
            c => {
                let q = go_quote(&char::from(c).to_string());
                format!("'{}'", &q[1..q.len() - 1])
            }
        };
        format!("invalid character {quoted} {context}")
    }
    let mut stack: Vec<Frame> = Vec::new();
    let mut state = State::Value;
    for &c in input.iter().chain(b" ") {
        let space = matches!(c, b' ' | b'\t' | b'\r' | b'\n');
        loop {
            // A number ends at the first byte that cannot continue it; that byte is then
            // read again as what follows the value.
            let mut reread = false;
            state = match state {
                State::Value
                | State::ValueOrEmpty
                | State::Key
                | State::KeyOrEmpty
                | State::End
                    if space =>
                {
                    state
                }
                State::ValueOrEmpty if c == b']' => {
                    stack.pop();
                    State::End
                }
                State::Value | State::ValueOrEmpty => {
                    let next = match c {
                        b'{' => State::KeyOrEmpty,
                        b'[' => State::ValueOrEmpty,
                        b'"' => State::Str,
                        b'-' => State::Minus,
                        b'0' => State::Zero,
                        b'1'..=b'9' => State::Int,
                        b't' => State::Literal("true", 1),
                        b'f' => State::Literal("false", 1),
                        b'n' => State::Literal("null", 1),
                        _ => return Err(invalid(c, "looking for beginning of value")),
                    };
                    if matches!(c, b'{' | b'[') {
                        stack.push(if c == b'{' { Frame::Key } else { Frame::Array });
                        if stack.len() > MAX_DEPTH {
                            return Err(invalid(c, "exceeded max depth"));
                        }
                    }
                    next
                }
                State::KeyOrEmpty if c == b'}' => {
                    stack.pop();
                    State::End
                }
                State::Key | State::KeyOrEmpty if c == b'"' => State::Str,
                State::Key | State::KeyOrEmpty => {
                    return Err(invalid(c, "looking for beginning of object key string"))
                }
                State::End => match stack.last_mut() {
                    None => return Err(invalid(c, "after top-level value")),
                    Some(frame) => match (*frame, c) {
                        (Frame::Key, b':') => {
                            *frame = Frame::Value;
                            State::Value
                        }
                        (Frame::Value, b',') => {
                            *frame = Frame::Key;
                            State::Key
                        }
                        (Frame::Array, b',') => State::Value,
                        (Frame::Value, b'}') | (Frame::Array, b']') => {
                            stack.pop();
                            State::End
                        }
                        (Frame::Key, _) => return Err(invalid(c, "after object key")),
                        (Frame::Value, _) => return Err(invalid(c, "after object key:value pair")),
                        (Frame::Array, _) => return Err(invalid(c, "after array element")),
                    },
                },
                State::Str => match c {
                    b'"' => State::End,
                    b'\\' => State::Escape,
                    0..=0x1f => return Err(invalid(c, "in string literal")),
                    _ => State::Str,
                },
                State::Escape => match c {
                    b'b' | b'f' | b'n' | b'r' | b't' | b'\\' | b'/' | b'"' => State::Str,
                    b'u' => State::Hex(4),
                    _ => return Err(invalid(c, "in string escape code")),
                },
                State::Hex(left) if c.is_ascii_hexdigit() => match left {
                    1 => State::Str,
                    _ => State::Hex(left - 1),
                },
                State::Hex(_) => return Err(invalid(c, "in \\u hexadecimal character escape")),
                State::Minus => match c {
                    b'0' => State::Zero,
                    b'1'..=b'9' => State::Int,
                    _ => return Err(invalid(c, "in numeric literal")),
                },
                State::Int if c.is_ascii_digit() => State::Int,
                State::Int | State::Zero => match c {
                    b'.' => State::Dot,
                    b'e' | b'E' => State::Exponent,
                    _ => {
                        reread = true;
                        State::End
                    }
                },
                State::Dot if c.is_ascii_digit() => State::Fraction,
                State::Dot => return Err(invalid(c, "after decimal point in numeric literal")),
                State::Fraction => match c {
                    b'0'..=b'9' => State::Fraction,
                    b'e' | b'E' => State::Exponent,
                    _ => {
                        reread = true;
                        State::End
                    }
                },
                State::Exponent if matches!(c, b'+' | b'-') => State::ExponentSign,
                State::Exponent | State::ExponentSign if c.is_ascii_digit() => {
                    State::ExponentDigits
                }
                State::Exponent | State::ExponentSign => {
                    return Err(invalid(c, "in exponent of numeric literal"))
                }
                State::ExponentDigits if c.is_ascii_digit() => State::ExponentDigits,
                State::ExponentDigits => {
                    reread = true;
                    State::End
                }
                State::Literal(word, i) => {
                    let want = word.as_bytes()[i];
                    if c != want {
                        let context =
                            format!("in literal {word} (expecting '{}')", char::from(want));
                        return Err(invalid(c, &context));
                    }
                    if i + 1 == word.len() {
                        State::End
                    } else {
                        State::Literal(word, i + 1)
                    }
                }
            };
            if !reread {
                break;
            }
        }
    }
    match state {
        State::End if stack.is_empty() => Ok(()),
        _ => Err("unexpected end of JSON input".to_string()),
    }
}

/// Go's semantic equality treats an empty map or list like an absent one.
fn empty_as_null(v: &Value) -> &Value {
    match v {
        Value::Object(m) if m.is_empty() => &NULL,
        Value::Array(a) if a.is_empty() => &NULL,
        v => v,
    }
}

fn endpoints(obj: &Value) -> Errs {
    let mut errs = object_meta(obj, Scope::Namespaced, NameRule::Subdomain);
    for (i, subset) in list_of(obj, "subsets").iter().enumerate() {
        let p = idx("subsets", i);
        let (ready, not_ready) = (
            list_of(subset, "addresses"),
            list_of(subset, "notReadyAddresses"),
        );
        if ready.is_empty() && not_ready.is_empty() {
            errs.push(FieldError::required(
                p.as_str(),
                "must specify `addresses` or `notReadyAddresses`",
            ));
        }
        for (key, list) in [("addresses", ready), ("notReadyAddresses", not_ready)] {
            for (j, addr) in list.iter().enumerate() {
                let ap = idx(&format!("{p}.{key}"), j);
                let ip = str_of(addr, "ip");
                errs.extend(valid_ip(&format!("{ap}.ip"), ip));
                let hostname = str_of(addr, "hostname");
                if !hostname.is_empty() {
                    errs.extend(dns1123_label(hostname, &format!("{ap}.hostname")));
                }
                if let Some(node) = addr.get("nodeName").and_then(Value::as_str) {
                    errs.extend(dns1123_subdomain(node, &format!("{ap}.nodeName")));
                }
                errs.extend(non_special_ip(&format!("{ap}.ip"), ip));
            }
        }
        let ports = list_of(subset, "ports");
        for (j, port) in ports.iter().enumerate() {
            let pp = idx(&format!("{p}.ports"), j);
            let name = str_of(port, "name");
            if ports.len() > 1 && name.is_empty() {
                errs.push(FieldError::required(format!("{pp}.name"), ""));
            } else if !name.is_empty() {
                errs.extend(dns1123_label(name, &format!("{pp}.name")));
            }
            let number = int_of(port, "port").unwrap_or(0);
            for msg in is_valid_port_num(number) {
                errs.push(FieldError::invalid(format!("{pp}.port"), number, msg));
            }
            errs.extend(protocol(port, &format!("{pp}.protocol")));
            if let Some(app) = port.get("appProtocol").and_then(Value::as_str) {
                errs.extend(qualified_name(app, &format!("{pp}.appProtocol")));
            }
        }
    }
    errs
}

/// A port protocol, defaulted to TCP.
fn protocol(port: &Value, path: &str) -> Errs {
    match str_or(port, "protocol", "TCP") {
        "TCP" | "UDP" | "SCTP" => Vec::new(),
        p => vec![not_supported(path, p, &["SCTP", "TCP", "UDP"])],
    }
}

// ---------------------------------------------------------------------------------------
// Service
// ---------------------------------------------------------------------------------------

/// The Service's `spec.clusterIPs` as the strategy normalises it: a lone `clusterIP`
/// stands for a one-element list. `None` is Go's nil slice.
pub(crate) fn service_cluster_ips(spec: &Value) -> Option<Vec<String>> {
    match spec.get("clusterIPs").and_then(Value::as_array) {
        Some(list) if !list.is_empty() => Some(strings(list)),
        list => match str_of(spec, "clusterIP") {
            "" => list.map(|_| Vec::new()),
            ip => Some(vec![ip.to_string()]),
        },
    }
}

pub(crate) fn service_type(spec: &Value) -> &str {
    str_or(spec, "type", "ClusterIP")
}

pub(crate) fn is_headless(ips: Option<&[String]>) -> bool {
    matches!(ips, Some([only]) if only == "None")
}

pub(crate) fn externally_accessible(spec: &Value) -> bool {
    match service_type(spec) {
        "LoadBalancer" | "NodePort" => true,
        "ClusterIP" => !list_of(spec, "externalIPs").is_empty(),
        _ => false,
    }
}

/// `externalTrafficPolicy`, defaulted to `Cluster` where the service is reachable from outside.
pub(crate) fn external_traffic_policy(spec: &Value) -> &str {
    match str_of(spec, "externalTrafficPolicy") {
        "" if externally_accessible(spec) => "Cluster",
        p => p,
    }
}

pub(crate) fn needs_health_check(spec: &Value) -> bool {
    service_type(spec) == "LoadBalancer" && external_traffic_policy(spec) == "Local"
}

fn service(obj: &Value) -> Errs {
    let mut errs = object_meta(obj, Scope::Namespaced, NameRule::Dns1035Label);
    let spec = child(obj, "spec");
    let ty = service_type(spec);
    let ips = service_cluster_ips(spec);
    let headless = is_headless(ips.as_deref());
    let ports = list_of(spec, "ports");

    if ports.is_empty() && !headless && ty != "ExternalName" {
        errs.push(FieldError::required("spec.ports", ""));
    }
    match ty {
        "LoadBalancer" | "NodePort" if headless => {
            errs.push(FieldError::invalid(
                "spec.clusterIPs[0]",
                "None",
                format!("may not be set to 'None' for {ty} services"),
            ));
        }
        "ExternalName" => {
            if ips.as_ref().is_some_and(|l| !l.is_empty()) {
                errs.push(FieldError::forbidden(
                    "spec.clusterIPs",
                    "may not be set for ExternalName services",
                ));
            }
            if !list_of(spec, "ipFamilies").is_empty() {
                errs.push(FieldError::forbidden(
                    "spec.ipFamilies",
                    "may not be set for ExternalName services",
                ));
            }
            if present(spec, "ipFamilyPolicy") {
                errs.push(FieldError::forbidden(
                    "spec.ipFamilyPolicy",
                    "may not be set for ExternalName services",
                ));
            }
            let external = str_of(spec, "externalName");
            let cname = external.strip_suffix('.').unwrap_or(external);
            if cname.is_empty() {
                errs.push(FieldError::required("spec.externalName", ""));
            } else {
                errs.extend(dns1123_subdomain(cname, "spec.externalName"));
            }
        }
        _ => {}
    }

    let mut names = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        errs.extend(service_port(
            port,
            ports.len() > 1,
            &mut names,
            &idx("spec.ports", i),
        ));
    }
    if present(spec, "selector") {
        errs.extend(validate_labels(child(spec, "selector"), "spec.selector"));
    }

    match str_or(spec, "sessionAffinity", "None") {
        "ClientIP" => {
            let timeout = child(
                child(child(spec, "sessionAffinityConfig"), "clientIP"),
                "timeoutSeconds",
            );
            if let Some(t) = timeout.as_i64() {
                if t <= 0 || t > MAX_AFFINITY_TIMEOUT {
                    errs.push(FieldError::invalid(
                        "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                        t,
                        format!("must be greater than 0 and less than {MAX_AFFINITY_TIMEOUT}"),
                    ));
                }
            }
        }
        "None" => {
            if present(spec, "sessionAffinityConfig") {
                errs.push(FieldError::forbidden(
                    "spec.sessionAffinityConfig",
                    "must not be set when session affinity is None",
                ));
            }
        }
        other => errs.push(not_supported(
            "spec.sessionAffinity",
            other,
            &["ClientIP", "None"],
        )),
    }

    errs.extend(validate_service_cluster_ips(spec));

    for (i, ip) in strings(list_of(spec, "externalIPs")).iter().enumerate() {
        let p = idx("spec.externalIPs", i);
        match valid_ip(&p, ip) {
            e if e.is_empty() => errs.extend(non_special_ip(&p, ip)),
            e => errs.extend(e),
        }
    }

    if !matches!(
        ty,
        "ClusterIP" | "ExternalName" | "LoadBalancer" | "NodePort"
    ) {
        errs.push(not_supported(
            "spec.type",
            ty,
            &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
        ));
    }
    if ty == "ClusterIP" {
        for (i, port) in ports.iter().enumerate() {
            if int_of(port, "nodePort").unwrap_or(0) != 0 {
                errs.push(FieldError::forbidden(
                    format!("spec.ports[{i}].nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            }
        }
    }
    let mut node_ports = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let np = int_of(port, "nodePort").unwrap_or(0);
        if np != 0 && !node_ports.insert((str_or(port, "protocol", "TCP"), np)) {
            errs.push(FieldError::duplicate(
                format!("spec.ports[{i}].nodePort"),
                np,
            ));
        }
    }
    let mut keys = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let proto = str_or(port, "protocol", "TCP");
        let number = int_of(port, "port").unwrap_or(0);
        if !keys.insert((proto, number)) {
            let key = format!(
                "core.ServicePort{{Name:\"\", Protocol:{}, AppProtocol:(*string)(nil), Port:{number}, TargetPort:intstr.IntOrString{{Type:0, IntVal:0, StrVal:\"\"}}, NodePort:0}}",
                go_quote(proto)
            );
            errs.push(FieldError::new(
                ErrorType::Duplicate,
                idx("spec.ports", i),
                Some(BadValue::Go(key)),
                "",
            ));
        }
    }

    let ranges = strings(list_of(spec, "loadBalancerSourceRanges"));
    if !ranges.is_empty() {
        if ty != "LoadBalancer" {
            errs.push(FieldError::forbidden(
                "spec.LoadBalancerSourceRanges",
                "may only be used when `type` is 'LoadBalancer'",
            ));
        }
        for (i, r) in ranges.iter().enumerate() {
            errs.extend(valid_cidr(
                &idx("spec.LoadBalancerSourceRanges", i),
                r.trim(),
            ));
        }
    }
    if present(spec, "allocateLoadBalancerNodePorts") && ty != "LoadBalancer" {
        errs.push(FieldError::forbidden(
            "spec.allocateLoadBalancerNodePorts",
            "may only be used when `type` is 'LoadBalancer'",
        ));
    }
    if let Some(class) = spec.get("loadBalancerClass").and_then(Value::as_str) {
        if ty == "LoadBalancer" {
            errs.extend(qualified_name(class, "spec.loadBalancerClass"));
        } else {
            errs.push(FieldError::forbidden(
                "spec.loadBalancerClass",
                "may only be used when `type` is 'LoadBalancer'",
            ));
        }
    }

    let etp = external_traffic_policy(spec);
    if !externally_accessible(spec) {
        if !etp.is_empty() {
            errs.push(FieldError::invalid(
                "spec.externalTrafficPolicy",
                etp,
                "may only be set for externally-accessible services",
            ));
        }
    } else if !matches!(etp, "Cluster" | "Local") {
        errs.push(not_supported(
            "spec.externalTrafficPolicy",
            etp,
            &["Cluster", "Local"],
        ));
    }
    let hc = int_of(spec, "healthCheckNodePort").unwrap_or(0);
    if !needs_health_check(spec) {
        if hc != 0 {
            errs.push(FieldError::invalid(
                "spec.healthCheckNodePort",
                hc,
                "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
            ));
        }
    } else if hc == 0 {
        errs.push(FieldError::required("spec.healthCheckNodePort", ""));
    } else {
        for msg in is_valid_port_num(hc) {
            errs.push(FieldError::invalid("spec.healthCheckNodePort", hc, msg));
        }
    }
    if let Some(itp) = spec.get("internalTrafficPolicy").and_then(Value::as_str) {
        if !matches!(itp, "Cluster" | "Local") {
            errs.push(not_supported(
                "spec.internalTrafficPolicy",
                itp,
                &["Cluster", "Local"],
            ));
        }
    }
    if let Some(td) = spec.get("trafficDistribution").and_then(Value::as_str) {
        if td != "PreferClose" {
            errs.push(not_supported(
                "spec.trafficDistribution",
                td,
                &["PreferClose"],
            ));
        }
    }
    errs
}

fn service_port(port: &Value, require_name: bool, names: &mut HashSet<String>, path: &str) -> Errs {
    let mut errs = Vec::new();
    let name = str_of(port, "name");
    if require_name && name.is_empty() {
        errs.push(FieldError::required(format!("{path}.name"), ""));
    } else if !name.is_empty() {
        errs.extend(dns1123_label(name, &format!("{path}.name")));
        if !names.insert(name.to_string()) {
            errs.push(FieldError::duplicate(format!("{path}.name"), name));
        }
    }
    let number = int_of(port, "port").unwrap_or(0);
    for msg in is_valid_port_num(number) {
        errs.push(FieldError::invalid(format!("{path}.port"), number, msg));
    }
    errs.extend(protocol(port, &format!("{path}.protocol")));
    let target = match port.get("targetPort") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(v) if v.as_i64() == Some(0) => None,
        Some(v) => Some(v.clone()),
    };
    let target = target.unwrap_or(Value::from(number));
    errs.extend(port_num_or_name(
        Some(&target),
        &format!("{path}.targetPort"),
    ));
    if let Some(app) = port.get("appProtocol").and_then(Value::as_str) {
        errs.extend(qualified_name(app, &format!("{path}.appProtocol")));
    }
    errs
}

/// `ValidateServiceClusterIPsRelatedFields`: clusterIP / clusterIPs agreement, IP families,
/// family policy and dual-stack shape. The allocator runs it too before allocating.
pub(crate) fn validate_service_cluster_ips(spec: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if service_type(spec) == "ExternalName" {
        return errs;
    }
    let cluster_ip = str_of(spec, "clusterIP");
    let ips = service_cluster_ips(spec);
    let list = ips.clone().unwrap_or_default();
    let shown = go_strings(ips.as_deref());
    if !cluster_ip.is_empty() {
        match list.first() {
            None => errs.push(FieldError::required("spec.clusterIPs", "")),
            Some(first) if first != cluster_ip => {
                errs.push(invalid_go(
                    "spec.clusterIPs",
                    shown.clone(),
                    "first value must match `clusterIP`",
                ));
            }
            _ => {}
        }
    } else if !list.is_empty() {
        errs.push(invalid_go(
            "spec.clusterIPs",
            shown.clone(),
            "must be empty when `clusterIP` is not specified",
        ));
    }

    let families = strings(list_of(spec, "ipFamilies"));
    let mut seen = HashSet::new();
    for (i, fam) in families.iter().enumerate() {
        if !matches!(fam.as_str(), "IPv4" | "IPv6") {
            errs.push(not_supported(
                &idx("spec.ipFamilies", i),
                fam,
                &["IPv4", "IPv6"],
            ));
        }
        if !seen.insert(fam) {
            errs.push(FieldError::duplicate(
                idx("spec.ipFamilies", i),
                fam.as_str(),
            ));
        }
    }
    if let Some(policy) = spec.get("ipFamilyPolicy").and_then(Value::as_str) {
        if !matches!(
            policy,
            "SingleStack" | "PreferDualStack" | "RequireDualStack"
        ) {
            errs.push(not_supported(
                "spec.ipFamilyPolicy",
                policy,
                &["PreferDualStack", "RequireDualStack", "SingleStack"],
            ));
        }
    }

    let mut has_invalid = false;
    for (i, ip) in list.iter().enumerate() {
        if i == 0 && ip == "None" {
            if list.len() > 1 {
                has_invalid = true;
                errs.push(invalid_go(
                    "spec.clusterIPs",
                    shown.clone(),
                    "'None' must be the first and only value",
                ));
            }
            continue;
        }
        let e = valid_ip(&idx("spec.clusterIPs", i), ip);
        has_invalid |= !e.is_empty();
        errs.extend(e);
    }
    if list.len() > 2 {
        errs.push(invalid_go(
            "spec.clusterIPs",
            shown.clone(),
            "may only hold up to 2 values",
        ));
    }
    if has_invalid {
        return errs;
    }
    if list.len() > 1 {
        let v4 = list
            .iter()
            .filter(|ip| parse_ip(ip).is_some_and(|a| a.is_ipv4()))
            .count();
        if v4 == 0 || v4 == list.len() {
            errs.push(invalid_go(
                "spec.clusterIPs",
                shown,
                "may specify no more than one IP for each IP family",
            ));
        }
    }
    if !is_headless(Some(&list)) {
        for (i, (ip, fam)) in list.iter().zip(&families).enumerate() {
            let v6 = parse_ip(ip).is_some_and(|a| a.is_ipv6());
            if fam == "IPv4" && v6 {
                errs.push(FieldError::invalid(
                    idx("spec.clusterIPs", i),
                    ip.as_str(),
                    format!("expected an IPv4 value as indicated by `ipFamilies[{i}]`"),
                ));
            }
            if fam == "IPv6" && !v6 {
                errs.push(FieldError::invalid(
                    idx("spec.clusterIPs", i),
                    ip.as_str(),
                    format!("expected an IPv6 value as indicated by `ipFamilies[{i}]`"),
                ));
            }
        }
    }
    errs
}

/// The update-only Service checks: cluster IPs and families may not change once set, nor
/// the load balancer class or an allocated health check node port.
fn service_update(new: &Value, old: &Value) -> Errs {
    let (ns, os) = (child(new, "spec"), child(old, "spec"));
    let mut errs = Vec::new();
    let external = service_type(ns) == "ExternalName" || service_type(os) == "ExternalName";
    let (nips, oips) = (service_cluster_ips(ns), service_cluster_ips(os));
    let (nh, oh) = (is_headless(nips.as_deref()), is_headless(oips.as_deref()));
    let (nl, ol) = (nips.clone().unwrap_or_default(), oips.unwrap_or_default());
    let shown = go_strings(nips.as_deref());
    let change = "may not change once set";
    if !(external || nh && oh) {
        if ol.len() == nl.len() {
            for (i, (o, n)) in ol.iter().zip(&nl).enumerate() {
                if o != n {
                    errs.push(invalid_go(
                        &idx("spec.clusterIPs", i),
                        shown.clone(),
                        change,
                    ));
                }
            }
        } else if ol.len() > nl.len() {
            if nl.is_empty() {
                errs.push(invalid_go(
                    "spec.clusterIPs[0]",
                    shown.clone(),
                    "primary clusterIP can not be unset",
                ));
            }
            if !ol.is_empty() && !nl.is_empty() && nl[0] != ol[0] {
                errs.push(invalid_go("spec.clusterIPs[0]", shown.clone(), change));
            }
            if nl.len() == 1 && str_of(ns, "ipFamilyPolicy") != "SingleStack" {
                errs.push(policy_error(
                    ns,
                    "must be set to 'SingleStack' when releasing the secondary clusterIP",
                ));
            }
        } else if !ol.is_empty() && nl[0] != ol[0] {
            errs.push(invalid_go("spec.clusterIPs[0]", shown.clone(), change));
        }
    }
    if !external && nh == oh && !nh {
        let (nf, of) = (
            strings(list_of(ns, "ipFamilies")),
            strings(list_of(os, "ipFamilies")),
        );
        let families = go_family_list(list_of(ns, "ipFamilies"));
        if nf.len() == of.len() {
            for (o, n) in of.iter().zip(&nf) {
                if o != n {
                    errs.push(invalid_go("spec.ipFamilies[0]", families.clone(), change));
                }
            }
        } else if !of.is_empty() && !nf.is_empty() && nf[0] != of[0] {
            errs.push(invalid_go("spec.ipFamilies[0]", shown.clone(), change));
        }
    }
    if service_type(os) == "LoadBalancer" && service_type(ns) == "LoadBalancer" {
        let (nc, oc) = (ns.get("loadBalancerClass"), os.get("loadBalancerClass"));
        if nc.filter(|v| !v.is_null()) != oc.filter(|v| !v.is_null()) {
            let value = nc.and_then(Value::as_str).map_or(Value::Null, Value::from);
            errs.push(FieldError::invalid("spec.loadBalancerClass", value, change));
        }
    }
    if needs_health_check(os)
        && needs_health_check(ns)
        && int_of(ns, "healthCheckNodePort") != int_of(os, "healthCheckNodePort")
    {
        errs.push(FieldError::forbidden(
            "spec.healthCheckNodePort",
            FIELD_IMMUTABLE,
        ));
    }
    errs
}

fn go_family_list(list: &[Value]) -> String {
    if list.is_empty() {
        return "[]core.IPFamily(nil)".to_string();
    }
    let items: Vec<String> = list
        .iter()
        .map(|v| go_quote(v.as_str().unwrap_or("")))
        .collect();
    format!("[]core.IPFamily{{{}}}", items.join(", "))
}

fn policy_error(spec: &Value, detail: &str) -> FieldError {
    let value = spec
        .get("ipFamilyPolicy")
        .and_then(Value::as_str)
        .map_or(Value::Null, Value::from);
    FieldError::invalid("spec.ipFamilyPolicy", value, detail)
}

// ---------------------------------------------------------------------------------------
// Pods and pod templates
// ---------------------------------------------------------------------------------------

fn pod(obj: &Value) -> Errs {
    let mut errs = object_meta(obj, Scope::Namespaced, NameRule::Subdomain);
    let spec = child(obj, "spec");
    errs.extend(pod_spec(spec, "spec", true));
    for key in ["containers", "initContainers"] {
        for (i, c) in list_of(spec, key).iter().enumerate() {
            let image = str_of(c, "image");
            if image.len() != image.trim().len() {
                errs.push(FieldError::invalid(
                    format!("spec.{key}[{i}].image"),
                    image,
                    "must not have leading or trailing whitespace",
                ));
            }
        }
    }
    errs
}

/// Volume sources in the order the real check visits them, with the path it reports
/// when a second source is set (its spelling kept, `downwarAPI` included).
const VOLUME_SOURCES: [(&str, &str); 30] = [
    ("emptyDir", "emptyDir"),
    ("hostPath", "hostPath"),
    ("gitRepo", "gitRepo"),
    ("gcePersistentDisk", "gcePersistentDisk"),
    ("awsElasticBlockStore", "awsElasticBlockStore"),
    ("secret", "secret"),
    ("nfs", "nfs"),
    ("iscsi", "iscsi"),
    ("glusterfs", "glusterfs"),
    ("flocker", "flocker"),
    ("persistentVolumeClaim", "persistentVolumeClaim"),
    ("rbd", "rbd"),
    ("cinder", "cinder"),
    ("cephfs", "cephFS"),
    ("quobyte", "quobyte"),
    ("downwardAPI", "downwarAPI"),
    ("fc", "fc"),
    ("flexVolume", "flexVolume"),
    ("configMap", "configMap"),
    ("azureFile", "azureFile"),
    ("vsphereVolume", "vsphereVolume"),
    ("photonPersistentDisk", "photonPersistentDisk"),
    ("portworxVolume", "portworxVolume"),
    ("azureDisk", "azureDisk"),
    ("storageos", "storageos"),
    ("projected", "projected"),
    ("scaleIO", "scaleIO"),
    ("csi", "csi"),
    ("ephemeral", "ephemeral"),
    ("image", "image"),
];

/// `ValidatePodSpec` for the common fields; `is_pod` is `ResourceIsPod`.
fn pod_spec(spec: &Value, path: &str, is_pod: bool) -> Errs {
    let mut errs = Vec::new();
    let mut volumes = HashSet::new();
    for (i, vol) in list_of(spec, "volumes").iter().enumerate() {
        let vp = idx(&format!("{path}.volumes"), i);
        let mut el = Vec::new();
        let mut count = 0;
        for (key, shown) in VOLUME_SOURCES {
            if present(vol, key) {
                if count > 0 {
                    el.push(FieldError::forbidden(
                        format!("{vp}.{shown}"),
                        "may not specify more than 1 volume type",
                    ));
                } else {
                    count += 1;
                }
            }
        }
        if count == 0 {
            el.push(FieldError::required(
                vp.as_str(),
                "must specify a volume type",
            ));
        }
        let name = str_of(vol, "name");
        if name.is_empty() {
            el.push(FieldError::required(format!("{vp}.name"), ""));
        } else {
            el.extend(dns1123_label(name, &format!("{vp}.name")));
        }
        if volumes.contains(name) {
            el.push(FieldError::duplicate(format!("{vp}.name"), name));
        }
        if el.is_empty() {
            volumes.insert(name.to_string());
        }
        errs.extend(el);
    }

    let containers = list_of(spec, "containers");
    let cpath = format!("{path}.containers");
    if containers.is_empty() {
        errs.push(FieldError::required(cpath.as_str(), ""));
    }
    let mut names = HashSet::new();
    for (i, c) in containers.iter().enumerate() {
        let p = idx(&cpath, i);
        errs.extend(container_common(c, &volumes, &p));
        if !names.insert(str_of(c, "name")) {
            errs.push(FieldError::duplicate(
                format!("{p}.name"),
                str_of(c, "name"),
            ));
        }
        for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
            errs.extend(probe_errors(c, probe, &p));
        }
        if present(c, "restartPolicy") {
            errs.push(FieldError::forbidden(
                format!("{p}.restartPolicy"),
                "may not be set for non-init containers",
            ));
        }
    }
    errs.extend(host_port_conflicts(containers, &cpath));
    let ipath = format!("{path}.initContainers");
    for (i, c) in list_of(spec, "initContainers").iter().enumerate() {
        let p = idx(&ipath, i);
        errs.extend(container_common(c, &volumes, &p));
        let restart_always = match c.get("restartPolicy").and_then(Value::as_str) {
            Some("Always") => true,
            Some(other) => {
                errs.push(not_supported(
                    &format!("{p}.restartPolicy"),
                    other,
                    &["Always"],
                ));
                false
            }
            None => false,
        };
        let name = str_of(c, "name");
        if names.contains(name) {
            errs.push(FieldError::duplicate(format!("{p}.name"), name));
        } else if !name.is_empty() {
            names.insert(name);
        }
        errs.extend(host_port_conflicts(std::slice::from_ref(c), &ipath));
        if restart_always {
            for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
                errs.extend(probe_errors(c, probe, &p));
            }
        } else {
            for key in [
                "lifecycle",
                "livenessProbe",
                "readinessProbe",
                "startupProbe",
            ] {
                if present(c, key) {
                    errs.push(FieldError::forbidden(
                        format!("{p}.{key}"),
                        "may not be set for init containers without restartPolicy=Always",
                    ));
                }
            }
        }
    }

    let host_network = child(spec, "hostNetwork").as_bool() == Some(true);
    if host_network {
        for (i, c) in containers.iter().enumerate() {
            for (j, port) in list_of(c, "ports").iter().enumerate() {
                let (hp, cp) = (
                    int_of(port, "hostPort").unwrap_or(0),
                    int_of(port, "containerPort").unwrap_or(0),
                );
                if (is_pod || hp != 0) && hp != cp {
                    errs.push(FieldError::invalid(
                        format!("{cpath}[{i}].ports[{j}].hostPort"),
                        hp,
                        "must match `containerPort` when `hostNetwork` is true",
                    ));
                }
            }
        }
    }
    match str_or(spec, "restartPolicy", "Always") {
        "Always" | "OnFailure" | "Never" => {}
        other => errs.push(not_supported(
            &format!("{path}.restartPolicy"),
            other,
            &["Always", "OnFailure", "Never"],
        )),
    }
    match str_or(spec, "dnsPolicy", "ClusterFirst") {
        "ClusterFirstWithHostNet" | "ClusterFirst" | "Default" | "None" => {}
        other => errs.push(not_supported(
            &format!("{path}.dnsPolicy"),
            other,
            &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
        )),
    }
    errs.extend(validate_labels(
        child(spec, "nodeSelector"),
        &format!("{path}.nodeSelector"),
    ));
    for key in ["serviceAccountName", "nodeName"] {
        let v = str_of(spec, key);
        if !v.is_empty() {
            errs.extend(dns1123_subdomain(v, &format!("{path}.{key}")));
        }
    }
    if let Some(ads) = int_of(spec, "activeDeadlineSeconds") {
        if !(1..=i64::from(i32::MAX)).contains(&ads) {
            errs.push(FieldError::invalid(
                format!("{path}.activeDeadlineSeconds"),
                ads,
                inclusive_range_error(1, i64::from(i32::MAX)),
            ));
        }
    }
    for key in ["hostname", "subdomain"] {
        let v = str_of(spec, key);
        if !v.is_empty() {
            errs.extend(dns1123_label(v, &format!("{path}.{key}")));
        }
    }
    errs.extend(tolerations(
        list_of(spec, "tolerations"),
        &format!("{path}.tolerations"),
    ));
    let pcn = str_of(spec, "priorityClassName");
    if !pcn.is_empty() {
        errs.extend(dns1123_subdomain(pcn, &format!("{path}.priorityClassName")));
    }
    errs
}

fn container_common(c: &Value, volumes: &HashSet<String>, path: &str) -> Errs {
    let mut errs = Vec::new();
    let name = str_of(c, "name");
    if name.is_empty() {
        errs.push(FieldError::required(format!("{path}.name"), ""));
    } else {
        errs.extend(dns1123_label(name, &format!("{path}.name")));
    }
    if str_of(c, "image").is_empty() {
        errs.push(FieldError::required(format!("{path}.image"), ""));
    }
    match str_or(c, "terminationMessagePolicy", "File") {
        "File" | "FallbackToLogsOnError" => {}
        other => errs.push(not_supported(
            &format!("{path}.terminationMessagePolicy"),
            other,
            &["File", "FallbackToLogsOnError"],
        )),
    }
    let mut port_names = HashSet::new();
    for (i, port) in list_of(c, "ports").iter().enumerate() {
        let pp = idx(&format!("{path}.ports"), i);
        let pname = str_of(port, "name");
        if !pname.is_empty() {
            let msgs = is_valid_port_name(pname);
            if !msgs.is_empty() {
                errs.extend(
                    msgs.into_iter()
                        .map(|m| FieldError::invalid(format!("{pp}.name"), pname, m)),
                );
            } else if !port_names.insert(pname) {
                errs.push(FieldError::duplicate(format!("{pp}.name"), pname));
            }
        }
        match int_of(port, "containerPort").unwrap_or(0) {
            0 => errs.push(FieldError::required(format!("{pp}.containerPort"), "")),
            n => errs.extend(
                is_valid_port_num(n)
                    .into_iter()
                    .map(|m| FieldError::invalid(format!("{pp}.containerPort"), n, m)),
            ),
        }
        let hp = int_of(port, "hostPort").unwrap_or(0);
        if hp != 0 {
            errs.extend(
                is_valid_port_num(hp)
                    .into_iter()
                    .map(|m| FieldError::invalid(format!("{pp}.hostPort"), hp, m)),
            );
        }
        errs.extend(protocol(port, &format!("{pp}.protocol")));
    }
    for (i, env) in list_of(c, "env").iter().enumerate() {
        let ep = format!("{}.name", idx(&format!("{path}.env"), i));
        let ename = str_of(env, "name");
        if ename.is_empty() {
            errs.push(FieldError::required(ep, ""));
        } else {
            errs.extend(
                is_env_var_name(ename)
                    .into_iter()
                    .map(|m| FieldError::invalid(ep.as_str(), ename, m)),
            );
        }
    }
    let mut mount_paths = HashSet::new();
    for (i, m) in list_of(c, "volumeMounts").iter().enumerate() {
        let mp = idx(&format!("{path}.volumeMounts"), i);
        let mname = str_of(m, "name");
        if mname.is_empty() {
            errs.push(FieldError::required(format!("{mp}.name"), ""));
        }
        if !volumes.contains(mname) {
            errs.push(FieldError::not_found(format!("{mp}.name"), mname));
        }
        let mount_path = str_of(m, "mountPath");
        if mount_path.is_empty() {
            errs.push(FieldError::required(format!("{mp}.mountPath"), ""));
        }
        if !mount_paths.insert(mount_path) {
            errs.push(FieldError::invalid(
                format!("{mp}.mountPath"),
                mount_path,
                "must be unique",
            ));
        }
    }
    if let Some(policy) = c.get("imagePullPolicy").and_then(Value::as_str) {
        if !matches!(policy, "" | "Always" | "IfNotPresent" | "Never") {
            errs.push(not_supported(
                &format!("{path}.imagePullPolicy"),
                policy,
                &["Always", "IfNotPresent", "Never"],
            ));
        }
    }
    errs
}

fn probe_errors(c: &Value, key: &str, path: &str) -> Errs {
    let Some(probe) = c.get(key).filter(|p| !p.is_null()) else {
        return Vec::new();
    };
    let p = format!("{path}.{key}");
    let mut errs = Vec::new();
    let mut handlers = 0;
    for handler in ["exec", "httpGet", "tcpSocket", "grpc"] {
        let Some(h) = probe.get(handler).filter(|h| !h.is_null()) else {
            continue;
        };
        let hp = format!("{p}.{handler}");
        if handlers > 0 {
            errs.push(FieldError::forbidden(
                hp,
                "may not specify more than 1 handler type",
            ));
            continue;
        }
        handlers += 1;
        match handler {
            "exec" if list_of(h, "command").is_empty() => {
                errs.push(FieldError::required(format!("{hp}.command"), ""))
            }
            "httpGet" => {
                errs.extend(port_num_or_name(h.get("port"), &format!("{hp}.port")));
                match str_or(h, "scheme", "HTTP") {
                    "HTTP" | "HTTPS" => {}
                    s => errs.push(not_supported(
                        &format!("{hp}.scheme"),
                        s,
                        &["HTTP", "HTTPS"],
                    )),
                }
            }
            "tcpSocket" => errs.extend(port_num_or_name(h.get("port"), &format!("{hp}.port"))),
            "grpc" => {
                let n = int_of(h, "port").unwrap_or(0);
                errs.extend(
                    is_valid_port_num(n)
                        .into_iter()
                        .map(|m| FieldError::invalid(format!("{hp}.port"), n, m)),
                );
            }
            _ => {}
        }
    }
    if handlers == 0 {
        errs.push(FieldError::required(
            p.as_str(),
            "must specify a handler type",
        ));
    }
    for field in [
        "initialDelaySeconds",
        "timeoutSeconds",
        "periodSeconds",
        "successThreshold",
        "failureThreshold",
    ] {
        errs.extend(non_negative(&format!("{p}.{field}"), int_of(probe, field)));
    }
    let grace = int_of(probe, "terminationGracePeriodSeconds");
    if let Some(g) = grace.filter(|g| *g <= 0) {
        errs.push(FieldError::invalid(
            format!("{p}.terminationGracePeriodSeconds"),
            g,
            "must be greater than 0",
        ));
    }
    match key {
        "readinessProbe" => {
            if let Some(g) = grace {
                errs.push(FieldError::invalid(
                    format!("{p}.terminationGracePeriodSeconds"),
                    g,
                    "must not be set for readinessProbes",
                ));
            }
        }
        _ => {
            let success = int_of(probe, "successThreshold")
                .filter(|s| *s != 0)
                .unwrap_or(1);
            if success != 1 {
                errs.push(FieldError::invalid(
                    format!("{p}.successThreshold"),
                    success,
                    "must be 1",
                ));
            }
        }
    }
    errs
}

fn host_port_conflicts(containers: &[Value], path: &str) -> Errs {
    let mut seen = HashSet::new();
    let mut errs = Vec::new();
    for (ci, c) in containers.iter().enumerate() {
        for (pi, port) in list_of(c, "ports").iter().enumerate() {
            let hp = int_of(port, "hostPort").unwrap_or(0);
            if hp == 0 {
                continue;
            }
            let key = format!(
                "{}/{}/{hp}",
                str_or(port, "protocol", "TCP"),
                str_of(port, "hostIP")
            );
            if !seen.insert(key.clone()) {
                errs.push(FieldError::duplicate(
                    format!("{path}[{ci}].ports[{pi}].hostPort"),
                    key,
                ));
            }
        }
    }
    errs
}

fn tolerations(list: &[Value], path: &str) -> Errs {
    let mut errs = Vec::new();
    for (i, t) in list.iter().enumerate() {
        let p = idx(path, i);
        let (key, op, value, effect) = (
            str_of(t, "key"),
            str_of(t, "operator"),
            str_of(t, "value"),
            str_of(t, "effect"),
        );
        if !key.is_empty() {
            errs.extend(label_name(key, &format!("{p}.key")));
        }
        if key.is_empty() && op != "Exists" {
            errs.push(FieldError::invalid(
                format!("{p}.operator"),
                op,
                "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            ));
        }
        if present(t, "tolerationSeconds") && effect != "NoExecute" {
            errs.push(FieldError::invalid(
                format!("{p}.effect"),
                effect,
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            ));
        }
        match op {
            "Equal" | "" => {
                let msgs = is_valid_label_value(value);
                if !msgs.is_empty() {
                    errs.push(FieldError::invalid(
                        format!("{p}.operator"),
                        value,
                        msgs.join(";"),
                    ));
                }
            }
            "Exists" => {
                if !value.is_empty() {
                    errs.push(FieldError::invalid(
                        format!("{p}.operator"),
                        value,
                        "value must be empty when `operator` is 'Exists'",
                    ));
                }
            }
            other => errs.push(not_supported(
                &format!("{p}.operator"),
                other,
                &["Equal", "Exists"],
            )),
        }
        if !effect.is_empty() && !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute")
        {
            errs.push(not_supported(
                &format!("{p}.effect"),
                effect,
                &["NoSchedule", "PreferNoSchedule", "NoExecute"],
            ));
        }
    }
    errs
}

/// `ValidatePodTemplateSpec`: template labels and annotations (reported under
/// `<path>.labels`, as the real code does) and the pod spec.
fn pod_template(template: &Value, path: &str) -> Errs {
    let meta = child(template, "metadata");
    let mut errs = validate_labels(child(meta, "labels"), &format!("{path}.labels"));
    errs.extend(validate_annotations(
        child(meta, "annotations"),
        &format!("{path}.annotations"),
    ));
    errs.extend(pod_spec(
        child(template, "spec"),
        &format!("{path}.spec"),
        false,
    ));
    errs
}

// ---------------------------------------------------------------------------------------
// Deployment and ReplicaSet
// ---------------------------------------------------------------------------------------

/// Selector, template-matches-selector and template checks shared by Deployment and
/// ReplicaSet (`ValidatePodTemplateSpecForReplicaSet`).
fn workload_selector_and_template(spec: &Value) -> Errs {
    let mut errs = Vec::new();
    let selector = spec.get("selector").filter(|s| !s.is_null());
    let mut selector_ok = true;
    match selector {
        None => errs.push(FieldError::required("spec.selector", "")),
        Some(sel) => {
            let sel_errs = label_selector(sel, "spec.selector");
            selector_ok = sel_errs.is_empty();
            errs.extend(sel_errs);
            if selector_is_empty(sel) {
                errs.push(invalid_go(
                    "spec.selector",
                    go_label_selector(sel),
                    "empty selector is invalid for deployment",
                ));
            }
        }
    }
    if !selector_ok {
        if let Some(sel) = selector {
            errs.push(invalid_go(
                "spec.selector",
                go_label_selector(sel),
                "invalid label selector",
            ));
        }
        return errs;
    }
    let template = child(spec, "template");
    let labels = child(child(template, "metadata"), "labels").as_object();
    let matches = match selector {
        None => false,
        Some(sel) => selector_is_empty(sel) || selector_matches(sel, labels),
    };
    if !matches {
        errs.push(invalid_go(
            "spec.template.metadata.labels",
            go_string_map(labels),
            SELECTOR_MISMATCH,
        ));
    }
    errs.extend(pod_template(template, "spec.template"));
    let tspec = child(template, "spec");
    let restart = str_or(tspec, "restartPolicy", "Always");
    if restart != "Always" {
        errs.push(not_supported(
            "spec.template.spec.restartPolicy",
            restart,
            &["Always"],
        ));
    }
    if present(tspec, "activeDeadlineSeconds") {
        errs.push(FieldError::forbidden(
            "spec.template.spec.activeDeadlineSeconds",
            "activeDeadlineSeconds in ReplicaSet is not Supported",
        ));
    }
    errs
}

fn deployment(obj: &Value) -> Errs {
    let mut errs = object_meta(obj, Scope::Namespaced, NameRule::Subdomain);
    let spec = child(obj, "spec");
    errs.extend(non_negative("spec.replicas", int_of(spec, "replicas")));
    errs.extend(workload_selector_and_template(spec));
    errs.extend(deployment_strategy(child(spec, "strategy")));
    let min_ready = int_of(spec, "minReadySeconds").unwrap_or(0);
    errs.extend(non_negative("spec.minReadySeconds", Some(min_ready)));
    errs.extend(non_negative(
        "spec.revisionHistoryLimit",
        int_of(spec, "revisionHistoryLimit"),
    ));
    let deadline = int_of(spec, "progressDeadlineSeconds").unwrap_or(600);
    errs.extend(non_negative("spec.progressDeadlineSeconds", Some(deadline)));
    if deadline <= min_ready {
        errs.push(FieldError::invalid(
            "spec.progressDeadlineSeconds",
            deadline,
            "must be greater than minReadySeconds",
        ));
    }
    errs
}

fn replica_set(obj: &Value) -> Errs {
    let mut errs = object_meta(obj, Scope::Namespaced, NameRule::Subdomain);
    let spec = child(obj, "spec");
    errs.extend(non_negative("spec.replicas", int_of(spec, "replicas")));
    errs.extend(non_negative(
        "spec.minReadySeconds",
        int_of(spec, "minReadySeconds"),
    ));
    errs.extend(workload_selector_and_template(spec));
    errs
}

fn deployment_strategy(strategy: &Value) -> Errs {
    let mut errs = Vec::new();
    let rolling = strategy.get("rollingUpdate").filter(|r| !r.is_null());
    match str_or(strategy, "type", "RollingUpdate") {
        "Recreate" => {
            if rolling.is_some() {
                errs.push(FieldError::forbidden(
                    "spec.strategy.rollingUpdate",
                    "may not be specified when strategy `type` is 'Recreate'",
                ));
            }
        }
        "RollingUpdate" => {
            let path = "spec.strategy.rollingUpdate";
            let default = Value::from("25%");
            let field = |k: &str| {
                rolling
                    .and_then(|r| r.get(k))
                    .filter(|v| !v.is_null())
                    .unwrap_or(&default)
                    .clone()
            };
            let (unavailable, surge) = (field("maxUnavailable"), field("maxSurge"));
            errs.extend(int_or_percent(
                &unavailable,
                &format!("{path}.maxUnavailable"),
            ));
            errs.extend(int_or_percent(&surge, &format!("{path}.maxSurge")));
            if int_or_percent_value(&unavailable) == 0 && int_or_percent_value(&surge) == 0 {
                errs.push(invalid_go(
                    &format!("{path}.maxUnavailable"),
                    go_int_or_string(Some(&unavailable)),
                    "may not be 0 when `maxSurge` is 0",
                ));
            }
            if percent_value(&unavailable).is_some_and(|p| p > 100) {
                errs.push(invalid_go(
                    &format!("{path}.maxUnavailable"),
                    go_int_or_string(Some(&unavailable)),
                    "must not be greater than 100%",
                ));
            }
        }
        other => {
            let rolling_shown = if rolling.is_some() {
                "(*apps.RollingUpdateDeployment)(0xc000000000)"
            } else {
                "(*apps.RollingUpdateDeployment)(nil)"
            };
            let shown = format!(
                "apps.DeploymentStrategy{{Type:{}, RollingUpdate:{rolling_shown}}}",
                go_quote(other)
            );
            let err = FieldError::new(
                ErrorType::NotSupported,
                "spec.strategy",
                Some(BadValue::Go(shown)),
                "supported values: \"Recreate\", \"RollingUpdate\"",
            );
            errs.push(err);
        }
    }
    errs
}

fn int_or_percent(v: &Value, path: &str) -> Errs {
    match v {
        Value::String(s) => is_valid_percent(s)
            .into_iter()
            .map(|m| invalid_go(path, go_int_or_string(Some(v)), m))
            .collect(),
        v => non_negative(path, Some(v.as_i64().unwrap_or(0))),
    }
}

fn percent_value(v: &Value) -> Option<i64> {
    let s = v.as_str()?;
    if !is_valid_percent(s).is_empty() {
        return None;
    }
    s.trim_end_matches('%').parse().ok()
}

fn int_or_percent_value(v: &Value) -> i64 {
    match v {
        Value::String(s) => percent_value(v).unwrap_or_else(|| s.parse().unwrap_or(0)),
        v => v.as_i64().unwrap_or(0),
    }
}

/// apps/v1 selectors may not change (the registry strategy's check).
fn selector_immutable(new: &Value, old: &Value) -> Errs {
    let norm = |obj: &Value| -> Option<(Value, Value)> {
        let sel = child(child(obj, "spec"), "selector");
        if sel.is_null() {
            return None;
        }
        Some((
            empty_as_null(child(sel, "matchLabels")).clone(),
            empty_as_null(child(sel, "matchExpressions")).clone(),
        ))
    };
    if norm(new) == norm(old) {
        return Vec::new();
    }
    let sel = child(child(new, "spec"), "selector");
    if sel.is_null() {
        return vec![FieldError::invalid(
            "spec.selector",
            Value::Null,
            FIELD_IMMUTABLE,
        )];
    }
    vec![invalid_go(
        "spec.selector",
        go_label_selector(sel),
        FIELD_IMMUTABLE,
    )]
}

// ---------------------------------------------------------------------------------------
// EndpointSlice
// ---------------------------------------------------------------------------------------

fn endpoint_slice(obj: &Value) -> Errs {
    let mut errs = object_meta(obj, Scope::Namespaced, NameRule::Subdomain);
    let address_type = str_of(obj, "addressType");
    match address_type {
        "" => errs.push(FieldError::required("addressType", "")),
        "IPv4" | "IPv6" | "FQDN" => {}
        other => errs.push(not_supported(
            "addressType",
            other,
            &["FQDN", "IPv4", "IPv6"],
        )),
    }
    let endpoints = list_of(obj, "endpoints");
    if endpoints.len() > 1000 {
        errs.push(FieldError::too_many("endpoints", endpoints.len(), 1000));
    } else {
        for (i, ep) in endpoints.iter().enumerate() {
            let p = idx("endpoints", i);
            let ap = format!("{p}.addresses");
            let addresses = strings(list_of(ep, "addresses"));
            if addresses.is_empty() {
                errs.push(FieldError::required(
                    ap.as_str(),
                    "must contain at least 1 address",
                ));
            } else if addresses.len() > 100 {
                errs.push(FieldError::too_many(ap.as_str(), addresses.len(), 100));
            }
            for (j, addr) in addresses.iter().enumerate() {
                let path = idx(&ap, j);
                let parsed = parse_ip(addr);
                match address_type {
                    "IPv4" => {
                        if !parsed.is_some_and(|a| a.is_ipv4()) {
                            errs.push(FieldError::invalid(
                                path.as_str(),
                                addr.as_str(),
                                "must be a valid IPv4 address",
                            ));
                        }
                        errs.extend(non_special_ip(&path, addr));
                    }
                    "IPv6" => {
                        if !parsed.is_some_and(|a| a.is_ipv6()) {
                            errs.push(FieldError::invalid(
                                path.as_str(),
                                addr.as_str(),
                                "must be a valid IPv6 address",
                            ));
                        }
                        errs.extend(non_special_ip(&path, addr));
                    }
                    "FQDN" => errs.extend(fully_qualified_domain_name(&path, addr)),
                    _ => {}
                }
            }
            if let Some(node) = ep.get("nodeName").and_then(Value::as_str) {
                errs.extend(dns1123_subdomain(node, &format!("{p}.nodeName")));
            }
            errs.extend(validate_labels(
                child(ep, "deprecatedTopology"),
                &format!("{p}.deprecatedTopology"),
            ));
            if let Some(host) = ep.get("hostname").and_then(Value::as_str) {
                errs.extend(dns1123_label(host, &format!("{p}.hostname")));
            }
        }
    }
    let mut names = HashSet::new();
    for (i, port) in list_of(obj, "ports").iter().enumerate() {
        let p = idx("ports", i);
        let name = str_of(port, "name");
        if !name.is_empty() {
            errs.extend(dns1123_label(name, &format!("{p}.name")));
        }
        if !names.insert(name) {
            errs.push(FieldError::duplicate(format!("{p}.name"), name));
        }
        errs.extend(protocol(port, &format!("{p}.protocol")));
        if let Some(app) = port.get("appProtocol").and_then(Value::as_str) {
            errs.extend(qualified_name(app, &format!("{p}.appProtocol")));
        }
    }
    errs
}

/// `IsFullyQualifiedDomainName`.
fn fully_qualified_domain_name(path: &str, name: &str) -> Errs {
    if name.is_empty() {
        return vec![FieldError::required(path, "")];
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    let msgs = is_dns1123_subdomain(name);
    if !msgs.is_empty() {
        return vec![FieldError::invalid(path, name, msgs.join(","))];
    }
    if !name.contains('.') {
        return vec![FieldError::invalid(
            path,
            name,
            "should be a domain with at least two segments separated by dots",
        )];
    }
    for label in name.split('.') {
        let msgs = is_dns1123_label(label);
        if !msgs.is_empty() {
            return vec![FieldError::invalid(path, label, msgs.join(","))];
        }
    }
    Vec::new()
}

// ---------------------------------------------------------------------------------------
// Ingress, IngressClass, NetworkPolicy
// ---------------------------------------------------------------------------------------

fn ingress_create(obj: &Value) -> Errs {
    let mut errs = ingress(obj);
    let annotation = child(child(obj, "metadata"), "annotations")
        .get("kubernetes.io/ingress.class")
        .and_then(Value::as_str);
    let class = child(obj, "spec")
        .get("ingressClassName")
        .and_then(Value::as_str);
    if let (Some(a), Some(c)) = (annotation, class) {
        if a != c {
            errs.push(FieldError::invalid(
                "annotations.kubernetes.io/ingress.class",
                a,
                "must match `ingressClassName` when both are specified",
            ));
        }
    }
    errs
}

fn ingress(obj: &Value) -> Errs {
    let mut errs = object_meta(obj, Scope::Namespaced, NameRule::Subdomain);
    let spec = child(obj, "spec");
    let rules = list_of(spec, "rules");
    let default_backend = spec.get("defaultBackend").filter(|b| !b.is_null());
    if rules.is_empty() && default_backend.is_none() {
        let shown = if present(spec, "rules") {
            "[]networking.IngressRule{}"
        } else {
            "[]networking.IngressRule(nil)"
        };
        errs.push(invalid_go(
            "spec",
            shown,
            "either `defaultBackend` or `rules` must be specified",
        ));
    }
    if let Some(backend) = default_backend {
        errs.extend(ingress_backend(backend, "spec.defaultBackend"));
    }
    for (i, rule) in rules.iter().enumerate() {
        let p = idx("spec.rules", i);
        let host = str_of(rule, "host");
        if !host.is_empty() {
            if parse_ip(host).is_some() {
                errs.push(FieldError::invalid(
                    format!("{p}.host"),
                    host,
                    "must be a DNS name, not an IP address",
                ));
            }
            let msgs = if host.contains('*') {
                is_wildcard_dns1123_subdomain(host)
            } else {
                is_dns1123_subdomain(host)
            };
            errs.extend(
                msgs.into_iter()
                    .map(|m| FieldError::invalid(format!("{p}.host"), host, m)),
            );
        }
        if let Some(http) = rule.get("http").filter(|h| !h.is_null()) {
            let hp = format!("{p}.http");
            let paths = list_of(http, "paths");
            if paths.is_empty() {
                errs.push(FieldError::required(format!("{hp}.paths"), ""));
            }
            for (j, path) in paths.iter().enumerate() {
                errs.extend(ingress_path(path, &idx(&format!("{hp}.paths"), j)));
            }
        }
    }
    for (t, tls) in list_of(spec, "tls").iter().enumerate() {
        let tp = idx("spec.tls", t);
        for (i, host) in strings(list_of(tls, "hosts")).iter().enumerate() {
            let msgs = if host.contains('*') {
                is_wildcard_dns1123_subdomain(host)
            } else {
                is_dns1123_subdomain(host)
            };
            errs.extend(
                msgs.into_iter()
                    .map(|m| FieldError::invalid(idx(&format!("{tp}.hosts"), i), host.as_str(), m)),
            );
        }
        let secret = str_of(tls, "secretName");
        if !secret.is_empty() {
            errs.extend(dns1123_subdomain(secret, &format!("{tp}.secretName")));
        }
    }
    if let Some(class) = spec.get("ingressClassName").and_then(Value::as_str) {
        errs.extend(dns1123_subdomain(class, "spec.ingressClassName"));
    }
    errs
}

fn ingress_path(path: &Value, p: &str) -> Errs {
    let mut errs = Vec::new();
    let Some(path_type) = path.get("pathType").and_then(Value::as_str) else {
        return vec![FieldError::required(
            format!("{p}.pathType"),
            "pathType must be specified",
        )];
    };
    let value = str_of(path, "path");
    let pp = format!("{p}.path");
    match path_type {
        "Exact" | "Prefix" => {
            if !value.starts_with('/') {
                errs.push(FieldError::invalid(
                    pp.as_str(),
                    value,
                    "must be an absolute path",
                ));
            }
            if !value.is_empty() {
                for seq in ["//", "/./", "/../", "%2f", "%2F"] {
                    if value.contains(seq) {
                        errs.push(FieldError::invalid(
                            pp.as_str(),
                            value,
                            format!("must not contain '{seq}'"),
                        ));
                    }
                }
                for suffix in ["/..", "/."] {
                    if value.ends_with(suffix) {
                        errs.push(FieldError::invalid(
                            pp.as_str(),
                            value,
                            format!("cannot end with '{suffix}'"),
                        ));
                    }
                }
            }
        }
        "ImplementationSpecific" => {
            if !value.is_empty() && !value.starts_with('/') {
                errs.push(FieldError::invalid(
                    pp.as_str(),
                    value,
                    "must be an absolute path",
                ));
            }
        }
        other => errs.push(not_supported(
            &format!("{p}.pathType"),
            other,
            &["Exact", "ImplementationSpecific", "Prefix"],
        )),
    }
    errs.extend(ingress_backend(
        child(path, "backend"),
        &format!("{p}.backend"),
    ));
    errs
}

fn ingress_backend(backend: &Value, path: &str) -> Errs {
    let mut errs = Vec::new();
    let (resource, service) = (
        backend.get("resource").filter(|r| !r.is_null()),
        backend.get("service").filter(|s| !s.is_null()),
    );
    match (resource, service) {
        (Some(_), Some(_)) => errs.push(FieldError::invalid(
            path,
            "",
            "cannot set both resource and service backends",
        )),
        (Some(r), None) => {
            let rp = format!("{path}.resource");
            if let Some(group) = r.get("apiGroup").and_then(Value::as_str) {
                errs.extend(dns1123_subdomain(group, &format!("{rp}.apiGroup")));
            }
            for key in ["kind", "name"] {
                if str_of(r, key).is_empty() {
                    errs.push(FieldError::required(format!("{rp}.{key}"), ""));
                }
            }
        }
        (None, Some(s)) => {
            let name = str_of(s, "name");
            if name.is_empty() {
                errs.push(FieldError::required(format!("{path}.service.name"), ""));
            } else {
                for msg in NameRule::Dns1035Label.check(name, false) {
                    errs.push(FieldError::invalid(
                        format!("{path}.service.name"),
                        name,
                        msg,
                    ));
                }
            }
            let port = child(s, "port");
            let (pname, number) = (str_of(port, "name"), int_of(port, "number").unwrap_or(0));
            match (pname.is_empty(), number == 0) {
                (false, false) => errs.push(FieldError::invalid(
                    path,
                    "",
                    "cannot set both port name & port number",
                )),
                (false, true) => {
                    errs.extend(is_valid_port_name(pname).into_iter().map(|m| {
                        FieldError::invalid(format!("{path}.service.port.name"), pname, m)
                    }))
                }
                (true, false) => errs.extend(is_valid_port_num(number).into_iter().map(|m| {
                    FieldError::invalid(format!("{path}.service.port.number"), number, m)
                })),
                (true, true) => errs.push(FieldError::required(
                    path,
                    "port name or number is required",
                )),
            }
        }
        (None, None) => errs.push(FieldError::invalid(
            path,
            "",
            "resource or service backend is required",
        )),
    }
    errs
}

fn ingress_class(obj: &Value) -> Errs {
    let mut errs = object_meta(obj, Scope::Cluster, NameRule::Subdomain);
    let spec = child(obj, "spec");
    let controller = str_of(spec, "controller");
    if controller.is_empty() {
        errs.push(FieldError::required("spec.controller", ""));
    } else {
        if controller.len() > 250 {
            errs.push(FieldError::too_long("spec.controller", 250));
        }
        errs.extend(domain_prefixed_path("spec.controller", controller));
    }
    if let Some(params) = spec.get("parameters").filter(|p| !p.is_null()) {
        let pp = "spec.parameters";
        if let Some(group) = params.get("apiGroup").and_then(Value::as_str) {
            errs.extend(dns1123_subdomain(group, &format!("{pp}.apiGroup")));
        }
        for key in ["kind", "name"] {
            if str_of(params, key).is_empty() {
                errs.push(FieldError::required(format!("{pp}.{key}"), ""));
            }
        }
        let namespace = params.get("namespace").and_then(Value::as_str);
        match str_or(params, "scope", "Cluster") {
            "Namespace" => match namespace {
                None => errs.push(FieldError::required(
                    format!("{pp}.namespace"),
                    "`parameters.scope` is set to 'Namespace'",
                )),
                Some(ns) => errs.extend(dns1123_label(ns, &format!("{pp}.namespace"))),
            },
            "Cluster" => {
                if namespace.is_some() {
                    errs.push(FieldError::forbidden(
                        format!("{pp}.namespace"),
                        "`parameters.scope` is set to 'Cluster'",
                    ));
                }
            }
            other => errs.push(not_supported(
                &format!("{pp}.scope"),
                other,
                &["Cluster", "Namespace"],
            )),
        }
    }
    errs
}

/// `IsDomainPrefixedPath`: `example.com/path`.
fn domain_prefixed_path(path: &str, value: &str) -> Errs {
    let Some((host, rest)) = value
        .split_once('/')
        .filter(|(h, r)| !h.is_empty() && !r.is_empty())
    else {
        return vec![FieldError::invalid(
            path,
            value,
            "must be a domain-prefixed path (such as \"acme.io/foo\")",
        )];
    };
    let mut errs: Errs = is_dns1123_subdomain(host)
        .into_iter()
        .map(|m| FieldError::invalid(path, host, m))
        .collect();
    let path_ok = rest
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || b"/-._~%!$&'()*+,;=:".contains(&c));
    if !path_ok {
        errs.push(FieldError::invalid(
            path,
            rest,
            regex_error("Invalid path", HTTP_PATH_FMT, &[]),
        ));
    }
    errs
}

fn network_policy(obj: &Value) -> Errs {
    let mut errs = object_meta(obj, Scope::Namespaced, NameRule::Subdomain);
    let spec = child(obj, "spec");
    errs.extend(label_selector(
        child(spec, "podSelector"),
        "spec.podSelector",
    ));
    for (dir, peers_key) in [("ingress", "from"), ("egress", "to")] {
        for (i, rule) in list_of(spec, dir).iter().enumerate() {
            let rp = idx(&format!("spec.{dir}"), i);
            for (j, port) in list_of(rule, "ports").iter().enumerate() {
                errs.extend(network_policy_port(port, &idx(&format!("{rp}.ports"), j)));
            }
            for (j, peer) in list_of(rule, peers_key).iter().enumerate() {
                errs.extend(network_policy_peer(
                    peer,
                    &idx(&format!("{rp}.{peers_key}"), j),
                ));
            }
        }
    }
    let types = strings(list_of(spec, "policyTypes"));
    if types.len() > 2 {
        let shown: Vec<String> = types.iter().map(|t| go_quote(t)).collect();
        errs.push(invalid_go(
            "spec.policyTypes",
            format!("[]networking.PolicyType{{{}}}", shown.join(", ")),
            "may not specify more than two policyTypes",
        ));
        return errs;
    }
    for (i, t) in types.iter().enumerate() {
        if !matches!(t.as_str(), "Ingress" | "Egress") {
            errs.push(not_supported(
                &idx("spec.policyTypes", i),
                t,
                &["Ingress", "Egress"],
            ));
        }
    }
    errs
}

fn network_policy_port(port: &Value, path: &str) -> Errs {
    let mut errs = Vec::new();
    if let Some(proto) = port.get("protocol").and_then(Value::as_str) {
        if !matches!(proto, "TCP" | "UDP" | "SCTP") {
            errs.push(not_supported(
                &format!("{path}.protocol"),
                proto,
                &["TCP", "UDP", "SCTP"],
            ));
        }
    }
    let end = int_of(port, "endPort");
    match port.get("port").filter(|p| !p.is_null()) {
        Some(Value::String(name)) => {
            if let Some(e) = end {
                errs.push(FieldError::invalid(
                    format!("{path}.endPort"),
                    e,
                    "may not be specified when `port` is non-numeric",
                ));
            }
            errs.extend(
                is_valid_port_name(name)
                    .into_iter()
                    .map(|m| FieldError::invalid(format!("{path}.port"), name.as_str(), m)),
            );
        }
        Some(n) => {
            let n = n.as_i64().unwrap_or(0);
            errs.extend(
                is_valid_port_num(n)
                    .into_iter()
                    .map(|m| FieldError::invalid(format!("{path}.port"), n, m)),
            );
            if let Some(e) = end {
                if e < n {
                    errs.push(FieldError::invalid(
                        format!("{path}.endPort"),
                        e,
                        "must be greater than or equal to `port`",
                    ));
                }
                errs.extend(
                    is_valid_port_num(e)
                        .into_iter()
                        .map(|m| FieldError::invalid(format!("{path}.endPort"), e, m)),
                );
            }
        }
        None => {
            if let Some(e) = end {
                errs.push(FieldError::invalid(
                    format!("{path}.endPort"),
                    e,
                    "may not be specified when `port` is not specified",
                ));
            }
        }
    }
    errs
}

fn network_policy_peer(peer: &Value, path: &str) -> Errs {
    let mut errs = Vec::new();
    let mut count = 0;
    for key in ["podSelector", "namespaceSelector"] {
        if let Some(sel) = peer.get(key).filter(|s| !s.is_null()) {
            count += 1;
            errs.extend(label_selector(sel, &format!("{path}.{key}")));
        }
    }
    let ip_block = peer.get("ipBlock").filter(|b| !b.is_null());
    if let Some(block) = ip_block {
        count += 1;
        errs.extend(ip_block_errors(block, &format!("{path}.ipBlock")));
    }
    if count == 0 {
        errs.push(FieldError::required(path, "must specify a peer"));
    } else if count > 1 && ip_block.is_some() {
        errs.push(FieldError::forbidden(
            path,
            "may not specify both ipBlock and another peer",
        ));
    }
    errs
}

fn ip_block_errors(block: &Value, path: &str) -> Errs {
    let cidr = str_of(block, "cidr");
    if cidr.is_empty() {
        return vec![FieldError::required(format!("{path}.cidr"), "")];
    }
    let mut errs = valid_cidr(&format!("{path}.cidr"), cidr);
    let Some(net) = parse_cidr(cidr) else {
        return errs;
    };
    for (i, except) in strings(list_of(block, "except")).iter().enumerate() {
        let ep = idx(&format!("{path}.except"), i);
        errs.extend(valid_cidr(&ep, except));
        if let Some(ex) = parse_cidr(except) {
            if !cidr_contains(net, ex) || net.1 >= ex.1 {
                errs.push(FieldError::invalid(
                    ep.as_str(),
                    except.as_str(),
                    "must be a strict subset of `cidr`",
                ));
            }
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::field::aggregate;

    /// Validates `obj` (or the update `old` → `obj`) and compares every message.
    fn check(kind: &str, obj: Value, old: Option<Value>, expect: &[&str]) {
        let errs = match &old {
            Some(old) => validate_update(kind, &obj, old),
            None => validate_create(kind, &obj),
        };
        let got: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(got, expect, "{kind}: {}", aggregate(&errs));
    }

    fn svc(spec: Value) -> Value {
        json!({"metadata": {"name": "web", "namespace": "default"}, "spec": spec})
    }

    fn deploy(spec: Value) -> Value {
        json!({"metadata": {"name": "web", "namespace": "default"}, "spec": spec})
    }

    fn template(labels: Value) -> Value {
        json!({"metadata": {"labels": labels}, "spec": {"containers": [{"name": "web", "image": "nginx"}]}})
    }

    const SUBDOMAIN_ERR: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
    const DNS1035_ERR: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
    const LABEL_ERR: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

    #[test]
    fn more_metadata_rules() {
        check(
            "ConfigMap",
            json!({"metadata": {"generateName": "Cfg-", "namespace": "d"}}),
            None,
            &[&format!(
                "metadata.generateName: Invalid value: \"Cfg-\": {SUBDOMAIN_ERR}"
            )],
        );
        check(
            "ConfigMap",
            json!({"metadata": {"name": "c", "namespace": "d", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs"}]}}),
            None,
            &["metadata.ownerReferences.uid: Invalid value: \"\": uid must not be empty"],
        );
        check(
            "ConfigMap",
            json!({"metadata": {"name": "c", "namespace": "d", "finalizers": ["orphan", "foregroundDeletion"]}}),
            None,
            &["metadata.finalizers: Invalid value: []string{\"orphan\", \"foregroundDeletion\"}: finalizer orphan and foregroundDeletion cannot be both set"],
        );
        let deleting = json!({"metadata": {"name": "c", "namespace": "d", "deletionTimestamp": "2024-01-01T00:00:00Z", "finalizers": ["a/b"]}});
        check(
            "ConfigMap",
            json!({"metadata": {"name": "c", "namespace": "d", "finalizers": ["a/b", "x/y"]}}),
            Some(deleting),
            &["metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{\"x/y\"}"],
        );
        check(
            "Namespace",
            json!({"metadata": {"name": "ns"}, "spec": {"finalizers": ["custom"]}}),
            None,
            &["spec.finalizers: Invalid value: \"custom\": name is neither a standard finalizer name nor is it fully qualified"],
        );
        check(
            "Event",
            json!({"metadata": {"name": "e.1", "namespace": "default"}, "involvedObject": {"namespace": "other"}}),
            None,
            &["involvedObject.namespace: Invalid value: \"other\": does not match event.namespace"],
        );
    }

    #[test]
    fn more_service_rules() {
        let p80 = json!([{"port": 80}]);
        check(
            "Service",
            svc(json!({"type": "LoadBalancer", "clusterIP": "None", "ports": p80})),
            None,
            &["spec.clusterIPs[0]: Invalid value: \"None\": may not be set to 'None' for LoadBalancer services"],
        );
        check(
            "Service",
            svc(
                json!({"type": "ExternalName", "externalName": "db.example.com", "clusterIP": "10.96.0.9"}),
            ),
            None,
            &["spec.clusterIPs: Forbidden: may not be set for ExternalName services"],
        );
        check(
            "Service",
            svc(json!({"loadBalancerSourceRanges": ["10.0.0.0/33"], "ports": p80})),
            None,
            &[
                "spec.LoadBalancerSourceRanges: Forbidden: may only be used when `type` is 'LoadBalancer'",
                "spec.LoadBalancerSourceRanges[0]: Invalid value: \"10.0.0.0/33\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
            ],
        );
        check(
            "Service",
            svc(json!({"externalIPs": ["0.0.0.0", "169.254.1.1"], "ports": p80})),
            None,
            &[
                "spec.externalIPs[0]: Invalid value: \"0.0.0.0\": may not be unspecified (0.0.0.0)",
                "spec.externalIPs[1]: Invalid value: \"169.254.1.1\": may not be in the link-local range (169.254.0.0/16, fe80::/10)",
            ],
        );
        check(
            "Service",
            svc(json!({"type": "NodePort", "healthCheckNodePort": 30001, "internalTrafficPolicy": "Nearby", "ports": p80})),
            None,
            &[
                "spec.healthCheckNodePort: Invalid value: 30001: may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
                "spec.internalTrafficPolicy: Unsupported value: \"Nearby\": supported values: \"Cluster\", \"Local\"",
            ],
        );
        check(
            "Service",
            svc(json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local", "ports": p80})),
            None,
            &["spec.healthCheckNodePort: Required value"],
        );
        check(
            "Service",
            svc(json!({"type": "NodePort", "externalTrafficPolicy": "Global", "ports": p80})),
            None,
            &["spec.externalTrafficPolicy: Unsupported value: \"Global\": supported values: \"Cluster\", \"Local\""],
        );
    }

    #[test]
    fn more_workload_rules() {
        let base = |strategy: Value, extra: Value| {
            let mut spec = json!({"selector": {"matchLabels": {"app": "x"}}, "template": template(json!({"app": "x"})), "strategy": strategy});
            if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
                spec.extend(extra.clone());
            }
            deploy(spec)
        };
        check(
            "Deployment",
            base(json!({"type": "Recreate", "rollingUpdate": {}}), json!({})),
            None,
            &["spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'Recreate'"],
        );
        check(
            "Deployment",
            base(json!({"rollingUpdate": {"maxUnavailable": "150%", "maxSurge": "abc"}}), json!({"minReadySeconds": 700})),
            None,
            &[
                "spec.strategy.rollingUpdate.maxSurge: Invalid value: intstr.IntOrString{Type:1, IntVal:0, StrVal:\"abc\"}: a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
                "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: intstr.IntOrString{Type:1, IntVal:0, StrVal:\"150%\"}: must not be greater than 100%",
                "spec.progressDeadlineSeconds: Invalid value: 600: must be greater than minReadySeconds",
            ],
        );
        check(
            "Deployment",
            deploy(json!({"selector": {"matchExpressions": [{"key": "app", "operator": "Has"}]}, "template": template(json!({"app": "x"}))})),
            None,
            &[
                "spec.selector.matchExpressions[0].operator: Invalid value: \"Has\": not a valid selector operator",
                "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement{v1.LabelSelectorRequirement{Key:\"app\", Operator:\"Has\", Values:[]string(nil)}}}: invalid label selector",
            ],
        );
        check(
            "ReplicaSet",
            deploy(json!({"selector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["web"]}]}, "template": template(json!({"tier": "db"}))})),
            None,
            &["spec.template.metadata.labels: Invalid value: map[string]string{\"tier\":\"db\"}: `selector` does not match template `labels`"],
        );
    }

    #[test]
    fn more_pod_rules() {
        let pod =
            |spec: Value| json!({"metadata": {"name": "p", "namespace": "default"}, "spec": spec});
        check(
            "Pod",
            pod(json!({
                "dnsPolicy": "Google",
                "volumes": [{"name": "a"}, {"name": "b", "emptyDir": {}, "configMap": {"name": "c"}}],
                "initContainers": [{"name": "init", "image": "busybox", "livenessProbe": {"exec": {"command": ["true"]}}}],
                "containers": [
                    {"name": "a", "image": "x", "ports": [{"containerPort": 80, "hostPort": 80}], "env": [{"name": "1BAD"}]},
                    {"name": "b", "image": "x", "ports": [{"containerPort": 0, "hostPort": 80}]}
                ],
                "tolerations": [{"operator": "Equal", "value": "x"}]
            })),
            None,
            &[
                "spec.volumes[0]: Required value: must specify a volume type",
                "spec.volumes[1].configMap: Forbidden: may not specify more than 1 volume type",
                "spec.containers[0].env[0].name: Invalid value: \"1BAD\": a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit (e.g. 'my.env-name',  or 'MY_ENV.NAME',  or 'MyEnvName1', regex used for validation is '[-._a-zA-Z][-._a-zA-Z0-9]*')",
                "spec.containers[1].ports[0].containerPort: Required value",
                "spec.containers[1].ports[0].hostPort: Duplicate value: \"TCP//80\"",
                "spec.initContainers[0].livenessProbe: Forbidden: may not be set for init containers without restartPolicy=Always",
                "spec.dnsPolicy: Unsupported value: \"Google\": supported values: \"ClusterFirstWithHostNet\", \"ClusterFirst\", \"Default\", \"None\"",
                "spec.tolerations[0].operator: Invalid value: \"Equal\": operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            ],
        );
    }

    #[test]
    fn more_other_kinds() {
        check(
            "ConfigMap",
            json!({"metadata": {"name": "c", "namespace": "d"}, "data": {"k": "v"}, "binaryData": {"k": "AA=="}}),
            None,
            &["data[k]: Invalid value: \"k\": duplicate of key present in binaryData"],
        );
        check(
            "ConfigMap",
            json!({"metadata": {"name": "c", "namespace": "d"}, "data": {"k": "x".repeat(MAX_SECRET_SIZE + 1)}}),
            None,
            &[": Too long: must have at most 1048576 bytes"],
        );
        check(
            "Endpoints",
            json!({"metadata": {"name": "e", "namespace": "d"}, "subsets": [{"ports": [{"port": 80}, {"port": 81, "protocol": "ICMP"}]}]}),
            None,
            &[
                "subsets[0]: Required value: must specify `addresses` or `notReadyAddresses`",
                "subsets[0].ports[0].name: Required value",
                "subsets[0].ports[1].name: Required value",
                "subsets[0].ports[1].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
            ],
        );
        check(
            "EndpointSlice",
            json!({"metadata": {"name": "e", "namespace": "d"}, "addressType": "FQDN", "endpoints": [{"addresses": ["db"]}], "ports": [{"port": 80}, {"port": 81}]}),
            None,
            &[
                "endpoints[0].addresses[0]: Invalid value: \"db\": should be a domain with at least two segments separated by dots",
                "ports[1].name: Duplicate value: \"\"",
            ],
        );
        check(
            "EndpointSlice",
            json!({"metadata": {"name": "e", "namespace": "d"}, "addressType": "IP"}),
            None,
            &["addressType: Unsupported value: \"IP\": supported values: \"FQDN\", \"IPv4\", \"IPv6\""],
        );
        check(
            "Ingress",
            json!({"metadata": {"name": "i", "namespace": "d", "annotations": {"kubernetes.io/ingress.class": "nginx"}},
                   "spec": {"ingressClassName": "traefik", "defaultBackend": {"service": {"name": "Web", "port": {"name": "http", "number": 80}}},
                            "rules": [{"host": "10.0.0.1"}]}}),
            None,
            &[
                &format!("spec.defaultBackend.service.name: Invalid value: \"Web\": {DNS1035_ERR}"),
                "spec.defaultBackend: Invalid value: \"\": cannot set both port name & port number",
                "spec.rules[0].host: Invalid value: \"10.0.0.1\": must be a DNS name, not an IP address",
                "annotations.kubernetes.io/ingress.class: Invalid value: \"nginx\": must match `ingressClassName` when both are specified",
            ],
        );
        check(
            "IngressClass",
            json!({"metadata": {"name": "c"}, "spec": {"controller": "example.com/ingress", "parameters": {"kind": "Config", "name": "p", "scope": "Namespace"}}}),
            None,
            &["spec.parameters.namespace: Required value: `parameters.scope` is set to 'Namespace'"],
        );
        let class = json!({"metadata": {"name": "c"}, "spec": {"controller": "example.com/a"}});
        check(
            "IngressClass",
            json!({"metadata": {"name": "c"}, "spec": {"controller": "example.com/b"}}),
            Some(class),
            &["spec.controller: Invalid value: \"example.com/b\": field is immutable"],
        );
        check(
            "NetworkPolicy",
            json!({"metadata": {"name": "n", "namespace": "d"}, "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress", "Ingress"],
                "egress": [{"to": [{"podSelector": {}, "ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.1.0.0/24"]}}]}]}}),
            None,
            &[
                "spec.egress[0].to[0].ipBlock.except[0]: Invalid value: \"10.1.0.0/24\": must be a strict subset of `cidr`",
                "spec.egress[0].to[0]: Forbidden: may not specify both ipBlock and another peer",
                "spec.policyTypes: Invalid value: []networking.PolicyType{\"Ingress\", \"Egress\", \"Ingress\"}: may not specify more than two policyTypes",
            ],
        );
        let node = json!({"metadata": {"name": "n1"}, "spec": {"podCIDR": "10.244.1.0/24", "providerID": "kubesim://n1"}});
        check(
            "Node",
            json!({"metadata": {"name": "n1"}, "spec": {"podCIDR": "10.244.2.0/24", "providerID": "kubesim://n2", "taints": [{"key": "k", "effect": "Never"}]}}),
            Some(node),
            &[
                "metadata.taints[0].effect: Unsupported value: \"Never\": supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\"",
                "spec.podCIDRs: Forbidden: node updates may not change podCIDR except from \"\" to valid",
                "spec.providerID: Forbidden: node updates may not change providerID except from \"\" to valid",
            ],
        );
    }

    #[test]
    fn name_formats() {
        assert_eq!(is_dns1123_subdomain("example.com"), Vec::<String>::new());
        assert_eq!(
            is_dns1123_subdomain("Bad_Name"),
            vec![SUBDOMAIN_ERR.to_string()]
        );
        assert_eq!(
            is_dns1123_label("a.b"),
            vec!["must not contain dots".to_string()]
        );
        assert_eq!(is_dns1123_label("-a"), vec![LABEL_ERR.to_string()]);
        assert_eq!(is_dns1035_label("1web"), vec![DNS1035_ERR.to_string()]);
        assert_eq!(
            is_dns1035_label(&"a".repeat(64)),
            vec!["must be no more than 63 characters".to_string()]
        );
        assert_eq!(is_qualified_name("example.com/app"), Vec::<String>::new());
        assert_eq!(
            is_qualified_name("/app"),
            vec!["prefix part must be non-empty".to_string()]
        );
        assert_eq!(
            is_qualified_name("a/b/c"),
            vec!["a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')".to_string()]
        );
        assert_eq!(
            is_valid_port_name("http--x"),
            vec!["must not contain consecutive hyphens".to_string()]
        );
        assert_eq!(
            is_valid_port_name("8080"),
            vec!["must contain at least one letter (a-z)".to_string()]
        );
    }

    #[test]
    fn metadata_rules() {
        check(
            "ConfigMap",
            json!({"metadata": {"name": "Bad_Name", "namespace": "default"}}),
            None,
            &[&format!(
                "metadata.name: Invalid value: \"Bad_Name\": {SUBDOMAIN_ERR}"
            )],
        );
        check(
            "ConfigMap",
            json!({"metadata": {"namespace": "default"}}),
            None,
            &["metadata.name: Required value: name or generateName is required"],
        );
        check(
            "ConfigMap",
            json!({"metadata": {"generateName": "cfg-", "namespace": "default"}}),
            None,
            &[],
        );
        check(
            "ConfigMap",
            json!({"metadata": {"name": "a"}}),
            None,
            &["metadata.namespace: Required value"],
        );
        check(
            "Namespace",
            json!({"metadata": {"name": "a.b"}}),
            None,
            &["metadata.name: Invalid value: \"a.b\": must not contain dots"],
        );
        check(
            "Node",
            json!({"metadata": {"name": "n1", "namespace": "x"}}),
            None,
            &["metadata.namespace: Forbidden: not allowed on this type"],
        );
        check(
            "Namespace",
            json!({"metadata": {"name": "ns", "labels": {"app": "a b"}}}),
            None,
            &["metadata.labels: Invalid value: \"a b\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"],
        );
        let big = "x".repeat(TOTAL_ANNOTATION_SIZE_LIMIT);
        check(
            "Namespace",
            json!({"metadata": {"name": "ns", "annotations": {"Note": big}}}),
            None,
            &["metadata.annotations: Too long: must have at most 262144 bytes"],
        );
        check(
            "Namespace",
            json!({"metadata": {"name": "ns", "finalizers": ["custom"]}}),
            None,
            &["metadata.finalizers[0]: Invalid value: \"custom\": name is neither a standard finalizer name nor is it fully qualified"],
        );
    }

    #[test]
    fn immutable_metadata() {
        let old = json!({"metadata": {"name": "a", "namespace": "default", "uid": "u1"}});
        check(
            "ConfigMap",
            json!({"metadata": {"name": "b", "namespace": "default", "uid": "u2"}}),
            Some(old.clone()),
            &[
                "metadata.name: Invalid value: \"b\": field is immutable",
                "metadata.uid: Invalid value: \"u2\": field is immutable",
            ],
        );
        check(
            "ConfigMap",
            json!({"metadata": {"name": "a", "namespace": "default"}}),
            Some(old),
            &[],
        );
    }

    #[test]
    fn service_rules() {
        check("Service", svc(json!({"ports": [{"port": 80}]})), None, &[]);
        check(
            "Service",
            json!({"metadata": {"name": "Web", "namespace": "default"}, "spec": {"ports": [{"port": 80}]}}),
            None,
            &[&format!(
                "metadata.name: Invalid value: \"Web\": {DNS1035_ERR}"
            )],
        );
        check(
            "Service",
            svc(json!({})),
            None,
            &["spec.ports: Required value"],
        );
        check("Service", svc(json!({"clusterIP": "None"})), None, &[]);
        check(
            "Service",
            svc(json!({"type": "Foo", "ports": [{"port": 80}]})),
            None,
            &["spec.type: Unsupported value: \"Foo\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""],
        );
        check(
            "Service",
            svc(json!({"ports": [{"port": 0, "protocol": "ICMP"}]})),
            None,
            &[
                "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
                "spec.ports[0].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
                "spec.ports[0].targetPort: Invalid value: 0: must be between 1 and 65535, inclusive",
            ],
        );
        check(
            "Service",
            svc(json!({"ports": [{"port": 80}, {"name": "b", "port": 80, "targetPort": "HTTP"}]})),
            None,
            &[
                "spec.ports[0].name: Required value",
                "spec.ports[1].targetPort: Invalid value: \"HTTP\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
                "spec.ports[1].targetPort: Invalid value: \"HTTP\": must contain at least one letter (a-z)",
                "spec.ports[1]: Duplicate value: core.ServicePort{Name:\"\", Protocol:\"TCP\", AppProtocol:(*string)(nil), Port:80, TargetPort:intstr.IntOrString{Type:0, IntVal:0, StrVal:\"\"}, NodePort:0}",
            ],
        );
        check(
            "Service",
            svc(json!({"ports": [{"name": "a", "port": 80}, {"name": "a", "port": 81}]})),
            None,
            &["spec.ports[1].name: Duplicate value: \"a\""],
        );
        check(
            "Service",
            svc(json!({"ports": [{"port": 80, "nodePort": 30080}]})),
            None,
            &["spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"],
        );
        check(
            "Service",
            svc(
                json!({"type": "NodePort", "ports": [{"name": "a", "port": 80, "nodePort": 30080}, {"name": "b", "port": 81, "nodePort": 30080}]}),
            ),
            None,
            &["spec.ports[1].nodePort: Duplicate value: 30080"],
        );
        check(
            "Service",
            svc(json!({"clusterIP": "10.96.0.300", "ports": [{"port": 80}]})),
            None,
            &["spec.clusterIPs[0]: Invalid value: \"10.96.0.300\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"],
        );
        check(
            "Service",
            svc(json!({"clusterIPs": ["10.96.0.5"], "ports": [{"port": 80}]})),
            None,
            &["spec.clusterIPs: Invalid value: []string{\"10.96.0.5\"}: must be empty when `clusterIP` is not specified"],
        );
        check(
            "Service",
            svc(json!({"selector": {"app": "-x"}, "sessionAffinity": "Sticky", "ports": [{"port": 80}]})),
            None,
            &[
                "spec.selector: Invalid value: \"-x\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
                "spec.sessionAffinity: Unsupported value: \"Sticky\": supported values: \"ClientIP\", \"None\"",
            ],
        );
        check(
            "Service",
            svc(json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 86401}}, "ports": [{"port": 80}]})),
            None,
            &["spec.sessionAffinityConfig.clientIP.timeoutSeconds: Invalid value: 86401: must be greater than 0 and less than 86400"],
        );
        check(
            "Service",
            svc(json!({"externalTrafficPolicy": "Local", "ports": [{"port": 80}]})),
            None,
            &["spec.externalTrafficPolicy: Invalid value: \"Local\": may only be set for externally-accessible services"],
        );
        check(
            "Service",
            svc(json!({"type": "ExternalName"})),
            None,
            &["spec.externalName: Required value"],
        );
        check(
            "Service",
            svc(json!({"type": "ExternalName", "externalName": "db_host.example.com."})),
            None,
            &[&format!(
                "spec.externalName: Invalid value: \"db_host.example.com\": {SUBDOMAIN_ERR}"
            )],
        );
        check(
            "Service",
            svc(json!({"type": "NodePort", "clusterIP": "None", "ports": [{"port": 80}]})),
            None,
            &["spec.clusterIPs[0]: Invalid value: \"None\": may not be set to 'None' for NodePort services"],
        );
        check(
            "Service",
            svc(json!({"ipFamilies": ["IPv5"], "ipFamilyPolicy": "Dual", "ports": [{"port": 80}]})),
            None,
            &[
                "spec.ipFamilies[0]: Unsupported value: \"IPv5\": supported values: \"IPv4\", \"IPv6\"",
                "spec.ipFamilyPolicy: Unsupported value: \"Dual\": supported values: \"PreferDualStack\", \"RequireDualStack\", \"SingleStack\"",
            ],
        );
    }

    #[test]
    fn service_updates() {
        let old = svc(
            json!({"clusterIP": "10.96.0.5", "clusterIPs": ["10.96.0.5"], "ipFamilies": ["IPv4"], "ports": [{"port": 80}]}),
        );
        check(
            "Service",
            svc(json!({"clusterIP": "10.96.0.6", "clusterIPs": ["10.96.0.6"], "ipFamilies": ["IPv4"], "ports": [{"port": 80}]})),
            Some(old.clone()),
            &["spec.clusterIPs[0]: Invalid value: []string{\"10.96.0.6\"}: may not change once set"],
        );
        check(
            "Service",
            svc(json!({"clusterIP": "10.96.0.5", "clusterIPs": ["10.96.0.5"], "ipFamilies": ["IPv6"], "ports": [{"port": 80}]})),
            Some(old.clone()),
            &[
                "spec.ipFamilies[0]: Invalid value: []core.IPFamily{\"IPv6\"}: may not change once set",
                "spec.clusterIPs[0]: Invalid value: \"10.96.0.5\": expected an IPv6 value as indicated by `ipFamilies[0]`",
            ],
        );
        check("Service", old.clone(), Some(old), &[]);
    }

    #[test]
    fn workload_rules() {
        check(
            "Deployment",
            deploy(json!({"selector": {"matchLabels": {"app": "y"}}, "template": template(json!({"app": "x"}))})),
            None,
            &["spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"x\"}: `selector` does not match template `labels`"],
        );
        check(
            "Deployment",
            deploy(json!({"template": template(json!({"app": "x"}))})),
            None,
            &[
                "spec.selector: Required value",
                "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"x\"}: `selector` does not match template `labels`",
            ],
        );
        check(
            "Deployment",
            deploy(json!({"replicas": -1, "selector": {}, "template": template(json!({"app": "x"}))})),
            None,
            &[
                "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
                "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for deployment",
            ],
        );
        check(
            "Deployment",
            deploy(json!({
                "selector": {"matchLabels": {"app": "x"}},
                "template": template(json!({"app": "x"})),
                "strategy": {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}},
                "revisionHistoryLimit": -1
            })),
            None,
            &[
                "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: intstr.IntOrString{Type:1, IntVal:0, StrVal:\"0%\"}: may not be 0 when `maxSurge` is 0",
                "spec.revisionHistoryLimit: Invalid value: -1: must be greater than or equal to 0",
            ],
        );
        check(
            "Deployment",
            deploy(json!({"selector": {"matchLabels": {"app": "x"}}, "template": template(json!({"app": "x"})), "strategy": {"type": "BlueGreen"}})),
            None,
            &["spec.strategy: Unsupported value: apps.DeploymentStrategy{Type:\"BlueGreen\", RollingUpdate:(*apps.RollingUpdateDeployment)(nil)}: supported values: \"Recreate\", \"RollingUpdate\""],
        );
        check(
            "ReplicaSet",
            deploy(json!({
                "selector": {"matchLabels": {"app": "x"}},
                "template": {"metadata": {"labels": {"app": "x"}}, "spec": {"restartPolicy": "Never", "containers": [{"name": "Web"}, {"name": "Web", "image": "a", "ports": [{"containerPort": 70000}]}]}}
            })),
            None,
            &[
                &format!("spec.template.spec.containers[0].name: Invalid value: \"Web\": {LABEL_ERR}"),
                "spec.template.spec.containers[0].image: Required value",
                &format!("spec.template.spec.containers[1].name: Invalid value: \"Web\": {LABEL_ERR}"),
                "spec.template.spec.containers[1].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
                "spec.template.spec.containers[1].name: Duplicate value: \"Web\"",
                "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"",
            ],
        );
        let old = deploy(
            json!({"selector": {"matchLabels": {"app": "x"}}, "template": template(json!({"app": "x", "v": "2"}))}),
        );
        check(
            "Deployment",
            deploy(json!({"selector": {"matchLabels": {"app": "x", "v": "2"}}, "template": template(json!({"app": "x", "v": "2"}))})),
            Some(old),
            &["spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"x\", \"v\":\"2\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable"],
        );
    }

    #[test]
    fn pod_rules() {
        let pod =
            |spec: Value| json!({"metadata": {"name": "p", "namespace": "default"}, "spec": spec});
        check(
            "Pod",
            pod(json!({})),
            None,
            &["spec.containers: Required value"],
        );
        check(
            "Pod",
            pod(json!({"restartPolicy": "Sometimes", "containers": [{"name": "c", "image": " nginx", "volumeMounts": [{"name": "data", "mountPath": "/d"}]}]})),
            None,
            &[
                "spec.containers[0].volumeMounts[0].name: Not found: \"data\"",
                "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
                "spec.containers[0].image: Invalid value: \" nginx\": must not have leading or trailing whitespace",
            ],
        );
        check(
            "Pod",
            pod(json!({"containers": [{"name": "c", "image": "x", "livenessProbe": {"successThreshold": 2, "httpGet": {"port": 0}}}]})),
            None,
            &[
                "spec.containers[0].livenessProbe.httpGet.port: Invalid value: 0: must be between 1 and 65535, inclusive",
                "spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1",
            ],
        );
    }

    #[test]
    fn other_kinds() {
        check(
            "ConfigMap",
            json!({"metadata": {"name": "c", "namespace": "d"}, "data": {"bad key": "v"}}),
            None,
            &["data[bad key]: Invalid value: \"bad key\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"],
        );
        let immutable = json!({"metadata": {"name": "c", "namespace": "d"}, "immutable": true, "data": {"a": "1"}});
        check(
            "ConfigMap",
            json!({"metadata": {"name": "c", "namespace": "d"}, "immutable": true, "data": {"a": "2"}}),
            Some(immutable),
            &["data: Forbidden: field is immutable when `immutable` is set"],
        );
        check(
            "Endpoints",
            json!({"metadata": {"name": "e", "namespace": "d"}, "subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"port": 80}]}]}),
            None,
            &["subsets[0].addresses[0].ip: Invalid value: \"127.0.0.1\": may not be in the loopback range (127.0.0.0/8, ::1/128)"],
        );
        check(
            "EndpointSlice",
            json!({"metadata": {"name": "e", "namespace": "d"}, "addressType": "IPv4", "endpoints": [{"addresses": ["fd00::1"]}, {"addresses": []}]}),
            None,
            &[
                "endpoints[0].addresses[0]: Invalid value: \"fd00::1\": must be a valid IPv4 address",
                "endpoints[1].addresses: Required value: must contain at least 1 address",
            ],
        );
        let slice = json!({"metadata": {"name": "e", "namespace": "d"}, "addressType": "IPv4"});
        check(
            "EndpointSlice",
            json!({"metadata": {"name": "e", "namespace": "d"}, "addressType": "IPv6"}),
            Some(slice),
            &["addressType: Invalid value: \"IPv6\": field is immutable"],
        );
        check(
            "Ingress",
            json!({"metadata": {"name": "i", "namespace": "d"}, "spec": {"rules": [{"host": "*.*.example.com", "http": {"paths": [
                {"path": "api", "pathType": "Prefix", "backend": {"service": {"name": "api", "port": {"number": 80}}}},
                {"path": "/", "backend": {"service": {"name": "api"}}}
            ]}}]}}),
            None,
            &[
                "spec.rules[0].host: Invalid value: \"*.*.example.com\": a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS subdomain, which must consist of lower case alphanumeric characters, '-' or '.' and end with an alphanumeric character (e.g. '*.example.com', regex used for validation is '\\*\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
                "spec.rules[0].http.paths[0].path: Invalid value: \"api\": must be an absolute path",
                "spec.rules[0].http.paths[1].pathType: Required value: pathType must be specified",
            ],
        );
        check(
            "Ingress",
            json!({"metadata": {"name": "i", "namespace": "d"}, "spec": {}}),
            None,
            &["spec: Invalid value: []networking.IngressRule(nil): either `defaultBackend` or `rules` must be specified"],
        );
        check(
            "IngressClass",
            json!({"metadata": {"name": "nginx"}, "spec": {}}),
            None,
            &["spec.controller: Required value"],
        );
        check(
            "IngressClass",
            json!({"metadata": {"name": "nginx"}, "spec": {"controller": "nginx"}}),
            None,
            &["spec.controller: Invalid value: \"nginx\": must be a domain-prefixed path (such as \"acme.io/foo\")"],
        );
        check(
            "NetworkPolicy",
            json!({"metadata": {"name": "n", "namespace": "d"}, "spec": {"podSelector": {}, "policyTypes": ["Both"], "ingress": [{"from": [{}], "ports": [{"port": 80, "endPort": 70}]}]}}),
            None,
            &[
                "spec.ingress[0].ports[0].endPort: Invalid value: 70: must be greater than or equal to `port`",
                "spec.ingress[0].from[0]: Required value: must specify a peer",
                "spec.policyTypes[0]: Unsupported value: \"Both\": supported values: \"Ingress\", \"Egress\"",
            ],
        );
        check(
            "Node",
            json!({"metadata": {"name": "n1"}, "spec": {"podCIDRs": ["10.244.1.0/24", "10.244.2.0/24"]}}),
            None,
            &["spec.podCIDRs: Invalid value: []string{\"10.244.1.0/24\", \"10.244.2.0/24\"}: may specify no more than one CIDR for each IP family"],
        );
    }

    fn secret(kind: &str, data: Value) -> Value {
        json!({"metadata": {"name": "s", "namespace": "d"}, "type": kind, "data": data})
    }

    fn b64(text: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(text)
    }

    #[test]
    fn secret_data_keys_size_and_types() {
        check(
            "Secret",
            secret("Opaque", json!({"bad key": "", "ok.key": "dg=="})),
            None,
            &["data[bad key]: Invalid value: \"bad key\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"],
        );
        // 349526 groups of four characters decode to 1048578 bytes, two over the limit.
        check(
            "Secret",
            secret("Opaque", json!({"a": "AAAA".repeat(349_526)})),
            None,
            &["data: Too long: must have at most 1048576 bytes"],
        );
        check(
            "Secret",
            secret("Opaque", json!({"a": "AAAA".repeat(349_525)})),
            None,
            &[],
        );
        check(
            "Secret",
            secret("kubernetes.io/tls", json!({"tls.crt": "Y2VydA=="})),
            None,
            &["data[tls.key]: Required value"],
        );
        check(
            "Secret",
            json!({"metadata": {"name": "s", "namespace": "d"}, "type": "kubernetes.io/tls"}),
            None,
            &[
                "data[tls.crt]: Required value",
                "data[tls.key]: Required value",
            ],
        );
        check(
            "Secret",
            secret("kubernetes.io/service-account-token", json!({})),
            None,
            &["metadata.annotations[kubernetes.io/service-account.name]: Required value"],
        );
        check(
            "Secret",
            json!({"metadata": {"name": "s", "namespace": "d", "annotations": {"kubernetes.io/service-account.name": "default"}}, "type": "kubernetes.io/service-account-token"}),
            None,
            &[],
        );
        check(
            "Secret",
            secret("kubernetes.io/basic-auth", json!({})),
            None,
            &[
                "data[username]: Required value",
                "data[password]: Required value",
            ],
        );
        check(
            "Secret",
            secret("kubernetes.io/basic-auth", json!({"password": ""})),
            None,
            &[],
        );
        check(
            "Secret",
            secret("kubernetes.io/ssh-auth", json!({"ssh-privatekey": ""})),
            None,
            &["data[ssh-privatekey]: Required value"],
        );
        check(
            "Secret",
            secret("example.com/custom", json!({"anything": ""})),
            None,
            &[],
        );
    }

    #[test]
    fn secret_docker_configs_must_be_json_objects() {
        check(
            "Secret",
            secret("kubernetes.io/dockerconfigjson", json!({})),
            None,
            &["data[.dockerconfigjson]: Required value"],
        );
        check(
            "Secret",
            secret(
                "kubernetes.io/dockerconfigjson",
                json!({".dockerconfigjson": b64("{\"auths\":{}}")}),
            ),
            None,
            &[],
        );
        check(
            "Secret",
            secret("kubernetes.io/dockercfg", json!({".dockercfg": b64("{\"a\":")})),
            None,
            &["data[.dockercfg]: Invalid value: \"<secret contents redacted>\": unexpected end of JSON input"],
        );
        check(
            "Secret",
            secret(
                "kubernetes.io/dockerconfigjson",
                json!({".dockerconfigjson": b64("[]")}),
            ),
            None,
            &["data[.dockerconfigjson]: Invalid value: \"<secret contents redacted>\": json: cannot unmarshal array into Go value of type map[string]interface {}"],
        );
    }

    #[test]
    fn go_json_errors_read_as_encoding_json_writes_them() {
        let cases = [
            ("{}", None),
            (" null ", None),
            ("{\"a\": [1, -2.5e+3, true, \"x\\u00e9\"]}", None),
            ("", Some("unexpected end of JSON input")),
            ("{\"a\"", Some("unexpected end of JSON input")),
            ("\"abc", Some("unexpected end of JSON input")),
            (
                "x",
                Some("invalid character 'x' looking for beginning of value"),
            ),
            (
                "'",
                Some("invalid character '\\'' looking for beginning of value"),
            ),
            (
                "{a}",
                Some("invalid character 'a' looking for beginning of object key string"),
            ),
            ("{\"a\" 1}", Some("invalid character '1' after object key")),
            (
                "{\"a\":1 \"b\"}",
                Some("invalid character '\"' after object key:value pair"),
            ),
            ("[1 2]", Some("invalid character '2' after array element")),
            ("{} x", Some("invalid character 'x' after top-level value")),
            ("01", Some("invalid character '1' after top-level value")),
            (
                "\"a\nb\"",
                Some("invalid character '\\n' in string literal"),
            ),
            (
                "\"\\x\"",
                Some("invalid character 'x' in string escape code"),
            ),
            (
                "\"\\u12g4\"",
                Some("invalid character 'g' in \\u hexadecimal character escape"),
            ),
            ("-", Some("invalid character ' ' in numeric literal")),
            (
                "1.e",
                Some("invalid character 'e' after decimal point in numeric literal"),
            ),
            (
                "1e+",
                Some("invalid character ' ' in exponent of numeric literal"),
            ),
            (
                "tru",
                Some("invalid character ' ' in literal true (expecting 'e')"),
            ),
            (
                "{\"a\": nul}",
                Some("invalid character '}' in literal null (expecting 'l')"),
            ),
            (
                "[]",
                Some("json: cannot unmarshal array into Go value of type map[string]interface {}"),
            ),
            (
                "\"s\"",
                Some("json: cannot unmarshal string into Go value of type map[string]interface {}"),
            ),
            (
                "-1",
                Some("json: cannot unmarshal number into Go value of type map[string]interface {}"),
            ),
            (
                "false",
                Some("json: cannot unmarshal bool into Go value of type map[string]interface {}"),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                go_json_map_error(input.as_bytes()).as_deref(),
                want,
                "{input:?}"
            );
        }
    }

    #[test]
    fn secret_type_and_immutable_data_cannot_change() {
        let old = secret("Opaque", json!({"a": "MQ=="}));
        check(
            "Secret",
            secret("kubernetes.io/basic-auth", json!({"username": "dQ=="})),
            Some(old.clone()),
            &["type: Invalid value: \"kubernetes.io/basic-auth\": field is immutable"],
        );
        check(
            "Secret",
            secret("Opaque", json!({"a": "Mg=="})),
            Some(old),
            &[],
        );
        let mut immutable = secret("Opaque", json!({"a": "MQ=="}));
        immutable["immutable"] = json!(true);
        let mut changed = secret("Opaque", json!({"a": "Mg=="}));
        changed["immutable"] = json!(true);
        check(
            "Secret",
            changed,
            Some(immutable.clone()),
            &["data: Forbidden: field is immutable when `immutable` is set"],
        );
        check(
            "Secret",
            secret("Opaque", json!({"a": "MQ=="})),
            Some(immutable.clone()),
            &["immutable: Forbidden: field is immutable when `immutable` is set"],
        );
        let mut relabelled = immutable.clone();
        relabelled["metadata"]["labels"] = json!({"tier": "web"});
        check("Secret", relabelled, Some(immutable), &[]);
    }
}
