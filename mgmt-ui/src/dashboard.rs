//! The dashboard: the running environment (version, status, memory,
//! storage, uptime) and the list of its apps with their controls.

use crate::catalog;
use crate::dom::{self, add, attrs, set_text};
use appserver_proto::progress::{format_bytes, format_duration};
use vm_bridge::agent::AppInfo;
use vm_bridge::Bridge;

/// Shows the environment's id, name and version at the top.
pub(crate) fn show_environment(bridge: &Bridge) {
    let Some((id, manifest)) = bridge.environment() else {
        return;
    };
    let name = catalog::find(&id).map_or(id.as_str(), |e| e.name);
    set_text("env-title", name);
    set_text("env-badge", name);
    set_text("env-version", catalog::short(&manifest.version));
    dom::set_data("env-version", "version", &manifest.version);
    if let Some(ms) = bridge.ready_after_ms() {
        set_text("env-ready-in", &format!("{:.1} s", ms / 1000.0));
        dom::local_storage_set(&catalog::ready_ms_key(&id), &format!("{ms:.0}"));
    }
}

/// Shows for how long the environment has been ready.
pub(crate) fn show_uptime(ready_at_ms: f64) {
    let seconds = (js_sys::Date::now() - ready_at_ms) / 1000.0;
    set_text("env-uptime", &format_duration(seconds));
}

/// Shows the VM's memory as the guest sees it, from the agent's status.
pub(crate) fn show_memory(status: &serde_json::Value) {
    let mem = &status["meminfo_kb"];
    let (Some(total), Some(available)) = (mem["MemTotal"].as_f64(), mem["MemAvailable"].as_f64())
    else {
        return;
    };
    let used = total - available;
    set_text(
        "vm-status",
        &format!(
            "{:.0} MiB in use of {:.0} MiB",
            used / 1024.0,
            total / 1024.0
        ),
    );
    dom::set_data("vm-status", "used-kb", &format!("{used:.0}"));
}

/// Asks the browser to keep our storage, and shows how much is used.
pub(crate) async fn show_storage() {
    let persisted = dom::request_persistent_storage().await;
    let Some(used) = dom::storage_estimate().await else {
        return;
    };
    let parts = match (used.caches, used.indexed_db) {
        (Some(images), Some(data)) => format!(
            " (image cache {}, saved VM and apps {})",
            format_bytes(images),
            format_bytes(data)
        ),
        _ => String::new(),
    };
    set_text(
        "storage",
        &format!(
            "{} used{parts} of {} available{}",
            format_bytes(used.usage),
            format_bytes(used.quota),
            if persisted {
                ", kept when space runs low"
            } else {
                ""
            }
        ),
    );
    dom::set_data("storage", "usage", &format!("{:.0}", used.usage));
}

/// The buttons an app's row offers in its state.
pub(crate) fn actions_for(app: &AppInfo) -> &'static [(&'static str, &'static str)] {
    match (app.port.is_some(), app.state.as_str()) {
        (false, _) => &[("details", "Details"), ("delete", "Delete")],
        (true, "running" | "starting" | "restarting") => &[
            ("restart", "Restart"),
            ("stop", "Stop"),
            ("logs", "Logs"),
            ("delete", "Delete"),
        ],
        (true, _) => &[("start", "Start"), ("logs", "Logs"), ("delete", "Delete")],
    }
}

/// Draws the app list: a row per app with its state, name, type, URL, port,
/// memory and requests, and the buttons its state allows.
pub(crate) fn render_apps(apps: &[AppInfo], bridge: &Bridge) {
    let Some(list) = dom::clear("apps") else {
        return;
    };
    if apps.is_empty() {
        attrs(
            add(
                &list,
                "li",
                "No apps deployed yet. Press Deploy app to add one.",
            ),
            &[("class", "empty")],
        );
        return;
    }
    let head = attrs(
        add(&list, "li", ""),
        &[("class", "head"), ("aria-hidden", "true")],
    );
    for title in ["", "App", "URL", "Port", "Memory", "Requests", ""] {
        add(&head, "span", title);
    }
    for app in apps {
        let item = attrs(
            add(&list, "li", ""),
            &[
                ("data-app", &app.name),
                ("data-state", &app.state),
                ("data-kind", &app.kind),
            ],
        );
        attrs(
            add(&item, "i", ""),
            &[("class", "dot"), ("title", &app.state)],
        );
        let who = add(&item, "span", "");
        add(&who, "strong", &app.name);
        let kind = if app.kind_label.is_empty() {
            "static site"
        } else {
            &app.kind_label
        };
        let mut facts = vec![kind.to_owned()];
        if app.state != "static" && !app.state.is_empty() {
            facts.push(app.state.clone());
        }
        if app.restarts > 0 {
            facts.push(format!("{} restarts", app.restarts));
        }
        facts.push(format!("{} files, {} bytes", app.files, app.bytes));
        attrs(
            add(&who, "div", &facts.join(" · ")),
            &[("class", "small muted facts")],
        );
        let url = format!("/app/{}/", app.name);
        let cell = attrs(add(&item, "span", ""), &[("class", "cell-url")]);
        attrs(
            add(&cell, "a", &url),
            &[
                ("href", &url),
                ("target", "_blank"),
                ("data-open", &app.name),
            ],
        );
        let port = app
            .port
            .map(|p| p.to_string())
            .unwrap_or_else(|| "-".into());
        attrs(add(&item, "span", &port), &[("class", "cell-port")]);
        let memory = app
            .rss_kb
            .map(|kb| format_bytes(kb as f64 * 1024.0))
            .unwrap_or_else(|| "-".into());
        attrs(add(&item, "span", &memory), &[("class", "cell-mem")]);
        let (count, _) = bridge.requests(&app.name);
        attrs(
            add(&item, "span", &count.to_string()),
            &[("class", "cell-req"), ("data-requests", &count.to_string())],
        );
        let buttons = attrs(add(&item, "span", ""), &[("class", "cell-actions")]);
        attrs(
            add(&buttons, "a", "Open"),
            &[
                ("class", "button secondary mini"),
                ("href", &url),
                ("target", "_blank"),
            ],
        );
        for (action, label) in actions_for(app) {
            let class = if *action == "delete" {
                "danger mini"
            } else {
                "secondary mini"
            };
            attrs(
                add(&buttons, "button", label),
                &[
                    ("type", "button"),
                    ("class", class),
                    ("data-action", action),
                    ("data-app", &app.name),
                ],
            );
        }
        if let Some(error) = app.error.as_deref().filter(|_| app.state != "running") {
            attrs(add(&item, "pre", error), &[("class", "app-error")]);
        }
    }
}
