//! Minimal HTTP/1.1: parsing a request head and writing a JSON response.
//!
//! Every response closes the connection, so there is no keep-alive, no
//! pipelining and no chunked encoding to deal with.

use std::fmt;
use std::io::{self, BufRead, Write};

/// Largest request head (request line plus headers) accepted, in bytes.
pub const MAX_HEAD_LEN: usize = 16 * 1024;

/// Most header lines accepted.
pub const MAX_HEADERS: usize = 64;

/// A parsed request line and the headers the agent cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// The method, e.g. `GET`.
    pub method: String,
    /// The path part of the request target (query string removed).
    pub path: String,
    /// The Content-Length header, if any.
    pub content_length: Option<u64>,
    /// True when a Transfer-Encoding header was sent (not supported).
    pub chunked: bool,
    /// True when the client sent `Expect: 100-continue`.
    pub expect_continue: bool,
    /// The `X-Appserver-Config` header: an app's settings as JSON.
    pub config: Option<String>,
}

/// Why a request head could not be parsed.
#[derive(Debug)]
pub enum HeadError {
    /// The connection closed before a complete head arrived.
    Closed,
    /// The head is larger than [`MAX_HEAD_LEN`] or has too many headers.
    TooLarge,
    /// The request line or a header is malformed.
    Malformed(String),
    /// Reading from the socket failed.
    Io(io::Error),
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Closed => write!(f, "the connection closed before the request was complete"),
            Self::TooLarge => write!(
                f,
                "the request head exceeds {MAX_HEAD_LEN} bytes or {MAX_HEADERS} header lines"
            ),
            Self::Malformed(why) => write!(f, "malformed request: {why}"),
            Self::Io(e) => write!(f, "reading the request failed: {e}"),
        }
    }
}

/// Reads one line ending in LF (CR optional), counting against `budget`.
fn read_line(r: &mut impl BufRead, budget: &mut usize) -> Result<String, HeadError> {
    let mut line = Vec::new();
    let limit = u64::try_from(*budget).unwrap_or(u64::MAX) + 1;
    let n = io::Read::take(&mut *r, limit)
        .read_until(b'\n', &mut line)
        .map_err(HeadError::Io)?;
    if n == 0 {
        return Err(HeadError::Closed);
    }
    if n > *budget {
        return Err(HeadError::TooLarge);
    }
    *budget -= n;
    if line.pop() != Some(b'\n') {
        return Err(HeadError::Closed);
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| HeadError::Malformed("the head is not UTF-8".into()))
}

/// Reads and parses a request line and headers, leaving `r` at the body.
pub fn read_head(r: &mut impl BufRead) -> Result<RequestHead, HeadError> {
    let mut budget = MAX_HEAD_LEN;
    let request_line = read_line(r, &mut budget)?;
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::Malformed(format!(
            "bad request line {request_line:?}"
        )));
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(HeadError::Malformed(format!("bad method {method:?}")));
    }
    if !target.starts_with('/') {
        return Err(HeadError::Malformed(format!(
            "bad request target {target:?}"
        )));
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(HeadError::Malformed(format!(
            "unsupported version {version:?}"
        )));
    }
    let path = target
        .split(['?', '#'])
        .next()
        .unwrap_or(target)
        .to_string();
    let mut head = RequestHead {
        method: method.to_string(),
        path,
        content_length: None,
        chunked: false,
        expect_continue: false,
        config: None,
    };
    for _ in 0..MAX_HEADERS {
        let line = read_line(r, &mut budget)?;
        if line.is_empty() {
            return Ok(head);
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| HeadError::Malformed(format!("header line without ':' {line:?}")))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n: u64 = value
                .parse()
                .map_err(|_| HeadError::Malformed(format!("bad Content-Length {value:?}")))?;
            if head.content_length.is_some_and(|old| old != n) {
                return Err(HeadError::Malformed(
                    "conflicting Content-Length headers".into(),
                ));
            }
            head.content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = true;
        } else if name.eq_ignore_ascii_case("x-appserver-config") {
            head.config = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("expect") {
            head.expect_continue = value.eq_ignore_ascii_case("100-continue");
        }
    }
    Err(HeadError::TooLarge)
}

/// The reason phrase for the status codes the agent uses.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Content Too Large",
        500 => "Internal Server Error",
        _ => "Unknown",
    }
}

/// A complete response: status, optional `Allow` header and a JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// Value of an `Allow` header (for 405).
    pub allow: Option<&'static str>,
    /// JSON text of the body.
    pub body: String,
}

impl Response {
    /// A 200 response with the given JSON body.
    pub fn ok(body: String) -> Self {
        Self {
            status: 200,
            allow: None,
            body,
        }
    }

    /// Serializes the response, always with `Connection: close`.
    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Cache-Control: no-store\r\nConnection: close\r\n",
            self.status,
            reason(self.status),
            self.body.len()
        );
        if let Some(allow) = self.allow {
            head.push_str("Allow: ");
            head.push_str(allow);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        w.write_all(head.as_bytes())?;
        w.write_all(self.body.as_bytes())?;
        w.flush()
    }
}

/// Escapes `s` as a JSON string literal, quotes included.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RequestHead, HeadError> {
        read_head(&mut text.as_bytes())
    }

    #[test]
    fn parses_put_with_body() {
        let raw = "PUT /v1/apps/demo?x=1 HTTP/1.1\r\nHost: a\r\ncontent-length: 1024\r\n\
                   Expect: 100-continue\r\n\r\nBODY";
        let mut r = raw.as_bytes();
        let head = read_head(&mut r).unwrap();
        assert_eq!(head.method, "PUT");
        assert_eq!(head.path, "/v1/apps/demo");
        assert_eq!(head.content_length, Some(1024));
        assert!(head.expect_continue);
        assert!(!head.chunked);
        assert_eq!(r, b"BODY");
    }

    #[test]
    fn accepts_bare_lf() {
        let head = parse("GET /v1/health HTTP/1.0\nHost: x\n\n").unwrap();
        assert_eq!(
            (head.method.as_str(), head.path.as_str()),
            ("GET", "/v1/health")
        );
        assert_eq!(head.content_length, None);
    }

    #[test]
    fn rejects_bad_heads() {
        assert!(matches!(parse(""), Err(HeadError::Closed)));
        assert!(matches!(
            parse("GET / HTTP/1.1\r\nHost: x\r\n"),
            Err(HeadError::Closed)
        ));
        assert!(matches!(
            parse("GET /\r\n\r\n"),
            Err(HeadError::Malformed(_))
        ));
        assert!(matches!(
            parse("get / HTTP/1.1\r\n\r\n"),
            Err(HeadError::Malformed(_))
        ));
        assert!(matches!(
            parse("GET x HTTP/1.1\r\n\r\n"),
            Err(HeadError::Malformed(_))
        ));
        assert!(matches!(
            parse("GET / HTTP/2\r\n\r\n"),
            Err(HeadError::Malformed(_))
        ));
        assert!(matches!(
            parse("GET / HTTP/1.1\r\nNoColon\r\n\r\n"),
            Err(HeadError::Malformed(_))
        ));
        let cl = "PUT / HTTP/1.1\r\nContent-Length: -1\r\n\r\n";
        assert!(matches!(parse(cl), Err(HeadError::Malformed(_))));
        let cl2 = "PUT / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
        assert!(matches!(parse(cl2), Err(HeadError::Malformed(_))));
        let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD_LEN));
        assert!(matches!(parse(&huge), Err(HeadError::TooLarge)));
        let many = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "X: y\r\n".repeat(MAX_HEADERS + 1)
        );
        assert!(matches!(parse(&many), Err(HeadError::TooLarge)));
    }

    #[test]
    fn chunked_is_flagged() {
        let head = parse("PUT /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
        assert!(head.chunked);
    }

    #[test]
    fn writes_response() {
        let mut out = Vec::new();
        Response::ok("{\"ok\":true}".into())
            .write_to(&mut out)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(text.contains("Content-Length: 11\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.ends_with("\r\n\r\n{\"ok\":true}"));
    }

    #[test]
    fn escapes_json() {
        assert_eq!(json_string("a\"b\\c\n\u{1}é"), "\"a\\\"b\\\\c\\n\\u0001é\"");
    }
}
