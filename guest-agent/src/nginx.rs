//! Driving the VM's nginx: `nginx -t`, `nginx -s reload`, and waiting until
//! the running nginx serves (or stops serving) an app's location.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::error::ApiError;

/// How to reach and control nginx.
#[derive(Debug, Clone)]
pub struct Nginx {
    /// The nginx binary (`/usr/sbin/nginx`).
    pub binary: PathBuf,
    /// Where nginx listens, for probing (`127.0.0.1:80`).
    pub probe_addr: SocketAddr,
    /// How long to wait for a reload to take effect.
    pub reload_timeout: Duration,
    /// The master's pid file (`/run/nginx.pid`).
    pub pid_file: PathBuf,
}

impl Nginx {
    /// Makes the running nginx serve app `name` (`present`) or stop serving it.
    /// Reloads only when `changed` or when a probe shows nginx is not yet in
    /// the wanted state, then waits until it is. The configuration is tested
    /// (`nginx -t`, a whole nginx start in the emulator) only when the reload
    /// does not take, to say why.
    pub fn apply(&self, name: &str, present: bool, changed: bool) -> Result<(), ApiError> {
        if !changed && self.serves(name) == Some(present) {
            return Ok(());
        }
        self.reload()?;
        let deadline = Instant::now() + self.reload_timeout;
        while Instant::now() < deadline {
            if self.serves(name) == Some(present) {
                // Old workers may still hold the listening socket for a moment.
                sleep(Duration::from_millis(50));
                return Ok(());
            }
            sleep(Duration::from_millis(50));
        }
        self.run(&["-t", "-q"], "nginx -t (configuration test)")?;
        Err(ApiError::Internal(format!(
            "nginx did not pick up the configuration for {name:?} within {} s",
            self.reload_timeout.as_secs()
        )))
    }

    /// Asks the running nginx to reload its configuration. SIGHUP to the
    /// master straight away: `nginx -s reload` would first start a whole new
    /// nginx that parses the configuration only to find the pid, which costs
    /// seconds of emulated CPU after a restore.
    pub fn reload(&self) -> Result<(), ApiError> {
        let pid = std::fs::read_to_string(&self.pid_file)
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok());
        if let Some(pid) = pid {
            let sent = Command::new("busybox")
                .args(["kill", "-HUP", &pid.to_string()])
                .status();
            if matches!(sent, Ok(s) if s.success()) {
                return Ok(());
            }
        }
        self.run(&["-s", "reload"], "nginx -s reload")
    }

    /// Runs nginx with `args`; a failure carries nginx's own message.
    fn run(&self, args: &[&str], what: &str) -> Result<(), ApiError> {
        let out = Command::new(&self.binary)
            .args(args)
            .output()
            .map_err(|e| {
                ApiError::Internal(format!("{what}: cannot run {}: {e}", self.binary.display()))
            })?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(ApiError::Internal(format!(
            "{what} failed ({}): {}",
            out.status,
            stderr.trim()
        )))
    }

    /// Whether nginx currently routes `/app/<name>/` to the app, told by the
    /// `X-Appserver-App` header its location block adds to every response
    /// (even 404s). `None` when nginx could not be asked.
    pub fn serves(&self, name: &str) -> Option<bool> {
        let head = probe_head(self.probe_addr, &format!("/app/{name}/"))?;
        Some(head_has_app(&head, name))
    }
}

/// Name of the response header that marks a request as routed to an app.
pub const APP_HEADER: &str = "X-Appserver-App";

/// Sends `GET path` to `addr` and returns the response head (at most 8 KiB).
fn probe_head(addr: SocketAddr, path: &str) -> Option<String> {
    let timeout = Duration::from_secs(2);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while head.len() < 8192 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// True when `head` is an HTTP response head carrying `X-Appserver-App: <name>`.
fn head_has_app(head: &str, name: &str) -> bool {
    if !head.starts_with("HTTP/1.") {
        return false;
    }
    head.lines()
        .skip(1)
        .take_while(|l| !l.is_empty())
        .any(|line| {
            line.split_once(':').is_some_and(|(key, value)| {
                key.trim().eq_ignore_ascii_case(APP_HEADER) && value.trim() == name
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_header() {
        let head = "HTTP/1.1 404 Not Found\r\nServer: nginx\r\nx-appserver-app: demo\r\n\r\n";
        assert!(head_has_app(head, "demo"));
        assert!(!head_has_app(head, "demo2"));
        assert!(!head_has_app(
            "HTTP/1.1 404 Not Found\r\nServer: nginx\r\n\r\n",
            "demo"
        ));
        assert!(!head_has_app("garbage X-Appserver-App: demo", "demo"));
    }
}
