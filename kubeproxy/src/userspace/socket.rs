//! The proxy sockets, as upstream's `proxysocket.go`: for a TCP service port a
//! listener whose connections are spliced to a backend, for a UDP one a socket that
//! keeps a "connection" (a socket connected to a backend) per client until it has
//! been idle for the UDP timeout. Connecting to a backend is retried with the next
//! endpoint and a longer timeout, so a dead backend is skipped.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

use super::balancer::Balancer;
use crate::model::{Protocol, ServicePortName};

/// How long each attempt to connect to a backend may take, one endpoint per attempt
/// (upstream's `EndpointDialTimeouts`).
pub const DIAL_TIMEOUTS: [Duration; 4] = [
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
];

/// What the proxy sockets of a service port share with the proxier.
#[derive(Debug)]
pub struct Service {
    pub name: ServicePortName,
    balancer: Mutex<Balancer>,
}

impl Service {
    pub fn new(name: ServicePortName, balancer: Balancer) -> Service {
        Service {
            name,
            balancer: Mutex::new(balancer),
        }
    }

    pub fn balancer(&self) -> MutexGuard<'_, Balancer> {
        self.balancer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Connects to an endpoint for `client`, trying the next one, with a longer
    /// timeout, when one fails; `None` when there is none or every attempt failed.
    async fn dial<T, F, Fut>(&self, client: Ipv4Addr, connect: F) -> Option<(T, SocketAddrV4)>
    where
        F: Fn(SocketAddrV4) -> Fut,
        Fut: Future<Output = io::Result<T>>,
    {
        let mut tried = Vec::new();
        for timeout in DIAL_TIMEOUTS {
            let endpoint = self.balancer().next(client, Instant::now(), &tried)?;
            match tokio::time::timeout(timeout, connect(endpoint)).await {
                Ok(Ok(conn)) => return Some((conn, endpoint)),
                Ok(Err(err)) => {
                    tracing::debug!(service = %self.name, %endpoint, %err, "dialing endpoint failed");
                }
                Err(_) => {
                    tracing::debug!(service = %self.name, %endpoint, ?timeout, "dialing endpoint timed out");
                }
            }
            tried.push(endpoint);
        }
        None
    }
}

fn ipv4(ip: IpAddr) -> Ipv4Addr {
    match ip {
        IpAddr::V4(ip) => ip,
        IpAddr::V6(ip) => ip.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED),
    }
}

/// An open proxy socket: it closes when dropped, and the connections it proxies
/// live on until they end.
#[derive(Debug)]
pub struct ProxySocket {
    port: u16,
    task: JoinHandle<()>,
}

impl ProxySocket {
    /// Opens a proxy socket for `service` on a free port of every address.
    pub async fn open(
        protocol: Protocol,
        service: Arc<Service>,
        udp_timeout: Duration,
    ) -> io::Result<ProxySocket> {
        let any = (Ipv4Addr::UNSPECIFIED, 0);
        let (port, task) = match protocol {
            Protocol::Tcp => {
                let listener = TcpListener::bind(any).await?;
                let port = listener.local_addr()?.port();
                (port, tokio::spawn(serve_tcp(listener, service)))
            }
            Protocol::Udp => {
                let socket = Arc::new(UdpSocket::bind(any).await?);
                let port = socket.local_addr()?.port();
                (port, tokio::spawn(serve_udp(socket, service, udp_timeout)))
            }
            Protocol::Sctp => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "the userspace proxy does not proxy SCTP",
                ))
            }
        };
        Ok(ProxySocket { port, task })
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for ProxySocket {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_tcp(listener: TcpListener, service: Arc<Service>) {
    loop {
        match listener.accept().await {
            Ok((client, peer)) => {
                tokio::spawn(proxy_tcp(client, peer, service.clone()));
            }
            Err(err) => {
                tracing::warn!(service = %service.name, %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn proxy_tcp(mut client: TcpStream, peer: SocketAddr, service: Arc<Service>) {
    let Some((mut backend, endpoint)) = service.dial(ipv4(peer.ip()), TcpStream::connect).await
    else {
        tracing::warn!(service = %service.name, client = %peer, "failed to connect to an endpoint");
        return;
    };
    tracing::debug!(service = %service.name, client = %peer, %endpoint, "proxying TCP connection");
    service.balancer().connected(endpoint);
    if let Err(err) = tokio::io::copy_bidirectional(&mut client, &mut backend).await {
        tracing::debug!(service = %service.name, client = %peer, %endpoint, %err, "TCP connection ended");
    }
    service.balancer().disconnected(endpoint);
}

async fn connect_udp(endpoint: SocketAddrV4) -> io::Result<UdpSocket> {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await?;
    socket.connect(endpoint).await?;
    Ok(socket)
}

type UdpClients = Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>>;

fn clients(map: &UdpClients) -> MutexGuard<'_, HashMap<SocketAddr, Arc<UdpSocket>>> {
    map.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn serve_udp(socket: Arc<UdpSocket>, service: Arc<Service>, timeout: Duration) {
    let active: UdpClients = Arc::default();
    let mut buf = vec![0; 65_536];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(err) => {
                tracing::debug!(service = %service.name, %err, "reading UDP");
                continue;
            }
        };
        let known = clients(&active).get(&peer).cloned();
        let backend = match known {
            Some(backend) => backend,
            None => {
                let Some((backend, endpoint)) = service.dial(ipv4(peer.ip()), connect_udp).await
                else {
                    tracing::warn!(service = %service.name, client = %peer, "failed to connect to an endpoint");
                    continue;
                };
                let backend = Arc::new(backend);
                clients(&active).insert(peer, backend.clone());
                service.balancer().connected(endpoint);
                tokio::spawn(udp_replies(
                    socket.clone(),
                    backend.clone(),
                    peer,
                    endpoint,
                    service.clone(),
                    active.clone(),
                    timeout,
                ));
                backend
            }
        };
        if let Err(err) = backend.send(&buf[..n]).await {
            tracing::debug!(service = %service.name, client = %peer, %err, "writing UDP to the endpoint");
        }
    }
}

/// Sends the endpoint's replies back to the client until the "connection" has been
/// idle for `timeout`.
async fn udp_replies(
    socket: Arc<UdpSocket>,
    backend: Arc<UdpSocket>,
    peer: SocketAddr,
    endpoint: SocketAddrV4,
    service: Arc<Service>,
    active: UdpClients,
    timeout: Duration,
) {
    let mut buf = vec![0; 65_536];
    while let Ok(Ok(n)) = tokio::time::timeout(timeout, backend.recv(&mut buf)).await {
        if let Err(err) = socket.send_to(&buf[..n], peer).await {
            tracing::debug!(service = %service.name, client = %peer, %err, "writing UDP to the client");
            break;
        }
    }
    clients(&active).remove(&peer);
    service.balancer().disconnected(endpoint);
}

/// Holds a node port open so that nothing else on the node takes it while iptables
/// redirects it (upstream's `claimNodePort`).
pub fn claim(protocol: Protocol, port: u16) -> io::Result<OwnedFd> {
    let addr = (Ipv4Addr::UNSPECIFIED, port);
    match protocol {
        Protocol::Tcp => Ok(std::net::TcpListener::bind(addr)?.into()),
        Protocol::Udp => Ok(std::net::UdpSocket::bind(addr)?.into()),
        Protocol::Sctp => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the userspace proxy does not proxy SCTP",
        )),
    }
}
