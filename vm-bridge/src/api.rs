//! The deploy API's requests as the bridge hands them to the page: whole
//! requests in, whole responses out. The page decides what each path does
//! (see `appserver_proto::api`); the bridge only carries the bytes.

use appserver_proto::frame::Header;
use futures::future::LocalBoxFuture;

/// One API request, with its body read whole (the worker caps it at 64 MiB).
#[derive(Debug, Clone)]
pub struct ApiRequest {
    /// HTTP method.
    pub method: String,
    /// Path and query, e.g. `/application-server/api/apps/site?entry=app.py`.
    pub target: String,
    /// Request headers as the browser sent them.
    pub headers: Vec<Header>,
    /// The body.
    pub body: Vec<u8>,
}

impl ApiRequest {
    /// The first header called `name` (any case), as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    /// The query string without its `?`, empty when there is none.
    pub fn query(&self) -> &str {
        self.target.split_once('?').map_or("", |(_, q)| q)
    }
}

/// The answer to an [`ApiRequest`].
#[derive(Debug, Clone)]
pub struct ApiResponse {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: Vec<Header>,
    /// The body.
    pub body: Vec<u8>,
}

impl ApiResponse {
    /// A JSON response.
    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        ApiResponse {
            status,
            headers: vec![
                ("content-type".into(), b"application/json".to_vec()),
                ("cache-control".into(), b"no-store".to_vec()),
            ],
            body: value.to_string().into_bytes(),
        }
    }

    /// A JSON error, `{"error": {"code": .., "message": ..}}`, with the code
    /// also in `X-Appserver-Error`.
    pub fn error(status: u16, code: &str, message: &str) -> Self {
        let mut response = Self::json(status, &appserver_proto::api::error_body(code, message));
        response
            .headers
            .push(("x-appserver-error".into(), code.as_bytes().to_vec()));
        response
    }
}

/// What answers the API: set by the page with [`crate::Bridge::set_api_handler`].
pub type ApiHandler = std::rc::Rc<dyn Fn(ApiRequest) -> LocalBoxFuture<'static, ApiResponse>>;
