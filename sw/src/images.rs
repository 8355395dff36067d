//! Environment image files through the worker: each byte is fetched once,
//! checked against the manifest's SHA-256, and kept in the Cache API, so
//! later visits start offline and a corrupt or partial entry is fetched
//! again instead of booted.
//!
//! The disk image is read by v86 in small HTTP ranges; the worker serves
//! them from 256 KiB chunks, each verified against `disk.chunks` (the
//! chunks' hashes, itself verified by the manifest). Other files are cached
//! whole. Only URLs carrying the manifest's version (`?v=`) are cached, so
//! two builds never mix.

use crate::log;
use appserver_proto::chunks::{chunk_bounds, chunks_for, parse_range};
use futures::future::{LocalBoxFuture, Shared};
use futures::FutureExt;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{Cache, Request, RequestInit, Response, ResponseInit};

/// The Cache API cache that holds image files.
const CACHE_NAME: &str = "appserver-images";

#[derive(Debug, Clone, Deserialize)]
struct FileEntry {
    path: String,
    size: u64,
    sha256: String,
}

#[derive(Debug, Clone, Deserialize)]
struct Manifest {
    version: String,
    files: BTreeMap<String, FileEntry>,
    #[serde(default)]
    state: Option<FileEntry>,
    #[serde(default)]
    chunks: Option<FileEntry>,
}

impl Manifest {
    fn entry(&self, file: &str) -> Option<&FileEntry> {
        self.files
            .values()
            .chain(self.state.iter())
            .chain(self.chunks.iter())
            .find(|e| e.path == file)
    }
}

thread_local! {
    /// Manifests by environment, as last read.
    static MANIFESTS: RefCell<HashMap<String, Rc<Manifest>>> = RefCell::new(HashMap::new());
    /// Disk chunk hashes by image version.
    static CHUNK_HASHES: RefCell<HashMap<String, Rc<Vec<[u8; 32]>>>> =
        RefCell::new(HashMap::new());
    /// Files and chunks being read now, by cache key, so that requests for
    /// the same one at once share a single download.
    static IN_FLIGHT: RefCell<HashMap<String, Read>> = RefCell::new(HashMap::new());
}

/// One read of a file or chunk that several requests can wait on.
type Read = Shared<LocalBoxFuture<'static, Result<Rc<Vec<u8>>, String>>>;

/// The environment and file of an image URL path (`/images/<env>/<file>`).
pub(crate) fn image_path(path: &str) -> Option<(String, String)> {
    let rest = path.strip_prefix("/images/")?;
    let (env, file) = rest.split_once('/')?;
    let valid = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    };
    (valid(env) && valid(file) && file != ".." && env != "..")
        .then(|| (env.to_owned(), file.to_owned()))
}

fn failure(status: u16, message: &str) -> Response {
    let init = ResponseInit::new();
    init.set_status(status);
    Response::new_with_opt_str_and_init(Some(message), &init).expect("a plain response")
}

fn scope() -> web_sys::ServiceWorkerGlobalScope {
    js_sys::global().unchecked_into()
}

async fn open_cache() -> Result<Cache, JsValue> {
    let caches = scope().caches()?;
    Ok(JsFuture::from(caches.open(CACHE_NAME))
        .await?
        .unchecked_into())
}

async fn cached_bytes(cache: &Cache, key: &str) -> Option<Vec<u8>> {
    let found = JsFuture::from(cache.match_with_str(key)).await.ok()?;
    let response: Response = found.dyn_into().ok()?;
    let buffer = JsFuture::from(response.array_buffer().ok()?).await.ok()?;
    Some(js_sys::Uint8Array::new(&buffer).to_vec())
}

async fn put_bytes(cache: &Cache, key: &str, bytes: &[u8]) {
    let body = js_sys::Uint8Array::from(bytes);
    if let Ok(response) = Response::new_with_opt_buffer_source(Some(&body)) {
        // A failed put (quota) only costs a later refetch.
        let _ = JsFuture::from(cache.put_with_str(key, &response)).await;
    }
}

async fn network_bytes(url: &str, range: Option<(u64, u64)>) -> Result<Vec<u8>, String> {
    let init = RequestInit::new();
    init.set_cache(web_sys::RequestCache::NoStore);
    let request = Request::new_with_str_and_init(url, &init).map_err(|e| format!("{e:?}"))?;
    if let Some((start, end)) = range {
        let _ = request
            .headers()
            .set("range", &format!("bytes={start}-{end}"));
    }
    let response: Response = JsFuture::from(scope().fetch_with_request(&request))
        .await
        .map_err(|e| format!("fetching {url} failed: {e:?}"))?
        .unchecked_into();
    let wanted = if range.is_some() { 206 } else { 200 };
    if response.status() != wanted {
        return Err(format!(
            "{url} answered {} (wanted {wanted})",
            response.status()
        ));
    }
    let buffer = JsFuture::from(response.array_buffer().map_err(|e| format!("{e:?}"))?)
        .await
        .map_err(|e| format!("reading {url} failed: {e:?}"))?;
    Ok(js_sys::Uint8Array::new(&buffer).to_vec())
}

/// Bytes from the cache when they hash to `sha256`, else from the network
/// (checked, then cached). v86 reads neighbouring blocks at once: a second
/// request for a chunk that is still being fetched waits for that fetch
/// instead of downloading the chunk again.
async fn verified(
    cache: &Cache,
    key: &str,
    url: &str,
    range: Option<(u64, u64)>,
    sha256: &[u8],
) -> Result<Rc<Vec<u8>>, String> {
    let read = IN_FLIGHT.with(|m| m.borrow().get(key).cloned());
    let read = match read {
        Some(read) => read,
        None => {
            let (cache, owned_key, url, sha) = (
                cache.clone(),
                key.to_owned(),
                url.to_owned(),
                sha256.to_vec(),
            );
            let read = async move {
                read_verified(&cache, &owned_key, &url, range, &sha)
                    .await
                    .map(Rc::new)
            }
            .boxed_local()
            .shared();
            IN_FLIGHT.with(|m| m.borrow_mut().insert(key.to_owned(), read.clone()));
            read
        }
    };
    let result = read.await;
    IN_FLIGHT.with(|m| m.borrow_mut().remove(key));
    result
}

async fn read_verified(
    cache: &Cache,
    key: &str,
    url: &str,
    range: Option<(u64, u64)>,
    sha256: &[u8],
) -> Result<Vec<u8>, String> {
    if let Some(bytes) = cached_bytes(cache, key).await {
        if Sha256::digest(&bytes)[..] == *sha256 {
            return Ok(bytes);
        }
        log::warn(&format!("cached {key} is corrupt; refetching"));
    }
    let bytes = network_bytes(url, range).await?;
    if Sha256::digest(&bytes)[..] != *sha256 {
        return Err(format!("{url} does not match its SHA-256 in the manifest"));
    }
    put_bytes(cache, key, &bytes).await;
    Ok(bytes)
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The manifest of `env`: from the network when reachable (and then cached),
/// else the cached copy, so a cached environment starts offline.
async fn manifest(
    cache: &Cache,
    env: &str,
    fresh: bool,
) -> Result<(Rc<Manifest>, Vec<u8>), String> {
    let key = format!("/images/{env}/manifest.json");
    if !fresh {
        if let Some(m) = MANIFESTS.with(|m| m.borrow().get(env).cloned()) {
            return Ok((m, Vec::new()));
        }
    }
    let bytes = match network_bytes(&key, None).await {
        Ok(bytes) => {
            put_bytes(cache, &key, &bytes).await;
            bytes
        }
        Err(e) => cached_bytes(cache, &key).await.ok_or(e)?,
    };
    let parsed: Manifest =
        serde_json::from_slice(&bytes).map_err(|e| format!("{key} is not a manifest: {e}"))?;
    let parsed = Rc::new(parsed);
    MANIFESTS.with(|m| m.borrow_mut().insert(env.to_owned(), parsed.clone()));
    Ok((parsed, bytes))
}

/// Answers a request for an image file.
pub(crate) async fn handle(request: Request, env: String, file: String) -> Response {
    match serve(&request, &env, &file).await {
        Ok(response) => response,
        Err(e) => {
            log::error(&e);
            failure(502, &e)
        }
    }
}

async fn serve(request: &Request, env: &str, file: &str) -> Result<Response, String> {
    let cache = open_cache()
        .await
        .map_err(|e| format!("Cache API unavailable: {e:?}"))?;
    if file == "manifest.json" {
        let (_, bytes) = manifest(&cache, env, true).await?;
        return Ok(bytes_response(&bytes, 200, None));
    }
    let url = web_sys::Url::new(&request.url()).map_err(|_| "bad URL".to_owned())?;
    let version = url.search_params().get("v");
    let (manifest, _) = manifest(&cache, env, false).await?;
    let range_header = request.headers().get("range").ok().flatten();
    let cacheable = version.as_deref() == Some(&manifest.version)
        && (range_header.is_none() || manifest.chunks.is_some());
    let Some(entry) = manifest.entry(file).filter(|_| cacheable) else {
        // Not a file of the current build (or a range of an image without
        // chunk hashes): pass it through uncached.
        return JsFuture::from(scope().fetch_with_request(request))
            .await
            .map(|r| r.unchecked_into())
            .map_err(|e| format!("{e:?}"));
    };
    let source = format!("/images/{env}/{file}?v={}", manifest.version);
    if let (Some(range), Some(chunks)) = (range_header, &manifest.chunks) {
        let (start, end) = parse_range(&range, entry.size)
            .ok_or_else(|| format!("unsatisfiable range {range} of {file}"))?;
        let hashes = chunk_hashes(&cache, env, &manifest, chunks).await?;
        let mut body = Vec::with_capacity((end - start + 1) as usize);
        for index in chunks_for(start, end) {
            let hash = hashes
                .get(index as usize)
                .ok_or("range past the last chunk")?;
            let bounds = chunk_bounds(index, entry.size);
            let key = format!("/images/{env}/{}/{file}/{index}", manifest.version);
            let chunk = verified(&cache, &key, &source, Some(bounds), hash).await?;
            let from = start.max(bounds.0) - bounds.0;
            let to = end.min(bounds.1) - bounds.0;
            body.extend_from_slice(&chunk[from as usize..=to as usize]);
        }
        let content_range = format!("bytes {start}-{end}/{}", entry.size);
        return Ok(bytes_response(&body, 206, Some(&content_range)));
    }
    let sha = decode_hex(&entry.sha256).ok_or("bad hash in manifest")?;
    let key = format!("/images/{env}/{}/{file}", manifest.version);
    let bytes = verified(&cache, &key, &source, None, &sha).await?;
    Ok(bytes_response(&bytes, 200, None))
}

async fn chunk_hashes(
    cache: &Cache,
    env: &str,
    manifest: &Manifest,
    chunks: &FileEntry,
) -> Result<Rc<Vec<[u8; 32]>>, String> {
    if let Some(h) = CHUNK_HASHES.with(|c| c.borrow().get(&manifest.version).cloned()) {
        return Ok(h);
    }
    let sha = decode_hex(&chunks.sha256).ok_or("bad hash in manifest")?;
    let key = format!("/images/{env}/{}/{}", manifest.version, chunks.path);
    let url = format!("/images/{env}/{}?v={}", chunks.path, manifest.version);
    let bytes = verified(cache, &key, &url, None, &sha).await?;
    let hashes: Vec<[u8; 32]> = bytes
        .chunks_exact(32)
        .map(|c| c.try_into().expect("chunks_exact yields 32 bytes"))
        .collect();
    let hashes = Rc::new(hashes);
    CHUNK_HASHES.with(|c| {
        c.borrow_mut()
            .insert(manifest.version.clone(), hashes.clone())
    });
    Ok(hashes)
}

fn bytes_response(bytes: &[u8], status: u16, content_range: Option<&str>) -> Response {
    let headers = web_sys::Headers::new().expect("Headers constructor");
    let _ = headers.set("content-type", "application/octet-stream");
    let _ = headers.set("content-length", &bytes.len().to_string());
    let _ = headers.set("x-appserver-cache", "verified");
    if let Some(range) = content_range {
        let _ = headers.set("content-range", range);
    }
    let init = ResponseInit::new();
    init.set_status(status);
    init.set_headers(&headers);
    let body = js_sys::Uint8Array::from(bytes);
    Response::new_with_opt_buffer_source_and_init(Some(&body), &init).expect("a byte response")
}
