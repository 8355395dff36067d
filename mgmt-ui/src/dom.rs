//! Small helpers over the page's elements, found by id.

use vm_bridge::agent::AppInfo;
use wasm_bindgen::prelude::*;
use web_sys::{DataTransfer, DragEvent, Element, FileList, HtmlInputElement};

fn document() -> web_sys::Document {
    web_sys::window()
        .and_then(|w| w.document())
        .expect("the page has a document")
}

/// The element with `id`, if the page has one.
pub(crate) fn by_id(id: &str) -> Option<Element> {
    document().get_element_by_id(id)
}

/// Replaces an element's text.
pub(crate) fn set_text(id: &str, text: &str) {
    if let Some(el) = by_id(id) {
        el.set_text_content(Some(text));
    }
}

/// Sets `data-<key>` on an element.
pub(crate) fn set_data(id: &str, key: &str, value: &str) {
    if let Some(el) = by_id(id) {
        let _ = el.set_attribute(&format!("data-{key}"), value);
    }
}

/// Sets `document.body.dataset[key]`, which tests and the bench read.
pub(crate) fn set_body_data(key: &str, value: &str) {
    if let Some(body) = document().body() {
        let _ = body.dataset().set(key, value);
    }
}

/// Sets a `<progress>` element's value and maximum.
pub(crate) fn set_progress(id: &str, value: f64, max: f64) {
    if let Some(el) = by_id(id).and_then(|e| e.dyn_into::<web_sys::HtmlProgressElement>().ok()) {
        el.set_max(max);
        el.set_value(value);
    }
}

/// Enables or disables a button or input.
pub(crate) fn set_disabled(id: &str, disabled: bool) {
    if let Some(el) = by_id(id) {
        if disabled {
            let _ = el.set_attribute("disabled", "");
        } else {
            let _ = el.remove_attribute("disabled");
        }
    }
}

/// The value of an `<input>`.
pub(crate) fn input_value(id: &str) -> String {
    by_id(id)
        .and_then(|e| e.dyn_into::<HtmlInputElement>().ok())
        .map(|i| i.value())
        .unwrap_or_default()
}

fn listen<E: JsCast + 'static>(id: &str, event: &str, mut handler: impl FnMut(E) + 'static) {
    let Some(el) = by_id(id) else { return };
    let closure = Closure::<dyn FnMut(JsValue)>::new(move |e: JsValue| handler(e.unchecked_into()));
    let _ = el.add_event_listener_with_callback(event, closure.as_ref().unchecked_ref());
    // The page lives as long as its elements: the listener is never removed.
    closure.forget();
}

/// Calls `handler` when the element is clicked.
pub(crate) fn on_click(id: &str, mut handler: impl FnMut() + 'static) {
    listen::<web_sys::Event>(id, "click", move |_| handler());
}

/// Calls `handler` with the input's value as the user types.
pub(crate) fn on_input(id: &str, handler: impl Fn(String) + 'static) {
    let owner = id.to_owned();
    listen::<web_sys::Event>(id, "input", move |_| handler(input_value(&owner)));
}

/// Calls `handler` with the files picked in a file input.
pub(crate) fn on_files_picked(id: &str, handler: impl Fn(FileList) + 'static) {
    let owner = id.to_owned();
    listen::<web_sys::Event>(id, "change", move |_| {
        let files = by_id(&owner)
            .and_then(|e| e.dyn_into::<HtmlInputElement>().ok())
            .and_then(|i| i.files());
        if let Some(files) = files {
            handler(files);
        }
    });
}

/// Makes an element a drop zone and calls `handler` with what is dropped.
pub(crate) fn on_drop(id: &str, handler: impl Fn(DataTransfer) + 'static) {
    let owner = id.to_owned();
    listen::<DragEvent>(id, "dragover", move |e| {
        e.prevent_default();
        set_data(&owner, "over", "true");
    });
    let owner = id.to_owned();
    listen::<DragEvent>(id, "dragleave", move |_| set_data(&owner, "over", "false"));
    let owner = id.to_owned();
    listen::<DragEvent>(id, "drop", move |e| {
        e.prevent_default();
        set_data(&owner, "over", "false");
        if let Some(transfer) = e.data_transfer() {
            handler(transfer);
        }
    });
}

fn local_storage() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok()?
}

/// Reads a localStorage entry.
pub(crate) fn local_storage_get(key: &str) -> Option<String> {
    local_storage()?.get_item(key).ok()?
}

/// Writes a localStorage entry.
pub(crate) fn local_storage_set(key: &str, value: &str) {
    if let Some(storage) = local_storage() {
        let _ = storage.set_item(key, value);
    }
}

/// Asks the browser not to evict this origin's storage; true when granted.
pub(crate) async fn request_persistent_storage() -> bool {
    let Some(window) = web_sys::window() else {
        return false;
    };
    let Ok(promise) = window.navigator().storage().persist() else {
        return false;
    };
    wasm_bindgen_futures::JsFuture::from(promise)
        .await
        .ok()
        .and_then(|v| v.as_bool())
        .unwrap_or(false)
}

/// What this origin stores, as the browser estimates it.
pub(crate) struct StorageUse {
    /// Bytes used in all.
    pub(crate) usage: f64,
    /// Bytes the browser would allow.
    pub(crate) quota: f64,
    /// Bytes in the Cache API (the image files), where the browser says.
    pub(crate) caches: Option<f64>,
    /// Bytes in IndexedDB (saved VM states and app archives), likewise.
    pub(crate) indexed_db: Option<f64>,
}

/// Bytes used and available for this origin, as the browser estimates them.
pub(crate) async fn storage_estimate() -> Option<StorageUse> {
    let promise = web_sys::window()?.navigator().storage().estimate().ok()?;
    let estimate = wasm_bindgen_futures::JsFuture::from(promise).await.ok()?;
    let get = |o: &JsValue, k: &str| js_sys::Reflect::get(o, &k.into()).ok()?.as_f64();
    // `usageDetails` is Chromium's breakdown; other browsers give totals only.
    let details = js_sys::Reflect::get(&estimate, &"usageDetails".into()).unwrap_or_default();
    Some(StorageUse {
        usage: get(&estimate, "usage")?,
        quota: get(&estimate, "quota")?,
        caches: get(&details, "caches"),
        indexed_db: get(&details, "indexedDB"),
    })
}

/// Renders the app list as links with their sizes.
pub(crate) fn render_apps(apps: &[AppInfo]) {
    let Some(list) = by_id("apps") else { return };
    list.set_text_content(None);
    let doc = document();
    for app in apps {
        let (Ok(item), Ok(link)) = (doc.create_element("li"), doc.create_element("a")) else {
            continue;
        };
        let url = format!("/app/{}/", app.name);
        let _ = link.set_attribute("href", &url);
        let _ = link.set_attribute("target", "_blank");
        link.set_text_content(Some(&url));
        let _ = item.set_attribute("data-app", &app.name);
        let label = doc.create_element("strong").ok();
        if let Some(label) = &label {
            label.set_text_content(Some(&app.name));
            let _ = item.append_child(label);
        }
        let _ = item.append_child(&link);
        let meta = doc.create_element("span").ok();
        if let Some(meta) = &meta {
            meta.set_text_content(Some(&format!("{} files, {} bytes", app.files, app.bytes)));
            let _ = item.append_child(meta);
        }
        let _ = list.append_child(&item);
    }
    if apps.is_empty() {
        if let Ok(item) = doc.create_element("li") {
            item.set_text_content(Some("No apps deployed yet."));
            let _ = list.append_child(&item);
        }
    }
}
