//! Small helpers over the page's elements, found by id.

use wasm_bindgen::prelude::*;
use web_sys::{DataTransfer, DragEvent, Element, FileList, HtmlInputElement};

pub(crate) fn document() -> web_sys::Document {
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

/// Reloads the page.
pub(crate) fn reload() {
    if let Some(w) = web_sys::window() {
        let _ = w.location().reload();
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

fn listen<E: JsCast + 'static>(id: &str, event: &str, handler: impl FnMut(E) + 'static) {
    if let Some(el) = by_id(id) {
        listen_on(&el, event, handler);
    }
}

/// Calls `handler` on every `event` at `el`, for as long as the page lives.
pub(crate) fn listen_on<E: JsCast + 'static>(
    el: &web_sys::EventTarget,
    event: &str,
    mut handler: impl FnMut(E) + 'static,
) {
    let closure = Closure::<dyn FnMut(JsValue)>::new(move |e: JsValue| handler(e.unchecked_into()));
    let _ = el.add_event_listener_with_callback(event, closure.as_ref().unchecked_ref());
    // The page lives as long as its elements: the listener is never removed.
    closure.forget();
}

/// Calls `handler` when the element is clicked.
pub(crate) fn on_click(id: &str, mut handler: impl FnMut() + 'static) {
    listen::<web_sys::Event>(id, "click", move |_| handler());
}

/// Calls `handler(action, app)` when a `<button data-action=.. data-app=..>`
/// inside the element is clicked (one listener for a list that is redrawn).
pub(crate) fn on_list_action(id: &str, handler: impl Fn(String, String) + 'static) {
    listen::<web_sys::Event>(id, "click", move |event| {
        let button = event
            .target()
            .and_then(|t| t.dyn_into::<Element>().ok())
            .and_then(|t| t.closest("button[data-action]").ok().flatten());
        if let Some(button) = button {
            let action = button.get_attribute("data-action").unwrap_or_default();
            let app = button.get_attribute("data-app").unwrap_or_default();
            handler(action, app);
        }
    });
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

/// Creates a `<tag>` with `text`, appended to `parent`.
pub(crate) fn add(parent: &Element, tag: &str, text: &str) -> Element {
    let el = document()
        .create_element(tag)
        .expect("creating an element with a fixed tag name");
    if !text.is_empty() {
        el.set_text_content(Some(text));
    }
    let _ = parent.append_child(&el);
    el
}

/// Sets attributes on an element; returns it for chaining.
pub(crate) fn attrs(el: Element, attrs: &[(&str, &str)]) -> Element {
    for (k, v) in attrs {
        let _ = el.set_attribute(k, v);
    }
    el
}

/// Removes every child of the element with `id`, and returns the element.
pub(crate) fn clear(id: &str) -> Option<Element> {
    let el = by_id(id)?;
    el.set_text_content(None);
    Some(el)
}

/// Shows or hides an element (the `hidden` attribute).
pub(crate) fn set_hidden(id: &str, hidden: bool) {
    if let Some(el) = by_id(id).and_then(|e| e.dyn_into::<web_sys::HtmlElement>().ok()) {
        el.set_hidden(hidden);
    }
}

fn dialog(id: &str) -> Option<web_sys::HtmlDialogElement> {
    by_id(id)?.dyn_into().ok()
}

/// Opens a `<dialog>` as a modal, unless it is open already.
pub(crate) fn open_dialog(id: &str) {
    if let Some(d) = dialog(id) {
        if !d.open() {
            let _ = d.show_modal();
        }
    }
}

/// Closes a `<dialog>`.
pub(crate) fn close_dialog(id: &str) {
    if let Some(d) = dialog(id) {
        d.close();
    }
}

/// True while a `<dialog>` is open.
pub(crate) fn dialog_open(id: &str) -> bool {
    dialog(id).is_some_and(|d| d.open())
}

/// Sets an `<input>`'s value.
pub(crate) fn set_input_value(id: &str, value: &str) {
    if let Some(input) = by_id(id).and_then(|e| e.dyn_into::<HtmlInputElement>().ok()) {
        input.set_value(value);
    }
}

/// True when the checkbox `id` is checked.
pub(crate) fn checked(id: &str) -> bool {
    by_id(id)
        .and_then(|e| e.dyn_into::<HtmlInputElement>().ok())
        .is_some_and(|i| i.checked())
}

/// Removes a localStorage entry.
pub(crate) fn local_storage_remove(key: &str) {
    if let Some(storage) = local_storage() {
        let _ = storage.remove_item(key);
    }
}

/// The page's origin, e.g. `http://localhost:8080`.
pub(crate) fn origin() -> String {
    web_sys::window()
        .and_then(|w| w.location().origin().ok())
        .unwrap_or_default()
}

/// Scrolls a scrollable element to its end.
pub(crate) fn scroll_to_end(id: &str) {
    if let Some(el) = by_id(id) {
        el.set_scroll_top(el.scroll_height());
    }
}

/// Copies `text` to the clipboard; false when the browser refused.
pub(crate) async fn copy_text(text: &str) -> bool {
    let Some(window) = web_sys::window() else {
        return false;
    };
    let promise = window.navigator().clipboard().write_text(text);
    wasm_bindgen_futures::JsFuture::from(promise).await.is_ok()
}

/// Deletes a Cache API cache by name; true when one was deleted.
pub(crate) async fn delete_cache(name: &str) -> bool {
    let Some(caches) = web_sys::window().and_then(|w| w.caches().ok()) else {
        return false;
    };
    wasm_bindgen_futures::JsFuture::from(caches.delete(name))
        .await
        .ok()
        .and_then(|v| v.as_bool())
        .unwrap_or(false)
}

/// True when the Cache API cache `name` holds an entry for `key`.
pub(crate) async fn cache_has(name: &str, key: &str) -> bool {
    let Some(caches) = web_sys::window().and_then(|w| w.caches().ok()) else {
        return false;
    };
    let Ok(cache) = wasm_bindgen_futures::JsFuture::from(caches.open(name)).await else {
        return false;
    };
    let cache: web_sys::Cache = cache.unchecked_into();
    wasm_bindgen_futures::JsFuture::from(cache.match_with_str(key))
        .await
        .is_ok_and(|v| !v.is_undefined())
}
