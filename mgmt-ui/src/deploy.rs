//! The deploy dialog: a name checked as it is typed, the app's files from a
//! folder, a ZIP file or a ZIP URL, what the files are (type, entry point,
//! start command, port), environment variables, whether the loaded
//! environment can run it, and the deploy itself.

use crate::dom::{self, add, attrs, set_text};
use crate::upload::Upload;
use crate::{catalog, Page};
use appserver_proto::detect::{Detected, Environment as EnvKind};
use appserver_proto::names::validate_app_name;
use appserver_proto::progress::format_bytes;
use std::rc::Rc;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::spawn_local;

/// Opens the dialog, with the folder source and the previous outcome cleared.
pub(crate) fn open(page: &Page) {
    if !dom::dialog_open("deploy-dialog") {
        select_source("folder");
        report("", "");
        dom::set_hidden("deploy-open-app", true);
        if dom::by_id("env-rows").is_some_and(|r| r.child_element_count() == 0) {
            add_env_row("", "");
        }
        show_compat(page);
    }
    dom::open_dialog("deploy-dialog");
}

pub(crate) fn wire(page: &Rc<Page>) {
    for id in ["open-deploy", "open-deploy-2"] {
        let page = page.clone();
        dom::on_click(id, move || open(&page));
    }
    dom::on_click("deploy-cancel", || dom::close_dialog("deploy-dialog"));
    {
        let page = page.clone();
        dom::on_input("app-name", move |value| show_name(&page, &value));
    }
    if let Some(tabs) = dom::by_id("source-tabs") {
        dom::listen_on::<web_sys::Event>(&tabs, "click", |event| {
            let source = event
                .target()
                .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
                .and_then(|t| t.get_attribute("data-source"));
            if let Some(source) = source {
                select_source(&source);
            }
        });
    }
    {
        let page = page.clone();
        dom::on_files_picked("folder-input", move |files| {
            picked(&page, Upload::from_file_list(&files));
        });
    }
    {
        let page = page.clone();
        dom::on_drop("drop-zone", move |transfer| {
            let page = page.clone();
            spawn_local(async move {
                set_text("picked", "Reading the dropped folder…");
                match Upload::from_drop(&transfer).await {
                    Ok(upload) => picked(&page, upload),
                    Err(e) => pick_failed(&page, &e),
                }
            });
        });
    }
    {
        let page = page.clone();
        dom::on_files_picked("zip-input", move |files| {
            let Some(file) = files.get(0) else { return };
            let page = page.clone();
            spawn_local(async move {
                set_text("picked", &format!("Unpacking {}…", file.name()));
                match crate::upload::from_zip_file(&file).await {
                    Ok(upload) => picked(&page, upload),
                    Err(e) => pick_failed(&page, &e),
                }
            });
        });
    }
    {
        let page = page.clone();
        dom::on_click("zip-url-fetch", move || {
            let url = dom::input_value("zip-url");
            let page = page.clone();
            spawn_local(async move {
                set_text("picked", &format!("Fetching {url}…"));
                match crate::upload::from_zip_url(&url).await {
                    Ok(upload) => picked(&page, upload),
                    Err(e) => pick_failed(&page, &e),
                }
            });
        });
    }
    dom::on_click("env-add", || add_env_row("", ""));
    if let Some(rows) = dom::by_id("env-rows") {
        dom::listen_on::<web_sys::Event>(&rows, "click", |event| {
            let button = event
                .target()
                .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
                .filter(|t| t.has_attribute("data-remove-env"));
            if let Some(row) = button.and_then(|b| b.parent_element()) {
                row.remove();
            }
        });
    }
    {
        let page = page.clone();
        dom::on_click("compat-switch", move || {
            let target = dom::by_id("compat-switch").and_then(|b| b.get_attribute("data-env"));
            if let Some(env) = target.as_deref().and_then(catalog::find) {
                dom::close_dialog("deploy-dialog");
                crate::ask_switch(&page, env);
            }
        });
    }
    let page = page.clone();
    dom::on_click("deploy-button", move || {
        let page = page.clone();
        spawn_local(async move { deploy(&page).await });
    });
}

fn select_source(source: &str) {
    dom::set_data("deploy-dialog", "source", source);
    if let Ok(tabs) = dom::document().query_selector_all("#source-tabs button") {
        for i in 0..tabs.length() {
            if let Some(tab) = tabs
                .item(i)
                .and_then(|n| n.dyn_into::<web_sys::Element>().ok())
            {
                let selected = tab.get_attribute("data-source").as_deref() == Some(source);
                let _ = tab.set_attribute("aria-selected", if selected { "true" } else { "false" });
            }
        }
    }
}

/// Checks the name as it is typed and shows the app's URL.
fn show_name(page: &Page, name: &str) {
    let (valid, hint) = match validate_app_name(name) {
        Ok(()) => {
            let exists = page.bridge.apps().iter().any(|a| a == name);
            let url = format!("{}/app/{name}/", dom::origin());
            let note = if exists {
                format!("Will replace the deployed app {name} at {url}")
            } else {
                format!("Will be served at {url}")
            };
            (true, note)
        }
        Err(e) => (false, e.to_string()),
    };
    set_text("name-hint", &hint);
    dom::set_data("name-hint", "valid", if valid { "true" } else { "false" });
    if let Some(input) = dom::by_id("app-name") {
        let _ = input.set_attribute(
            "aria-invalid",
            if valid || name.is_empty() {
                "false"
            } else {
                "true"
            },
        );
    }
}

/// Takes `upload` as the files to deploy and shows what they are.
/// Files that could not be read or unpacked: nothing stays picked, so a
/// deploy cannot take the previous pick by mistake.
fn pick_failed(page: &Page, message: &str) {
    *page.upload.borrow_mut() = None;
    *page.detected.borrow_mut() = None;
    set_text("picked", message);
    dom::set_data("picked", "state", "error");
    set_text("detected-summary", "Nothing to deploy yet.");
    dom::set_input_value("app-entry", "");
    dom::set_input_value("app-command", "");
    dom::set_data("detected", "kind", "");
    show_compat(page);
}

fn picked(page: &Rc<Page>, upload: Upload) {
    set_text("picked", &upload.summary());
    dom::set_data("picked", "state", "ok");
    *page.upload.borrow_mut() = Some(upload.clone());
    *page.detected.borrow_mut() = None;
    let page = page.clone();
    spawn_local(async move {
        let detected = upload.detect().await;
        match &detected {
            Ok(d) => {
                set_text(
                    "detected-summary",
                    &format!("{} ({}).", d.kind.label(), d.reason),
                );
                dom::set_input_value("app-entry", &d.entry);
                dom::set_input_value("app-command", &d.command);
                dom::set_data("detected", "kind", d.kind.id());
            }
            Err(e) => {
                set_text(
                    "detected-summary",
                    &format!("Cannot start these files: {e}"),
                );
                dom::set_input_value("app-entry", "");
                dom::set_input_value("app-command", "");
                dom::set_data("detected", "kind", "");
            }
        }
        *page.detected.borrow_mut() = detected.ok();
        show_compat(&page);
    });
}

/// Says whether the loaded environment runs the detected app, and offers
/// the one that does when it does not.
fn show_compat(page: &Page) {
    let detected = page.detected.borrow().clone();
    let current = page.bridge.environment().map(|(id, _)| id);
    let Some((detected, current)) = detected.zip(current) else {
        set_text("compat", "");
        dom::set_data("detected", "fit", "");
        dom::set_hidden("compat-switch", true);
        return;
    };
    let needs = detected.kind.environment();
    let fits = EnvKind::from_id(&current).is_some_and(|env| env.can_run(detected.kind));
    let name = |id: &str| catalog::find(id).map_or(id.to_owned(), |e| e.name.to_owned());
    if fits {
        set_text(
            "compat",
            &format!("Runs in the loaded {} environment.", name(&current)),
        );
        dom::set_hidden("compat-switch", true);
    } else {
        set_text(
            "compat",
            &format!(
                "The loaded {} environment cannot run a {}: it needs {}.",
                name(&current),
                detected.kind.label(),
                name(needs.id())
            ),
        );
        if let Some(button) = dom::by_id("compat-switch") {
            let _ = button.set_attribute("data-env", needs.id());
            button.set_text_content(Some(&format!("Switch to {}", name(needs.id()))));
        }
        dom::set_hidden("compat-switch", catalog::find(needs.id()).is_none());
    }
    dom::set_data("detected", "fit", if fits { "yes" } else { "no" });
}

/// Adds a row of two inputs (name, value) and a remove button.
pub(crate) fn add_env_row(key: &str, value: &str) {
    let Some(rows) = dom::by_id("env-rows") else {
        return;
    };
    let row = attrs(add(&rows, "div", ""), &[("class", "row")]);
    let key_input = attrs(
        add(&row, "input", ""),
        &[
            ("type", "text"),
            ("name", "key"),
            ("placeholder", "NAME"),
            ("spellcheck", "false"),
            ("aria-label", "Variable name"),
        ],
    );
    let value_input = attrs(
        add(&row, "input", ""),
        &[
            ("type", "text"),
            ("name", "value"),
            ("placeholder", "value"),
            ("spellcheck", "false"),
            ("aria-label", "Variable value"),
        ],
    );
    for (input, text) in [(key_input, key), (value_input, value)] {
        if let Ok(input) = input.dyn_into::<web_sys::HtmlInputElement>() {
            input.set_value(text);
        }
    }
    attrs(
        add(&row, "button", "Remove"),
        &[
            ("type", "button"),
            ("class", "secondary mini"),
            ("data-remove-env", ""),
        ],
    );
}

/// The `(name, value)` of every variable row.
fn env_rows() -> Vec<(String, String)> {
    let Ok(rows) = dom::document().query_selector_all("#env-rows .row") else {
        return Vec::new();
    };
    let value = |row: &web_sys::Element, name: &str| {
        row.query_selector(&format!("input[name={name}]"))
            .ok()
            .flatten()
            .and_then(|i| i.dyn_into::<web_sys::HtmlInputElement>().ok())
            .map(|i| i.value())
            .unwrap_or_default()
    };
    (0..rows.length())
        .filter_map(|i| rows.item(i)?.dyn_into::<web_sys::Element>().ok())
        .map(|row| (value(&row, "key"), value(&row, "value")))
        .collect()
}

/// The agent's settings for this deploy: variables, and the entry point and
/// port where the user changed them.
fn settings(detected: Option<&Detected>) -> Result<String, String> {
    let rows = env_rows();
    let env =
        appserver_proto::env_vars::collect(rows.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .map_err(|e| e.to_string())?;
    let mut config = serde_json::json!({ "env": env });
    let entry = dom::input_value("app-entry");
    let entry = entry.trim();
    if detected.is_some_and(|d| !entry.is_empty() && d.entry != entry) {
        config["entry"] = entry.into();
    }
    let port = dom::input_value("app-port");
    let port = port.trim();
    if !port.is_empty() {
        match port.parse::<u16>() {
            Ok(p) if p >= 1024 => config["port"] = p.into(),
            _ => {
                return Err(format!(
                    "port `{port}`: give a number from 1024 to 65535, or leave it empty"
                ))
            }
        }
    }
    Ok(config.to_string())
}

fn report(state: &str, text: &str) {
    dom::set_data("deploy-status", "state", state);
    set_text("deploy-status", text);
}

async fn deploy(page: &Page) {
    let name = dom::input_value("app-name");
    if let Err(e) = validate_app_name(&name) {
        return report("error", &e.to_string());
    }
    let Some(upload) = page.upload.borrow().clone() else {
        return report("error", "Pick a folder or a ZIP to deploy first.");
    };
    let detected = page.detected.borrow().clone();
    let config = match settings(detected.as_ref()) {
        Ok(c) => c,
        Err(e) => return report("error", &e),
    };
    dom::set_data("deploy-status", "kind", "");
    dom::set_data("deploy-status", "app-state", "");
    dom::set_hidden("deploy-open-app", true);
    report("working", &format!("Packing {}…", upload.summary()));
    let tar = match upload.to_tar().await {
        Ok(tar) => tar,
        Err(e) => return report("error", &e),
    };
    report("working", &format!("Deploying {name}…"));
    dom::set_disabled("deploy-button", true);
    let started = js_sys::Date::now();
    let on_deployed = |info: &vm_bridge::agent::AppInfo| {
        dom::set_data(
            "deploy-status",
            "agent-ms",
            &format!("{:.0}", js_sys::Date::now() - started),
        );
        report(
            "saving",
            &format!(
                "{} is deployed ({}); saving the VM so it survives a reload…",
                info.name, info.state
            ),
        );
    };
    let result = page
        .bridge
        .deploy(&name, &tar, Some(&config), &on_deployed)
        .await;
    dom::set_disabled("deploy-button", false);
    let deployed = match result {
        Ok(deployed) => deployed,
        Err(e) => return report("error", &format!("Deploy failed: {e}")),
    };
    let info = &deployed.info;
    let kept = match &deployed.stored_bytes {
        Ok(bytes) => format!("Saved in this browser ({}).", format_bytes(*bytes)),
        Err(e) => format!("Not saved, it will be gone after a reload: {e}"),
    };
    let stored = deployed.stored_bytes.as_ref().map_or(0.0, |b| *b);
    dom::set_data("deploy-status", "stored", &format!("{stored:.0}"));
    let how = match info.port {
        Some(port) => format!(
            " {} ({}): runs {} like `{}` on port {port}, {}.",
            info.kind_label, info.reason, info.entry, info.command, info.state
        ),
        None => format!(" {} ({}).", info.kind_label, info.reason),
    };
    let failed = info.state == "error" || info.state == "restarting";
    let error = info
        .error
        .as_deref()
        .filter(|_| failed)
        .map(|e| format!(" It did not start: {e}"))
        .unwrap_or_default();
    dom::set_data("deploy-status", "kind", &info.kind);
    dom::set_data("deploy-status", "app-state", &info.state);
    report(
        if failed { "failed-start" } else { "done" },
        &format!(
            "Deployed {} ({} files, {} bytes) at /app/{}/.{how}{error} {kept}",
            info.name, info.files, info.bytes, info.name
        ),
    );
    if let Some(link) = dom::by_id("deploy-open-app") {
        let _ = link.set_attribute("href", &format!("/app/{}/", info.name));
    }
    dom::set_hidden("deploy-open-app", false);
    crate::refresh_apps(page).await;
    crate::dashboard::show_storage().await;
}
