//! The DNS listeners: UDP (a few workers on one socket) and TCP (length-prefixed
//! messages, several per connection). Each query is answered from the latest
//! [`State`]; names for the upstream are relayed to it over the client's transport.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query, ResponseCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;

use crate::answer::{answer, Outcome};
use crate::config::Config;
use crate::metrics::{Metrics, Observation};
use crate::snapshot::Snapshot;
use crate::wire::{self, Decoded};

/// How long the upstream has to answer.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an idle TCP connection stays open.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// What queries are answered from; replaced whole on every change.
#[derive(Debug, Clone, Default)]
pub struct State {
    /// `None` until the watches have synced.
    pub snapshot: Option<Arc<Snapshot>>,
    pub config: Arc<Config>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Udp,
    Tcp,
}

impl Proto {
    fn label(self) -> &'static str {
        match self {
            Proto::Udp => "udp",
            Proto::Tcp => "tcp",
        }
    }
}

/// A query on its way: what the answer logic decided, before any network I/O.
struct Pending {
    request: Box<Message>,
    outcome: Outcome,
    started: Instant,
}

/// Everything a listener needs.
#[derive(Clone)]
pub struct Handler {
    pub state: watch::Receiver<State>,
    pub metrics: Arc<Metrics>,
}

impl Handler {
    /// Decodes and answers what needs no network; `Err` carries bytes to send at once
    /// (a FORMERR) or nothing (dropped input).
    fn prepare(
        &self,
        bytes: &[u8],
        proto: Proto,
        peer: SocketAddr,
    ) -> Result<Pending, Option<Vec<u8>>> {
        let started = Instant::now();
        let request = match wire::decode(bytes) {
            Decoded::Query(request) => request,
            Decoded::FormErr(reply) => {
                self.observe(proto, peer, None, ResponseCode::FormErr, started);
                return Err(Some(reply));
            }
            Decoded::Drop => return Err(None),
        };
        let outcome = {
            let state = self.state.borrow();
            answer(&request, state.snapshot.as_deref(), &state.config)
        };
        Ok(Pending {
            request,
            outcome,
            started,
        })
    }

    /// Finishes a query: network work if the outcome needs it, then encoding.
    async fn finish(&self, pending: Pending, proto: Proto, peer: SocketAddr) -> Vec<u8> {
        let Pending {
            request,
            outcome,
            started,
        } = pending;
        let reply = match outcome {
            Outcome::Reply(reply) => reply,
            Outcome::Chase {
                mut reply,
                target,
                upstream,
            } => {
                let name = target.name().to_string();
                match exchange(&target_query(target), upstream, proto).await {
                    Ok(answer) => reply.answers.extend(answer.answers),
                    Err(err) => {
                        tracing::warn!(%upstream, target = %name, %err, "resolving an ExternalName target upstream")
                    }
                }
                reply
            }
            Outcome::Forward(upstream) => forward(&request, upstream, proto).await,
        };
        let limit = match proto {
            Proto::Udp => wire::udp_limit(&request),
            Proto::Tcp => wire::TCP_LIMIT,
        };
        let rcode = reply.response_code;
        let bytes = wire::encode(reply, &request, limit);
        let qtype = request.queries.first().map(|q| q.query_type());
        self.observe(proto, peer, qtype, rcode, started);
        bytes
    }

    fn observe(
        &self,
        proto: Proto,
        peer: SocketAddr,
        qtype: Option<hickory_proto::rr::RecordType>,
        rcode: ResponseCode,
        started: Instant,
    ) {
        self.metrics.observe(Observation {
            proto: proto.label(),
            family: if peer.is_ipv4() { 1 } else { 2 },
            qtype,
            rcode,
            took: started.elapsed(),
        });
    }
}

fn target_query(target: Query) -> Message {
    let mut message = Message::query();
    message.metadata.recursion_desired = true;
    message.add_query(target);
    message
}

/// Relays `request` to the upstream; SERVFAIL when it does not answer.
async fn forward(request: &Message, upstream: SocketAddr, proto: Proto) -> Message {
    let name = request
        .queries
        .first()
        .map(|q| q.name().to_string())
        .unwrap_or_default();
    tracing::debug!(%upstream, %name, "forwarding a name outside the cluster zones");
    match exchange(request, upstream, proto).await {
        Ok(mut reply) => {
            reply.metadata.id = request.id;
            reply.edns = None;
            reply
        }
        Err(err) => {
            tracing::warn!(%upstream, %name, %err, "forwarding failed");
            let mut reply = Message::error_msg(request.id, request.op_code, ResponseCode::ServFail);
            reply.metadata.recursion_desired = request.recursion_desired;
            reply.queries = request.queries.clone();
            reply
        }
    }
}

/// One query to `upstream` over `proto`.
async fn exchange(query: &Message, upstream: SocketAddr, proto: Proto) -> std::io::Result<Message> {
    let bytes = query.to_vec().map_err(std::io::Error::other)?;
    let io = async {
        let reply = match proto {
            Proto::Udp => {
                let local: SocketAddr = if upstream.is_ipv4() {
                    ([0, 0, 0, 0], 0).into()
                } else {
                    ([0u16; 8], 0).into()
                };
                let socket = UdpSocket::bind(local).await?;
                socket.connect(upstream).await?;
                socket.send(&bytes).await?;
                let mut buf = vec![0; 65535];
                let n = socket.recv(&mut buf).await?;
                buf.truncate(n);
                buf
            }
            Proto::Tcp => {
                let mut stream = TcpStream::connect(upstream).await?;
                write_framed(&mut stream, &bytes).await?;
                read_framed(&mut stream).await?
            }
        };
        Message::from_vec(&reply).map_err(std::io::Error::other)
    };
    tokio::time::timeout(UPSTREAM_TIMEOUT, io)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "upstream did not answer"))?
}

async fn read_framed(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let len = stream.read_u16().await?;
    let mut buf = vec![0; usize::from(len)];
    stream.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_framed(stream: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(bytes.len()).map_err(std::io::Error::other)?;
    let mut framed = Vec::with_capacity(bytes.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(bytes);
    stream.write_all(&framed).await
}

/// Serves UDP on `socket` with `workers` tasks until the task is dropped.
pub async fn serve_udp(socket: Arc<UdpSocket>, handler: Handler, workers: usize) {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers.max(1) {
        let (socket, handler) = (socket.clone(), handler.clone());
        tasks.spawn(async move {
            let mut buf = vec![0; 65535];
            loop {
                let (n, peer) = match socket.recv_from(&mut buf).await {
                    Ok(got) => got,
                    Err(err) => {
                        tracing::debug!(%err, "receiving a UDP query");
                        continue;
                    }
                };
                match handler.prepare(&buf[..n], Proto::Udp, peer) {
                    Err(Some(reply)) => send_udp(&socket, &reply, peer).await,
                    Err(None) => {}
                    Ok(pending) if matches!(pending.outcome, Outcome::Reply(_)) => {
                        let reply = handler.finish(pending, Proto::Udp, peer).await;
                        send_udp(&socket, &reply, peer).await;
                    }
                    Ok(pending) => {
                        let (socket, handler) = (socket.clone(), handler.clone());
                        tokio::spawn(async move {
                            let reply = handler.finish(pending, Proto::Udp, peer).await;
                            send_udp(&socket, &reply, peer).await;
                        });
                    }
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

async fn send_udp(socket: &UdpSocket, reply: &[u8], peer: SocketAddr) {
    if let Err(err) = socket.send_to(reply, peer).await {
        tracing::debug!(%err, %peer, "sending a UDP reply");
    }
}

/// Serves TCP on `listener` until the task is dropped.
pub async fn serve_tcp(listener: TcpListener, handler: Handler) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(connection(stream, peer, handler.clone()));
                }
                Err(err) => tracing::debug!(%err, "accepting a TCP connection"),
            },
            Some(_) = connections.join_next() => {}
        }
    }
}

async fn connection(mut stream: TcpStream, peer: SocketAddr, handler: Handler) {
    loop {
        let bytes = match tokio::time::timeout(TCP_IDLE, read_framed(&mut stream)).await {
            Ok(Ok(bytes)) => bytes,
            _ => return,
        };
        let reply = match handler.prepare(&bytes, Proto::Tcp, peer) {
            Err(Some(reply)) => reply,
            Err(None) => return,
            Ok(pending) => handler.finish(pending, Proto::Tcp, peer).await,
        };
        if write_framed(&mut stream, &reply).await.is_err() {
            return;
        }
    }
}
