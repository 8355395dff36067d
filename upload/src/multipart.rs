//! Parses `multipart/form-data` bodies (RFC 7578): the fields and files a
//! form or a `FormData` sends.
//!
//! A body is a preamble, then parts each opened by `--boundary` and a line
//! break, with header lines, an empty line and the data; the data ends at
//! the line break before the next `--boundary`, and `--boundary--` closes
//! the body.

use std::fmt;

/// One part of the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The form field's name.
    pub name: String,
    /// The file name, for a file part; a folder upload sends the path
    /// relative to the picked folder here.
    pub filename: Option<String>,
    /// The part's bytes.
    pub data: Vec<u8>,
}

/// Why a body could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MultipartError {
    /// The content type has no `boundary` parameter.
    NoBoundary,
    /// The body does not hold the boundary, or stops inside a part.
    Truncated,
    /// A part has no `Content-Disposition: form-data; name=...` header.
    NoName,
    /// A part's headers are not UTF-8.
    BadHeader,
}

impl MultipartError {
    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        "bad_multipart"
    }
}

impl fmt::Display for MultipartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MultipartError::NoBoundary => write!(
                f,
                "the multipart/form-data content type names no boundary: let fetch set it \
                 from a FormData body"
            ),
            MultipartError::Truncated => {
                write!(f, "the multipart body is cut short or lacks its boundary")
            }
            MultipartError::NoName => write!(
                f,
                "a part of the multipart body has no Content-Disposition name"
            ),
            MultipartError::BadHeader => write!(f, "a multipart part header is not UTF-8"),
        }
    }
}

impl std::error::Error for MultipartError {}

/// The boundary of a `multipart/form-data; boundary=...` content type.
pub fn boundary(content_type: &str) -> Result<String, MultipartError> {
    content_type
        .split(';')
        .skip(1)
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v.trim().trim_matches('"').to_owned())
        .filter(|b| !b.is_empty())
        .ok_or(MultipartError::NoBoundary)
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

/// Reads every part of `body`.
pub fn parse(body: &[u8], boundary: &str) -> Result<Vec<Part>, MultipartError> {
    let delimiter = format!("--{boundary}");
    let next_part = format!("\r\n--{boundary}");
    let mut at = find(body, delimiter.as_bytes(), 0).ok_or(MultipartError::Truncated)?;
    at += delimiter.len();
    let mut parts = Vec::new();
    loop {
        // After a delimiter: `--` ends the body, a line break opens a part.
        match body.get(at..at + 2) {
            Some(b"--") => return Ok(parts),
            Some(b"\r\n") => at += 2,
            _ => return Err(MultipartError::Truncated),
        }
        let headers_end = find(body, b"\r\n\r\n", at).ok_or(MultipartError::Truncated)?;
        let headers =
            std::str::from_utf8(&body[at..headers_end]).map_err(|_| MultipartError::BadHeader)?;
        let data_at = headers_end + 4;
        let data_end =
            find(body, next_part.as_bytes(), data_at).ok_or(MultipartError::Truncated)?;
        let (name, filename) = disposition(headers).ok_or(MultipartError::NoName)?;
        parts.push(Part {
            name,
            filename,
            data: body[data_at..data_end].to_vec(),
        });
        at = data_end + next_part.len();
    }
}

/// The `name` and `filename` of a part's `Content-Disposition: form-data` header.
fn disposition(headers: &str) -> Option<(String, Option<String>)> {
    let value = headers.split("\r\n").find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim()
            .eq_ignore_ascii_case("content-disposition")
            .then_some(value)
    })?;
    let mut name = None;
    let mut filename = None;
    for param in params(value) {
        match param {
            (k, v) if k.eq_ignore_ascii_case("name") => name = Some(v),
            (k, v) if k.eq_ignore_ascii_case("filename") => filename = Some(v),
            _ => {}
        }
    }
    Some((name?, filename))
}

/// The `key=value` parameters after the disposition type, with quoted values
/// unquoted. Browsers escape `"`, CR and LF in quoted file names as `%22`,
/// `%0D` and `%0A`; those are turned back.
fn params(value: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = value.split_once(';').map_or("", |(_, r)| r);
    loop {
        rest = rest.trim_start_matches([' ', '\t', ';']);
        let Some((key, after)) = rest.split_once('=') else {
            return out;
        };
        let key = key.trim().to_owned();
        let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            let value = value
                .replace("%22", "\"")
                .replace("%0D", "\r")
                .replace("%0A", "\n");
            (value, &quoted[end..])
        } else {
            let end = after.find(';').unwrap_or(after.len());
            (after[..end].trim().to_owned(), &after[end..])
        };
        out.push((key, value));
        rest = after;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body as Chromium writes one for a FormData.
    fn body(parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, filename, data) in parts {
            out.extend_from_slice(b"------WebKitFormBoundaryAbC\r\n");
            let disposition = match filename {
                Some(f) => format!(
                    "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\n\
                     Content-Type: application/octet-stream\r\n"
                ),
                None => format!("Content-Disposition: form-data; name=\"{name}\"\r\n"),
            };
            out.extend_from_slice(disposition.as_bytes());
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"------WebKitFormBoundaryAbC--\r\n");
        out
    }

    #[test]
    fn boundaries_are_found() {
        let cases = [
            ("multipart/form-data; boundary=abc", Ok("abc".to_owned())),
            (
                "multipart/form-data; charset=x; Boundary=\"a b\"",
                Ok("a b".to_owned()),
            ),
            ("multipart/form-data", Err(MultipartError::NoBoundary)),
            (
                "multipart/form-data; boundary=",
                Err(MultipartError::NoBoundary),
            ),
        ];
        for (ct, want) in cases {
            assert_eq!(boundary(ct), want, "{ct}");
        }
    }

    #[test]
    fn fields_and_files_are_read() {
        let png = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0, 1];
        let b = body(&[
            ("env", None, b"A=1\nB=2"),
            ("files", Some("css/main.css"), b"body{}\r\n"),
            ("files", Some("img/logo.png"), &png),
            ("files", Some("empty.txt"), b""),
            ("entry", None, b""),
        ]);
        let parts = parse(&b, "----WebKitFormBoundaryAbC").unwrap();
        let got: Vec<(&str, Option<&str>, &[u8])> = parts
            .iter()
            .map(|p| (p.name.as_str(), p.filename.as_deref(), p.data.as_slice()))
            .collect();
        let want: Vec<(&str, Option<&str>, &[u8])> = vec![
            ("env", None, b"A=1\nB=2"),
            ("files", Some("css/main.css"), b"body{}\r\n"),
            ("files", Some("img/logo.png"), &png),
            ("files", Some("empty.txt"), b""),
            ("entry", None, b""),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn escaped_file_names_are_restored() {
        let value = r#"form-data; name="f"; filename="a%22b\"c;d.txt""#;
        let got = params(value);
        assert_eq!(got[1], ("filename".to_owned(), "a\"b\"c;d.txt".to_owned()));
    }

    #[test]
    fn broken_bodies_are_refused() {
        let whole = body(&[("files", Some("a.txt"), b"hello")]);
        let cases: Vec<(&[u8], MultipartError)> = vec![
            (b"no boundary here", MultipartError::Truncated),
            (&whole[..whole.len() - 40], MultipartError::Truncated),
            (
                b"------WebKitFormBoundaryAbC\r\nContent-Type: text/plain\r\n\r\nx\r\n\
                  ------WebKitFormBoundaryAbC--",
                MultipartError::NoName,
            ),
        ];
        for (b, want) in cases {
            assert_eq!(parse(b, "----WebKitFormBoundaryAbC"), Err(want));
        }
    }
}
