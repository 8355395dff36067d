//! Entry point of `appserver-agent`: reads settings from the environment,
//! cleans up after interrupted uploads and serves the API.
//!
//! Environment (all optional):
//! - `APPSERVER_AGENT_LISTEN`: listen address, default `0.0.0.0:8081`
//! - `APPSERVER_APPS_DIR`: app folders, default `/srv/apps`
//! - `APPSERVER_NGINX_APPS_DIR`: per-app nginx snippets, default `/etc/nginx/apps`
//! - `APPSERVER_NGINX`: nginx binary, default `/usr/sbin/nginx`; `none` disables
//!   testing and reloading nginx (for running the agent outside the VM)
//! - `APPSERVER_ENVIRONMENT`: the environment id, default the contents of
//!   `/etc/appserver/environment` (written by images/build.sh), else `static`
//! - `APPSERVER_POOL_SOCKET`: the warm pool, default `/run/appserver/pool.sock`
//!   in environments that run apps
//! - `APPSERVER_LOG_DIR`: apps' logs, default `/var/log/appserver`

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use appserver_proto::detect::Environment;
use guest_agent::apps::{clean_scratch, Config};
use guest_agent::nginx::Nginx;
use guest_agent::pool::Pool;
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
        pid_file: PathBuf::from("/run/nginx.pid"),
    });
    let env_id = std::env::var("APPSERVER_ENVIRONMENT")
        .ok()
        .filter(|v| !v.is_empty())
        .or_else(|| std::fs::read_to_string("/etc/appserver/environment").ok())
        .unwrap_or_else(|| "static".into());
    let Some(environment) = Environment::from_id(env_id.trim()) else {
        eprintln!("appserver-agent: unknown environment {env_id:?}");
        return ExitCode::FAILURE;
    };
    let pool = (environment != Environment::Static).then(|| Pool {
        socket: PathBuf::from(env_or("APPSERVER_POOL_SOCKET", "/run/appserver/pool.sock")),
    });
    let cfg = Config {
        apps_dir: PathBuf::from(env_or("APPSERVER_APPS_DIR", "/srv/apps")),
        conf_dir: PathBuf::from(env_or("APPSERVER_NGINX_APPS_DIR", "/etc/nginx/apps")),
        nginx,
        environment,
        pool,
        log_dir: PathBuf::from(env_or("APPSERVER_LOG_DIR", "/var/log/appserver")),
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
    eprintln!(
        "appserver-agent: `{}` environment, listening on {listen}",
        environment.id()
    );
    let cfg = Arc::new(cfg);
    if cfg.pool.is_some() {
        let supervised = Arc::clone(&cfg);
        let spawned = std::thread::Builder::new()
            .name("supervisor".into())
            .spawn(move || guest_agent::runtime::supervise(&supervised));
        if let Err(e) = spawned {
            eprintln!("appserver-agent: cannot start the supervisor: {e}");
            return ExitCode::FAILURE;
        }
    }
    serve(listener, cfg);
    ExitCode::SUCCESS
}
