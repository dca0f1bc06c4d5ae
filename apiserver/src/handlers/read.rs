//! get and list, with label and field selectors and `limit`/`continue` paging.

use axum::response::Response;
use base64::Engine;
use serde_json::{json, Value};

use super::{respond, Call};
use crate::error::{ApiError, Result};
use crate::objects;

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

    pub fn matches(&self, obj: &Value) -> bool {
        self.labels
            .as_ref()
            .is_none_or(|l| l.matches(&objects::labels(obj)))
            && self.fields.as_ref().is_none_or(|f| f.matches(obj))
    }
}

/// Where a paged list goes on: the list's revision and the last key handed out.
fn encode_continue(rv: u64, last: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(json!({"rv": rv, "start": last}).to_string())
}

fn decode_continue(token: &str) -> Result<String> {
    let bad = || {
        ApiError::bad_request("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)")
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(token)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    v.get("start")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(bad)
}

fn sort_key(obj: &Value) -> String {
    format!(
        "{}/{}",
        objects::namespace(obj).unwrap_or_default(),
        objects::name(obj)
    )
}

pub async fn list(call: Call) -> Result<Response> {
    let filter = Filter::from_call(&call)?;
    let res = call.res();
    let prefix = res.key_prefix(call.target.namespace.as_deref());
    let (rv, items) = call.state.store.list(&prefix).await?;
    let start = call
        .params
        .get("continue")
        .map(decode_continue)
        .transpose()?;
    let limit: Option<usize> = call
        .params
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0);
    let mut selected = items
        .into_iter()
        .filter(|o| start.as_ref().is_none_or(|s| sort_key(o) > *s))
        .filter(|o| filter.matches(o));
    let mut page: Vec<Value> = match limit {
        Some(n) => selected.by_ref().take(n).collect(),
        None => selected.by_ref().collect(),
    };
    let remaining = selected.count();
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if remaining > 0 {
        if let Some(last) = page.last() {
            metadata["continue"] = json!(encode_continue(rv, &sort_key(last)));
            metadata["remainingItemCount"] = json!(remaining);
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
