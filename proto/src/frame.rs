//! The frames that carry HTTP and WebSocket traffic between the service worker
//! and the page bridge over a `MessageChannel`.
//!
//! Each frame is one `ArrayBuffer` on the wire:
//!
//! ```text
//! kind: u8 | stream: u32 LE | payload (kind-specific)
//! ```
//!
//! Strings and byte strings in payloads are a `u32` LE length followed by the
//! bytes; header lists are a `u16` LE count followed by name/value pairs.
//! Stream 0 is the control stream; the worker numbers request streams from 1.

use std::fmt;

/// One header as a name and raw value bytes.
pub type Header = (String, Vec<u8>);

/// Opens a stream: a request for an app, or a WebSocket upgrade for one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// The app the request is for.
    pub app: String,
    /// HTTP method, e.g. `GET`.
    pub method: String,
    /// Path and query inside the guest, e.g. `/app/site/index.html?x=1`.
    pub target: String,
    /// The prefix the browser used, e.g. `/p1/app/site` (sent on as
    /// `X-Forwarded-Prefix`).
    pub prefix: String,
    /// Request headers as the browser sent them.
    pub headers: Vec<Header>,
    /// True when the request asks for a WebSocket; the stream then carries
    /// [`Frame::WsMessage`] frames after the response head.
    pub websocket: bool,
}

/// Answers a [`RequestHead`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// HTTP status code.
    pub status: u16,
    /// Response headers.
    pub headers: Vec<Header>,
}

/// Why a stream was torn down without a normal end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetCode {
    /// No app of that name is deployed.
    UnknownApp,
    /// The VM is not running, or not yet ready.
    NotRunning,
    /// The guest did not accept the connection or broke it.
    GuestUnreachable,
    /// The guest did not answer in time.
    Timeout,
    /// The guest's answer was not valid HTTP/1.1.
    BadGateway,
    /// The request body exceeds the upload limit.
    TooLarge,
    /// The other side gave up on the stream (the tab closed the request).
    Cancelled,
    /// Anything else.
    Internal,
}

impl ResetCode {
    const ALL: [ResetCode; 8] = [
        ResetCode::UnknownApp,
        ResetCode::NotRunning,
        ResetCode::GuestUnreachable,
        ResetCode::Timeout,
        ResetCode::BadGateway,
        ResetCode::TooLarge,
        ResetCode::Cancelled,
        ResetCode::Internal,
    ];

    fn to_byte(self) -> u8 {
        ResetCode::ALL.iter().position(|c| *c == self).unwrap_or(7) as u8
    }

    fn from_byte(b: u8) -> Result<Self, FrameError> {
        ResetCode::ALL
            .get(b as usize)
            .copied()
            .ok_or(FrameError::UnknownReset(b))
    }

    /// A stable machine-readable code, used in error pages and JSON.
    pub fn code(self) -> &'static str {
        match self {
            ResetCode::UnknownApp => "unknown_app",
            ResetCode::NotRunning => "not_running",
            ResetCode::GuestUnreachable => "guest_unreachable",
            ResetCode::Timeout => "timeout",
            ResetCode::BadGateway => "bad_gateway",
            ResetCode::TooLarge => "too_large",
            ResetCode::Cancelled => "cancelled",
            ResetCode::Internal => "internal",
        }
    }

    /// The HTTP status a browser sees for this error.
    pub fn status(self) -> u16 {
        match self {
            ResetCode::UnknownApp => 404,
            ResetCode::NotRunning => 503,
            ResetCode::GuestUnreachable | ResetCode::BadGateway => 502,
            ResetCode::Timeout => 504,
            ResetCode::TooLarge => 413,
            ResetCode::Cancelled => 499,
            ResetCode::Internal => 500,
        }
    }
}

/// Everything that can travel on a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Worker to bridge: opens the stream.
    Request(RequestHead),
    /// Bridge to worker: the status and headers.
    Response(ResponseHead),
    /// A piece of a body, in either direction.
    Data(Vec<u8>),
    /// The sender's body is complete.
    End,
    /// The receiver consumed this many more bytes: the sender may send them.
    Credit(u32),
    /// The stream failed; the message says why in words for a person.
    Reset(ResetCode, String),
    /// One WebSocket message, in either direction.
    WsMessage {
        /// Binary (true) or text (false) message.
        binary: bool,
        /// The payload.
        data: Vec<u8>,
    },
    /// The WebSocket closed with this code and reason.
    WsClose {
        /// Close code, e.g. 1000.
        code: u16,
        /// Close reason.
        reason: String,
    },
    /// Control stream, bridge to worker: the apps now deployed.
    Apps(Vec<String>),
    /// Worker to bridge: opens a stream for the deploy API under
    /// `/application-server/api/`, which the page answers itself. `app` is
    /// empty and `target` is the whole path and query.
    ApiRequest(RequestHead),
}

/// A frame with the stream it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Stream id; 0 is the control stream.
    pub stream: u32,
    /// The frame.
    pub frame: Frame,
}

/// Why bytes could not be decoded as a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The buffer ended in the middle of a field.
    Truncated,
    /// The first byte is not a known frame kind.
    UnknownKind(u8),
    /// A reset frame carries an unknown code.
    UnknownReset(u8),
    /// A string field is not UTF-8.
    NotUtf8,
    /// Bytes were left after the frame's last field.
    TrailingBytes(usize),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Truncated => write!(f, "frame is truncated"),
            FrameError::UnknownKind(k) => write!(f, "unknown frame kind {k}"),
            FrameError::UnknownReset(c) => write!(f, "unknown reset code {c}"),
            FrameError::NotUtf8 => write!(f, "frame string is not UTF-8"),
            FrameError::TrailingBytes(n) => write!(f, "{n} stray bytes after the frame"),
        }
    }
}

impl std::error::Error for FrameError {}

const KIND_REQUEST: u8 = 1;
const KIND_RESPONSE: u8 = 2;
const KIND_DATA: u8 = 3;
const KIND_END: u8 = 4;
const KIND_CREDIT: u8 = 5;
const KIND_RESET: u8 = 6;
const KIND_WS_MESSAGE: u8 = 7;
const KIND_WS_CLOSE: u8 = 8;
const KIND_APPS: u8 = 9;
const KIND_API_REQUEST: u8 = 10;

impl Envelope {
    /// Builds an envelope.
    pub fn new(stream: u32, frame: Frame) -> Self {
        Envelope { stream, frame }
    }

    /// Encodes the frame into its wire bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(16));
        let kind = match &self.frame {
            Frame::Request(_) => KIND_REQUEST,
            Frame::Response(_) => KIND_RESPONSE,
            Frame::Data(_) => KIND_DATA,
            Frame::End => KIND_END,
            Frame::Credit(_) => KIND_CREDIT,
            Frame::Reset(..) => KIND_RESET,
            Frame::WsMessage { .. } => KIND_WS_MESSAGE,
            Frame::WsClose { .. } => KIND_WS_CLOSE,
            Frame::Apps(_) => KIND_APPS,
            Frame::ApiRequest(_) => KIND_API_REQUEST,
        };
        w.u8(kind);
        w.u32(self.stream);
        match &self.frame {
            Frame::Request(head) | Frame::ApiRequest(head) => {
                w.str(&head.app);
                w.str(&head.method);
                w.str(&head.target);
                w.str(&head.prefix);
                w.headers(&head.headers);
                w.u8(head.websocket as u8);
            }
            Frame::Response(head) => {
                w.u16(head.status);
                w.headers(&head.headers);
            }
            // Data is the bulk of the traffic: its payload is the raw rest of the frame.
            Frame::Data(bytes) => w.0.extend_from_slice(bytes),
            Frame::End => {}
            Frame::Credit(n) => w.u32(*n),
            Frame::Reset(code, message) => {
                w.u8(code.to_byte());
                w.str(message);
            }
            Frame::WsMessage { binary, data } => {
                w.u8(*binary as u8);
                w.0.extend_from_slice(data);
            }
            Frame::WsClose { code, reason } => {
                w.u16(*code);
                w.str(reason);
            }
            Frame::Apps(names) => {
                w.u16(names.len() as u16);
                for name in names {
                    w.str(name);
                }
            }
        }
        w.0
    }

    /// Decodes wire bytes into a frame, refusing anything malformed.
    pub fn decode(bytes: &[u8]) -> Result<Self, FrameError> {
        let mut r = Reader { bytes, pos: 0 };
        let kind = r.u8()?;
        let stream = r.u32()?;
        let frame = match kind {
            KIND_REQUEST => Frame::Request(r.request_head()?),
            KIND_API_REQUEST => Frame::ApiRequest(r.request_head()?),
            KIND_RESPONSE => Frame::Response(ResponseHead {
                status: r.u16()?,
                headers: r.headers()?,
            }),
            KIND_DATA => Frame::Data(r.rest().to_vec()),
            KIND_END => Frame::End,
            KIND_CREDIT => Frame::Credit(r.u32()?),
            KIND_RESET => Frame::Reset(ResetCode::from_byte(r.u8()?)?, r.string()?),
            KIND_WS_MESSAGE => Frame::WsMessage {
                binary: r.u8()? != 0,
                data: r.rest().to_vec(),
            },
            KIND_WS_CLOSE => Frame::WsClose {
                code: r.u16()?,
                reason: r.string()?,
            },
            KIND_APPS => {
                let n = r.u16()?;
                let names = (0..n).map(|_| r.string()).collect::<Result<_, _>>()?;
                Frame::Apps(names)
            }
            other => return Err(FrameError::UnknownKind(other)),
        };
        if r.pos != bytes.len() {
            return Err(FrameError::TrailingBytes(bytes.len() - r.pos));
        }
        Ok(Envelope { stream, frame })
    }
}

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, v: &[u8]) {
        self.u32(v.len() as u32);
        self.0.extend_from_slice(v);
    }
    fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }
    fn headers(&mut self, headers: &[Header]) {
        self.u16(headers.len() as u16);
        for (name, value) in headers {
            self.str(name);
            self.bytes(value);
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn request_head(&mut self) -> Result<RequestHead, FrameError> {
        Ok(RequestHead {
            app: self.string()?,
            method: self.string()?,
            target: self.string()?,
            prefix: self.string()?,
            headers: self.headers()?,
            websocket: self.u8()? != 0,
        })
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        let end = self.pos.checked_add(n).ok_or(FrameError::Truncated)?;
        let slice = self.bytes.get(self.pos..end).ok_or(FrameError::Truncated)?;
        self.pos = end;
        Ok(slice)
    }
    fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, FrameError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, FrameError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn byte_string(&mut self) -> Result<Vec<u8>, FrameError> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    fn string(&mut self) -> Result<String, FrameError> {
        String::from_utf8(self.byte_string()?).map_err(|_| FrameError::NotUtf8)
    }
    fn headers(&mut self) -> Result<Vec<Header>, FrameError> {
        let n = self.u16()?;
        (0..n)
            .map(|_| Ok((self.string()?, self.byte_string()?)))
            .collect()
    }
    fn rest(&mut self) -> &'a [u8] {
        let rest = &self.bytes[self.pos..];
        self.pos = self.bytes.len();
        rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Envelope> {
        vec![
            Envelope::new(
                1,
                Frame::Request(RequestHead {
                    app: "site".into(),
                    method: "GET".into(),
                    target: "/app/site/?q=1".into(),
                    prefix: "/p1/app/site".into(),
                    headers: vec![("accept".into(), b"*/*".to_vec())],
                    websocket: false,
                }),
            ),
            Envelope::new(
                1,
                Frame::Response(ResponseHead {
                    status: 200,
                    headers: vec![("content-type".into(), b"text/html".to_vec())],
                }),
            ),
            Envelope::new(1, Frame::Data(b"hello".to_vec())),
            Envelope::new(1, Frame::Data(Vec::new())),
            Envelope::new(1, Frame::End),
            Envelope::new(3, Frame::Credit(65536)),
            Envelope::new(5, Frame::Reset(ResetCode::NotRunning, "boot first".into())),
            Envelope::new(
                7,
                Frame::WsMessage {
                    binary: true,
                    data: vec![0, 1, 2],
                },
            ),
            Envelope::new(
                7,
                Frame::WsClose {
                    code: 1000,
                    reason: "bye".into(),
                },
            ),
            Envelope::new(0, Frame::Apps(vec!["site".into(), "api".into()])),
            Envelope::new(
                9,
                Frame::ApiRequest(RequestHead {
                    app: String::new(),
                    method: "PUT".into(),
                    target: "/application-server/api/apps/site?entry=x".into(),
                    prefix: "/application-server/api".into(),
                    headers: vec![("content-type".into(), b"application/zip".to_vec())],
                    websocket: false,
                }),
            ),
        ]
    }

    #[test]
    fn every_frame_round_trips() {
        for env in samples() {
            assert_eq!(Envelope::decode(&env.encode()), Ok(env.clone()), "{env:?}");
        }
    }

    #[test]
    fn wire_layout_is_stable() {
        // A change here breaks a worker and a page of different versions:
        // bump the protocol deliberately, not by accident.
        let credit = Envelope::new(3, Frame::Credit(0x0102_0304)).encode();
        assert_eq!(credit, [5, 3, 0, 0, 0, 4, 3, 2, 1]);
        let data = Envelope::new(1, Frame::Data(b"ab".to_vec())).encode();
        assert_eq!(data, [3, 1, 0, 0, 0, b'a', b'b']);
        let reset = Envelope::new(2, Frame::Reset(ResetCode::Timeout, "t".into())).encode();
        assert_eq!(reset, [6, 2, 0, 0, 0, 3, 1, 0, 0, 0, b't']);
    }

    #[test]
    fn malformed_frames_are_refused() {
        assert_eq!(Envelope::decode(&[]), Err(FrameError::Truncated));
        assert_eq!(
            Envelope::decode(&[42, 0, 0, 0, 0]),
            Err(FrameError::UnknownKind(42))
        );
        assert_eq!(
            Envelope::decode(&[5, 0, 0, 0, 0, 1]),
            Err(FrameError::Truncated)
        );
        assert_eq!(
            Envelope::decode(&[4, 0, 0, 0, 0, 9]),
            Err(FrameError::TrailingBytes(1))
        );
        assert_eq!(
            Envelope::decode(&[6, 0, 0, 0, 0, 99, 0, 0, 0, 0]),
            Err(FrameError::UnknownReset(99))
        );
        // A length field that points past the end must not panic or allocate wildly.
        assert_eq!(
            Envelope::decode(&[9, 0, 0, 0, 0, 1, 0, 0xff, 0xff, 0xff, 0xff]),
            Err(FrameError::Truncated)
        );
        for env in samples() {
            let bytes = env.encode();
            for cut in 0..bytes.len() {
                let _ = Envelope::decode(&bytes[..cut]);
            }
        }
    }

    #[test]
    fn reset_codes_map_to_statuses() {
        assert_eq!(ResetCode::UnknownApp.status(), 404);
        assert_eq!(ResetCode::NotRunning.status(), 503);
        assert_eq!(ResetCode::TooLarge.code(), "too_large");
        for code in ResetCode::ALL {
            assert_eq!(ResetCode::from_byte(code.to_byte()), Ok(code));
        }
    }
}
