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

/// The value of a `<textarea>`.
pub(crate) fn textarea_value(id: &str) -> String {
    by_id(id)
        .and_then(|e| e.dyn_into::<web_sys::HtmlTextAreaElement>().ok())
        .map(|t| t.value())
        .unwrap_or_default()
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
    let add = |parent: &Element, tag: &str, text: &str| -> Option<Element> {
        let el = doc.create_element(tag).ok()?;
        el.set_text_content(Some(text));
        parent.append_child(&el).ok()?;
        Some(el)
    };
    for app in apps {
        let Ok(item) = doc.create_element("li") else {
            continue;
        };
        let _ = item.set_attribute("data-app", &app.name);
        let _ = item.set_attribute("data-state", &app.state);
        let _ = item.set_attribute("data-kind", &app.kind);
        if let Some(dot) = add(&item, "i", "") {
            let _ = dot.set_attribute("class", "dot");
            let _ = dot.set_attribute("title", &app.state);
        }
        add(&item, "strong", &app.name);
        let url = format!("/app/{}/", app.name);
        if let Some(link) = add(&item, "a", &url) {
            let _ = link.set_attribute("href", &url);
            let _ = link.set_attribute("target", "_blank");
        }
        let mut facts = vec![if app.kind_label.is_empty() {
            "static site".to_string()
        } else {
            app.kind_label.clone()
        }];
        if app.state != "static" && !app.state.is_empty() {
            facts.push(app.state.clone());
        }
        if let Some(port) = app.port {
            facts.push(format!("port {port}"));
        }
        if let Some(kb) = app.rss_kb {
            facts.push(format!("{:.1} MiB", kb as f64 / 1024.0));
        }
        if app.restarts > 0 {
            facts.push(format!("{} restarts", app.restarts));
        }
        facts.push(format!("{} files, {} bytes", app.files, app.bytes));
        if let Some(meta) = add(&item, "span", &facts.join(" · ")) {
            let _ = meta.set_attribute("class", "facts");
        }
        if app.port.is_some() {
            let running = app.state == "running" || app.state == "starting";
            let buttons: &[(&str, &str)] = if running {
                &[("restart", "Restart"), ("stop", "Stop"), ("logs", "Logs")]
            } else {
                &[("start", "Start"), ("logs", "Logs")]
            };
            for (action, label) in buttons {
                if let Some(b) = add(&item, "button", label) {
                    let _ = b.set_attribute("type", "button");
                    let _ = b.set_attribute("class", "small");
                    let _ = b.set_attribute("data-action", action);
                    let _ = b.set_attribute("data-app", &app.name);
                }
            }
        }
        if let Some(error) = &app.error {
            if let Some(pre) = add(&item, "pre", error) {
                let _ = pre.set_attribute("class", "app-error");
            }
        }
        let _ = list.append_child(&item);
    }
    if apps.is_empty() {
        add(&list, "li", "No apps deployed yet.");
    }
}
