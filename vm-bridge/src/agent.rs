//! A client for the agent inside the guest, which deploys and lists apps.
//!
//! The agent speaks HTTP/1.1 with JSON bodies on guest port [`AGENT_PORT`];
//! each call is one connection.

use crate::engine::{ConnEvent, Engine, EngineError};
use crate::timer::timeout;
use appserver_proto::http1::{request_head, Event, ResponseParser};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The guest port the agent listens on.
pub const AGENT_PORT: u16 = 8081;
/// How long one agent call may take, deploys included.
const CALL_TIMEOUT_MS: u32 = 120_000;

/// What the agent reports about one deployed app.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct AppInfo {
    /// The app's name.
    pub name: String,
    /// Number of files.
    pub files: u64,
    /// Total bytes of its files.
    pub bytes: u64,
    /// Detected kind id: `static`, `express`, `node`, `next`, `flask`,
    /// `fastapi`, `django`, `wsgi`, `asgi`.
    #[serde(default)]
    pub kind: String,
    /// The kind for people (`Flask app`).
    #[serde(default)]
    pub kind_label: String,
    /// What the runtime loads (`app:app`, `server.js`).
    #[serde(default)]
    pub entry: String,
    /// The equivalent start command.
    #[serde(default)]
    pub command: String,
    /// Which file decided the kind.
    #[serde(default)]
    pub reason: String,
    /// The port the app listens on in the guest (apps with a process).
    #[serde(default)]
    pub port: Option<u16>,
    /// `static`, `starting`, `running`, `restarting`, `stopped`, `error`.
    #[serde(default)]
    pub state: String,
    /// How the last run ended, with the end of its output.
    #[serde(default)]
    pub error: Option<String>,
    /// Restarts after crashes since the deploy.
    #[serde(default)]
    pub restarts: u32,
    /// Resident memory of its process, in kB.
    #[serde(default)]
    pub rss_kb: Option<u64>,
    /// User-defined environment variables.
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// A deploy's steps and how long each took in the guest, in ms.
    #[serde(default)]
    pub timings_ms: std::collections::BTreeMap<String, u64>,
}

#[derive(Deserialize)]
struct Logs {
    log: String,
}

#[derive(Deserialize)]
struct AppList {
    apps: Vec<AppInfo>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
}

/// Why an agent call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentError {
    /// The connection could not be made or broke.
    Engine(EngineError),
    /// The agent did not answer within the time limit.
    Timeout,
    /// The agent's answer was not valid HTTP or JSON.
    Malformed(String),
    /// The agent refused the request.
    Refused {
        /// HTTP status.
        status: u16,
        /// The agent's stable error code.
        code: String,
        /// The agent's message.
        message: String,
    },
}

impl AgentError {
    /// A stable machine-readable code.
    pub fn code(&self) -> &str {
        match self {
            AgentError::Engine(_) => "guest_unreachable",
            AgentError::Timeout => "timeout",
            AgentError::Malformed(_) => "bad_gateway",
            AgentError::Refused { code, .. } => code,
        }
    }
}

impl fmt::Display for AgentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AgentError::Engine(e) => write!(f, "cannot reach the guest agent: {e}"),
            AgentError::Timeout => write!(f, "the guest agent did not answer in time"),
            AgentError::Malformed(why) => write!(f, "the guest agent's answer is malformed: {why}"),
            AgentError::Refused { message, .. } => write!(f, "{message}"),
        }
    }
}

impl std::error::Error for AgentError {}

/// Sends one request to the agent and returns the status and body.
async fn call(
    engine: &dyn Engine,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<(u16, Vec<u8>), AgentError> {
    call_with(engine, method, path, &[], body).await
}

/// [`call`] with extra request headers.
async fn call_with(
    engine: &dyn Engine,
    method: &str,
    path: &str,
    headers: &[appserver_proto::frame::Header],
    body: &[u8],
) -> Result<(u16, Vec<u8>), AgentError> {
    let work = async {
        let mut conn = engine
            .connect(AGENT_PORT)
            .await
            .map_err(AgentError::Engine)?;
        let len = if method == "GET" {
            None
        } else {
            Some(body.len() as u64)
        };
        conn.writer
            .write(&request_head(method, path, headers, "", len));
        if !body.is_empty() {
            conn.writer.write(body);
        }
        let mut parser = ResponseParser::new(method);
        let mut status = 0;
        let mut out = Vec::new();
        let malformed =
            |e: appserver_proto::http1::ParseError| AgentError::Malformed(e.to_string());
        while !parser.is_done() {
            let events = match conn.events.next().await {
                Some(ConnEvent::Data(bytes)) => parser.feed(&bytes).map_err(malformed)?,
                _ => parser.finish().map_err(malformed)?,
            };
            for event in events {
                match event {
                    Event::Head(head) => status = head.status,
                    Event::Body(bytes) => out.extend(bytes),
                    Event::Done => {}
                }
            }
        }
        conn.writer.close();
        Ok((status, out))
    };
    timeout(CALL_TIMEOUT_MS, work)
        .await
        .unwrap_or(Err(AgentError::Timeout))
}

fn refused(status: u16, body: &[u8]) -> AgentError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => AgentError::Refused {
            status,
            code: e.error.code,
            message: e.error.message,
        },
        Err(_) => AgentError::Refused {
            status,
            code: "agent_error".into(),
            message: format!("the guest agent answered {status}"),
        },
    }
}

fn json<T: for<'de> Deserialize<'de>>(status: u16, body: &[u8]) -> Result<T, AgentError> {
    if !(200..300).contains(&status) {
        return Err(refused(status, body));
    }
    serde_json::from_slice(body).map_err(|e| AgentError::Malformed(e.to_string()))
}

/// Lists the apps deployed in the guest.
pub async fn list_apps(engine: &dyn Engine) -> Result<Vec<AppInfo>, AgentError> {
    let (status, body) = call(engine, "GET", "/v1/apps", &[]).await?;
    json::<AppList>(status, &body).map(|l| l.apps)
}

/// Deploys a tar archive as app `name`, replacing any previous version.
/// `config` is the app's settings as JSON (`{"env":{..}}`); `None` keeps the
/// previous deploy's.
pub async fn deploy(
    engine: &dyn Engine,
    name: &str,
    tar: &[u8],
    config: Option<&str>,
) -> Result<AppInfo, AgentError> {
    let headers: Vec<appserver_proto::frame::Header> = config
        .map(|c| ("X-Appserver-Config".to_string(), c.as_bytes().to_vec()))
        .into_iter()
        .collect();
    let path = format!("/v1/apps/{name}");
    let (status, body) = call_with(engine, "PUT", &path, &headers, tar).await?;
    json(status, &body)
}

/// What [`control`] does to an app's process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Start it (nothing when it runs).
    Start,
    /// Stop it and keep it stopped.
    Stop,
    /// Stop and start it.
    Restart,
}

impl Action {
    /// The word in the API path.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Restart => "restart",
        }
    }
}

/// Starts, stops or restarts app `name`'s process.
pub async fn control(
    engine: &dyn Engine,
    name: &str,
    action: Action,
) -> Result<AppInfo, AgentError> {
    let path = format!("/v1/apps/{name}/{}", action.as_str());
    let (status, body) = call(engine, "POST", &path, &[]).await?;
    json(status, &body)
}

/// The end of app `name`'s stdout and stderr.
pub async fn logs(engine: &dyn Engine, name: &str) -> Result<String, AgentError> {
    let (status, body) = call(engine, "GET", &format!("/v1/apps/{name}/logs"), &[]).await?;
    json::<Logs>(status, &body).map(|l| l.log)
}

/// The environment, its pool and the VM's memory, as the agent reports them.
pub async fn status(engine: &dyn Engine) -> Result<serde_json::Value, AgentError> {
    let (status, body) = call(engine, "GET", "/v1/status", &[]).await?;
    json(status, &body)
}

/// Sets the guest's wall clock to the page's: a restored state wakes up
/// with the clock of the moment it was saved.
pub async fn set_clock(engine: &dyn Engine, unix_seconds: u64) -> Result<(), AgentError> {
    let body = unix_seconds.to_string();
    let (status, body) = call(engine, "PUT", "/v1/clock", body.as_bytes()).await?;
    json::<serde_json::Value>(status, &body).map(|_| ())
}

/// Removes app `name` from the guest.
pub async fn delete(engine: &dyn Engine, name: &str) -> Result<(), AgentError> {
    let (status, body) = call(engine, "DELETE", &format!("/v1/apps/{name}"), &[]).await?;
    json::<serde_json::Value>(status, &body).map(|_| ())
}
