//! The deploy API under `/application-server/api/`: which operation a method
//! and path name, and the errors the API answers with.
//!
//! The service worker only checks that a path is under [`API_PREFIX`]; the
//! page that runs the VM parses the rest with [`ApiRoutes`] and answers.

use crate::names::{validate_app_name, NameError};
use crate::route::percent_decode;
use std::fmt;

/// Where the API lives; every path under it is the API's.
pub const API_PREFIX: &str = "/application-server/api";

/// The app operations of `POST /apps/<name>/<action>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppAction {
    /// Start a stopped app's process.
    Start,
    /// Stop its process.
    Stop,
    /// Stop and start it.
    Restart,
}

impl AppAction {
    fn from_segment(segment: &str) -> Option<Self> {
        match segment {
            "start" => Some(AppAction::Start),
            "stop" => Some(AppAction::Stop),
            "restart" => Some(AppAction::Restart),
            _ => None,
        }
    }
}

/// One operation of the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiCall {
    /// `GET /environments`: the environments and which one runs.
    ListEnvironments,
    /// `POST /environments/<id>/load`: load (or switch to) an environment.
    LoadEnvironment(String),
    /// `GET /status`: the running environment, its state and load progress.
    Status,
    /// `GET /apps`: every deployed app.
    ListApps,
    /// `GET /apps/<name>`: one app.
    AppStatus(String),
    /// `PUT` or `POST /apps/<name>`: deploy an app from the request body.
    Deploy(String),
    /// `DELETE /apps/<name>`.
    Delete(String),
    /// `POST /apps/<name>/start|stop|restart`.
    Control(String, AppAction),
    /// `GET /apps/<name>/logs`: the end of its output.
    Logs(String),
}

/// Why a request names no operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// No operation lives at this path.
    NotFound(String),
    /// The path exists but not for this method; `allow` lists the methods it takes.
    MethodNotAllowed {
        /// The method used.
        method: String,
        /// The methods the path accepts, e.g. `GET, DELETE`.
        allow: &'static str,
    },
    /// The app name in the path is not a valid one.
    BadName(NameError),
}

impl RouteError {
    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            RouteError::NotFound(_) => "unknown_endpoint",
            RouteError::MethodNotAllowed { .. } => "method_not_allowed",
            RouteError::BadName(e) => e.code(),
        }
    }

    /// The HTTP status the API answers with.
    pub fn status(&self) -> u16 {
        match self {
            RouteError::NotFound(_) => 404,
            RouteError::MethodNotAllowed { .. } => 405,
            RouteError::BadName(_) => 400,
        }
    }
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteError::NotFound(path) => write!(
                f,
                "no API endpoint at {path}: see the README's Deploy API section for the list"
            ),
            RouteError::MethodNotAllowed { method, allow } => {
                write!(f, "{method} is not allowed here: use {allow}")
            }
            RouteError::BadName(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for RouteError {}

/// The shapes of the API's paths, relative to [`API_PREFIX`].
#[derive(Debug, Clone, Copy)]
enum Shape {
    Environments,
    Load,
    Status,
    Apps,
    App,
    AppAction,
    AppLogs,
}

/// The API's route table.
pub struct ApiRoutes {
    router: matchit::Router<Shape>,
}

impl Default for ApiRoutes {
    fn default() -> Self {
        Self::new()
    }
}

impl ApiRoutes {
    /// Builds the table.
    pub fn new() -> Self {
        let mut router = matchit::Router::new();
        let routes = [
            ("/environments", Shape::Environments),
            ("/environments/{id}/load", Shape::Load),
            ("/status", Shape::Status),
            ("/apps", Shape::Apps),
            ("/apps/{name}", Shape::App),
            ("/apps/{name}/logs", Shape::AppLogs),
            ("/apps/{name}/{action}", Shape::AppAction),
        ];
        for (pattern, shape) in routes {
            // The patterns are fixed above; a conflict is a bug caught by the tests.
            router
                .insert(pattern, shape)
                .expect("API route patterns conflict");
        }
        ApiRoutes { router }
    }

    /// The operation that `method` on `path` (with or without [`API_PREFIX`],
    /// a query is ignored) asks for.
    pub fn route(&self, method: &str, path: &str) -> Result<ApiCall, RouteError> {
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        let rel = path.strip_prefix(API_PREFIX).unwrap_or(path);
        // One trailing slash is forgiven: `/apps/` is `/apps`.
        let rel = match rel.strip_suffix('/') {
            Some(r) if !r.is_empty() => r,
            _ => rel,
        };
        let not_found = || RouteError::NotFound(path.to_owned());
        let matched = self.router.at(rel).map_err(|_| not_found())?;
        let param = |key: &str| matched.params.get(key).unwrap_or_default().to_owned();
        let app = || {
            let name = param("name");
            validate_app_name(&name).map_err(RouteError::BadName)?;
            Ok::<_, RouteError>(name)
        };
        let wrong = |allow: &'static str| RouteError::MethodNotAllowed {
            method: method.to_owned(),
            allow,
        };
        match (*matched.value, method) {
            (Shape::Environments, "GET") => Ok(ApiCall::ListEnvironments),
            (Shape::Environments, _) => Err(wrong("GET")),
            (Shape::Load, "POST") => Ok(ApiCall::LoadEnvironment(param("id"))),
            (Shape::Load, _) => Err(wrong("POST")),
            (Shape::Status, "GET") => Ok(ApiCall::Status),
            (Shape::Status, _) => Err(wrong("GET")),
            (Shape::Apps, "GET") => Ok(ApiCall::ListApps),
            (Shape::Apps, _) => Err(wrong("GET")),
            (Shape::App, "GET") => Ok(ApiCall::AppStatus(app()?)),
            (Shape::App, "PUT" | "POST") => Ok(ApiCall::Deploy(app()?)),
            (Shape::App, "DELETE") => Ok(ApiCall::Delete(app()?)),
            (Shape::App, _) => Err(wrong("GET, PUT, POST, DELETE")),
            (Shape::AppLogs, "GET") => Ok(ApiCall::Logs(app()?)),
            (Shape::AppLogs, _) => Err(wrong("GET")),
            (Shape::AppAction, m) => {
                let action = AppAction::from_segment(&param("action")).ok_or_else(not_found)?;
                if m != "POST" {
                    return Err(wrong("POST"));
                }
                Ok(ApiCall::Control(app()?, action))
            }
        }
    }
}

/// The body of every API error: `{"error": {"code": .., "message": ..}}`.
pub fn error_body(code: &str, message: &str) -> serde_json::Value {
    serde_json::json!({ "error": { "code": code, "message": message } })
}

/// The value of `key` in a query string (`a=1&b=2`), percent-decoded with
/// `+` as a space; every value when the key repeats.
pub fn query_values(query: &str, key: &str) -> Vec<String> {
    query
        .split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode_component(k)? == key).then(|| decode_component(v))?
        })
        .collect()
}

/// Percent-decodes a query component, `+` being a space; `None` when it is
/// not UTF-8 or an escape is broken.
fn decode_component(s: &str) -> Option<String> {
    percent_decode(&s.replace('+', " "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_name_their_operations() {
        let t = ApiRoutes::new();
        let app = |n: &str| n.to_owned();
        let cases: &[(&str, &str, ApiCall)] = &[
            (
                "GET",
                "/application-server/api/environments",
                ApiCall::ListEnvironments,
            ),
            (
                "GET",
                "/application-server/api/environments/",
                ApiCall::ListEnvironments,
            ),
            (
                "POST",
                "/application-server/api/environments/python/load",
                ApiCall::LoadEnvironment("python".into()),
            ),
            ("GET", "/application-server/api/status", ApiCall::Status),
            ("GET", "/application-server/api/apps?x=1", ApiCall::ListApps),
            (
                "GET",
                "/application-server/api/apps/site",
                ApiCall::AppStatus(app("site")),
            ),
            (
                "PUT",
                "/application-server/api/apps/site",
                ApiCall::Deploy(app("site")),
            ),
            (
                "POST",
                "/application-server/api/apps/site?entry=a",
                ApiCall::Deploy(app("site")),
            ),
            (
                "DELETE",
                "/application-server/api/apps/site",
                ApiCall::Delete(app("site")),
            ),
            (
                "POST",
                "/application-server/api/apps/site/stop",
                ApiCall::Control(app("site"), AppAction::Stop),
            ),
            (
                "POST",
                "/application-server/api/apps/site/restart/",
                ApiCall::Control(app("site"), AppAction::Restart),
            ),
            (
                "GET",
                "/application-server/api/apps/site/logs",
                ApiCall::Logs(app("site")),
            ),
            // Relative to the prefix works too.
            (
                "POST",
                "/apps/a1/start",
                ApiCall::Control(app("a1"), AppAction::Start),
            ),
        ];
        for (method, path, want) in cases {
            assert_eq!(t.route(method, path).as_ref(), Ok(want), "{method} {path}");
        }
    }

    #[test]
    fn bad_requests_have_codes_and_statuses() {
        let t = ApiRoutes::new();
        let cases = [
            ("GET", "/application-server/api/", "unknown_endpoint", 404),
            (
                "GET",
                "/application-server/api/nope",
                "unknown_endpoint",
                404,
            ),
            (
                "POST",
                "/application-server/api/apps/site/explode",
                "unknown_endpoint",
                404,
            ),
            (
                "GET",
                "/application-server/api/apps/a/b/c",
                "unknown_endpoint",
                404,
            ),
            (
                "POST",
                "/application-server/api/apps",
                "method_not_allowed",
                405,
            ),
            (
                "GET",
                "/application-server/api/apps/site/stop",
                "method_not_allowed",
                405,
            ),
            (
                "GET",
                "/application-server/api/environments/x/load",
                "method_not_allowed",
                405,
            ),
            (
                "PATCH",
                "/application-server/api/apps/site",
                "method_not_allowed",
                405,
            ),
            (
                "PUT",
                "/application-server/api/apps/Bad_Name",
                "bad_name",
                400,
            ),
            (
                "PUT",
                "/application-server/api/apps/api",
                "reserved_name",
                400,
            ),
            (
                "GET",
                "/application-server/api/apps/-x/logs",
                "bad_name",
                400,
            ),
        ];
        for (method, path, code, status) in cases {
            let e = t.route(method, path).expect_err(path);
            assert_eq!(
                (e.code(), e.status()),
                (code, status),
                "{method} {path}: {e}"
            );
            assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn method_errors_say_what_is_allowed() {
        let e = ApiRoutes::new().route("POST", "/apps").unwrap_err();
        assert_eq!(e.to_string(), "POST is not allowed here: use GET");
    }

    #[test]
    fn error_bodies_have_one_shape() {
        assert_eq!(
            error_body("unknown_app", "no such app").to_string(),
            r#"{"error":{"code":"unknown_app","message":"no such app"}}"#
        );
    }

    #[test]
    fn query_values_decode() {
        let q = "env=A%3D1&env=B%3Dtwo+words&entry=app%3Aapp&bad=%zz&empty";
        assert_eq!(query_values(q, "env"), ["A=1", "B=two words"]);
        assert_eq!(query_values(q, "entry"), ["app:app"]);
        assert_eq!(query_values(q, "empty"), [""]);
        assert!(query_values(q, "bad").is_empty());
        assert!(query_values(q, "port").is_empty());
    }
}
