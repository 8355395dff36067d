//! Entry point of `appserver-agent`: reads settings from the environment,
//! cleans up after interrupted uploads and serves the API.
//!
//! Environment (all optional):
//! - `APPSERVER_AGENT_LISTEN`: listen address, default `0.0.0.0:8081`
//! - `APPSERVER_APPS_DIR`: app folders, default `/srv/apps`
//! - `APPSERVER_NGINX_APPS_DIR`: per-app nginx snippets, default `/etc/nginx/apps`
//! - `APPSERVER_NGINX`: nginx binary, default `/usr/sbin/nginx`; `none` disables
//!   testing and reloading nginx (for running the agent outside the VM)

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use guest_agent::apps::{clean_scratch, Config};
use guest_agent::nginx::Nginx;
use guest_agent::server::serve;

/// An environment variable, or `default` when unset or empty.
fn env_or(key: &str, default: &str) -> String {
    std::env::var(key)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

fn main() -> ExitCode {
    let listen = env_or("APPSERVER_AGENT_LISTEN", "0.0.0.0:8081");
    let nginx_bin = env_or("APPSERVER_NGINX", "/usr/sbin/nginx");
    let nginx = (nginx_bin != "none").then(|| Nginx {
        binary: PathBuf::from(nginx_bin),
        probe_addr: SocketAddr::from(([127, 0, 0, 1], 80)),
        reload_timeout: Duration::from_secs(20),
    });
    let cfg = Config {
        apps_dir: PathBuf::from(env_or("APPSERVER_APPS_DIR", "/srv/apps")),
        conf_dir: PathBuf::from(env_or("APPSERVER_NGINX_APPS_DIR", "/etc/nginx/apps")),
        nginx,
    };
    if let Err(e) = clean_scratch(&cfg) {
        eprintln!("appserver-agent: preparing {}: {e}", cfg.apps_dir.display());
        return ExitCode::FAILURE;
    }
    let listener = match TcpListener::bind(&listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("appserver-agent: cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("appserver-agent: listening on {listen}");
    serve(listener, Arc::new(cfg));
    ExitCode::SUCCESS
}
