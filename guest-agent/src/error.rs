//! The agent's API errors: HTTP status, stable machine-readable code and message.
//!
//! Refused names and archives keep the codes `appserver_proto` gives them
//! (`NameError::code`, `TarError::code`), so the page and the agent agree.

use std::fmt;

use appserver_proto::names::NameError;
use appserver_proto::tar::TarError;

use crate::http::{json_string, Response};

/// Everything that can go wrong while answering one request.
#[derive(Debug)]
pub enum ApiError {
    /// The request head could not be parsed.
    BadRequest(String),
    /// The app name in the URL is not acceptable.
    BadName {
        /// The name as given.
        name: String,
        /// Which rule it broke.
        why: NameError,
    },
    /// The body is not a readable tar archive, or one of its entries was
    /// refused (a path leaving the app folder, a link, a device...).
    Archive(TarError),
    /// Two archive entries conflict (a file and a folder of the same name).
    BadArchive(String),
    /// The archive holds no regular files.
    Empty,
    /// The body is larger than the limit.
    TooLarge {
        /// The Content-Length sent.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A body was needed but no Content-Length was sent.
    LengthRequired,
    /// No such route or app.
    NotFound(String),
    /// The route exists but not for this method.
    MethodNotAllowed {
        /// The method used.
        method: String,
        /// The methods the route supports.
        allow: &'static str,
    },
    /// The upload is an app this environment cannot run.
    WrongEnvironment {
        /// What the upload is, e.g. `Flask app (app.py creates Flask)`.
        what: String,
        /// This VM's environment.
        here: &'static str,
        /// The environment that runs it.
        needed: &'static str,
    },
    /// The upload looks like an app but cannot be started as it is.
    Undetected(String),
    /// The request body is not what the endpoint takes.
    BadBody(String),
    /// The operation conflicts with the app's state (e.g. a static site has
    /// no process to start).
    Conflict(String),
    /// The environment's runtime pool did not answer or refused.
    Runtime(String),
    /// A failure on the agent's side (file system, nginx).
    Internal(String),
}

impl ApiError {
    /// The HTTP status code.
    pub fn status(&self) -> u16 {
        match self {
            Self::BadRequest(_)
            | Self::BadName { .. }
            | Self::Archive(_)
            | Self::BadArchive(_)
            | Self::Empty
            | Self::BadBody(_) => 400,
            Self::Conflict(_) => 409,
            Self::WrongEnvironment { .. } | Self::Undetected(_) => 422,
            Self::Runtime(_) => 503,
            Self::NotFound(_) => 404,
            Self::MethodNotAllowed { .. } => 405,
            Self::LengthRequired => 411,
            Self::TooLarge { .. } => 413,
            Self::Internal(_) => 500,
        }
    }

    /// The stable code clients switch on.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::BadName { why, .. } => why.code(),
            Self::Archive(e) => e.code(),
            Self::BadArchive(_) => "bad_archive",
            Self::Empty => "empty",
            Self::TooLarge { .. } => "too_large",
            Self::LengthRequired => "length_required",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::WrongEnvironment { .. } => "wrong_environment",
            Self::Undetected(_) => "undetected",
            Self::BadBody(_) => "bad_body",
            Self::Conflict(_) => "conflict",
            Self::Runtime(_) => "runtime",
            Self::Internal(_) => "internal",
        }
    }

    /// The JSON error response `{"error":{"code":..,"message":..}}`.
    pub fn to_response(&self) -> Response {
        let body = format!(
            "{{\"error\":{{\"code\":{},\"message\":{}}}}}",
            json_string(self.code()),
            json_string(&self.to_string())
        );
        let allow = match self {
            Self::MethodNotAllowed { allow, .. } => Some(*allow),
            _ => None,
        };
        Response {
            status: self.status(),
            allow,
            body,
        }
    }

    /// Maps an archive reading error; I/O failures (the socket, the disk)
    /// are the agent's, not the archive's.
    pub fn from_tar(e: TarError) -> Self {
        match e {
            TarError::Io(io) => Self::Internal(format!("extracting the archive failed: {io}")),
            other => Self::Archive(other),
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadRequest(why) => write!(f, "{why}"),
            Self::BadName { name, why } => write!(f, "app name {name:?} refused: {why}"),
            Self::Archive(e @ TarError::Path(why)) if why.escapes() => write!(
                f,
                "archive entry refused: {e}; archive the app folder's contents with relative \
                 paths, e.g. `tar -cf app.tar -C dir .`"
            ),
            Self::Archive(e @ (TarError::Path(_) | TarError::Unsupported { .. })) => {
                write!(f, "archive entry refused: {e}")
            }
            Self::Archive(e) => write!(
                f,
                "the archive could not be used: {e}; send an uncompressed tar (ustar or PAX), \
                 e.g. `tar -cf app.tar -C dir .`"
            ),
            Self::BadArchive(why) => write!(f, "the archive could not be used: {why}"),
            Self::Empty => write!(
                f,
                "the archive contains no regular files; add at least one file (e.g. index.html)"
            ),
            Self::TooLarge { len, max } => write!(
                f,
                "the upload is {len} bytes, at most {max} bytes are accepted; remove large files"
            ),
            Self::LengthRequired => write!(
                f,
                "the upload needs a Content-Length header (chunked bodies are not supported)"
            ),
            Self::NotFound(what) => write!(f, "{what}"),
            Self::MethodNotAllowed { method, allow } => {
                write!(f, "method {method} is not allowed here; use {allow}")
            }
            Self::WrongEnvironment { what, here, needed } => write!(
                f,
                "this is a {what}, which the `{here}` environment cannot run: load the \
                 `{needed}` environment and deploy it there"
            ),
            Self::Undetected(why) => write!(f, "the app cannot be started: {why}"),
            Self::BadBody(why) => write!(f, "{why}"),
            Self::Conflict(why) => write!(f, "{why}"),
            Self::Runtime(why) => write!(f, "the environment's runtime failed: {why}"),
            Self::Internal(why) => write!(f, "internal error: {why}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_json() {
        let e = ApiError::BadName {
            name: "Bad\"".into(),
            why: NameError::BadStart('B'),
        };
        let r = e.to_response();
        assert_eq!(r.status, 400);
        assert!(r
            .body
            .starts_with("{\"error\":{\"code\":\"bad_name\",\"message\":\"app name"));
        assert!(r.body.contains("\\\"Bad\\\\\\\"\\\""), "{}", r.body);
        let e = ApiError::MethodNotAllowed {
            method: "POST".into(),
            allow: "GET",
        };
        assert_eq!(e.to_response().allow, Some("GET"));
        assert_eq!(ApiError::TooLarge { len: 2, max: 1 }.status(), 413);
    }
}
