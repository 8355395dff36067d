//! HTTP/1.1 as the bridge speaks it to servers inside the guest: a request
//! head writer and an incremental response parser.
//!
//! The bridge opens one TCP connection per request and closes it itself once
//! the response is complete, so the parser handles one response per
//! connection. It does not ask the server to close first: v86 0.5.462's TCP
//! stack drops the data of a guest segment that also carries FIN, which
//! Linux sends whenever a server closes right after writing, cutting the
//! end off any response longer than one segment.

use crate::frame::{Header, ResponseHead};
use std::fmt;

/// Largest response head accepted, status line and headers together.
pub const MAX_HEAD_LEN: usize = 64 * 1024;

/// Headers that describe one hop and are never passed on.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

/// Writes the request line and headers for a request sent into the guest.
///
/// Hop-by-hop headers from the browser are dropped; `Host`,
/// `X-Forwarded-Prefix` and, when there is a body, `Content-Length` are set
/// here. The connection stays persistent (HTTP/1.1's default) until the
/// bridge closes it.
pub fn request_head(
    method: &str,
    target: &str,
    headers: &[Header],
    prefix: &str,
    body_len: Option<u64>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(format!("{method} {target} HTTP/1.1\r\n").as_bytes());
    out.extend_from_slice(b"Host: localhost\r\n");
    out.extend_from_slice(format!("X-Forwarded-Prefix: {prefix}\r\n").as_bytes());
    if let Some(n) = body_len {
        out.extend_from_slice(format!("Content-Length: {n}\r\n").as_bytes());
    }
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        if HOP_BY_HOP.contains(&lower.as_str()) || lower == "x-forwarded-prefix" {
            continue;
        }
        if !is_token(name) || value.iter().any(|b| *b == b'\r' || *b == b'\n') {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Why a response from the guest could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// The head grew past [`MAX_HEAD_LEN`] without ending.
    HeadTooLarge,
    /// The status line is not `HTTP/1.x NNN reason`.
    BadStatusLine(String),
    /// A header line has no colon or is not UTF-8.
    BadHeader(String),
    /// `Content-Length` is not a number.
    BadContentLength(String),
    /// A chunk size line is not hexadecimal, or a chunk lacks its CRLF.
    BadChunk,
    /// The connection closed before the body was complete.
    UnexpectedEof,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::HeadTooLarge => {
                write!(f, "response head is larger than {MAX_HEAD_LEN} bytes")
            }
            ParseError::BadStatusLine(l) => write!(f, "bad status line {l:?}"),
            ParseError::BadHeader(l) => write!(f, "bad header line {l:?}"),
            ParseError::BadContentLength(v) => write!(f, "bad Content-Length {v:?}"),
            ParseError::BadChunk => write!(f, "malformed chunked body"),
            ParseError::UnexpectedEof => write!(f, "connection closed in the middle of the body"),
        }
    }
}

impl std::error::Error for ParseError {}

/// What the parser found in the bytes fed to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The status and headers (hop-by-hop headers removed).
    Head(ResponseHead),
    /// A piece of the body, already de-chunked.
    Body(Vec<u8>),
    /// The response is complete.
    Done,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Head,
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkDataEnd,
    Trailers,
    UntilClose,
    Done,
}

/// An incremental parser for one HTTP/1.1 response.
#[derive(Debug)]
pub struct ResponseParser {
    state: State,
    buf: Vec<u8>,
    no_body: bool,
}

impl ResponseParser {
    /// A parser for the response to a request with `method` (a `HEAD`
    /// response has no body whatever its headers say).
    pub fn new(method: &str) -> Self {
        ResponseParser {
            state: State::Head,
            buf: Vec::new(),
            no_body: method.eq_ignore_ascii_case("HEAD"),
        }
    }

    /// True once the whole response has been seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Feeds bytes from the connection and returns what they completed.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<Event>, ParseError> {
        self.buf.extend_from_slice(bytes);
        let mut events = Vec::new();
        loop {
            let progressed = match self.state.clone() {
                State::Head => self.parse_head(&mut events)?,
                State::Length(left) => {
                    let n = (left as usize).min(self.buf.len());
                    if n > 0 {
                        events.push(Event::Body(self.buf.drain(..n).collect()));
                    }
                    let left = left - n as u64;
                    if left == 0 {
                        self.state = State::Done;
                        events.push(Event::Done);
                    } else {
                        self.state = State::Length(left);
                    }
                    // Either the body is complete or the buffer is empty.
                    false
                }
                State::ChunkSize => match take_line(&mut self.buf) {
                    Some(line) => {
                        let text = std::str::from_utf8(&line).map_err(|_| ParseError::BadChunk)?;
                        let size = text.split(';').next().unwrap_or("").trim();
                        let size =
                            u64::from_str_radix(size, 16).map_err(|_| ParseError::BadChunk)?;
                        self.state = if size == 0 {
                            State::Trailers
                        } else {
                            State::ChunkData(size)
                        };
                        true
                    }
                    None => false,
                },
                State::ChunkData(left) => {
                    let n = (left as usize).min(self.buf.len());
                    if n > 0 {
                        events.push(Event::Body(self.buf.drain(..n).collect()));
                    }
                    let left = left - n as u64;
                    if left == 0 {
                        self.state = State::ChunkDataEnd;
                        true
                    } else {
                        self.state = State::ChunkData(left);
                        false
                    }
                }
                State::ChunkDataEnd => {
                    if self.buf.len() < 2 {
                        false
                    } else if &self.buf[..2] == b"\r\n" {
                        self.buf.drain(..2);
                        self.state = State::ChunkSize;
                        true
                    } else {
                        return Err(ParseError::BadChunk);
                    }
                }
                State::Trailers => match take_line(&mut self.buf) {
                    Some(line) if line.is_empty() => {
                        self.state = State::Done;
                        events.push(Event::Done);
                        false
                    }
                    Some(_) => true,
                    None => false,
                },
                State::UntilClose => {
                    if !self.buf.is_empty() {
                        events.push(Event::Body(std::mem::take(&mut self.buf)));
                    }
                    false
                }
                State::Done => {
                    self.buf.clear();
                    false
                }
            };
            if !progressed {
                return Ok(events);
            }
        }
    }

    /// Tells the parser the connection closed; ends a close-delimited body or
    /// reports a body cut short.
    pub fn finish(&mut self) -> Result<Vec<Event>, ParseError> {
        match self.state {
            State::Done => Ok(Vec::new()),
            State::UntilClose => {
                self.state = State::Done;
                Ok(vec![Event::Done])
            }
            _ => Err(ParseError::UnexpectedEof),
        }
    }

    fn parse_head(&mut self, events: &mut Vec<Event>) -> Result<bool, ParseError> {
        let Some(end) = find(&self.buf, b"\r\n\r\n") else {
            if self.buf.len() > MAX_HEAD_LEN {
                return Err(ParseError::HeadTooLarge);
            }
            return Ok(false);
        };
        let head: Vec<u8> = self.buf.drain(..end + 4).collect();
        let text = String::from_utf8_lossy(&head[..end]).into_owned();
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let status = parse_status_line(status_line)?;
        let mut headers = Vec::new();
        let mut length = None;
        let mut chunked = false;
        for line in lines {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| ParseError::BadHeader(line.to_owned()))?;
            let name = name.trim();
            let value = value.trim();
            if !is_token(name) {
                return Err(ParseError::BadHeader(line.to_owned()));
            }
            let lower = name.to_ascii_lowercase();
            match lower.as_str() {
                "content-length" => {
                    let n = value
                        .parse::<u64>()
                        .map_err(|_| ParseError::BadContentLength(value.to_owned()))?;
                    length = Some(n);
                    headers.push((name.to_owned(), value.as_bytes().to_vec()));
                    continue;
                }
                "transfer-encoding" => {
                    chunked = value.to_ascii_lowercase().contains("chunked");
                }
                _ => {}
            }
            if !HOP_BY_HOP.contains(&lower.as_str()) {
                headers.push((name.to_owned(), value.as_bytes().to_vec()));
            }
        }
        // The informational 1xx answers are not expected: the bridge sends no
        // `Expect` header. A later issue handles 101 for WebSockets.
        let bodiless = self.no_body || status == 204 || status == 304;
        if chunked {
            headers.retain(|(n, _)| !n.eq_ignore_ascii_case("content-length"));
        }
        self.state = if bodiless {
            State::Done
        } else if chunked {
            State::ChunkSize
        } else if let Some(n) = length {
            if n == 0 {
                State::Done
            } else {
                State::Length(n)
            }
        } else {
            State::UntilClose
        };
        events.push(Event::Head(ResponseHead { status, headers }));
        if self.state == State::Done {
            events.push(Event::Done);
        }
        Ok(true)
    }
}

fn parse_status_line(line: &str) -> Result<u16, ParseError> {
    let bad = || ParseError::BadStatusLine(line.to_owned());
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().ok_or_else(bad)?;
    if !version.starts_with("HTTP/1.") {
        return Err(bad());
    }
    let code = parts.next().ok_or_else(bad)?;
    match code.parse::<u16>() {
        Ok(n) if (100..=599).contains(&n) && code.len() == 3 => Ok(n),
        _ => Err(bad()),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn take_line(buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let end = find(buf, b"\r\n")?;
    let line = buf[..end].to_vec();
    buf.drain(..end + 2);
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` split at every possible point and returns the events,
    /// with body pieces joined.
    fn parse_split(method: &str, input: &[u8], close: bool) -> Vec<Result<Vec<Event>, ParseError>> {
        (0..=input.len())
            .map(|cut| {
                let mut p = ResponseParser::new(method);
                let mut events = p.feed(&input[..cut])?;
                events.extend(p.feed(&input[cut..])?);
                if close {
                    events.extend(p.finish()?);
                }
                Ok(join_bodies(events))
            })
            .collect()
    }

    fn join_bodies(events: Vec<Event>) -> Vec<Event> {
        let mut out: Vec<Event> = Vec::new();
        for e in events {
            match (out.last_mut(), e) {
                (Some(Event::Body(acc)), Event::Body(more)) => acc.extend(more),
                (_, e) => out.push(e),
            }
        }
        out
    }

    fn head(status: u16, headers: &[(&str, &str)]) -> Event {
        Event::Head(ResponseHead {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect(),
        })
    }

    #[test]
    fn content_length_body() {
        let input = b"HTTP/1.1 200 OK\r\nContent-Type: text/css\r\nContent-Length: 5\r\n\
Connection: close\r\n\r\nhello";
        let want = vec![
            head(
                200,
                &[("Content-Type", "text/css"), ("Content-Length", "5")],
            ),
            Event::Body(b"hello".to_vec()),
            Event::Done,
        ];
        for got in parse_split("GET", input, false) {
            assert_eq!(got, Ok(want.clone()));
        }
    }

    #[test]
    fn chunked_body() {
        let input = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n";
        let want = vec![
            head(200, &[]),
            Event::Body(b"hello world".to_vec()),
            Event::Done,
        ];
        for got in parse_split("GET", input, false) {
            assert_eq!(got, Ok(want.clone()));
        }
    }

    #[test]
    fn close_delimited_body() {
        let input = b"HTTP/1.0 200 OK\r\n\r\nuntil the end";
        let want = vec![
            head(200, &[]),
            Event::Body(b"until the end".to_vec()),
            Event::Done,
        ];
        for got in parse_split("GET", input, true) {
            assert_eq!(got, Ok(want.clone()));
        }
    }

    #[test]
    fn bodiless_responses() {
        let input = b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n";
        assert_eq!(
            parse_split("GET", input, false)[0],
            Ok(vec![head(304, &[("ETag", "\"x\"")]), Event::Done])
        );
        let input = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n";
        assert_eq!(
            parse_split("HEAD", input, false)[0],
            Ok(vec![head(200, &[("Content-Length", "10")]), Event::Done])
        );
    }

    #[test]
    fn broken_responses_are_errors() {
        let mut p = ResponseParser::new("GET");
        assert!(matches!(
            p.feed(b"SSH-2.0-OpenSSH\r\n\r\n"),
            Err(ParseError::BadStatusLine(_))
        ));
        let mut p = ResponseParser::new("GET");
        assert!(matches!(
            p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"),
            Err(ParseError::BadContentLength(_))
        ));
        let mut p = ResponseParser::new("GET");
        p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
            .unwrap();
        assert_eq!(p.finish(), Err(ParseError::UnexpectedEof));
        let mut p = ResponseParser::new("GET");
        assert_eq!(
            p.feed(&vec![b'a'; MAX_HEAD_LEN + 1]),
            Err(ParseError::HeadTooLarge)
        );
        let mut p = ResponseParser::new("GET");
        assert_eq!(
            p.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
            Err(ParseError::BadChunk)
        );
    }

    #[test]
    fn request_head_drops_hop_by_hop_and_injection() {
        let headers = vec![
            ("Accept".to_owned(), b"text/html".to_vec()),
            ("Connection".to_owned(), b"keep-alive".to_vec()),
            ("Host".to_owned(), b"evil".to_vec()),
            ("X-Bad".to_owned(), b"a\r\nInjected: 1".to_vec()),
            ("Bad Name".to_owned(), b"x".to_vec()),
        ];
        let head = request_head("POST", "/app/site/?a=1", &headers, "/p/app/site", Some(3));
        let text = String::from_utf8(head).unwrap();
        assert_eq!(
            text,
            "POST /app/site/?a=1 HTTP/1.1\r\nHost: localhost\r\n\
X-Forwarded-Prefix: /p/app/site\r\nContent-Length: 3\r\nAccept: text/html\r\n\r\n"
        );
    }
}
