//! The responses the worker makes up itself: error pages and redirects.
//!
//! Every failure an app request can meet is a [`Failure`]; its HTTP status
//! and page are decided here and nowhere else.

use appserver_proto::frame::ResetCode;
use web_sys::{Headers, Response, ResponseInit};

/// Why the worker could not hand back the app's own response.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    /// The status and stable code.
    pub(crate) code: ResetCode,
    /// What happened and what to do, for a person.
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(code: ResetCode, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn not_running() -> Self {
        Failure::new(
            ResetCode::NotRunning,
            "No environment is running. Open /application-server/ in this browser and load \
an environment, then reload this page.",
        )
    }

    /// No page runs the bridge, so the deploy API has nobody to answer it.
    pub(crate) fn no_page() -> Self {
        Failure::new(
            ResetCode::NotRunning,
            "No page runs the Application Server: open /application-server/ in a tab of this \
browser (or import /application-server/client.js, which opens it in a hidden frame), then try \
again.",
        )
    }

    /// The deploy API's JSON error for this failure.
    pub(crate) fn into_json_response(self) -> Response {
        let body = appserver_proto::api::error_body(self.code.code(), &self.message);
        respond(self.code, "application/json", &body.to_string())
    }

    /// The error page for this failure.
    pub(crate) fn into_response(self) -> Response {
        let status = self.code.status();
        let title = match self.code {
            ResetCode::UnknownApp => "App not found",
            ResetCode::NotRunning => "Application Server not running",
            ResetCode::Timeout => "The app did not answer in time",
            ResetCode::TooLarge => "Request too large",
            ResetCode::GuestUnreachable | ResetCode::BadGateway => "The app could not be reached",
            ResetCode::Cancelled | ResetCode::Internal => "Application Server error",
        };
        let body = format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>{status} {title}</title></head>\n<body><h1>{title}</h1>\n<p>{}</p>\n\
<p><code>{status} {}</code></p>\n<p><a href=\"/application-server/\">Application Server</a>\
</p></body></html>\n",
            escape(&self.message),
            self.code.code()
        );
        respond(self.code, "text/html; charset=utf-8", &body)
    }
}

/// A failure's response: its status, `body` of `content_type`, never cached,
/// with the stable code in `X-Appserver-Error`.
fn respond(code: ResetCode, content_type: &str, body: &str) -> Response {
    let headers = Headers::new().expect("Headers constructor");
    let _ = headers.set("content-type", content_type);
    let _ = headers.set("cache-control", "no-store");
    let _ = headers.set("x-appserver-error", code.code());
    let init = ResponseInit::new();
    init.set_status(code.status());
    init.set_headers(&headers);
    Response::new_with_opt_str_and_init(Some(body), &init)
        .expect("a status from ResetCode::status is always valid")
}

/// A permanent redirect to `location`.
pub(crate) fn redirect(location: &str) -> Response {
    let headers = Headers::new().expect("Headers constructor");
    let _ = headers.set("location", location);
    let init = ResponseInit::new();
    init.set_status(301);
    init.set_headers(&headers);
    Response::new_with_opt_str_and_init(None, &init).expect("301 is a valid status")
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
