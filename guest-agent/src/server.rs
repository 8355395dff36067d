//! Connection handling and routing of the agent's `/v1` API.

use std::io::{self, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use appserver_proto::tar::MAX_ARCHIVE_BYTES;

use crate::apps::{self, Config};
use crate::error::ApiError;
use crate::http::{read_head, HeadError, RequestHead, Response};

/// How long a read or write on a client socket may stall.
const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// How long to keep reading after answering, so the client sees the answer
/// rather than a reset.
const LINGER: Duration = Duration::from_secs(2);

/// Accepts connections forever, one thread per connection.
pub fn serve(listener: TcpListener, cfg: Arc<Config>) {
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                eprintln!("appserver-agent: accept failed: {e}");
                continue;
            }
        };
        let cfg = Arc::clone(&cfg);
        let spawned = std::thread::Builder::new()
            .name("conn".into())
            .spawn(move || handle(stream, &cfg));
        if let Err(e) = spawned {
            eprintln!("appserver-agent: cannot start a thread: {e}");
        }
    }
}

/// Answers one request on `stream` and closes it.
pub fn handle(stream: TcpStream, cfg: &Config) {
    let started = Instant::now();
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("appserver-agent: cannot clone socket: {e}");
            return;
        }
    };
    let mut reader = BufReader::new(stream);
    let (label, response) = match read_head(&mut reader) {
        Err(HeadError::Closed) => return,
        Err(e) => (
            "-".to_string(),
            ApiError::BadRequest(e.to_string()).to_response(),
        ),
        Ok(head) => {
            let label = format!("{} {}", head.method, head.path);
            let result = route(&head, &mut reader, &mut writer, cfg);
            (label, result.unwrap_or_else(|e| e.to_response()))
        }
    };
    if let Err(e) = response.write_to(&mut writer) {
        eprintln!("appserver-agent: {label}: writing the response failed: {e}");
    }
    eprintln!(
        "appserver-agent: {label} -> {} ({} ms)",
        response.status,
        started.elapsed().as_millis()
    );
    linger(&mut reader, &writer);
}

/// Waits until the peer acknowledged the response, half-closes, and discards
/// input for a moment, so closing does not reset a connection whose peer is
/// still sending.
fn linger(reader: &mut impl Read, writer: &TcpStream) {
    wait_until_acked(writer, SEND_WAIT);
    let _ = writer.shutdown(Shutdown::Write);
    let _ = writer.set_read_timeout(Some(LINGER));
    let deadline = Instant::now() + LINGER;
    let mut buf = [0u8; 8192];
    while Instant::now() < deadline {
        match reader.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

/// How long to wait for the peer to acknowledge a response before closing.
const SEND_WAIT: Duration = Duration::from_secs(5);

/// Waits (up to `limit`) until everything written to `stream` has been
/// acknowledged, so that the FIN we send next travels alone.
///
/// v86 0.5.462's JS TCP stack drops the data of a segment that also carries
/// FIN; Linux sends such a segment when a socket is shut down while data is
/// still queued, which v86's one-segment-at-a-time receiving makes likely for
/// any answer longer than one segment. The send queue length comes from
/// /proc/net/tcp (no unsafe ioctl needed); without it we do not wait.
fn wait_until_acked(stream: &TcpStream, limit: Duration) {
    let (Ok(local), Ok(peer)) = (stream.local_addr(), stream.peer_addr()) else {
        return;
    };
    let (SocketAddr::V4(local), SocketAddr::V4(peer)) = (local, peer) else {
        return;
    };
    let key = (proc_net_addr(&local), proc_net_addr(&peer));
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
            return;
        };
        match send_queue(&table, &key.0, &key.1) {
            Some(0) | None => return,
            Some(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

/// An IPv4 socket address as /proc/net/tcp prints it on little-endian
/// machines: `0100007F:1F91` for 127.0.0.1:8081.
fn proc_net_addr(addr: &SocketAddrV4) -> String {
    format!(
        "{:08X}:{:04X}",
        u32::from_le_bytes(addr.ip().octets()),
        addr.port()
    )
}

/// The tx_queue (unacknowledged plus unsent bytes) of the connection from
/// `local` to `peer` in a /proc/net/tcp table.
fn send_queue(table: &str, local: &str, peer: &str) -> Option<u64> {
    table.lines().skip(1).find_map(|line| {
        let mut fields = line.split_whitespace().skip(1);
        let (l, p, _state, queues) = (
            fields.next()?,
            fields.next()?,
            fields.next()?,
            fields.next()?,
        );
        if l != local || p != peer {
            return None;
        }
        u64::from_str_radix(queues.split(':').next()?, 16).ok()
    })
}

/// Dispatches a request to its handler.
fn route(
    head: &RequestHead,
    body: &mut impl Read,
    writer: &mut impl Write,
    cfg: &Config,
) -> Result<Response, ApiError> {
    let not_allowed = |allow| ApiError::MethodNotAllowed {
        method: head.method.clone(),
        allow,
    };
    match head.path.as_str() {
        "/v1/health" => match head.method.as_str() {
            "GET" => Ok(Response::ok("{\"ok\":true}".into())),
            _ => Err(not_allowed("GET")),
        },
        "/v1/clock" => match head.method.as_str() {
            "PUT" => {
                let seconds = crate::clock::set(body, head.content_length)?;
                // The page sets the clock right after restoring a saved state.
                crate::runtime::warm_after_restore(cfg);
                Ok(Response::ok(format!("{{\"clock\":{seconds}}}")))
            }
            _ => Err(not_allowed("PUT")),
        },
        "/v1/status" => match head.method.as_str() {
            "GET" => Ok(Response::ok(status_json(cfg))),
            _ => Err(not_allowed("GET")),
        },
        "/v1/apps" | "/v1/apps/" => match head.method.as_str() {
            "GET" => Ok(Response::ok(apps::list_json(cfg)?)),
            _ => Err(not_allowed("GET")),
        },
        path => match path
            .strip_prefix("/v1/apps/")
            .map(|rest| rest.split_once('/'))
        {
            Some(None) => {
                let name = &path["/v1/apps/".len()..];
                match head.method.as_str() {
                    "GET" => {
                        apps::check_name(name)?;
                        Ok(Response::ok(apps::app_json(cfg, name)?))
                    }
                    "PUT" => put_app(head, name, body, writer, cfg),
                    "DELETE" => {
                        apps::check_name(name)?;
                        apps::delete(cfg, name)?;
                        let name = crate::http::json_string(name);
                        Ok(Response::ok(format!("{{\"deleted\":{name}}}")))
                    }
                    _ => Err(not_allowed("GET, PUT, DELETE")),
                }
            }
            Some(Some((name, what))) => {
                apps::check_name(name)?;
                let action = match what {
                    "start" => Some(apps::Action::Start),
                    "stop" => Some(apps::Action::Stop),
                    "restart" => Some(apps::Action::Restart),
                    "logs" => None,
                    _ => return Err(unknown(path)),
                };
                match (action, head.method.as_str()) {
                    (Some(action), "POST") => Ok(Response::ok(apps::control(cfg, name, action)?)),
                    (Some(_), _) => Err(not_allowed("POST")),
                    (None, "GET") => logs(cfg, name),
                    (None, _) => Err(not_allowed("GET")),
                }
            }
            None => Err(unknown(path)),
        },
    }
}

fn unknown(path: &str) -> ApiError {
    ApiError::NotFound(format!(
        "no such endpoint {path:?}; the agent serves /v1/health, /v1/status, /v1/clock, \
/v1/apps[/<name>[/start|stop|restart|logs]]"
    ))
}

/// `GET /v1/apps/<name>/logs`: the end of the app's stdout and stderr.
fn logs(cfg: &Config, name: &str) -> Result<Response, ApiError> {
    if !cfg.apps_dir.join(name).is_dir() {
        return Err(ApiError::NotFound(format!(
            "no app named {name:?} is deployed"
        )));
    }
    let log =
        crate::runtime::log_tail(cfg, name, crate::runtime::LOG_TAIL_BYTES).unwrap_or_default();
    Ok(Response::ok(
        serde_json::json!({ "name": name, "log": log }).to_string(),
    ))
}

/// `GET /v1/status`: the environment, its pool and the VM's memory.
fn status_json(cfg: &Config) -> String {
    let pool = cfg.pool.as_ref().map(|p| match p.status() {
        Ok((_, raw)) => serde_json::json!({ "ok": true, "pool": raw["pool"] }),
        Err(e) => serde_json::json!({ "ok": false, "error": e.to_string() }),
    });
    serde_json::json!({
        "environment": cfg.environment.id(),
        "pool": pool,
        "meminfo_kb": meminfo(),
        "uptime_s": std::fs::read_to_string("/proc/uptime").ok()
            .and_then(|t| t.split_whitespace().next()?.parse::<f64>().ok()),
    })
    .to_string()
}

/// MemTotal, MemFree and MemAvailable from /proc/meminfo, in kB.
fn meminfo() -> serde_json::Value {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let pick = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
    };
    serde_json::json!({
        "MemTotal": pick("MemTotal"),
        "MemFree": pick("MemFree"),
        "MemAvailable": pick("MemAvailable"),
    })
}

/// `PUT /v1/apps/<name>`: checks the request, then deploys the body.
fn put_app(
    head: &RequestHead,
    name: &str,
    body: &mut impl Read,
    writer: &mut impl Write,
    cfg: &Config,
) -> Result<Response, ApiError> {
    apps::check_name(name)?;
    if head.chunked {
        return Err(ApiError::LengthRequired);
    }
    let len = head.content_length.ok_or(ApiError::LengthRequired)?;
    if len > MAX_ARCHIVE_BYTES {
        return Err(ApiError::TooLarge {
            len,
            max: MAX_ARCHIVE_BYTES,
        });
    }
    if head.expect_continue {
        writer
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .and_then(|()| writer.flush())
            .map_err(|e| ApiError::Internal(format!("writing 100 Continue failed: {e}")))?;
    }
    let settings = head
        .config
        .as_deref()
        .map(crate::runtime::Settings::parse)
        .transpose()?;
    let mut limited = body.take(len);
    let result = apps::deploy(cfg, name, &mut limited, settings);
    // Read what the archive reader did not need (tar end padding, or all of
    // the rest after an error) so the client finishes sending before it reads.
    let _ = io::copy(&mut limited, &mut io::sink());
    let deployed = result?;
    Ok(Response::ok(deployed.to_json(cfg)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use appserver_proto::tar::testing::{finish, push};

    fn cfg() -> Config {
        let root = std::env::temp_dir().join(format!("guest-agent-srv-{}", std::process::id()));
        let cfg = Config {
            apps_dir: root.join("apps"),
            conf_dir: root.join("conf"),
            nginx: None,
            environment: appserver_proto::detect::Environment::Static,
            pool: None,
            log_dir: root.join("logs"),
        };
        apps::clean_scratch(&cfg).unwrap();
        cfg
    }

    /// Parses `raw` as a request and routes it, returning status and body.
    fn call(cfg: &Config, raw: &[u8]) -> (u16, String) {
        let mut input = raw;
        let head = read_head(&mut input).unwrap();
        let mut out = Vec::new();
        let r = route(&head, &mut input, &mut out, cfg).unwrap_or_else(|e| e.to_response());
        (r.status, r.body)
    }

    #[test]
    fn proc_net_tcp() {
        let local: SocketAddrV4 = "127.0.0.1:8081".parse().unwrap();
        assert_eq!(proc_net_addr(&local), "0100007F:1F91");
        let peer: SocketAddrV4 = "192.168.86.1:50000".parse().unwrap();
        assert_eq!(proc_net_addr(&peer), "0156A8C0:C350");
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when\n\
            0: 00000000:1F91 00000000:0000 0A 00000000:00000000 00:00000000\n\
            1: 0100007F:1F91 0156A8C0:C350 01 000005B4:00000000 01:00000014\n";
        assert_eq!(
            send_queue(table, "0100007F:1F91", "0156A8C0:C350"),
            Some(0x5b4)
        );
        assert_eq!(send_queue(table, "0100007F:1F91", "0156A8C0:C351"), None);
    }

    #[test]
    fn routes() {
        let cfg = cfg();
        assert_eq!(
            call(&cfg, b"GET /v1/health HTTP/1.1\r\n\r\n"),
            (200, "{\"ok\":true}".into())
        );
        assert_eq!(call(&cfg, b"POST /v1/health HTTP/1.1\r\n\r\n").0, 405);
        assert_eq!(call(&cfg, b"GET /nope HTTP/1.1\r\n\r\n").0, 404);
        assert_eq!(call(&cfg, b"POST /v1/apps/demo HTTP/1.1\r\n\r\n").0, 405);
        let (status, body) = call(
            &cfg,
            b"PUT /v1/apps/Bad HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!(status, 400);
        assert!(body.contains("\"bad_name\""), "{body}");
        let (status, body) = call(
            &cfg,
            b"PUT /v1/apps/big HTTP/1.1\r\nContent-Length: 67108865\r\n\r\n",
        );
        assert_eq!(status, 413);
        assert!(body.contains("\"too_large\""), "{body}");
        assert_eq!(call(&cfg, b"PUT /v1/apps/demo HTTP/1.1\r\n\r\n").0, 411);
        assert_eq!(call(&cfg, b"DELETE /v1/apps/ghost HTTP/1.1\r\n\r\n").0, 404);

        let mut tar = Vec::new();
        push(&mut tar, "index.html", b'0', b"hello");
        finish(&mut tar);
        let mut raw = format!(
            "PUT /v1/apps/srv-demo HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            tar.len()
        )
        .into_bytes();
        raw.extend_from_slice(&tar);
        let (status, body) = call(&cfg, &raw);
        assert_eq!(status, 200, "{body}");
        let mut app: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(app["timings_ms"]["total"].is_u64(), "{body}");
        app.as_object_mut().unwrap().remove("timings_ms");
        assert_eq!(
            (&app["name"], &app["files"], &app["bytes"], &app["kind"]),
            (&"srv-demo".into(), &1.into(), &5.into(), &"static".into())
        );
        let (status, body) = call(&cfg, b"GET /v1/apps HTTP/1.1\r\n\r\n");
        assert_eq!(status, 200);
        let list: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(list["apps"][0], app, "{body}");
        let (status, one) = call(&cfg, b"GET /v1/apps/srv-demo HTTP/1.1\r\n\r\n");
        assert_eq!(
            (
                status,
                serde_json::from_str::<serde_json::Value>(&one).unwrap()
            ),
            (200, app)
        );
        // A static site has no process; logs of an unknown app are a 404.
        assert_eq!(
            call(&cfg, b"POST /v1/apps/srv-demo/stop HTTP/1.1\r\n\r\n").0,
            409
        );
        assert_eq!(
            call(&cfg, b"GET /v1/apps/ghost/logs HTTP/1.1\r\n\r\n").0,
            404
        );
        assert_eq!(
            call(&cfg, b"GET /v1/apps/srv-demo/nope HTTP/1.1\r\n\r\n").0,
            404
        );
        assert_eq!(
            call(&cfg, b"GET /v1/apps/srv-demo/stop HTTP/1.1\r\n\r\n").0,
            405
        );
        let bad_config = format!(
            "PUT /v1/apps/srv-demo HTTP/1.1\r\nX-Appserver-Config: {{\"env\":{{\"1\":2}}}}\r\nContent-Length: {}\r\n\r\n",
            tar.len()
        );
        let (status, body) = call(&cfg, &[bad_config.as_bytes(), &tar].concat());
        assert_eq!(status, 400, "{body}");
        assert!(body.contains("bad_body"), "{body}");
        let (status, body) = call(&cfg, b"GET /v1/status HTTP/1.1\r\n\r\n");
        assert_eq!(status, 200);
        assert!(body.contains("\"environment\":\"static\""), "{body}");
        let (status, body) = call(&cfg, b"DELETE /v1/apps/srv-demo HTTP/1.1\r\n\r\n");
        assert_eq!((status, body.as_str()), (200, "{\"deleted\":\"srv-demo\"}"));
        let _ = std::fs::remove_dir_all(cfg.apps_dir.parent().unwrap());
    }
}
