//! Client of the environment's warm pool (`/run/appserver/pool.sock`).
//!
//! The python and nodejs images run a pool process that was already running
//! when the image's warm VM state was saved, with its runtime and frameworks
//! loaded; it starts each app in a process of its own without a cold start
//! (see `images/envs/*.rootfs/usr/local/lib/appserver/`). One request per
//! connection: a JSON object on one line, one JSON line back.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use crate::error::ApiError;

/// Where the pool listens.
#[derive(Debug, Clone)]
pub struct Pool {
    /// The Unix socket.
    pub socket: PathBuf,
}

/// What the pool says about one app's process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    /// Its process id.
    pub pid: u32,
    /// `starting`, `running` or `exited`.
    pub state: String,
    /// Exit code, once exited normally.
    pub code: Option<i64>,
    /// Signal that ended it, if one did.
    pub signal: Option<i64>,
    /// Resident memory in kB, while it runs.
    pub rss_kb: Option<u64>,
}

impl Process {
    fn from_json(v: &Value) -> Option<Process> {
        Some(Process {
            pid: u32::try_from(v["pid"].as_u64()?).ok()?,
            state: v["state"].as_str()?.to_string(),
            code: v["code"].as_i64(),
            signal: v["signal"].as_i64(),
            rss_kb: v["rss_kb"].as_u64(),
        })
    }

    /// How it ended, in words (`exit code 1`, `signal 9`).
    pub fn ending(&self) -> String {
        match (self.code, self.signal) {
            (_, Some(sig)) => format!("killed by signal {sig}"),
            (Some(code), None) => format!("exited with code {code}"),
            (None, None) => "exited".into(),
        }
    }
}

/// What an app is started with.
#[derive(Debug, Clone)]
pub struct StartRequest<'a> {
    /// App name.
    pub name: &'a str,
    /// Its folder.
    pub dir: String,
    /// Port it must listen on (127.0.0.1).
    pub port: u16,
    /// The detected kind id (`flask`, `express`, ...).
    pub kind: &'a str,
    /// Entry point (see `appserver_proto::detect::Detected::entry`).
    pub entry: &'a str,
    /// URL prefix it is served under.
    pub prefix: String,
    /// Extra environment variables.
    pub env: &'a serde_json::Map<String, Value>,
    /// Answer only once it listens (or exited).
    pub wait: bool,
}

impl Pool {
    /// Sends one request and returns the pool's answer; an answer with
    /// `"ok": false` becomes [`ApiError::Runtime`] with the pool's message.
    pub fn call(&self, request: &Value, timeout: Duration) -> Result<Value, ApiError> {
        let op = request["op"].as_str().unwrap_or("?");
        let fail = |e: std::io::Error| {
            ApiError::Runtime(format!("pool {op} at {}: {e}", self.socket.display()))
        };
        let mut stream = UnixStream::connect(&self.socket).map_err(fail)?;
        stream.set_read_timeout(Some(timeout)).map_err(fail)?;
        stream
            .set_write_timeout(Some(Duration::from_secs(10)))
            .map_err(fail)?;
        let mut line = request.to_string();
        line.push('\n');
        stream.write_all(line.as_bytes()).map_err(fail)?;
        let mut answer = String::new();
        BufReader::new(stream)
            .read_line(&mut answer)
            .map_err(fail)?;
        let value: Value = serde_json::from_str(answer.trim()).map_err(|e| {
            ApiError::Runtime(format!("pool {op}: unreadable answer {answer:?}: {e}"))
        })?;
        if value["ok"] == Value::Bool(true) {
            Ok(value)
        } else {
            let why = value["error"].as_str().unwrap_or("no reason given");
            Err(ApiError::Runtime(format!("pool {op}: {why}")))
        }
    }

    /// Starts an app; with `wait`, returns once it listens.
    pub fn start(&self, req: &StartRequest<'_>, timeout: Duration) -> Result<Value, ApiError> {
        self.call(
            &json!({
                "op": "start",
                "name": req.name,
                "dir": req.dir,
                "port": req.port,
                "kind": req.kind,
                "entry": if req.entry.is_empty() { Value::Null } else { req.entry.into() },
                "prefix": req.prefix,
                "env": req.env,
                "wait": req.wait,
            }),
            timeout,
        )
    }

    /// Stops an app's process (the pool sends SIGTERM, then SIGKILL after
    /// 5 s). A pool that can (node-pool.js) answers once the process is
    /// gone; others answer at once.
    pub fn stop(&self, name: &str) -> Result<(), ApiError> {
        match self.call(
            &json!({"op": "stop", "name": name, "wait": true}),
            Duration::from_secs(10),
        ) {
            Ok(_) => Ok(()),
            // Never started by this pool: nothing to stop.
            Err(ApiError::Runtime(why)) if why.contains("no such app") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Every app the pool knows, and the pool's own figures.
    pub fn status(&self) -> Result<(Vec<(String, Process)>, Value), ApiError> {
        let value = self.call(&json!({"op": "status"}), Duration::from_secs(10))?;
        let apps = value["apps"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(name, v)| Some((name.clone(), Process::from_json(v)?)))
                    .collect()
            })
            .unwrap_or_default();
        Ok((apps, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A pool that answers each connection with the next of `answers`,
    /// returning the requests it got.
    fn fake_pool(answers: Vec<&'static str>) -> (Pool, std::thread::JoinHandle<Vec<String>>) {
        let socket = std::env::temp_dir().join(format!(
            "agent-pool-{}-{}.sock",
            std::process::id(),
            answers.len()
        ));
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket).unwrap();
        let handle = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for answer in answers {
                let (stream, _) = listener.accept().unwrap();
                let mut line = String::new();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                reader.read_line(&mut line).unwrap();
                seen.push(line);
                (&stream).write_all(answer.as_bytes()).unwrap();
            }
            seen
        });
        (Pool { socket }, handle)
    }

    #[test]
    fn requests_and_answers() {
        let (pool, handle) = fake_pool(vec![
            "{\"ok\":true,\"pid\":7,\"state\":\"running\"}\n",
            "{\"ok\":false,\"error\":\"no such app\"}\n",
            "{\"ok\":true,\"apps\":{\"a\":{\"pid\":7,\"state\":\"exited\",\"code\":3}},\"pool\":{}}\n",
            "{\"ok\":false,\"error\":\"boom\"}\n",
        ]);
        let env = serde_json::Map::new();
        let req = StartRequest {
            name: "a",
            dir: "/srv/apps/a".into(),
            port: 9001,
            kind: "flask",
            entry: "app:app",
            prefix: "/app/a".into(),
            env: &env,
            wait: true,
        };
        let started = pool.start(&req, Duration::from_secs(5)).unwrap();
        assert_eq!(started["pid"], 7);
        pool.stop("a").unwrap();
        let (apps, _) = pool.status().unwrap();
        assert_eq!(apps[0].0, "a");
        assert_eq!(apps[0].1.ending(), "exited with code 3");
        let err = pool.stop("a").unwrap_err();
        assert!(err.to_string().contains("boom"), "{err}");
        let seen = handle.join().unwrap();
        let first: Value = serde_json::from_str(&seen[0]).unwrap();
        assert_eq!(first["op"], "start");
        assert_eq!(first["entry"], "app:app");
        assert_eq!(first["wait"], true);
        let stop: Value = serde_json::from_str(&seen[1]).unwrap();
        assert_eq!(
            (stop["op"].as_str(), stop["wait"].as_bool()),
            (Some("stop"), Some(true))
        );
        let _ = std::fs::remove_file(&pool.socket);
    }

    #[test]
    fn no_pool_is_a_clear_error() {
        let pool = Pool {
            socket: PathBuf::from("/nonexistent/pool.sock"),
        };
        let err = pool.status().unwrap_err();
        assert_eq!(err.code(), "runtime");
        assert!(err.to_string().contains("/nonexistent/pool.sock"), "{err}");
    }
}
