//! The service worker: decides which fetches belong to apps and answers them
//! through the page bridge.
//!
//! `web/sw.js` loads this module once at top level and hands every `fetch`
//! and `message` event to the functions exported here. The worker keeps no
//! state that matters across restarts: when the browser stops and restarts
//! it, the next app request asks the open pages for a new bridge port.
//! It also serves environment image files from a verified cache, and hands
//! the deploy API (`/application-server/api/`) to the page that runs the VM.

mod body;
mod bridge;
mod images;
mod log;
mod pages;
mod timer;

use appserver_proto::api::API_PREFIX;
use appserver_proto::route::RouteTable;
use std::cell::OnceCell;
use wasm_bindgen::prelude::*;

thread_local! {
    static ROUTES: OnceCell<RouteTable> = const { OnceCell::new() };
}

fn with_routes<R>(f: impl FnOnce(&RouteTable) -> R) -> R {
    ROUTES.with(|cell| f(cell.get_or_init(RouteTable::new)))
}

/// Sets up panic reporting; called once by the bootstrap after instantiation.
#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
}

/// True when the worker should answer a fetch of `url` itself. Must be cheap
/// and synchronous: the bootstrap calls it before `respondWith`.
#[wasm_bindgen]
pub fn wants(url: &str) -> bool {
    let Ok(parsed) = web_sys::Url::new(url) else {
        return false;
    };
    let origin = js_sys::global()
        .unchecked_into::<web_sys::ServiceWorkerGlobalScope>()
        .location()
        .origin();
    let path = parsed.pathname();
    parsed.origin() == origin
        && (images::image_path(&path).is_some()
            || is_api(&path)
            || with_routes(|t| t.classify(&path).is_some()))
}

/// True for the deploy API's paths.
fn is_api(path: &str) -> bool {
    path.strip_prefix(API_PREFIX)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Answers an app request. Always resolves to a `Response`: failures become
/// error pages with the status decided in [`pages`].
#[wasm_bindgen]
pub async fn handle_fetch(request: web_sys::Request) -> web_sys::Response {
    let path = web_sys::Url::new(&request.url())
        .map(|u| u.pathname())
        .unwrap_or_default();
    if let Some((env, file)) = images::image_path(&path) {
        return images::handle(request, env, file).await;
    }
    if is_api(&path) {
        return match bridge::forward_api(request).await {
            Ok(response) => response,
            Err(failure) => failure.into_json_response(),
        };
    }
    match bridge::forward(request).await {
        Ok(response) => response,
        Err(failure) => failure.into_response(),
    }
}

/// Handles a message posted to the worker: a page offering its bridge port.
#[wasm_bindgen]
pub fn on_message(event: web_sys::ExtendableMessageEvent) {
    bridge::on_message(event);
}
