//! get and list, with label and field selectors and `limit`/`continue` paging. A
//! continued list reads the revision its first page was read at (a consistent
//! snapshot, rebuilt from the store's history); once the history no longer reaches it,
//! the list is told 410 Expired with a token to go on at the current revision, as the
//! apiserver answers after etcd compacted that revision.

use axum::response::Response;
use base64::Engine;
use serde_json::{json, Value};

use super::{respond, Call};
use crate::error::{ApiError, Result};
use crate::objects;
use crate::store::StoreError;

pub async fn get(call: Call) -> Result<Response> {
    let t = &call.target;
    let name = t.name.as_deref().unwrap_or_default();
    let key = t.res.key(t.namespace.as_deref(), name);
    match call.state.store.get(&key).await? {
        Some(obj) => Ok(respond(&call, 200, obj)),
        None => Err(ApiError::not_found(t.res, name)),
    }
}

/// The label and field selectors of a list or watch.
pub struct Filter {
    labels: Option<api::selector::LabelSelector>,
    fields: Option<api::selector::FieldSelector>,
}

impl Filter {
    pub fn from_call(call: &Call) -> Result<Filter> {
        let labels = call
            .params
            .get("labelSelector")
            .map(api::selector::LabelSelector::parse)
            .transpose()
            .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
        let fields = match call.params.get("fieldSelector") {
            Some(s) => {
                let fs = api::selector::FieldSelector::parse(s)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?;
                api::selector::check_fields(call.res().kind, &fs)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?;
                Some(fs)
            }
            None => None,
        };
        Ok(Filter { labels, fields })
    }

    /// Whether the request selects everything.
    pub fn is_empty(&self) -> bool {
        self.labels.is_none() && self.fields.is_none()
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.labels
            .as_ref()
            .is_none_or(|l| l.matches(&objects::labels(obj)))
            && self.fields.as_ref().is_none_or(|f| f.matches(obj))
    }
}

/// The version of the continue tokens this server writes and reads.
const TOKEN_VERSION: &str = "meta.k8s.io/v1";

/// A continue token as the apiserver writes it: unpadded base64url of
/// `{"v":"meta.k8s.io/v1","rv":<revision>,"start":"<key after the list's prefix>"}`.
/// A revision of -1 asks to go on at the current revision.
fn encode_continue(key: &str, prefix: &str, rv: i64) -> String {
    let start = key.strip_prefix(prefix).unwrap_or(key);
    let token = json!({"v": TOKEN_VERSION, "rv": rv, "start": start});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token.to_string())
}

/// The key a continued list starts at (inclusive) and the revision it reads.
fn decode_continue(token: &str, prefix: &str) -> Result<(String, i64)> {
    let invalid = |why: String| ApiError::bad_request(format!("invalid continue token: {why}"));
    const NOT_VALID: &str = "continue key is not valid";
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|e| {
            let at = match e {
                base64::DecodeError::InvalidByte(at, _)
                | base64::DecodeError::InvalidLastSymbol(at, _) => at,
                base64::DecodeError::InvalidLength(len) => len.saturating_sub(1),
                base64::DecodeError::InvalidPadding => token.len(),
            };
            invalid(format!(
                "{NOT_VALID}: illegal base64 data at input byte {at}"
            ))
        })?;
    if let Some(syntax) = api::body::json_syntax_error(&raw) {
        return Err(invalid(format!("{NOT_VALID}: {syntax}")));
    }
    let v: Value =
        serde_json::from_slice(&raw).map_err(|e| invalid(format!("{NOT_VALID}: {e}")))?;
    let field = |name: &str, go_type: &str| -> Result<Option<Value>> {
        match v.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => {
                let fits = match go_type {
                    "string" => x.is_string(),
                    _ => x.is_i64(),
                };
                if fits {
                    Ok(Some(x.clone()))
                } else {
                    let kind = api::body::json_value_kind(x).unwrap_or("object");
                    Err(invalid(format!(
                        "{NOT_VALID}: json: cannot unmarshal {kind} into Go struct field continueToken.{name} of type {go_type}"
                    )))
                }
            }
        }
    };
    if !v.is_object() {
        let kind = api::body::json_value_kind(&v).unwrap_or("object");
        return Err(invalid(format!(
            "{NOT_VALID}: json: cannot unmarshal {kind} into Go value of type storage.continueToken"
        )));
    }
    let version = field("v", "string")?;
    let rv = field("rv", "int64")?.and_then(|r| r.as_i64()).unwrap_or(0);
    let start = field("start", "string")?
        .and_then(|s| s.as_str().map(str::to_string))
        .unwrap_or_default();
    let version = version
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    if version != TOKEN_VERSION {
        return Err(invalid(format!(
            "{NOT_VALID}: server does not recognize this encoded version {version}"
        )));
    }
    if rv == 0 {
        return Err(invalid(format!(
            "{NOT_VALID}: incorrect encoded start resourceVersion (version {TOKEN_VERSION})"
        )));
    }
    if start.is_empty() {
        return Err(invalid(format!(
            "{NOT_VALID}: encoded start key empty (version {TOKEN_VERSION})"
        )));
    }
    // The start key may not climb out of the listed prefix.
    let rooted = if start.starts_with('/') {
        start.clone()
    } else {
        format!("/{start}")
    };
    if clean_path(&rooted) != rooted {
        return Err(invalid(format!("{NOT_VALID}: {start}")));
    }
    Ok((format!("{prefix}{}", &rooted[1..]), rv))
}

/// A rooted slash-separated path with `.`, `..`, empty elements and a trailing slash
/// resolved, as Go's `path.Clean` does.
fn clean_path(rooted: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in rooted.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Which revision a list reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadAt {
    /// The current revision.
    Current,
    /// The current revision, which must have reached this one.
    NotOlderThan(u64),
    /// Exactly this past revision (a continued list, `resourceVersionMatch=Exact`, or
    /// a limited list at a resourceVersion).
    Exact(u64),
}

/// The revision a list reads, from `resourceVersion`, `resourceVersionMatch` and the
/// continue token's revision, checked as the apiserver checks `ListOptions`.
fn list_revision(call: &Call, continued: Option<i64>) -> Result<ReadAt> {
    use api::field::FieldError;
    let rv = call.params.get("resourceVersion");
    let matching = call.params.get("resourceVersionMatch");
    let mut errors = Vec::new();
    if let Some(m) = matching {
        let forbidden = |detail: &str| FieldError::forbidden("resourceVersionMatch", detail);
        if rv.is_none() {
            errors.push(forbidden(
                "resourceVersionMatch is forbidden unless resourceVersion is provided",
            ));
        }
        if continued.is_some() {
            errors.push(forbidden(
                "resourceVersionMatch is forbidden when continue is provided",
            ));
        }
        if m != "Exact" && m != "NotOlderThan" {
            errors.push(FieldError::not_supported(
                "resourceVersionMatch",
                m,
                &["Exact", "NotOlderThan", ""],
            ));
        }
        if m == "Exact" && rv == Some("0") {
            errors.push(forbidden(
                "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
            ));
        }
    }
    if call.params.get("sendInitialEvents").is_some() {
        errors.push(FieldError::forbidden(
            "sendInitialEvents",
            "sendInitialEvents is forbidden for list",
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid_options("ListOptions", &errors));
    }
    if let Some(continued) = continued {
        if rv.is_some_and(|v| v != "0") {
            return Err(ApiError::bad_request(
                "specifying resource version is not allowed when using continue",
            ));
        }
        // A negative revision (an inconsistent continuation) reads the current one.
        return Ok(u64::try_from(continued).map_or(ReadAt::Current, ReadAt::Exact));
    }
    let Some(rv) = rv else {
        return Ok(ReadAt::Current);
    };
    let parsed: u64 = rv.parse().map_err(|e: std::num::ParseIntError| {
        let why = match e.kind() {
            std::num::IntErrorKind::PosOverflow => "value out of range",
            _ => "invalid syntax",
        };
        ApiError::bad_request(format!(
            "invalid resource version: resourceVersion: Invalid value: \"{rv}\": strconv.ParseUint: parsing \"{rv}\": {why}"
        ))
    })?;
    let limited = call
        .params
        .get("limit")
        .and_then(|l| l.parse::<i64>().ok())
        .is_some_and(|l| l > 0);
    Ok(match matching {
        Some("Exact") => ReadAt::Exact(parsed),
        None if limited && parsed > 0 => ReadAt::Exact(parsed),
        _ if parsed > 0 => ReadAt::NotOlderThan(parsed),
        _ => ReadAt::Current,
    })
}

/// The message of a continue token whose revision is no longer kept.
const INCONSISTENT_CONTINUE: &str = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.";

pub async fn list(call: Call) -> Result<Response> {
    let filter = Filter::from_call(&call)?;
    let res = call.res();
    let prefix = res.key_prefix(call.target.namespace.as_deref());
    let continued = call
        .params
        .get("continue")
        .map(|token| decode_continue(token, &prefix))
        .transpose()?;
    let read_at = list_revision(&call, continued.as_ref().map(|(_, rv)| *rv))?;
    let at = match read_at {
        ReadAt::Exact(rv) => Some(rv),
        ReadAt::Current | ReadAt::NotOlderThan(_) => None,
    };
    let (rv, items) = match call.state.store.list_at(&prefix, at).await {
        Ok(read) => read,
        Err(StoreError::Compacted { .. }) if continued.is_some() => {
            // Like etcd after compaction: the rest of the list can only be read at the
            // current revision, which the token in this error's metadata asks for.
            let start = continued
                .as_ref()
                .map(|(key, _)| key.as_str())
                .unwrap_or_default();
            let mut err = ApiError::gone(INCONSISTENT_CONTINUE);
            err.continue_token = Some(encode_continue(start, &prefix, -1));
            return Err(err);
        }
        Err(err) => return Err(err.into()),
    };
    if let ReadAt::NotOlderThan(wanted) = read_at {
        if wanted > rv {
            return Err(ApiError::too_large_resource_version(wanted, rv));
        }
    }
    let limit: Option<usize> = call
        .params
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0);
    let start = continued.map(|(key, _)| key);
    let from = items.range::<str, _>((
        start
            .as_deref()
            .map_or(std::ops::Bound::Unbounded, std::ops::Bound::Included),
        std::ops::Bound::Unbounded,
    ));
    let mut page: Vec<Value> = Vec::new();
    let mut last_key: Option<&str> = None;
    let mut evaluated = 0usize;
    let mut more = false;
    for (key, item) in from.clone() {
        if limit.is_some_and(|n| page.len() >= n) {
            more = true;
            break;
        }
        evaluated += 1;
        last_key = Some(key);
        if filter.matches(item) {
            page.push(item.clone());
        }
    }
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if let (true, Some(last)) = (more, last_key) {
        metadata["continue"] = json!(encode_continue(
            &format!("{last}\u{0}"),
            &prefix,
            i64::try_from(rv).unwrap_or(i64::MAX)
        ));
        // Counted only when nothing is filtered out, as the apiserver does.
        if filter.is_empty() {
            metadata["remainingItemCount"] = json!(from.count() - evaluated);
        }
    }
    for item in &mut page {
        objects::stamp_type(res, item);
    }
    let list = json!({
        "kind": format!("{}List", res.kind),
        "apiVersion": res.api_version(),
        "metadata": metadata,
        "items": page,
    });
    Ok(respond(&call, 200, list))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip_and_name_what_is_wrong() {
        let prefix = "/registry/core/configmaps/";
        let token = encode_continue("/registry/core/configmaps/default/b\u{0}", prefix, 7);
        assert_eq!(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(&token)
                .map(|raw| String::from_utf8_lossy(&raw).into_owned())
                .ok()
                .as_deref(),
            Some("{\"v\":\"meta.k8s.io/v1\",\"rv\":7,\"start\":\"default/b\\u0000\"}")
        );
        assert_eq!(
            decode_continue(&token, prefix).ok(),
            Some(("/registry/core/configmaps/default/b\u{0}".to_string(), 7))
        );
        let encode = |json: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
        let message = |token: &str| {
            decode_continue(token, prefix)
                .err()
                .map(|e| (e.code, e.message))
        };
        let bad = |why: &str| {
            Some((
                400,
                format!("invalid continue token: continue key is not valid{why}"),
            ))
        };
        assert_eq!(
            message(&encode(r#"{"v":"meta.k8s.io/v1","rv":0,"start":"a"}"#)),
            bad(": incorrect encoded start resourceVersion (version meta.k8s.io/v1)")
        );
        assert_eq!(
            message(&encode(r#"{"v":"meta.k8s.io/v1","rv":3,"start":""}"#)),
            bad(": encoded start key empty (version meta.k8s.io/v1)")
        );
        assert_eq!(
            message(&encode(r#"{"v":"v2","rv":3,"start":"a"}"#)),
            bad(": server does not recognize this encoded version v2")
        );
        assert_eq!(
            message(&encode(
                r#"{"v":"meta.k8s.io/v1","rv":3,"start":"../secrets/x"}"#
            )),
            bad(": ../secrets/x")
        );
        assert_eq!(
            message(&encode(r#"{"v":"meta.k8s.io/v1","rv":3,"start":"a"#)),
            bad(": unexpected end of JSON input")
        );
        assert_eq!(message("a*b"), bad(": illegal base64 data at input byte 1"));
        assert_eq!(
            decode_continue(&encode_continue("/x/a\u{0}", "/x/", -1), "/x/").ok(),
            Some(("/x/a\u{0}".to_string(), -1))
        );
    }
}
