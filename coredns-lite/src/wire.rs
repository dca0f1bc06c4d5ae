//! Messages on the wire: decoding a query (FORMERR when only its header is
//! readable), and encoding a reply within the client's size limit: the EDNS0 buffer
//! size it advertised (at least 512), 512 without EDNS, 65535 over TCP. A reply that
//! does not fit loses its additional records, then answers, and gets the TC bit.

use hickory_proto::op::{Edns, Header, Message, MessageType, ResponseCode};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

/// The classic DNS limit for UDP without EDNS.
pub const UDP_LIMIT: usize = 512;
/// The most a TCP message can carry.
pub const TCP_LIMIT: usize = 65535;

/// What arrived.
#[derive(Debug)]
pub enum Decoded {
    Query(Box<Message>),
    /// The header was readable, the rest not: this FORMERR answers it.
    FormErr(Vec<u8>),
    /// Not even a header, or not a query: nothing is sent back.
    Drop,
}

pub fn decode(bytes: &[u8]) -> Decoded {
    match Message::from_vec(bytes) {
        Ok(m) if m.message_type == MessageType::Query => Decoded::Query(Box::new(m)),
        Ok(_) => Decoded::Drop,
        Err(_) => match Header::read(&mut BinDecoder::new(bytes)) {
            Ok(h) if h.message_type == MessageType::Query => {
                let mut m = Message::error_msg(h.id, h.op_code, ResponseCode::FormErr);
                m.metadata.recursion_desired = h.recursion_desired;
                m.to_vec().map_or(Decoded::Drop, Decoded::FormErr)
            }
            _ => Decoded::Drop,
        },
    }
}

/// The largest UDP reply `request`'s sender accepts.
pub fn udp_limit(request: &Message) -> usize {
    request
        .edns
        .as_ref()
        .map_or(UDP_LIMIT, |e| usize::from(e.max_payload()).max(UDP_LIMIT))
}

/// Encodes `reply` to `request` in at most `limit` bytes, echoing an OPT record when
/// the request had one.
pub fn encode(mut reply: Message, request: &Message, limit: usize) -> Vec<u8> {
    reply.edns = request.edns.as_ref().map(|asked| {
        let mut edns = Edns::new();
        edns.set_max_payload(asked.max_payload().max(UDP_LIMIT as u16));
        edns.set_version(0);
        edns.set_dnssec_ok(asked.flags().dnssec_ok);
        edns
    });
    let fits = |m: &Message| m.to_vec().ok().filter(|b| b.len() <= limit);
    if let Some(bytes) = fits(&reply) {
        return bytes;
    }
    reply.additionals.clear();
    if let Some(bytes) = fits(&reply) {
        return bytes;
    }
    reply.metadata.truncation = true;
    reply.authorities.clear();
    let answers = std::mem::take(&mut reply.answers);
    let (mut keep, mut over) = (0, answers.len());
    while keep + 1 < over {
        let mid = (keep + over) / 2;
        reply.answers = answers[..mid].to_vec();
        if fits(&reply).is_some() {
            keep = mid;
        } else {
            over = mid;
        }
    }
    reply.answers = answers[..keep].to_vec();
    fits(&reply).unwrap_or_else(|| {
        let mut bare = Message::error_msg(reply.id, reply.op_code, ResponseCode::ServFail);
        bare.metadata.truncation = true;
        bare.to_vec().unwrap_or_default()
    })
}

/// Asks `server` over UDP for the A records of `name` and reports whether it answered
/// NOERROR with at least one: how `kubesim up` checks that the cluster DNS answers
/// through its Service. Blocking; the socket lives in the calling thread's network
/// namespace.
pub fn answers_a(
    server: std::net::SocketAddr,
    name: &str,
    timeout: std::time::Duration,
) -> std::io::Result<bool> {
    use hickory_proto::op::Query;
    use hickory_proto::rr::{Name, RecordType};
    let name = Name::from_ascii(name).map_err(std::io::Error::other)?;
    let mut query = Message::query();
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(name, RecordType::A));
    let socket = std::net::UdpSocket::bind(("0.0.0.0", 0))?;
    socket.set_read_timeout(Some(timeout))?;
    socket.connect(server)?;
    socket.send(&query.to_vec().map_err(std::io::Error::other)?)?;
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf)?;
    let reply = Message::from_vec(&buf[..n]).map_err(std::io::Error::other)?;
    Ok(reply.response_code == ResponseCode::NoError && !reply.answers.is_empty())
}
