//! A small static file server for the site and the image files, with the
//! HTTP Range support v86 needs to read disk images lazily.

use anyhow::{anyhow, Result};
use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tiny_http::{Header, Request, Response, Server, StatusCode};

/// Worker threads answering requests.
const THREADS: usize = 8;

struct Roots {
    site: PathBuf,
    images: Vec<(String, PathBuf)>,
    /// Bytes of image files sent, for tests that check nothing is fetched twice.
    image_bytes: AtomicU64,
    /// Bytes of image files sent again: the same file and range once more.
    image_repeat_bytes: AtomicU64,
    /// The image files and byte ranges sent so far (`DELETE /__xtask/stats`
    /// forgets them, for a test that starts with a new browser profile).
    image_ranges: Mutex<HashSet<(String, u64, u64)>>,
    /// Environments whose image files are served with wrong bytes (not the
    /// manifest), for tests of a failed load: `POST /__xtask/corrupt/<env>`
    /// turns it on, `DELETE` off.
    corrupt: Mutex<HashSet<String>>,
}

/// Serves until the process ends.
pub(crate) fn run(port: u16, site: PathBuf, images: Vec<(String, PathBuf)>) -> Result<()> {
    let server = start(port, site, images)?;
    println!(
        "Application Server: http://localhost:{}/application-server/",
        server.0
    );
    loop {
        std::thread::park();
    }
}

/// Starts serving on `port` (0 picks a free one) in background threads and
/// returns the port.
pub(crate) fn start(
    port: u16,
    site: PathBuf,
    images: Vec<(String, PathBuf)>,
) -> Result<(u16, Arc<Server>)> {
    let server = Arc::new(
        Server::http(("127.0.0.1", port))
            .map_err(|e| anyhow!("cannot listen on port {port}: {e}"))?,
    );
    let port = server
        .server_addr()
        .to_ip()
        .map(|a| a.port())
        .unwrap_or(port);
    let roots = Arc::new(Roots {
        site,
        images,
        image_bytes: AtomicU64::new(0),
        image_repeat_bytes: AtomicU64::new(0),
        image_ranges: Mutex::new(HashSet::new()),
        corrupt: Mutex::new(HashSet::new()),
    });
    for _ in 0..THREADS {
        let server = server.clone();
        let roots = roots.clone();
        std::thread::spawn(move || {
            for request in server.incoming_requests() {
                let _ = answer(&roots, request);
            }
        });
    }
    Ok((port, server))
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name, value).expect("header names and values here are ASCII")
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "wasm" => "application/wasm",
        "json" => "application/json",
        "css" => "text/css; charset=utf-8",
        "png" => "image/png",
        "svg" => "image/svg+xml",
        _ => "application/octet-stream",
    }
}

/// Maps a URL path onto a file, refusing anything that climbs out.
fn resolve(roots: &Roots, url_path: &str) -> Option<PathBuf> {
    let path = url_path.split('?').next().unwrap_or("");
    if path.split('/').any(|s| s == ".." || s.contains('\\')) {
        return None;
    }
    if let Some(rest) = path.strip_prefix("/images/") {
        let (env, file) = rest.split_once('/')?;
        let dir = &roots.images.iter().find(|(e, _)| e == env)?.1;
        return Some(dir.join(file)).filter(|p| p.is_file());
    }
    let mut file = roots.site.join(path.trim_start_matches('/'));
    if file.is_dir() {
        file = file.join("index.html");
    }
    Some(file).filter(|p| p.is_file())
}

fn answer(roots: &Roots, request: Request) -> std::io::Result<()> {
    if request.url() == "/__xtask/stats" && *request.method() == tiny_http::Method::Delete {
        // A test starts afresh: what went out before counts as never sent.
        roots
            .image_ranges
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        return request.respond(Response::empty(StatusCode(204)));
    }
    if request.url() == "/__xtask/stats" {
        let body = format!(
            "{{\"image_bytes\":{},\"image_repeat_bytes\":{}}}",
            roots.image_bytes.load(Ordering::Relaxed),
            roots.image_repeat_bytes.load(Ordering::Relaxed)
        );
        let response = Response::from_string(body)
            .with_header(header("Content-Type", "application/json"))
            .with_header(header("Cache-Control", "no-store"));
        return request.respond(response);
    }
    if let Some(env) = request.url().strip_prefix("/__xtask/corrupt/") {
        let env = env.to_owned();
        let mut corrupt = roots.corrupt.lock().unwrap_or_else(|e| e.into_inner());
        let status = match request.method() {
            tiny_http::Method::Post => {
                corrupt.insert(env);
                204
            }
            tiny_http::Method::Delete => {
                corrupt.remove(&env);
                204
            }
            _ => 405,
        };
        drop(corrupt);
        return request.respond(Response::empty(StatusCode(status)));
    }
    let Some(path) = resolve(roots, request.url()) else {
        let response = Response::from_string("not found\n").with_status_code(404);
        return request.respond(response);
    };
    if is_corrupted(roots, request.url()) {
        return respond_corrupted(request, &path);
    }
    let mut file = File::open(&path)?;
    let len = file.metadata()?.len();
    let range = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("range"))
        .map(|h| h.value.as_str().to_owned());
    let common = [
        header("Content-Type", content_type(&path)),
        header("Cache-Control", "no-cache"),
        header("Accept-Ranges", "bytes"),
    ];
    match range {
        Some(value) if len > 0 => {
            let Some((start, end)) = appserver_proto::chunks::parse_range(&value, len) else {
                let response = Response::empty(StatusCode(416))
                    .with_header(header("Content-Range", &format!("bytes */{len}")));
                return request.respond(response);
            };
            file.seek(SeekFrom::Start(start))?;
            let count = end - start + 1;
            count_image_bytes(roots, request.url(), start, end);
            let mut response = Response::new(
                StatusCode(206),
                common.to_vec(),
                file.take(count),
                Some(count as usize),
                None,
            );
            response.add_header(header(
                "Content-Range",
                &format!("bytes {start}-{end}/{len}"),
            ));
            request.respond(response)
        }
        _ => {
            count_image_bytes(roots, request.url(), 0, len.saturating_sub(1));
            let response = Response::new(
                StatusCode(200),
                common.to_vec(),
                file,
                Some(len as usize),
                None,
            );
            request.respond(response)
        }
    }
}

/// Counts bytes `start..=end` of `url` as sent, and as sent again when the
/// same file and range went out before.
fn count_image_bytes(roots: &Roots, url: &str, start: u64, end: u64) {
    if !url.starts_with("/images/") {
        return;
    }
    let count = end + 1 - start;
    roots.image_bytes.fetch_add(count, Ordering::Relaxed);
    let path = url.split('?').next().unwrap_or(url).to_owned();
    let mut sent = roots.image_ranges.lock().unwrap_or_else(|e| e.into_inner());
    if !sent.insert((path, start, end)) {
        roots.image_repeat_bytes.fetch_add(count, Ordering::Relaxed);
    }
}

/// True for an image file (not its manifest) of an environment that tests
/// asked to be served corrupted.
fn is_corrupted(roots: &Roots, url: &str) -> bool {
    let Some(rest) = url.strip_prefix("/images/") else {
        return false;
    };
    let Some((env, file)) = rest.split_once('/') else {
        return false;
    };
    let corrupt = roots.corrupt.lock().unwrap_or_else(|e| e.into_inner());
    corrupt.contains(env) && !file.starts_with("manifest.json")
}

/// Answers with as many bytes as the file has, all wrong, whatever range
/// was asked for: what a broken mirror or disk would send.
fn respond_corrupted(request: Request, path: &Path) -> std::io::Result<()> {
    let len = std::fs::metadata(path)?.len();
    let body = std::io::Read::take(std::io::repeat(0xA5), len);
    let headers = vec![
        header("Content-Type", content_type(path)),
        header("Cache-Control", "no-store"),
    ];
    request.respond(Response::new(
        StatusCode(200),
        headers,
        body,
        Some(len as usize),
        None,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_cannot_climb_out() {
        let roots = Roots {
            site: crate::root().join("web"),
            images: vec![],
            image_bytes: AtomicU64::new(0),
            image_repeat_bytes: AtomicU64::new(0),
            image_ranges: Mutex::new(HashSet::new()),
            corrupt: Mutex::new(HashSet::new()),
        };
        assert_eq!(resolve(&roots, "/../Cargo.toml"), None);
        assert_eq!(resolve(&roots, "/images/static/../x"), None);
        assert!(resolve(&roots, "/sw.js").is_some());
        assert!(resolve(&roots, "/application-server/").is_some());
    }
}
