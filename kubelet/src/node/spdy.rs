//! `kubectl exec` over SPDY/3.1, the remote-command transport kubectl used before
//! WebSockets (and still falls back to): the client upgrades the request with
//! `Upgrade: SPDY/3.1`, picks a protocol version with `X-Stream-Protocol-Version`, and
//! opens one SPDY stream per standard stream, named by its `streamtype` header
//! (`error`, `stdin`, `stdout`, `stderr`, `resize`). The kubelet answers each with a
//! `SYN_REPLY`, runs the command once every expected stream is there, and ends with
//! the final `Status` on the error stream (`v4`: JSON; `v3`/`v2`: the message of a
//! failure) and a `GOAWAY`.
//!
//! The framing half of this module is pure: [`Frame`], an [`Encoder`] and a
//! [`Decoder`] each holding its direction's zlib context for header blocks (SPDY/3
//! compresses them with a fixed dictionary). The connection half is three tasks: a
//! reader that decodes frames and answers `PING`s, a writer that encodes frames and
//! keeps data within the client's flow-control windows, and the session that owns the
//! streams and the command.
//!
//! Invariant: data reaches the client within its windows once it showed that it does
//! flow control (a `SETTINGS` or `WINDOW_UPDATE` frame). kubectl's SPDY library
//! (moby/spdystream, the kubelet's too) sends neither and ignores windows, so for it
//! the windows are tracked but not enforced, as the real kubelet does.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::exec::{self, ExecRequest, STDERR, STDOUT};
use super::server::Sandboxed;

/// The `Upgrade` token of SPDY/3.1.
pub const UPGRADE: &str = "SPDY/3.1";
const PROTOCOL_HEADER: &str = "X-Stream-Protocol-Version";
const ACCEPTED_HEADER: &str = "X-Accepted-Stream-Protocol-Versions";
/// How long the client has to open its streams, as the kubelet's default.
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);
/// SPDY/3.1's window of every stream and of the connection until told otherwise.
const INITIAL_WINDOW: i64 = 64 * 1024;
const SETTINGS_INITIAL_WINDOW_SIZE: u32 = 7;
const MAX_LENGTH: usize = (1 << 24) - 1;

/// `RST_STREAM` status codes.
pub const INVALID_STREAM: u32 = 2;
pub const REFUSED_STREAM: u32 = 3;

/// The remote-command protocol versions spoken over SPDY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// The status is a JSON `Status` carrying the exit code.
    V4,
    /// Adds the resize stream; the status is the failure's message.
    V3,
    V2,
}

impl Version {
    const ALL: [Version; 3] = [Version::V4, Version::V3, Version::V2];

    pub fn name(self) -> &'static str {
        match self {
            Version::V4 => "v4.channel.k8s.io",
            Version::V3 => "v3.channel.k8s.io",
            Version::V2 => "v2.channel.k8s.io",
        }
    }

    /// The first protocol of the client's (in its order of preference) the server
    /// speaks, as `httpstream.Handshake` chooses.
    pub fn negotiate(offered: &[&str]) -> Option<Version> {
        offered
            .iter()
            .find_map(|p| Version::ALL.into_iter().find(|v| v.name() == *p))
    }

    fn resizes(self) -> bool {
        self != Version::V2
    }

    /// What the error stream carries for the command's `Status`.
    fn status_bytes(self, status: &serde_json::Value) -> Vec<u8> {
        match self {
            Version::V4 => status.to_string().into_bytes(),
            Version::V3 | Version::V2 if status["status"] != "Success" => status["message"]
                .as_str()
                .unwrap_or_default()
                .as_bytes()
                .to_vec(),
            Version::V3 | Version::V2 => Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("malformed {0} frame")]
    Malformed(&'static str),
    #[error("unsupported SPDY version {0}")]
    Version(u16),
    #[error("a frame of {0} bytes is too large")]
    TooLarge(usize),
    #[error("header block compression: {0}")]
    Compression(String),
    #[error("the client did not open its streams in time")]
    StreamsTimedOut,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A header block: lower-case names, values (several joined by NUL) as sent.
pub type Headers = Vec<(String, String)>;

/// One entry of a `SETTINGS` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    pub flags: u8,
    pub id: u32,
    pub value: u32,
}

/// The frames of SPDY/3.1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Data {
        stream: u32,
        fin: bool,
        data: Vec<u8>,
    },
    SynStream {
        stream: u32,
        associated: u32,
        priority: u8,
        fin: bool,
        unidirectional: bool,
        headers: Headers,
    },
    SynReply {
        stream: u32,
        fin: bool,
        headers: Headers,
    },
    RstStream {
        stream: u32,
        status: u32,
    },
    Settings {
        clear: bool,
        values: Vec<Setting>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good: u32,
        status: u32,
    },
    Headers {
        stream: u32,
        fin: bool,
        headers: Headers,
    },
    WindowUpdate {
        stream: u32,
        delta: u32,
    },
    /// A control frame SPDY/3.1 does not define (such as SPDY/3's `CREDENTIAL`),
    /// which a receiver ignores.
    Unknown {
        kind: u16,
    },
}

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;
const FLAG_FIN: u8 = 0x01;
const FLAG_UNIDIRECTIONAL: u8 = 0x02;
const STREAM_MASK: u32 = 0x7fff_ffff;

/// The zlib dictionary of SPDY/3 header blocks: length-prefixed words, then text.
fn dictionary() -> &'static [u8] {
    const WORDS: [&str; 65] = [
        "options",
        "head",
        "post",
        "put",
        "delete",
        "trace",
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "connection",
        "content-base",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "retry-after",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "via",
        "warning",
        "www-authenticate",
        "method",
        "get",
        "status",
        "200 OK",
        "version",
        "HTTP/1.1",
        "url",
        "public",
        "set-cookie",
        "keep-alive",
        "origin",
    ];
    const TAIL: &str = concat!(
        "10010120120220520630030230330430530630740240540640740840941041141241341441541641",
        "7502504505203 Non-Authoritative Information204 No Content301 Moved Permanently40",
        "0 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error",
        "501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept O",
        "ct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,imag",
        "e/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text/",
        "javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1",
        ",utf-,*,enq=0.",
    );
    static DICTIONARY: LazyLock<Vec<u8>> = LazyLock::new(|| {
        let mut dict = Vec::new();
        for word in WORDS {
            put_string(&mut dict, word);
        }
        dict.extend_from_slice(TAIL.as_bytes());
        dict
    });
    &DICTIONARY
}

fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_be_bytes());
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    put_u32(out, s.len() as u32);
    out.extend_from_slice(s.as_bytes());
}

/// Flags and a 24-bit length, the second word of every frame.
fn put_flags_length(out: &mut Vec<u8>, flags: u8, len: usize) -> Result<()> {
    if len > MAX_LENGTH {
        return Err(Error::TooLarge(len));
    }
    put_u32(out, u32::from(flags) << 24 | len as u32);
    Ok(())
}

/// Encodes frames, compressing header blocks in one zlib context.
pub struct Encoder {
    deflate: Compress,
}

impl Encoder {
    pub fn new() -> Result<Encoder> {
        let mut deflate = Compress::new(Compression::default(), true);
        deflate
            .set_dictionary(dictionary())
            .map_err(|e| Error::Compression(e.to_string()))?;
        Ok(Encoder { deflate })
    }

    /// Appends `frame` to `out`.
    pub fn encode(&mut self, frame: &Frame, out: &mut Vec<u8>) -> Result<()> {
        let fin = |fin: bool| if fin { FLAG_FIN } else { 0 };
        let mut payload = Vec::new();
        let (kind, flags) = match frame {
            Frame::Data { stream, fin, data } => {
                put_u32(out, stream & STREAM_MASK);
                put_flags_length(out, if *fin { FLAG_FIN } else { 0 }, data.len())?;
                out.extend_from_slice(data);
                return Ok(());
            }
            Frame::SynStream {
                stream,
                associated,
                priority,
                fin: f,
                unidirectional,
                headers,
            } => {
                put_u32(&mut payload, stream & STREAM_MASK);
                put_u32(&mut payload, associated & STREAM_MASK);
                payload.extend_from_slice(&[priority << 5, 0]);
                payload.extend(self.header_block(headers)?);
                let one_way = if *unidirectional {
                    FLAG_UNIDIRECTIONAL
                } else {
                    0
                };
                (SYN_STREAM, fin(*f) | one_way)
            }
            Frame::SynReply {
                stream,
                fin: f,
                headers,
            } => {
                put_u32(&mut payload, stream & STREAM_MASK);
                payload.extend(self.header_block(headers)?);
                (SYN_REPLY, fin(*f))
            }
            Frame::RstStream { stream, status } => {
                put_u32(&mut payload, stream & STREAM_MASK);
                put_u32(&mut payload, *status);
                (RST_STREAM, 0)
            }
            Frame::Settings { clear, values } => {
                put_u32(&mut payload, values.len() as u32);
                for setting in values {
                    put_u32(
                        &mut payload,
                        u32::from(setting.flags) << 24 | setting.id & 0xff_ffff,
                    );
                    put_u32(&mut payload, setting.value);
                }
                (SETTINGS, fin(*clear))
            }
            Frame::Ping { id } => {
                put_u32(&mut payload, *id);
                (PING, 0)
            }
            Frame::GoAway { last_good, status } => {
                put_u32(&mut payload, last_good & STREAM_MASK);
                put_u32(&mut payload, *status);
                (GOAWAY, 0)
            }
            Frame::Headers {
                stream,
                fin: f,
                headers,
            } => {
                put_u32(&mut payload, stream & STREAM_MASK);
                payload.extend(self.header_block(headers)?);
                (HEADERS, fin(*f))
            }
            Frame::WindowUpdate { stream, delta } => {
                put_u32(&mut payload, stream & STREAM_MASK);
                put_u32(&mut payload, delta & STREAM_MASK);
                (WINDOW_UPDATE, 0)
            }
            Frame::Unknown { kind } => (*kind, 0),
        };
        out.extend_from_slice(&(0x8000 | 3u16).to_be_bytes());
        out.extend_from_slice(&kind.to_be_bytes());
        put_flags_length(out, flags, payload.len())?;
        out.extend(payload);
        Ok(())
    }

    /// The compressed header block, ending with a sync flush so that the peer can
    /// decode it without the frames that follow.
    fn header_block(&mut self, headers: &Headers) -> Result<Vec<u8>> {
        let mut raw = Vec::new();
        put_u32(&mut raw, headers.len() as u32);
        for (name, value) in headers {
            put_string(&mut raw, &name.to_ascii_lowercase());
            put_string(&mut raw, value);
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut consumed = 0;
        loop {
            if out.len() == out.capacity() {
                out.reserve(256);
            }
            let before = self.deflate.total_in();
            self.deflate
                .compress_vec(&raw[consumed..], &mut out, FlushCompress::Sync)
                .map_err(|e| Error::Compression(e.to_string()))?;
            consumed += (self.deflate.total_in() - before) as usize;
            // The flush is complete when zlib left room in the output.
            if consumed == raw.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

/// Decodes frames, decompressing header blocks in one zlib context.
pub struct Decoder {
    inflate: Decompress,
}

impl Default for Decoder {
    fn default() -> Decoder {
        Decoder {
            inflate: Decompress::new(true),
        }
    }
}

/// Reads big-endian fields of one frame's payload.
struct Fields<'a> {
    rest: &'a [u8],
    frame: &'static str,
}

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.rest.len() < n {
            return Err(Error::Malformed(self.frame));
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32> {
        let bytes = self.take(4)?;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn string(&mut self) -> Result<String> {
        let len = self.u32()? as usize;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| Error::Malformed(self.frame))
    }
}

impl Decoder {
    /// The first frame of `buf` and its length, or `None` while it is incomplete.
    pub fn decode(&mut self, buf: &[u8]) -> Result<Option<(Frame, usize)>> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let word = |i: usize| u32::from_be_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
        let (first, second) = (word(0), word(4));
        let flags = (second >> 24) as u8;
        let len = (second & 0xff_ffff) as usize;
        if buf.len() < 8 + len {
            return Ok(None);
        }
        let payload = &buf[8..8 + len];
        let fin = flags & FLAG_FIN != 0;
        if first & 0x8000_0000 == 0 {
            let data = Frame::Data {
                stream: first,
                fin,
                data: payload.to_vec(),
            };
            return Ok(Some((data, 8 + len)));
        }
        let version = (first >> 16) as u16 & 0x7fff;
        if version != 3 {
            return Err(Error::Version(version));
        }
        let kind = first as u16;
        let frame = self.control(kind, flags, payload)?;
        Ok(Some((frame, 8 + len)))
    }

    fn control(&mut self, kind: u16, flags: u8, payload: &[u8]) -> Result<Frame> {
        let fin = flags & FLAG_FIN != 0;
        let name = match kind {
            SYN_STREAM => "SYN_STREAM",
            SYN_REPLY => "SYN_REPLY",
            RST_STREAM => "RST_STREAM",
            SETTINGS => "SETTINGS",
            PING => "PING",
            GOAWAY => "GOAWAY",
            HEADERS => "HEADERS",
            WINDOW_UPDATE => "WINDOW_UPDATE",
            _ => return Ok(Frame::Unknown { kind }),
        };
        let mut f = Fields {
            rest: payload,
            frame: name,
        };
        let frame = match kind {
            SYN_STREAM => {
                let stream = f.u32()? & STREAM_MASK;
                let associated = f.u32()? & STREAM_MASK;
                let priority = f.u8()? >> 5;
                let _slot = f.u8()?;
                Frame::SynStream {
                    stream,
                    associated,
                    priority,
                    fin,
                    unidirectional: flags & FLAG_UNIDIRECTIONAL != 0,
                    headers: self.headers(f.rest, name)?,
                }
            }
            SYN_REPLY | HEADERS => {
                let stream = f.u32()? & STREAM_MASK;
                let headers = self.headers(f.rest, name)?;
                if kind == SYN_REPLY {
                    Frame::SynReply {
                        stream,
                        fin,
                        headers,
                    }
                } else {
                    Frame::Headers {
                        stream,
                        fin,
                        headers,
                    }
                }
            }
            RST_STREAM => Frame::RstStream {
                stream: f.u32()? & STREAM_MASK,
                status: f.u32()?,
            },
            SETTINGS => {
                let count = f.u32()?;
                let mut values = Vec::new();
                for _ in 0..count {
                    let flags_id = f.u32()?;
                    values.push(Setting {
                        flags: (flags_id >> 24) as u8,
                        id: flags_id & 0xff_ffff,
                        value: f.u32()?,
                    });
                }
                Frame::Settings { clear: fin, values }
            }
            PING => Frame::Ping { id: f.u32()? },
            GOAWAY => Frame::GoAway {
                last_good: f.u32()? & STREAM_MASK,
                status: f.u32()?,
            },
            _ => Frame::WindowUpdate {
                stream: f.u32()? & STREAM_MASK,
                delta: f.u32()? & STREAM_MASK,
            },
        };
        Ok(frame)
    }

    fn headers(&mut self, compressed: &[u8], frame: &'static str) -> Result<Headers> {
        let raw = self.inflate(compressed)?;
        let mut f = Fields { rest: &raw, frame };
        let count = f.u32()?;
        let mut headers = Vec::new();
        for _ in 0..count {
            let name = f.string()?;
            headers.push((name.to_ascii_lowercase(), f.string()?));
        }
        Ok(headers)
    }

    fn inflate(&mut self, input: &[u8]) -> Result<Vec<u8>> {
        let failed = |e: flate2::DecompressError| Error::Compression(e.to_string());
        let mut out = Vec::with_capacity(input.len() * 4 + 64);
        let mut consumed = 0;
        loop {
            if out.len() == out.capacity() {
                out.reserve(out.capacity());
            }
            let (before_in, before_out) = (self.inflate.total_in(), self.inflate.total_out());
            let result =
                self.inflate
                    .decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync);
            consumed += (self.inflate.total_in() - before_in) as usize;
            let progressed = self.inflate.total_out() > before_out;
            match result {
                Ok(Status::StreamEnd) => return Ok(out),
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate.set_dictionary(dictionary()).map_err(failed)?;
                    continue;
                }
                Err(e) => return Err(failed(e)),
            }
            if consumed == input.len() && (out.len() < out.capacity() || !progressed) {
                return Ok(out);
            }
        }
    }
}

/// The client's flow-control windows, as the writer spends them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Windows {
    /// Whether the client showed it does flow control (see the module's invariant).
    enforced: bool,
    initial: i64,
    connection: i64,
    streams: HashMap<u32, i64>,
}

impl Default for Windows {
    fn default() -> Windows {
        Windows {
            enforced: false,
            initial: INITIAL_WINDOW,
            connection: INITIAL_WINDOW,
            streams: HashMap::new(),
        }
    }
}

impl Windows {
    /// How many of `wanted` bytes may go on `stream` now.
    pub fn allowance(&self, stream: u32, wanted: usize) -> usize {
        if !self.enforced {
            return wanted;
        }
        let window = self.connection.min(self.stream(stream)).max(0);
        wanted.min(usize::try_from(window).unwrap_or(0))
    }

    pub fn spend(&mut self, stream: u32, sent: usize) {
        let sent = sent as i64;
        self.connection -= sent;
        let initial = self.initial;
        *self.streams.entry(stream).or_insert(initial) -= sent;
    }

    /// A `WINDOW_UPDATE` from the client (stream 0: the connection's window).
    pub fn update(&mut self, stream: u32, delta: u32) {
        self.enforced = true;
        if stream == 0 {
            self.connection += i64::from(delta);
        } else {
            let initial = self.initial;
            *self.streams.entry(stream).or_insert(initial) += i64::from(delta);
        }
    }

    /// `SETTINGS_INITIAL_WINDOW_SIZE` from the client: every stream's window moves by
    /// the difference.
    pub fn set_initial(&mut self, size: u32) {
        self.enforced = true;
        let diff = i64::from(size) - self.initial;
        self.initial = i64::from(size);
        for window in self.streams.values_mut() {
            *window += diff;
        }
    }

    fn stream(&self, stream: u32) -> i64 {
        self.streams.get(&stream).copied().unwrap_or(self.initial)
    }
}

/// Whether an exec request asks for SPDY/3.1.
pub fn is_spdy(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.to_ascii_lowercase()
                .contains(&UPGRADE.to_ascii_lowercase())
        })
}

/// Answers an exec request that asked for SPDY/3.1: negotiates the protocol version
/// and switches protocols, then serves the session on the upgraded connection.
pub fn upgrade(mut request: Request, exec: ExecRequest, target: Sandboxed) -> Response {
    let offered: Vec<String> = request
        .headers()
        .get_all(PROTOCOL_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    if offered.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            format!("unable to upgrade: {PROTOCOL_HEADER} is required"),
        )
            .into_response();
    }
    let offered: Vec<&str> = offered.iter().map(String::as_str).collect();
    let Some(version) = Version::negotiate(&offered) else {
        let accepted: Vec<&str> = Version::ALL.iter().map(|v| v.name()).collect();
        let mut response = (
            StatusCode::FORBIDDEN,
            format!(
                "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts {accepted:?}"
            ),
        )
            .into_response();
        for name in accepted {
            response
                .headers_mut()
                .append(ACCEPTED_HEADER, header::HeaderValue::from_static(name));
        }
        return response;
    };
    let connection_upgrade = request
        .headers()
        .get(header::CONNECTION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("upgrade"));
    if !connection_upgrade {
        return (
            StatusCode::BAD_REQUEST,
            "unable to upgrade: missing upgrade headers in request",
        )
            .into_response();
    }
    let on_upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                if let Err(err) = serve(TokioIo::new(upgraded), version, exec, target).await {
                    tracing::debug!(%err, "spdy exec session failed");
                }
            }
            Err(err) => tracing::debug!(%err, "spdy exec: the upgrade did not complete"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, UPGRADE)
        .header(PROTOCOL_HEADER, version.name())
        .body(Body::empty())
        .unwrap_or_else(|err| (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response())
}

/// What the reader and the session hand the writer besides data.
#[derive(Debug)]
enum Control {
    /// A frame to send at once (replies, pings, window updates, resets).
    Send(Frame),
    /// The client's `WINDOW_UPDATE`.
    Window { stream: u32, delta: u32 },
    /// The client's `SETTINGS_INITIAL_WINDOW_SIZE`.
    InitialWindow(u32),
    /// The client reset the stream: drop what is still to go on it.
    Reset(u32),
}

/// Output of the command for one stream; `fin` ends the stream.
#[derive(Debug)]
struct Chunk {
    stream: u32,
    data: Vec<u8>,
    fin: bool,
}

/// Runs one exec session on an upgraded connection until the command's status is
/// sent (or the client went away).
pub async fn serve<S>(io: S, version: Version, exec: ExecRequest, target: Sandboxed) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (read_half, write_half) = tokio::io::split(io);
    let (control, control_rx) = mpsc::unbounded_channel();
    let (data, data_rx) = mpsc::channel(16);
    let (frames_tx, frames) = mpsc::channel(64);
    let writer = tokio::spawn(write_loop(write_half, control_rx, data_rx));
    let reader = tokio::spawn(read_loop(read_half, control.clone(), frames_tx));
    let session = Session {
        version,
        frames,
        control,
        data,
        streams: StreamIds::default(),
    };
    let result = session.run(&exec, &target).await;
    let written = writer.await;
    reader.abort();
    result?;
    written.map_err(|e| Error::Io(std::io::Error::other(e)))?
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut io: R,
    control: mpsc::UnboundedSender<Control>,
    session: mpsc::Sender<Frame>,
) -> Result<()> {
    let mut decoder = Decoder::default();
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        while let Some((frame, used)) = decoder.decode(&buf)? {
            buf.drain(..used);
            let message = match frame {
                // Pings the client started have odd ids; echo them.
                Frame::Ping { id } if id % 2 == 1 => Control::Send(Frame::Ping { id }),
                Frame::WindowUpdate { stream, delta } => Control::Window { stream, delta },
                Frame::Settings { values, .. } => {
                    for s in values
                        .iter()
                        .filter(|s| s.id == SETTINGS_INITIAL_WINDOW_SIZE)
                    {
                        let _ = control.send(Control::InitialWindow(s.value));
                    }
                    continue;
                }
                Frame::Ping { .. } | Frame::SynReply { .. } | Frame::Unknown { .. } => continue,
                other => {
                    if session.send(other).await.is_err() {
                        return Ok(());
                    }
                    continue;
                }
            };
            let _ = control.send(message);
        }
        let n = io.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Encodes frames onto the connection: control frames at once, data within the
/// client's windows; once the session dropped its data sender and all data went,
/// says `GOAWAY` and closes.
async fn write_loop<W: AsyncWrite + Unpin>(
    mut io: W,
    mut control: mpsc::UnboundedReceiver<Control>,
    mut data: mpsc::Receiver<Chunk>,
) -> Result<()> {
    let mut encoder = Encoder::new()?;
    let mut windows = Windows::default();
    let mut reset = HashSet::new();
    let mut last_good = 0;
    let mut pending: Option<Chunk> = None;
    let (mut control_open, mut data_open) = (true, true);
    let mut out = Vec::new();
    loop {
        if let Some(chunk) = pending.as_mut() {
            let allowed = windows.allowance(chunk.stream, chunk.data.len());
            if allowed > 0 || chunk.data.is_empty() {
                let whole = allowed == chunk.data.len();
                let data: Vec<u8> = chunk.data.drain(..allowed).collect();
                windows.spend(chunk.stream, allowed);
                let frame = Frame::Data {
                    stream: chunk.stream,
                    fin: whole && chunk.fin,
                    data,
                };
                encoder.encode(&frame, &mut out)?;
                if whole {
                    pending = None;
                }
            }
        }
        if !out.is_empty() {
            io.write_all(&out).await?;
            out.clear();
        }
        let blocked = pending.is_some();
        if (!blocked && !data_open) || (blocked && !control_open) {
            break;
        }
        tokio::select! {
            biased;
            message = control.recv(), if control_open => match message {
                Some(Control::Send(frame)) => {
                    if let Frame::SynReply { stream, .. } = frame {
                        last_good = last_good.max(stream);
                    }
                    encoder.encode(&frame, &mut out)?;
                }
                Some(Control::Window { stream, delta }) => windows.update(stream, delta),
                Some(Control::InitialWindow(size)) => windows.set_initial(size),
                Some(Control::Reset(stream)) => {
                    reset.insert(stream);
                    pending = pending.filter(|c| c.stream != stream);
                }
                None => control_open = false,
            },
            chunk = data.recv(), if !blocked && data_open => match chunk {
                Some(chunk) if !reset.contains(&chunk.stream) => pending = Some(chunk),
                Some(_) => {}
                None => data_open = false,
            },
        }
    }
    encoder.encode(
        &Frame::GoAway {
            last_good,
            status: 0,
        },
        &mut out,
    )?;
    io.write_all(&out).await?;
    io.flush().await?;
    io.shutdown().await?;
    Ok(())
}

/// The streams the client opened, by type.
#[derive(Debug, Default)]
struct StreamIds {
    error: Option<u32>,
    stdin: Option<u32>,
    stdout: Option<u32>,
    stderr: Option<u32>,
    resize: Option<u32>,
}

impl StreamIds {
    /// Records a stream by its `streamtype` header; false for an unknown type.
    fn accept(&mut self, stream: u32, headers: &Headers) -> bool {
        let kind = headers
            .iter()
            .find(|(name, _)| name == "streamtype")
            .map(|(_, value)| value.as_str());
        let slot = match kind {
            Some("error") => &mut self.error,
            Some("stdin") => &mut self.stdin,
            Some("stdout") => &mut self.stdout,
            Some("stderr") => &mut self.stderr,
            Some("resize") => &mut self.resize,
            _ => return false,
        };
        *slot = Some(stream);
        true
    }

    fn count(&self) -> usize {
        self.all().iter().flatten().count()
    }

    fn contains(&self, stream: u32) -> bool {
        self.all().contains(&Some(stream))
    }

    fn all(&self) -> [Option<u32>; 5] {
        [
            self.error,
            self.stdin,
            self.stdout,
            self.stderr,
            self.resize,
        ]
    }
}

struct Session {
    version: Version,
    frames: mpsc::Receiver<Frame>,
    control: mpsc::UnboundedSender<Control>,
    data: mpsc::Sender<Chunk>,
    streams: StreamIds,
}

impl Session {
    async fn run(mut self, exec: &ExecRequest, target: &Sandboxed) -> Result<()> {
        let expected = 1
            + usize::from(exec.stdin)
            + usize::from(exec.stdout)
            + usize::from(exec.stderr && !exec.tty)
            + usize::from(exec.tty && self.version.resizes());
        let deadline = tokio::time::sleep(STREAM_CREATION_TIMEOUT);
        tokio::pin!(deadline);
        while self.streams.count() < expected {
            tokio::select! {
                frame = self.frames.recv() => match frame {
                    Some(Frame::SynStream { stream, headers, .. }) => {
                        self.reply(stream);
                        if !self.streams.accept(stream, &headers) {
                            tracing::warn!(stream, ?headers, "unexpected stream type");
                        }
                    }
                    Some(Frame::GoAway { .. }) | None => return Ok(()),
                    Some(frame) => self.acknowledge(&frame),
                },
                () = &mut deadline => return Err(Error::StreamsTimedOut),
            }
        }
        let status = match exec::spawn(exec, target) {
            Ok(process) => self.attend(process).await,
            Err(err) => exec::failure(format!("failed to exec in container: {err}")),
        };
        if let Some(error) = self.streams.error {
            let chunk = Chunk {
                stream: error,
                data: self.version.status_bytes(&status),
                fin: true,
            };
            let _ = self.data.send(chunk).await;
        }
        Ok(())
    }

    /// Copies the command's outputs out and the client's input in until the
    /// command exits, and returns its `Status`.
    async fn attend(&mut self, mut process: exec::Process) -> serde_json::Value {
        let mut pumps = Vec::new();
        for (channel, reader) in process.outputs.drain(..) {
            let stream = match channel {
                STDOUT => self.streams.stdout,
                STDERR => self.streams.stderr,
                _ => None,
            };
            if let Some(stream) = stream {
                pumps.push(tokio::spawn(pump(reader, stream, self.data.clone())));
            }
        }
        let mut stdin = process.stdin.take();
        let mut connected = true;
        let exited = loop {
            tokio::select! {
                code = process.child.wait() => break code,
                frame = self.frames.recv(), if connected => match frame {
                    Some(Frame::Data { stream, fin, data }) if Some(stream) == self.streams.stdin => {
                        if let Some(input) = stdin.as_mut() {
                            if input.write_all(&data).await.is_err() {
                                stdin = None;
                            }
                        }
                        if fin {
                            stdin = None;
                        }
                        self.acknowledge(&Frame::Data { stream, fin, data });
                    }
                    Some(Frame::Headers { stream, fin: true, .. })
                    | Some(Frame::RstStream { stream, .. })
                        if Some(stream) == self.streams.stdin => stdin = None,
                    Some(Frame::RstStream { stream, .. }) => {
                        let _ = self.control.send(Control::Reset(stream));
                    }
                    Some(Frame::SynStream { stream, .. }) => {
                        self.send(Frame::RstStream { stream, status: REFUSED_STREAM });
                    }
                    Some(Frame::GoAway { .. }) | None => {
                        connected = false;
                        let _ = process.child.start_kill();
                    }
                    Some(frame) => self.acknowledge(&frame),
                },
            }
        };
        drop(stdin);
        for pump in pumps {
            let _ = pump.await;
        }
        match exited {
            Ok(status) => exec::exit_status(super::pod::exit_code(status)),
            Err(err) => exec::failure(err.to_string()),
        }
    }

    /// Gives back the window a data frame used (the resize stream's terminal sizes
    /// are read and dropped: pseudo-terminals keep their size), and resets streams
    /// the client never opened.
    fn acknowledge(&self, frame: &Frame) {
        let Frame::Data { stream, data, .. } = frame else {
            return;
        };
        let known = self.streams.contains(*stream);
        if !known {
            self.send(Frame::RstStream {
                stream: *stream,
                status: INVALID_STREAM,
            });
        }
        if data.is_empty() {
            return;
        }
        let delta = data.len() as u32;
        if known {
            self.send(Frame::WindowUpdate {
                stream: *stream,
                delta,
            });
        }
        self.send(Frame::WindowUpdate { stream: 0, delta });
    }

    fn reply(&self, stream: u32) {
        self.send(Frame::SynReply {
            stream,
            fin: false,
            headers: Vec::new(),
        });
    }

    fn send(&self, frame: Frame) {
        let _ = self.control.send(Control::Send(frame));
    }
}

/// Copies one output of the command to its stream, then ends the stream.
async fn pump(
    mut reader: Box<dyn AsyncRead + Send + Unpin>,
    stream: u32,
    out: mpsc::Sender<Chunk>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let chunk = Chunk {
                    stream,
                    data: buf[..n].to_vec(),
                    fin: false,
                };
                if out.send(chunk).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = out
        .send(Chunk {
            stream,
            data: Vec::new(),
            fin: true,
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn every_frame() -> Vec<Frame> {
        vec![
            Frame::Data {
                stream: 3,
                fin: false,
                data: b"hello".to_vec(),
            },
            Frame::Data {
                stream: 5,
                fin: true,
                data: Vec::new(),
            },
            Frame::SynStream {
                stream: 1,
                associated: 0,
                priority: 7,
                fin: false,
                unidirectional: true,
                headers: headers(&[("streamtype", "error")]),
            },
            Frame::SynReply {
                stream: 1,
                fin: true,
                headers: Vec::new(),
            },
            Frame::RstStream {
                stream: 7,
                status: REFUSED_STREAM,
            },
            Frame::Settings {
                clear: true,
                values: vec![Setting {
                    flags: 1,
                    id: SETTINGS_INITIAL_WINDOW_SIZE,
                    value: 1 << 20,
                }],
            },
            Frame::Ping { id: 9 },
            Frame::GoAway {
                last_good: 11,
                status: 1,
            },
            Frame::Headers {
                stream: 3,
                fin: true,
                headers: headers(&[("a", "1\0two"), ("streamtype", "stdout")]),
            },
            Frame::WindowUpdate {
                stream: 0,
                delta: 65536,
            },
            Frame::Unknown { kind: 10 },
        ]
    }

    #[test]
    fn the_dictionary_is_spdy3s() {
        let mut deflate = Compress::new(Compression::default(), true);
        let adler = deflate.set_dictionary(dictionary()).expect("dictionary");
        assert_eq!((dictionary().len(), adler), (1423, 0xe3c6_a7c2));
    }

    #[test]
    fn every_frame_type_round_trips_in_one_stream_of_bytes() {
        let mut encoder = Encoder::new().expect("encoder");
        let mut wire = Vec::new();
        for frame in every_frame() {
            encoder.encode(&frame, &mut wire).expect("encode");
        }
        let mut decoder = Decoder::default();
        let mut decoded = Vec::new();
        let mut rest = &wire[..];
        while let Some((frame, used)) = decoder.decode(rest).expect("decode") {
            decoded.push(frame);
            rest = &rest[used..];
        }
        assert!(rest.is_empty());
        assert_eq!(decoded, every_frame());
    }

    #[test]
    fn an_incomplete_frame_waits_for_more_bytes() {
        let mut wire = Vec::new();
        let ping = Frame::Ping { id: 1 };
        Encoder::new()
            .expect("encoder")
            .encode(&ping, &mut wire)
            .expect("encode");
        assert_eq!(wire, [0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1]);
        let mut decoder = Decoder::default();
        for end in 0..wire.len() {
            assert_eq!(decoder.decode(&wire[..end]).expect("decode"), None);
        }
        assert_eq!(
            decoder.decode(&wire).expect("decode"),
            Some((ping, wire.len()))
        );
    }

    #[test]
    fn other_versions_and_short_payloads_are_errors() {
        let spdy2 = [0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1];
        assert!(matches!(
            Decoder::default().decode(&spdy2),
            Err(Error::Version(2))
        ));
        let short_rst = [0x80, 3, 0, 3, 0, 0, 0, 4, 0, 0, 0, 1];
        assert!(matches!(
            Decoder::default().decode(&short_rst),
            Err(Error::Malformed("RST_STREAM"))
        ));
    }

    /// Two SYN_STREAMs as a client compresses them (C zlib, level 9, one context):
    /// the second block refers back into the first.
    #[test]
    fn header_blocks_of_another_zlib_decode_in_one_context() {
        let wire = hex(concat!(
            "80030001000000280000000100000000000078f9e3c6a7c202a62346703a2b294a4d",
            "cc851625aca9a08006000000ffff800300010000001900000003000000000000c22a",
            "054ccc29f9a52500000000ffff",
        ));
        let mut decoder = Decoder::default();
        let (first, used) = decoder.decode(&wire).expect("decode").expect("frame");
        let (second, _) = decoder
            .decode(&wire[used..])
            .expect("decode")
            .expect("frame");
        let syn = |stream, kind| Frame::SynStream {
            stream,
            associated: 0,
            priority: 0,
            fin: false,
            unidirectional: false,
            headers: headers(&[("streamtype", kind)]),
        };
        assert_eq!((first, second), (syn(1, "error"), syn(3, "stdout")));
    }

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
            .collect()
    }

    #[test]
    fn windows_bind_once_the_client_does_flow_control() {
        let mut windows = Windows::default();
        windows.spend(3, 100_000);
        assert_eq!(
            windows.allowance(3, 5000),
            5000,
            "spdystream ignores windows"
        );

        let mut windows = Windows::default();
        windows.update(0, 0);
        windows.spend(3, 60_000);
        assert_eq!(windows.allowance(3, 10_000), 64 * 1024 - 60_000);
        windows.update(3, 20_000);
        assert_eq!(
            windows.allowance(3, 10_000),
            64 * 1024 - 60_000,
            "connection"
        );
        windows.update(0, 20_000);
        assert_eq!(windows.allowance(3, 10_000), 10_000);
        assert_eq!(windows.allowance(5, 100_000), 64 * 1024 - 60_000 + 20_000);

        let mut windows = Windows::default();
        windows.spend(1, 1000);
        windows.set_initial(1000);
        assert_eq!(windows.allowance(1, 10), 0);
        assert_eq!(windows.allowance(3, 5000), 1000);
    }

    #[test]
    fn the_clients_first_known_protocol_wins() {
        let offered = [
            "v5.channel.k8s.io",
            "v3.channel.k8s.io",
            "v4.channel.k8s.io",
        ];
        assert_eq!(Version::negotiate(&offered), Some(Version::V3));
        assert_eq!(Version::negotiate(&["v1.channel.k8s.io"]), None);
        let failed = exec::exit_status(4);
        assert_eq!(
            Version::V3.status_bytes(&failed),
            b"command terminated with non-zero exit code: exit status 4"
        );
        assert!(Version::V2.status_bytes(&exec::exit_status(0)).is_empty());
        let v4: serde_json::Value =
            serde_json::from_slice(&Version::V4.status_bytes(&failed)).expect("json");
        assert_eq!(v4, failed);
    }

    /// A client on the other end of an in-memory connection.
    struct Client {
        io: tokio::io::DuplexStream,
        encoder: Encoder,
        decoder: Decoder,
        buf: Vec<u8>,
    }

    impl Client {
        async fn send(&mut self, frame: Frame) {
            let mut out = Vec::new();
            self.encoder.encode(&frame, &mut out).expect("encode");
            self.io.write_all(&out).await.expect("write");
        }

        async fn open(&mut self, stream: u32, kind: &str) {
            let headers = headers(&[("streamtype", kind)]);
            self.send(Frame::SynStream {
                stream,
                associated: 0,
                priority: 0,
                fin: false,
                unidirectional: false,
                headers,
            })
            .await;
        }

        async fn next(&mut self) -> Option<Frame> {
            loop {
                if let Some((frame, used)) = self.decoder.decode(&self.buf).expect("decode") {
                    self.buf.drain(..used);
                    return Some(frame);
                }
                let mut chunk = [0u8; 4096];
                let n = self.io.read(&mut chunk).await.expect("read");
                if n == 0 {
                    return None;
                }
                self.buf.extend_from_slice(&chunk[..n]);
            }
        }
    }

    /// What a whole session sent: the replies, each stream's data and whether it
    /// ended, the window updates, and the `GOAWAY`.
    #[derive(Debug, Default)]
    struct Transcript {
        replies: Vec<u32>,
        data: HashMap<u32, Vec<u8>>,
        ended: Vec<u32>,
        updates: Vec<(u32, u32)>,
        goaway: Option<u32>,
    }

    impl Transcript {
        fn text(&self, stream: u32) -> String {
            String::from_utf8_lossy(self.data.get(&stream).map_or(&[][..], |d| &d[..])).into_owned()
        }

        fn record(&mut self, frame: Frame) {
            match frame {
                Frame::SynReply { stream, .. } => self.replies.push(stream),
                Frame::Data { stream, fin, data } => {
                    self.data.entry(stream).or_default().extend(data);
                    if fin {
                        self.ended.push(stream);
                    }
                }
                Frame::WindowUpdate { stream, delta } => self.updates.push((stream, delta)),
                Frame::GoAway { last_good, .. } => self.goaway = Some(last_good),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// A sandbox whose `nsenter` runs the command right here.
    fn sandbox(dir: &tempfile::TempDir) -> Sandboxed {
        use std::os::unix::fs::PermissionsExt;
        let binary = dir.path().join("kubesim");
        std::fs::write(&binary, "#!/bin/sh\nshift 4\nexec \"$@\"\n").expect("script");
        std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        Sandboxed {
            binary,
            pause_pid: 1,
            env: vec![("PATH".to_owned(), "/usr/bin:/bin".to_owned())],
        }
    }

    fn start(query: &str, version: Version, dir: &tempfile::TempDir) -> Client {
        let (client, server) = tokio::io::duplex(256 * 1024);
        let exec = ExecRequest::parse(query);
        let target = sandbox(dir);
        tokio::spawn(serve(server, version, exec, target));
        Client {
            io: client,
            encoder: Encoder::new().expect("encoder"),
            decoder: Decoder::default(),
            buf: Vec::new(),
        }
    }

    #[tokio::test]
    async fn a_session_replies_runs_and_reports_the_exit_code() {
        let dir = tempfile::tempdir().expect("tempdir");
        let query = "command=sh&command=-c&command=tr%20a-z%20A-Z%3B%20echo%20err%20>%262%3B%20exit%204&stdin=1&stdout=1&stderr=1";
        let mut client = start(query, Version::V4, &dir);
        for (stream, kind) in [(1, "error"), (3, "stdin"), (5, "stdout"), (7, "stderr")] {
            client.open(stream, kind).await;
        }
        client.send(Frame::Ping { id: 1 }).await;
        let stdin = |data: &[u8], fin| Frame::Data {
            stream: 3,
            fin,
            data: data.to_vec(),
        };
        client.send(stdin(b"shout", false)).await;
        client.send(stdin(b"", true)).await;
        let mut transcript = Transcript::default();
        let mut pinged = false;
        while let Some(frame) = client.next().await {
            match frame {
                Frame::Ping { id } => pinged = id == 1,
                frame => transcript.record(frame),
            }
        }
        assert!(pinged, "{transcript:?}");
        assert_eq!(transcript.replies, [1, 3, 5, 7]);
        assert_eq!(transcript.text(5), "SHOUT");
        assert_eq!(transcript.text(7), "err\n");
        let status: serde_json::Value =
            serde_json::from_slice(&transcript.data[&1]).expect("status json");
        assert_eq!(status, exec::exit_status(4));
        transcript.ended.sort_unstable();
        assert_eq!(transcript.ended, [1, 5, 7]);
        assert_eq!(transcript.updates, [(3, 5), (0, 5)]);
        assert_eq!(transcript.goaway, Some(7));
    }

    #[tokio::test]
    async fn output_waits_for_the_clients_window() {
        let dir = tempfile::tempdir().expect("tempdir");
        let query = "command=head&command=-c&command=5000&command=/dev/zero&stdout=1";
        let mut client = start(query, Version::V4, &dir);
        let initial = Setting {
            flags: 0,
            id: SETTINGS_INITIAL_WINDOW_SIZE,
            value: 1000,
        };
        client
            .send(Frame::Settings {
                clear: false,
                values: vec![initial],
            })
            .await;
        client.open(1, "error").await;
        client.open(3, "stdout").await;
        let mut transcript = Transcript::default();
        while transcript.text(3).len() < 1000 {
            transcript.record(client.next().await.expect("a frame"));
        }
        let more = tokio::time::timeout(Duration::from_millis(300), client.next()).await;
        assert!(more.is_err(), "sent past the window: {more:?}");
        assert_eq!(transcript.text(3).len(), 1000);
        client
            .send(Frame::WindowUpdate {
                stream: 3,
                delta: 4000,
            })
            .await;
        while let Some(frame) = client.next().await {
            transcript.record(frame);
        }
        assert_eq!(transcript.data[&3].len(), 5000);
        assert_eq!(transcript.text(1), exec::exit_status(0).to_string());
    }

    #[tokio::test]
    async fn v3_sends_only_a_failures_message() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut client = start("command=false&stdout=1", Version::V3, &dir);
        client.open(1, "error").await;
        client.open(3, "stdout").await;
        let mut transcript = Transcript::default();
        while let Some(frame) = client.next().await {
            transcript.record(frame);
        }
        assert_eq!(
            transcript.text(1),
            "command terminated with non-zero exit code: exit status 1"
        );
    }
}
