//! `kubectl exec` on the node: the kubelet's `/exec/<namespace>/<pod>/<container>`
//! endpoint. A request upgrading to `SPDY/3.1` goes to [`super::spdy`]; one upgrading
//! to `websocket` speaks the Kubernetes remote-command WebSocket protocol
//! (`v5.channel.k8s.io`, and `v4` without the close channel). Every binary message
//! starts with its channel: 0 stdin, 1 stdout, 2 stderr, 3 the final `Status`, 4 a
//! terminal resize, 255 (v5) closes the stream named by the next byte.
//!
//! The command runs inside the pod's sandbox with the container's environment, on
//! pipes, or on a pseudo-terminal when the client asked for a TTY.

use std::os::fd::OwnedFd;
use std::process::Stdio;

use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Path, RawQuery, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::sync::mpsc;

use super::server::{Registry, Sandboxed};
use std::sync::Arc;

/// The protocols offered, newest first.
pub const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

const STDIN: u8 = 0;
pub(super) const STDOUT: u8 = 1;
pub(super) const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// What the client asked for, from the query string.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl ExecRequest {
    pub fn parse(query: &str) -> ExecRequest {
        let mut req = ExecRequest::default();
        let truthy = |v: &str| matches!(v, "1" | "true" | "True");
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match key.as_ref() {
                "command" => req.command.push(value.into_owned()),
                "input" | "stdin" => req.stdin = truthy(&value),
                "output" | "stdout" => req.stdout = truthy(&value),
                "error" | "stderr" => req.stderr = truthy(&value),
                "tty" => req.tty = truthy(&value),
                _ => {}
            }
        }
        req
    }
}

/// The `Status` sent on the error channel when the command ended.
pub fn exit_status(code: i32) -> serde_json::Value {
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("command terminated with non-zero exit code: exit status {code}"),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

pub(super) fn failure(message: String) -> serde_json::Value {
    json!({"metadata": {}, "status": "Failure", "message": message, "reason": "InternalError"})
}

pub async fn handle(
    State(registry): State<Arc<Registry>>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    http: Request,
) -> Response {
    let request = ExecRequest::parse(query.as_deref().unwrap_or_default());
    if request.command.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            "you must specify at least one command",
        )
            .into_response();
    }
    let Some(target) = registry.sandboxed(&namespace, &pod, &container) else {
        return (
            StatusCode::NOT_FOUND,
            format!("container {container} of pod {namespace}/{pod} is not running on this node"),
        )
            .into_response();
    };
    if super::spdy::is_spdy(http.headers()) {
        return super::spdy::upgrade(http, request, target);
    }
    let (mut parts, _) = http.into_parts();
    match WebSocketUpgrade::from_request_parts(&mut parts, &registry).await {
        Ok(upgrade) => upgrade
            .protocols(PROTOCOLS)
            .on_upgrade(move |socket| run(socket, request, target)),
        Err(rejection) => rejection.into_response(),
    }
}

async fn run(socket: WebSocket, request: ExecRequest, target: Sandboxed) {
    let v5 = socket.protocol().and_then(|p| p.to_str().ok()) == Some(PROTOCOLS[0]);
    let (mut sink, mut stream) = socket.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(64);
    let writer = tokio::spawn(async move {
        while let Some(frame) = out_rx.recv().await {
            if sink.send(Message::Binary(frame.into())).await.is_err() {
                return;
            }
        }
        // kubectl reads the end of the streams from a normal closure (1000).
        let normal = CloseFrame {
            code: close_code::NORMAL,
            reason: "".into(),
        };
        let _ = sink.send(Message::Close(Some(normal))).await;
    });
    let status = match spawn(&request, &target) {
        Ok(mut process) => {
            let mut pumps = Vec::new();
            for (channel, reader) in process.outputs.drain(..) {
                pumps.push(tokio::spawn(pump(reader, channel, out_tx.clone())));
            }
            let mut stdin = process.stdin.take();
            let exited = loop {
                tokio::select! {
                    code = process.child.wait() => break code,
                    message = stream.next() => match message {
                        Some(Ok(Message::Binary(data))) => match data.first() {
                            Some(&STDIN) => {
                                if let Some(input) = stdin.as_mut() {
                                    if input.write_all(&data[1..]).await.is_err() {
                                        stdin = None;
                                    }
                                }
                            }
                            Some(&CLOSE) if v5 && data.get(1) == Some(&STDIN) => stdin = None,
                            Some(&RESIZE) => {}
                            _ => {}
                        },
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                            let _ = process.child.start_kill();
                        }
                        Some(Ok(_)) => {}
                    },
                }
            };
            drop(stdin);
            for pump in pumps {
                let _ = pump.await;
            }
            match exited {
                Ok(status) => exit_status(super::pod::exit_code(status)),
                Err(err) => failure(err.to_string()),
            }
        }
        Err(err) => failure(format!("failed to exec in container: {err}")),
    };
    let mut frame = vec![ERROR];
    frame.extend_from_slice(status.to_string().as_bytes());
    let _ = out_tx.send(frame).await;
    drop(out_tx);
    let _ = writer.await;
}

/// A command running in a sandbox, and its standard streams: the outputs by channel.
pub(super) struct Process {
    pub(super) child: tokio::process::Child,
    pub(super) stdin: Option<Box<dyn tokio::io::AsyncWrite + Send + Unpin>>,
    pub(super) outputs: Vec<(u8, Box<dyn AsyncRead + Send + Unpin>)>,
}

pub(super) fn spawn(request: &ExecRequest, target: &Sandboxed) -> std::io::Result<Process> {
    let mut command = Command::new(&target.binary);
    command
        .arg("nsenter")
        .arg("--target")
        .arg(target.pause_pid.to_string())
        .arg("--")
        .args(&request.command)
        .env_clear()
        .envs(target.env.iter().cloned())
        .kill_on_drop(true);
    if request.tty {
        let pty = nix::pty::openpty(None, None).map_err(std::io::Error::from)?;
        let slave = |fd: &OwnedFd| fd.try_clone().map(Stdio::from);
        command
            .stdin(slave(&pty.slave)?)
            .stdout(slave(&pty.slave)?)
            .stderr(slave(&pty.slave)?);
        if target.env.iter().all(|(k, _)| k != "TERM") {
            command.env("TERM", "xterm");
        }
        let child = command.spawn()?;
        drop(pty.slave);
        let master = std::fs::File::from(pty.master);
        let reader = tokio::fs::File::from_std(master.try_clone()?);
        let writer = tokio::fs::File::from_std(master);
        return Ok(Process {
            child,
            stdin: request.stdin.then(|| Box::new(writer) as _),
            outputs: vec![(STDOUT, Box::new(reader) as _)],
        });
    }
    command
        .stdin(if request.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(if request.stdout {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(if request.stderr {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = command.spawn()?;
    let mut outputs: Vec<(u8, Box<dyn AsyncRead + Send + Unpin>)> = Vec::new();
    if let Some(out) = child.stdout.take() {
        outputs.push((STDOUT, Box::new(out)));
    }
    if let Some(err) = child.stderr.take() {
        outputs.push((STDERR, Box::new(err)));
    }
    let stdin = child
        .stdin
        .take()
        .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncWrite + Send + Unpin>);
    Ok(Process {
        child,
        stdin,
        outputs,
    })
}

/// Copies one output of the command to its channel until it ends (for a terminal,
/// until the last process holding it exits: then reading fails with EIO).
async fn pump(
    mut reader: Box<dyn AsyncRead + Send + Unpin>,
    channel: u8,
    out: mpsc::Sender<Vec<u8>>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let mut frame = Vec::with_capacity(n + 1);
                frame.push(channel);
                frame.extend_from_slice(&buf[..n]);
                if out.send(frame).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_names_the_command_and_streams() {
        let req = ExecRequest::parse(
            "command=sh&command=-c&command=echo%20hi&stdin=true&stdout=true&tty=true",
        );
        assert_eq!(req.command, ["sh", "-c", "echo hi"]);
        assert!(req.stdin && req.stdout && req.tty && !req.stderr);
        let old = ExecRequest::parse("command=date&output=1&error=1");
        assert!(old.stdout && old.stderr && !old.stdin);
    }

    #[test]
    fn exit_codes_become_statuses_as_kubectl_reads_them() {
        assert_eq!(exit_status(0)["status"], "Success");
        let failed = exit_status(3);
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(failed["details"]["causes"][0]["message"], "3");
        assert_eq!(
            failed["message"],
            "command terminated with non-zero exit code: exit status 3"
        );
    }
}
