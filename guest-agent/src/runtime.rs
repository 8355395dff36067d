//! Apps that run a process (Node.js, Python): what was detected and chosen for
//! each one, starting and stopping it through the warm pool, and a supervisor
//! that restarts a crashed app with backoff until it gives up.
//!
//! Each app's settings live in `<apps_dir>/.meta/<name>.json` (the folder name
//! is not a valid app name, so listings skip it). What the supervisor knows
//! about crashes lives in memory: it is part of the saved VM state anyway.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use appserver_proto::detect::{self, AppKind, Detected, Runtime};
use serde_json::{json, Map, Value};

use crate::apps::Config;
use crate::error::ApiError;
use crate::pool::{Pool, StartRequest};

/// First port handed to apps; each app keeps its port across redeploys.
pub const FIRST_PORT: u16 = 9001;

/// How long a deploy or a start waits for the app to listen.
pub const START_TIMEOUT: Duration = Duration::from_secs(120);

/// Crashes in a row after which the supervisor stops restarting an app.
pub const MAX_FAILURES: u32 = 5;

/// An app that stayed up this long before crashing starts a new series.
const STABLE_AFTER: Duration = Duration::from_secs(30);

/// Longest wait between two restarts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How much of the end of an app's log an error message or `logs` returns.
pub const LOG_TAIL_BYTES: u64 = 64 * 1024;

/// What a user may set for an app at deploy time (the `X-Appserver-Config`
/// header, a JSON object). Unset fields keep the detected value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// Extra environment variables.
    pub env: BTreeMap<String, String>,
    /// Overrides the detected entry point.
    pub entry: Option<String>,
    /// Overrides the assigned port.
    pub port: Option<u16>,
}

impl Settings {
    /// Parses and checks the header's JSON.
    pub fn parse(text: &str) -> Result<Settings, ApiError> {
        let bad = |why: String| ApiError::BadBody(format!("X-Appserver-Config: {why}"));
        let value: Value = serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
        let obj = value
            .as_object()
            .ok_or_else(|| bad("must be a JSON object".into()))?;
        let mut settings = Settings::default();
        for (key, v) in obj {
            match key.as_str() {
                "env" => {
                    let vars = v
                        .as_object()
                        .ok_or_else(|| bad("\"env\" must be an object of strings".into()))?;
                    if vars.len() > 64 {
                        return Err(bad("at most 64 environment variables".into()));
                    }
                    for (name, val) in vars {
                        check_env_name(name).map_err(bad)?;
                        let val = match val {
                            Value::String(s) => s.clone(),
                            Value::Number(n) => n.to_string(),
                            Value::Bool(b) => b.to_string(),
                            _ => return Err(bad(format!("env {name} must be a string"))),
                        };
                        if val.len() > 4096 || val.contains('\0') {
                            return Err(bad(format!("env {name} is too long or holds NUL")));
                        }
                        settings.env.insert(name.clone(), val);
                    }
                }
                "entry" => {
                    let entry = v.as_str().unwrap_or_default();
                    let ok = !entry.is_empty()
                        && entry.len() <= 200
                        && !entry.starts_with('/')
                        && !entry.split('/').any(|p| p == "..")
                        && entry
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "._-/:".contains(c));
                    if !ok {
                        return Err(bad(format!(
                            "entry {v} must be a relative script path or module:attribute"
                        )));
                    }
                    settings.entry = Some(entry.to_string());
                }
                "port" => {
                    let port = v
                        .as_u64()
                        .and_then(|p| u16::try_from(p).ok())
                        .filter(|p| (1024..=65535).contains(p) && *p != 8081)
                        .ok_or_else(|| {
                            bad(format!(
                                "port {v} must be 1024-65535 (not 8081, the agent's)"
                            ))
                        })?;
                    settings.port = Some(port);
                }
                other => return Err(bad(format!("unknown field {other:?} (env, entry, port)"))),
            }
        }
        Ok(settings)
    }
}

/// Environment variable names: `[A-Za-z_][A-Za-z0-9_]*`, and not ones the
/// runtime sets itself.
fn check_env_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') || name.len() > 128 {
        return Err(format!(
            "environment variable name {name:?} must match [A-Za-z_][A-Za-z0-9_]*"
        ));
    }
    if ["PORT", "SCRIPT_NAME"].contains(&name) {
        return Err(format!("{name} is set by the Application Server"));
    }
    Ok(())
}

/// Everything the agent keeps about one deployed app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// What the files are.
    pub kind: AppKind,
    /// Entry point (detected or set).
    pub entry: String,
    /// Start command, for people.
    pub command: String,
    /// Why the kind was chosen.
    pub reason: String,
    /// Port the app listens on (0 for static sites).
    pub port: u16,
    /// User-defined environment variables.
    pub env: BTreeMap<String, String>,
    /// False after a `stop`: the supervisor leaves it alone.
    pub wanted: bool,
}

impl Meta {
    /// From detection, settings and the port to use.
    pub fn new(found: Detected, settings: &Settings, port: u16) -> Meta {
        Meta {
            kind: found.kind,
            entry: settings.entry.clone().unwrap_or(found.entry),
            command: found.command,
            reason: found.reason,
            port,
            env: settings.env.clone(),
            wanted: true,
        }
    }

    /// True when the app runs a process.
    pub fn runs(&self) -> bool {
        self.kind.runtime() != Runtime::Static
    }

    /// The JSON fields describing it.
    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("kind".into(), self.kind.id().into());
        m.insert("kind_label".into(), self.kind.label().into());
        m.insert("entry".into(), self.entry.clone().into());
        m.insert("command".into(), self.command.clone().into());
        m.insert("reason".into(), self.reason.clone().into());
        m.insert(
            "port".into(),
            if self.runs() {
                json!(self.port)
            } else {
                Value::Null
            },
        );
        m.insert("env".into(), json!(self.env));
        m.insert("wanted".into(), self.wanted.into());
        m
    }

    fn from_json(v: &Value) -> Option<Meta> {
        Some(Meta {
            kind: AppKind::from_id(v["kind"].as_str()?)?,
            entry: v["entry"].as_str()?.to_string(),
            command: v["command"].as_str().unwrap_or_default().to_string(),
            reason: v["reason"].as_str().unwrap_or_default().to_string(),
            port: v["port"]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or(0),
            env: v["env"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                        .collect()
                })
                .unwrap_or_default(),
            wanted: v["wanted"].as_bool().unwrap_or(true),
        })
    }
}

/// `<apps_dir>/.meta`.
fn meta_dir(cfg: &Config) -> PathBuf {
    cfg.apps_dir.join(".meta")
}

/// The saved settings of app `name`, if any.
pub fn load_meta(cfg: &Config, name: &str) -> Option<Meta> {
    let text = fs::read_to_string(meta_dir(cfg).join(format!("{name}.json"))).ok()?;
    Meta::from_json(&serde_json::from_str(&text).ok()?)
}

/// Saves app `name`'s settings (temporary file, then rename).
pub fn save_meta(cfg: &Config, name: &str, meta: &Meta) -> Result<(), ApiError> {
    let dir = meta_dir(cfg);
    fs::create_dir_all(&dir).map_err(|e| ApiError::Internal(format!("creating {dir:?}: {e}")))?;
    let path = dir.join(format!("{name}.json"));
    let tmp = dir.join(format!(".{name}.json.tmp"));
    let text = Value::Object(meta.to_json()).to_string();
    fs::write(&tmp, text)
        .and_then(|()| fs::rename(&tmp, &path))
        .map_err(|e| ApiError::Internal(format!("writing {path:?}: {e}")))
}

/// Forgets app `name`'s settings.
pub fn remove_meta(cfg: &Config, name: &str) {
    let _ = fs::remove_file(meta_dir(cfg).join(format!("{name}.json")));
    lock_runs().remove(name);
}

/// Every saved app settings, by name.
pub fn all_meta(cfg: &Config) -> BTreeMap<String, Meta> {
    let Ok(entries) = fs::read_dir(meta_dir(cfg)) else {
        return BTreeMap::new();
    };
    entries
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let name = name.strip_suffix(".json")?.to_string();
            let meta = load_meta(cfg, &name)?;
            Some((name, meta))
        })
        .collect()
}

/// The port for app `name`: the one it had, else the lowest free one.
pub fn choose_port(cfg: &Config, name: &str, wanted: Option<u16>) -> Result<u16, ApiError> {
    let others: Vec<(String, u16)> = all_meta(cfg)
        .into_iter()
        .filter(|(n, m)| n != name && m.runs())
        .map(|(n, m)| (n, m.port))
        .collect();
    if let Some(port) = wanted {
        if let Some((other, _)) = others.iter().find(|(_, p)| *p == port) {
            return Err(ApiError::Conflict(format!(
                "port {port} is already used by app {other:?}"
            )));
        }
        return Ok(port);
    }
    if let Some(old) = load_meta(cfg, name).filter(|m| m.runs() && m.port != 0) {
        if !others.iter().any(|(_, p)| *p == old.port) {
            return Ok(old.port);
        }
    }
    (FIRST_PORT..=u16::MAX)
        .find(|p| !others.iter().any(|(_, q)| q == p))
        .ok_or_else(|| ApiError::Internal("no free port left".into()))
}

/// Runs detection on an extracted upload.
pub fn detect_dir(dir: &Path) -> Result<Detected, ApiError> {
    let mut files = Vec::new();
    list_files(dir, "", &mut files)
        .map_err(|e| ApiError::Internal(format!("reading {dir:?}: {e}")))?;
    let names: Vec<&str> = files.iter().map(String::as_str).collect();
    let read = |rel: &str| -> Option<String> {
        let mut text = String::new();
        fs::File::open(dir.join(rel))
            .ok()?
            .take(256 * 1024)
            .read_to_string(&mut text)
            .ok()?;
        Some(text)
    };
    detect::detect(&names, &read).map_err(|e| ApiError::Undetected(e.to_string()))
}

/// Relative paths of the regular files under `dir`, skipping `node_modules`
/// and dot-folders (they can hold thousands of files that never decide).
fn list_files(dir: &Path, prefix: &str, out: &mut Vec<String>) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = format!("{prefix}{name}");
        let kind = entry.file_type()?;
        if kind.is_dir() {
            if name != "node_modules" && !name.starts_with('.') && out.len() < 100_000 {
                list_files(&entry.path(), &format!("{rel}/"), out)?;
            }
        } else if kind.is_file() {
            out.push(rel);
        }
    }
    Ok(())
}

/// The nginx snippet that proxies `/app/<name>/` to the app's port. Python
/// apps get the full path (the pool strips the prefix and sets SCRIPT_NAME or
/// root_path, so the URLs they build carry it); Node apps get the path
/// without the prefix and their redirects are mapped back under it; Next.js
/// is built with `basePath` and gets the full path.
pub fn proxy_block(name: &str, meta: &Meta) -> String {
    let port = meta.port;
    let strip = matches!(meta.kind, AppKind::Express | AppKind::Node);
    let pass = if strip {
        format!("    proxy_pass http://127.0.0.1:{port}/;\n    proxy_redirect / /app/{name}/;\n")
    } else {
        format!("    proxy_pass http://127.0.0.1:{port};\n")
    };
    format!(
        "# Written by appserver-agent for app {name:?} ({kind}); replaced on every deploy.\n\
         location = /app/{name} {{ return 301 /app/{name}/; }}\n\
         location /app/{name}/ {{\n    set $appserver_app {name};\n{pass}    \
         error_page 502 504 = @app_down;\n    \
         proxy_http_version 1.1;\n    \
         proxy_set_header Upgrade $http_upgrade;\n    \
         proxy_set_header Connection $appserver_connection;\n    \
         proxy_set_header Host $http_host;\n    \
         proxy_set_header X-Forwarded-For $remote_addr;\n    \
         proxy_set_header X-Forwarded-Proto $scheme;\n    \
         proxy_set_header X-Forwarded-Prefix /app/{name};\n    \
         proxy_buffering off;\n    \
         proxy_read_timeout 1h;\n    \
         add_header {header} {name} always;\n}}\n",
        kind = meta.kind.id(),
        header = crate::nginx::APP_HEADER,
    )
}

// ------------------------------------------------------------- supervisor --

/// What the supervisor knows about one app's process.
#[derive(Debug, Clone, Default)]
struct Run {
    /// When it was last (re)started.
    started: Option<Instant>,
    /// Crashes in a row.
    failures: u32,
    /// Restarts done by the supervisor since the deploy.
    restarts: u32,
    /// When the next restart is due.
    next_try: Option<Instant>,
    /// How the last run ended, with the end of its log.
    last_error: Option<String>,
    /// True after [`MAX_FAILURES`] crashes in a row.
    gave_up: bool,
}

static RUNS: Mutex<BTreeMap<String, Run>> = Mutex::new(BTreeMap::new());

fn lock_runs() -> std::sync::MutexGuard<'static, BTreeMap<String, Run>> {
    RUNS.lock().unwrap_or_else(|p| p.into_inner())
}

fn pool(cfg: &Config) -> Result<&Pool, ApiError> {
    cfg.pool.as_ref().ok_or_else(|| {
        ApiError::Runtime(format!(
            "the `{}` environment has no runtime pool",
            cfg.environment.id()
        ))
    })
}

/// The pool's word for how to run `kind`: the Python pool serves `wsgi`,
/// `asgi` and `django`; the Node pool takes the kind as it is.
fn pool_kind(kind: AppKind) -> &'static str {
    match kind {
        AppKind::Flask | AppKind::Wsgi => "wsgi",
        AppKind::FastApi | AppKind::Asgi => "asgi",
        other => other.id(),
    }
}

fn start_request<'a>(
    cfg: &Config,
    name: &'a str,
    meta: &'a Meta,
    env: &'a Map<String, Value>,
    wait: bool,
) -> StartRequest<'a> {
    StartRequest {
        name,
        dir: cfg.apps_dir.join(name).display().to_string(),
        port: meta.port,
        kind: pool_kind(meta.kind),
        // Django's entry is its settings module, passed in the environment.
        entry: if meta.kind == AppKind::Django {
            ""
        } else {
            &meta.entry
        },
        prefix: format!("/app/{name}"),
        env,
        wait,
    }
}

fn env_json(meta: &Meta) -> Map<String, Value> {
    let mut env: Map<String, Value> = meta
        .env
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    if meta.kind == AppKind::Django {
        env.entry("DJANGO_SETTINGS_MODULE")
            .or_insert_with(|| meta.entry.clone().into());
    }
    env
}

/// Starts app `name` and waits until it listens. A start that fails (the app
/// exits first) is not an API error: the app is deployed, its status says
/// what went wrong and the supervisor retries.
pub fn start(cfg: &Config, name: &str, meta: &Meta) -> Result<(), ApiError> {
    let pool = pool(cfg)?;
    let env = env_json(meta);
    lock_runs().insert(
        name.to_string(),
        Run {
            started: Some(Instant::now()),
            ..Run::default()
        },
    );
    match pool.start(&start_request(cfg, name, meta, &env, true), START_TIMEOUT) {
        Ok(_) => Ok(()),
        Err(ApiError::Runtime(why)) if why.contains("exited") => {
            // The pool's status says how it ended (code or signal).
            let ending = pool
                .status()
                .ok()
                .and_then(|(apps, _)| apps.into_iter().find(|(n, _)| n == name))
                .map(|(_, p)| p.ending())
                .unwrap_or(why);
            let mut runs = lock_runs();
            let run = runs.entry(name.to_string()).or_default();
            record_crash(run, crash_report(cfg, name, &ending));
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Stops app `name`'s process and waits (up to 10 s) until it is gone.
pub fn stop(cfg: &Config, name: &str) -> Result<(), ApiError> {
    let pool = pool(cfg)?;
    pool.stop(name)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (apps, _) = pool.status()?;
        let alive = apps.iter().any(|(n, p)| n == name && p.state != "exited");
        if !alive {
            break;
        }
        if Instant::now() > deadline {
            return Err(ApiError::Runtime(format!(
                "{name} did not stop within 10 s"
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    lock_runs().remove(name);
    Ok(())
}

/// Counts a crash and schedules the next restart, or gives up.
fn record_crash(run: &mut Run, report: String) {
    let stable = run.started.is_some_and(|t| t.elapsed() > STABLE_AFTER);
    run.failures = if stable { 1 } else { run.failures + 1 };
    run.last_error = Some(report);
    if run.failures >= MAX_FAILURES {
        run.gave_up = true;
        run.next_try = None;
    } else {
        let backoff = Duration::from_secs(1 << (run.failures - 1).min(5)).min(MAX_BACKOFF);
        run.next_try = Some(Instant::now() + backoff);
    }
}

/// `ending`, plus the last lines of the app's log.
fn crash_report(cfg: &Config, name: &str, ending: &str) -> String {
    let tail = log_tail(cfg, name, 2048).unwrap_or_default();
    let lines: Vec<&str> = tail.lines().rev().take(12).collect();
    let lines: Vec<&str> = lines.into_iter().rev().collect();
    if lines.is_empty() {
        ending.to_string()
    } else {
        format!("{ending}; last output:\n{}", lines.join("\n"))
    }
}

/// The path of app `name`'s log (stdout and stderr of its current run).
pub fn log_path(cfg: &Config, name: &str) -> PathBuf {
    cfg.log_dir.join(format!("{name}.log"))
}

/// The last `max` bytes of app `name`'s log (from a line start).
pub fn log_tail(cfg: &Config, name: &str, max: u64) -> Option<String> {
    let mut file = fs::File::open(log_path(cfg, name)).ok()?;
    let len = file.metadata().ok()?.len();
    let from = len.saturating_sub(max);
    file.seek(SeekFrom::Start(from)).ok()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).ok()?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    Some(if from > 0 {
        text.split_once('\n')
            .map(|(_, rest)| rest.to_string())
            .unwrap_or(text)
    } else {
        text
    })
}

/// The status fields of every app, from the pool's view and the
/// supervisor's: `state` is `running`, `starting`, `restarting` (crashed,
/// restart due), `error` (gave up), `stopped`, or `static`.
pub fn statuses(cfg: &Config) -> HashMap<String, Map<String, Value>> {
    let metas = all_meta(cfg);
    let processes = match (&cfg.pool, metas.values().any(Meta::runs)) {
        (Some(pool), true) => pool.status().map(|(apps, _)| apps).ok(),
        _ => Some(Vec::new()),
    };
    let runs = lock_runs();
    metas
        .iter()
        .map(|(name, meta)| {
            let mut m = meta.to_json();
            let process = processes
                .as_ref()
                .and_then(|ps| ps.iter().find(|(n, _)| n == name).map(|(_, p)| p.clone()));
            let run = runs.get(name).cloned().unwrap_or_default();
            let state = if !meta.runs() {
                "static"
            } else if processes.is_none() {
                "unknown"
            } else {
                match process.as_ref().map(|p| p.state.as_str()) {
                    Some("running") => "running",
                    Some("starting") => "starting",
                    _ if run.gave_up => "error",
                    _ if !meta.wanted => "stopped",
                    _ => "restarting",
                }
            };
            m.insert("state".into(), state.into());
            if let Some(p) = process.filter(|p| p.state != "exited") {
                m.insert("pid".into(), p.pid.into());
                m.insert("rss_kb".into(), json!(p.rss_kb));
            }
            m.insert("restarts".into(), run.restarts.into());
            m.insert("error".into(), json!(run.last_error));
            (name.clone(), m)
        })
        .collect()
}

/// One supervisor round: restarts every wanted app whose process is gone
/// once its backoff has passed. Called every [`TICK`].
pub fn tick(cfg: &Config) {
    let metas: Vec<(String, Meta)> = all_meta(cfg)
        .into_iter()
        .filter(|(_, m)| m.runs() && m.wanted)
        .collect();
    if metas.is_empty() {
        return;
    }
    let Ok(pool) = pool(cfg) else { return };
    let Ok((processes, _)) = pool.status() else {
        return;
    };
    let _guard = crate::apps::lock();
    for (name, meta) in metas {
        // A deploy or stop may have changed it while we waited for the lock.
        let Some(meta) = load_meta(cfg, &name).filter(|m| m.wanted && *m == meta) else {
            continue;
        };
        let process = processes.iter().find(|(n, _)| *n == name).map(|(_, p)| p);
        if process.is_some_and(|p| p.state != "exited") {
            continue;
        }
        let mut runs = lock_runs();
        let run = runs.entry(name.clone()).or_default();
        if run.gave_up {
            continue;
        }
        if run.next_try.is_none() {
            // Newly seen dead (or never started, e.g. after the agent restarted).
            let ending = process
                .map(|p| p.ending())
                .unwrap_or_else(|| "not running".into());
            if process.is_some() {
                record_crash(run, crash_report(cfg, &name, &ending));
                eprintln!("appserver-agent: {name} {ending}");
                continue;
            }
            run.next_try = Some(Instant::now());
        }
        if run.next_try.is_some_and(|t| Instant::now() >= t) && !run.gave_up {
            run.next_try = None;
            run.restarts += 1;
            run.started = Some(Instant::now());
            drop(runs);
            eprintln!("appserver-agent: restarting {name}");
            let env = env_json(&meta);
            if let Err(e) = pool.start(
                &start_request(cfg, &name, &meta, &env, false),
                START_TIMEOUT,
            ) {
                let mut runs = lock_runs();
                record_crash(runs.entry(name.clone()).or_default(), e.to_string());
            }
        }
    }
}

/// After a state restore v86 has compiled none of the guest's code, so the
/// first nginx reload took ~8 s and the first app start ~4 s. The page sets
/// the clock right after a restore; then, in the background, reload nginx
/// once (no change: it only runs the reload path) and ask the pool to warm
/// up, so a deploy a few seconds later finds both warm.
pub fn warm_after_restore(cfg: &Config) {
    let nginx = cfg.nginx.clone();
    let pool = cfg.pool.clone();
    let spawned = std::thread::Builder::new()
        .name("warm-up".into())
        .spawn(move || {
            if let Some(nginx) = nginx {
                let _ = nginx.reload();
            }
            if let Some(pool) = pool {
                // Pools without a warm-up of their own answer "unknown op".
                let _ = pool.call(&json!({"op": "warm"}), Duration::from_secs(10));
            }
        });
    if let Err(e) = spawned {
        eprintln!("appserver-agent: cannot start the warm-up: {e}");
    }
}

/// How often the supervisor looks at the processes.
pub const TICK: Duration = Duration::from_secs(2);

/// Runs [`tick`] forever.
pub fn supervise(cfg: &Config) -> ! {
    loop {
        std::thread::sleep(TICK);
        tick(cfg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings() {
        let s =
            Settings::parse(r#"{"env":{"API_KEY":"x","N":3},"port":9100,"entry":"src/main.js"}"#)
                .unwrap();
        assert_eq!(s.env["API_KEY"], "x");
        assert_eq!(s.env["N"], "3");
        assert_eq!(s.port, Some(9100));
        assert_eq!(s.entry.as_deref(), Some("src/main.js"));
        for bad in [
            "[]",
            "{",
            r#"{"env":{"1X":"a"}}"#,
            r#"{"env":{"PORT":"1"}}"#,
            r#"{"env":{"A":[1]}}"#,
            r#"{"port":80}"#,
            r#"{"port":8081}"#,
            r#"{"entry":"../x.js"}"#,
            r#"{"entry":"/etc/passwd"}"#,
            r#"{"nope":1}"#,
        ] {
            let err = Settings::parse(bad).unwrap_err();
            assert_eq!(err.code(), "bad_body", "{bad}");
        }
    }

    #[test]
    fn backoff_then_give_up() {
        let mut run = Run {
            started: Some(Instant::now()),
            ..Run::default()
        };
        for i in 1..MAX_FAILURES {
            record_crash(&mut run, format!("crash {i}"));
            assert!(!run.gave_up);
            let wait = run.next_try.unwrap() - Instant::now();
            assert!(wait <= Duration::from_secs(1 << (i - 1)), "{wait:?}");
        }
        record_crash(&mut run, "last".into());
        assert!(run.gave_up);
        assert_eq!(run.last_error.as_deref(), Some("last"));
    }

    #[test]
    fn proxy_blocks() {
        let meta = |kind| Meta {
            kind,
            entry: String::new(),
            command: String::new(),
            reason: String::new(),
            port: 9002,
            env: BTreeMap::new(),
            wanted: true,
        };
        let node = proxy_block("api", &meta(AppKind::Express));
        assert!(
            node.contains("proxy_pass http://127.0.0.1:9002/;"),
            "{node}"
        );
        assert!(node.contains("proxy_redirect / /app/api/;"), "{node}");
        let py = proxy_block("api", &meta(AppKind::Flask));
        assert!(py.contains("proxy_pass http://127.0.0.1:9002;"), "{py}");
        assert!(!py.contains("proxy_redirect"), "{py}");
        assert!(py.contains("X-Appserver-App api always"), "{py}");
    }

    #[test]
    fn meta_round_trip() {
        let mut env = BTreeMap::new();
        env.insert("A".to_string(), "1".to_string());
        let meta = Meta {
            kind: AppKind::FastApi,
            entry: "main:app".into(),
            command: "uvicorn main:app".into(),
            reason: "main.py".into(),
            port: 9003,
            env,
            wanted: false,
        };
        assert_eq!(Meta::from_json(&Value::Object(meta.to_json())), Some(meta));
    }
}
