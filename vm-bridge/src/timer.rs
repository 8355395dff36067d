//! Timers for the page, built on the global `setTimeout`.

use futures::FutureExt;
use std::future::Future;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_name = setTimeout)]
    fn set_timeout(callback: &js_sys::Function, ms: i32) -> JsValue;
}

/// Resolves after `ms` milliseconds.
pub async fn sleep(ms: u32) {
    let promise = js_sys::Promise::new(&mut |resolve, _reject| {
        set_timeout(&resolve, ms as i32);
    });
    let _ = JsFuture::from(promise).await;
}

/// Runs `future` for at most `ms` milliseconds; `None` when time ran out.
pub async fn timeout<T>(ms: u32, future: impl Future<Output = T>) -> Option<T> {
    futures::select! {
        value = future.fuse() => Some(value),
        _ = sleep(ms).fuse() => None,
    }
}

/// Milliseconds since the page started, for measurements.
pub fn now_ms() -> f64 {
    js_sys::Reflect::get(&js_sys::global(), &"performance".into())
        .ok()
        .and_then(|p| js_sys::Reflect::get(&p, &"now".into()).ok().map(|f| (p, f)))
        .and_then(|(p, f)| f.dyn_into::<js_sys::Function>().ok()?.call0(&p).ok())
        .and_then(|v| v.as_f64())
        .unwrap_or(0.0)
}
