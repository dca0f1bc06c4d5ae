//! The pod subresources the kubelet serves (`log`, `exec`), proxied to the kubelet of
//! the pod's node: the apiserver looks up the node's InternalIP and kubelet port and
//! dials it, from inside the cluster's underlay namespace when it has one, as a real
//! apiserver dials its kubelets. `exec` is an upgraded connection (the WebSocket of
//! `kubectl exec`): once the kubelet agreed to upgrade, the apiserver only copies
//! bytes both ways.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::{Call, Params, Target};
use crate::error::{ApiError, Result};
use crate::SharedState;

const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// The kubelet query parameters `kubectl logs` may send, passed through as they are.
const LOG_PARAMS: [&str; 7] = [
    "follow",
    "previous",
    "timestamps",
    "tailLines",
    "limitBytes",
    "sinceSeconds",
    "sinceTime",
];

/// The container a request for a pod's subresource means, and its node's kubelet.
async fn locate(
    state: &SharedState,
    target: &Target,
    params: &Params,
) -> Result<(String, SocketAddr)> {
    let namespace = target.namespace.clone().unwrap_or_default();
    let name = target.name.clone().unwrap_or_default();
    let pod = state
        .store
        .get(&target.res.key(Some(&namespace), &name))
        .await?
        .ok_or_else(|| ApiError::not_found(target.res, &name))?;
    let container = pick_container(&pod, &name, params.get("container"))?;
    if let Some(reason) = waiting_reason(&pod, &container) {
        return Err(ApiError::bad_request(format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start: {reason}"
        )));
    }
    let node = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "container \"{container}\" in pod \"{name}\" is waiting to start: the pod is not scheduled"
            ))
        })?;
    let addr = kubelet_address(state, node).await?;
    Ok((container, addr))
}

/// `GET pods/<name>/log`.
pub async fn log(call: Call) -> Result<Response> {
    let t = &call.target;
    let namespace = t.namespace.clone().unwrap_or_default();
    let name = t.name.clone().unwrap_or_default();
    let (container, addr) = locate(&call.state, t, &call.params).await?;
    let query: Vec<String> = LOG_PARAMS
        .iter()
        .filter_map(|k| call.params.get(k).map(|v| format!("{k}={v}")))
        .collect();
    let path = format!(
        "/containerLogs/{namespace}/{name}/{container}?{}",
        query.join("&")
    );
    proxy_get(&call, addr, &path).await
}

/// `pods/<name>/exec`: the client's upgrade request goes to the kubelet, and once the
/// kubelet switched protocols the two connections are joined.
pub async fn exec(
    state: SharedState,
    target: Target,
    params: Params,
    mut request: axum::extract::Request,
) -> Result<Response> {
    if !request.headers().contains_key(http::header::UPGRADE) {
        return Err(ApiError::bad_request("Upgrade request required"));
    }
    let namespace = target.namespace.clone().unwrap_or_default();
    let name = target.name.clone().unwrap_or_default();
    let (container, addr) = locate(&state, &target, &params).await?;
    let query = request.uri().query().unwrap_or_default().to_owned();
    let path = format!("/exec/{namespace}/{name}/{container}?{query}");
    let unreachable = |e: &dyn std::fmt::Display| {
        ApiError::internal(format!("error dialing backend: http://{addr}{path}: {e}"))
    };
    let stream = dial(&state, addr).await.map_err(|e| unreachable(&e))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unreachable(&e))?;
    tokio::spawn(connection.with_upgrades());
    let mut forwarded = http::Request::builder()
        .method(request.method().clone())
        .uri(&path);
    for (key, value) in request.headers() {
        if key != http::header::AUTHORIZATION && key != http::header::HOST {
            forwarded = forwarded.header(key, value);
        }
    }
    let forwarded = forwarded
        .header(http::header::HOST, addr.to_string())
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| unreachable(&e))?;
    let mut answer = sender
        .send_request(forwarded)
        .await
        .map_err(|e| unreachable(&e))?;
    if answer.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        let body = http_body_util::BodyExt::collect(answer.into_body())
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        return Err(ApiError::bad_request(body.trim().to_owned()));
    }
    let mut response = Response::builder().status(http::StatusCode::SWITCHING_PROTOCOLS);
    for (key, value) in answer.headers() {
        response = response.header(key, value);
    }
    let from_kubelet = hyper::upgrade::on(&mut answer);
    let from_client = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let (Ok(kubelet), Ok(client)) = (from_kubelet.await, from_client.await) else {
            tracing::debug!("exec: an upgrade did not complete");
            return;
        };
        let (mut kubelet, mut client) = (TokioIo::new(kubelet), TokioIo::new(client));
        if let Err(err) = tokio::io::copy_bidirectional(&mut client, &mut kubelet).await {
            tracing::debug!(%err, "exec stream ended");
        }
    });
    response.body(Body::empty()).map_err(ApiError::internal)
}

/// The container a log request means: the one named, or the pod's only one.
fn pick_container(pod: &Value, pod_name: &str, asked: Option<&str>) -> Result<String> {
    let names = |field: &str| -> Vec<String> {
        pod.pointer(&format!("/spec/{field}"))
            .and_then(Value::as_array)
            .map(|cs| {
                cs.iter()
                    .filter_map(|c| c["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (containers, inits) = (names("containers"), names("initContainers"));
    match asked {
        Some(name) if containers.iter().chain(&inits).any(|c| c == name) => Ok(name.to_owned()),
        Some(name) => Err(ApiError::bad_request(format!(
            "container {name} is not valid for pod {pod_name}"
        ))),
        None if containers.len() == 1 => Ok(containers[0].clone()),
        None => {
            let mut message = format!(
                "a container name must be specified for pod {pod_name}, choose one of: [{}]",
                containers.join(" ")
            );
            if !inits.is_empty() {
                message.push_str(&format!(
                    " or one of the init containers: [{}]",
                    inits.join(" ")
                ));
            }
            Err(ApiError::bad_request(message))
        }
    }
}

/// Why the container has not started yet, if it has not.
fn waiting_reason(pod: &Value, container: &str) -> Option<String> {
    let statuses = ["containerStatuses", "initContainerStatuses"]
        .iter()
        .filter_map(|f| {
            pod.pointer(&format!("/status/{f}"))
                .and_then(Value::as_array)
        })
        .flatten();
    for status in statuses {
        if status["name"] == container {
            let started = status.get("containerID").is_some_and(|id| id.is_string());
            let reason = status
                .pointer("/state/waiting/reason")
                .and_then(Value::as_str);
            return match reason {
                Some(reason) if !started => Some(reason.to_owned()),
                _ => None,
            };
        }
    }
    Some("ContainerCreating".to_owned())
}

/// The node's InternalIP and kubelet port.
async fn kubelet_address(state: &SharedState, node: &str) -> Result<SocketAddr> {
    let nodes =
        crate::resources::by_kind("Node").ok_or_else(|| ApiError::internal("no Node kind"))?;
    let object = state
        .store
        .get(&nodes.key(None, node))
        .await?
        .ok_or_else(|| ApiError::not_found(nodes, node))?;
    let ip = object
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().find(|a| a["type"] == "InternalIP"))
        .and_then(|a| a["address"].as_str())
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| ApiError::internal(format!("node {node} has no InternalIP")))?;
    let port = object
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(10250);
    Ok(SocketAddr::new(ip, port))
}

/// Connects to `addr`, from the underlay namespace when the apiserver has one.
async fn dial(state: &SharedState, addr: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let underlay = state.underlay_netns.clone();
    let stream = tokio::task::spawn_blocking(move || match underlay {
        Some(name) => {
            let ns = netns::open(&name).map_err(std::io::Error::other)?;
            netns::run_in(&ns, || {
                std::net::TcpStream::connect_timeout(&addr, DIAL_TIMEOUT)
                    .map_err(|e| netns::Error::io(format!("dialing {addr}"), e))
            })
            .map_err(std::io::Error::other)
        }
        None => std::net::TcpStream::connect_timeout(&addr, DIAL_TIMEOUT),
    })
    .await
    .map_err(std::io::Error::other)??;
    stream.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(stream)
}

/// One GET to the kubelet, its answer streamed back as the kubelet sends it.
async fn proxy_get(call: &Call, addr: SocketAddr, path: &str) -> Result<Response> {
    let unreachable =
        |e: &dyn std::fmt::Display| ApiError::internal(format!("Get \"http://{addr}{path}\": {e}"));
    let stream = dial(&call.state, addr).await.map_err(|e| unreachable(&e))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unreachable(&e))?;
    tokio::spawn(connection);
    let request = http::Request::get(path)
        .header(http::header::HOST, addr.to_string())
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| unreachable(&e))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| unreachable(&e))?;
    let (parts, body) = response.into_parts();
    if !parts.status.is_success() {
        let text = http_body_util::BodyExt::collect(body)
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        return Err(ApiError::bad_request(text.trim().to_owned()));
    }
    Response::builder()
        .status(200)
        .header(http::header::CONTENT_TYPE, "text/plain")
        .body(Body::new(body))
        .map_err(ApiError::internal)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_only_container_is_picked_and_others_must_be_named() {
        let one = json!({"spec": {"containers": [{"name": "web"}]}});
        assert_eq!(pick_container(&one, "p", None).ok(), Some("web".into()));
        let two = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}], "initContainers": [{"name": "i"}]}});
        let err = pick_container(&two, "p", None).err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("a container name must be specified for pod p, choose one of: [a b] or one of the init containers: [i]")
        );
        let bad = pick_container(&two, "p", Some("c"))
            .err()
            .map(|e| e.to_string());
        assert_eq!(bad.as_deref(), Some("container c is not valid for pod p"));
        assert_eq!(pick_container(&two, "p", Some("i")).ok(), Some("i".into()));
    }

    #[test]
    fn a_container_not_started_is_waiting() {
        let pod = json!({"status": {"containerStatuses": [
            {"name": "web", "state": {"waiting": {"reason": "ErrImagePull"}}}
        ]}});
        assert_eq!(waiting_reason(&pod, "web").as_deref(), Some("ErrImagePull"));
        let running = json!({"status": {"containerStatuses": [
            {"name": "web", "containerID": "kubesim://1", "state": {"running": {}}}
        ]}});
        assert_eq!(waiting_reason(&running, "web"), None);
        assert_eq!(
            waiting_reason(&json!({}), "web").as_deref(),
            Some("ContainerCreating")
        );
    }
}
