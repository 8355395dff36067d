//! The app details dialog: status, URL, its output (followed live, with a
//! search), the requests it answered recently, and its settings.

use crate::dom::{self, add, set_text};
use crate::Page;
use std::rc::Rc;
use vm_bridge::agent::AppInfo;
use wasm_bindgen_futures::spawn_local;

/// How often an open dialog that follows the logs reads them again, in ms.
const FOLLOW_MS: u32 = 2_000;

/// Opens the dialog for app `name` and keeps it current while it is open.
pub(crate) fn open(page: &Rc<Page>, name: &str) {
    page.details_app.replace(Some(name.to_owned()));
    page.logs.replace(String::new());
    set_text("app-title", name);
    dom::set_data("app-dialog", "app", name);
    dom::set_data("logs", "app", name);
    set_text("logs-title", &format!("Output of {name}"));
    set_text("logs", "Reading the output…");
    dom::open_dialog("app-dialog");
    let generation = page.details_generation.get() + 1;
    page.details_generation.set(generation);
    let page = page.clone();
    let name = name.to_owned();
    spawn_local(async move {
        loop {
            refresh(&page, &name).await;
            vm_bridge::timer::sleep(FOLLOW_MS).await;
            let same = page.details_generation.get() == generation;
            if !same || !dom::dialog_open("app-dialog") {
                return;
            }
            if !dom::checked("logs-follow") {
                // Paused: look again later without reading.
                continue;
            }
        }
    });
}

/// Shows the app's state, requests and output as they are now.
pub(crate) async fn refresh(page: &Page, name: &str) {
    if let Some(app) = page.apps.borrow().iter().find(|a| a.name == name) {
        show_app(app);
    }
    show_requests(page, name);
    match page.bridge.logs(name).await {
        Ok(text) => {
            *page.logs.borrow_mut() = text;
            show_logs(page);
        }
        Err(e) => set_text("logs", &format!("Reading the output failed: {e}")),
    }
}

fn show_app(app: &AppInfo) {
    set_text("app-status", &app.state);
    dom::set_data("app-dialog", "state", &app.state);
    if let Some(dot) = dom::by_id("app-dot") {
        let _ = dot.set_attribute("title", &app.state);
    }
    dom::set_data("app-dialog", "kind", &app.kind);
    let url = format!("/app/{}/", app.name);
    if let Some(link) = dom::by_id("app-url") {
        link.set_text_content(Some(&format!("{}{url}", dom::origin())));
        let _ = link.set_attribute("href", &url);
    }
    let kind = if app.kind_label.is_empty() {
        "Static site"
    } else {
        &app.kind_label
    };
    set_text("app-kind", kind);
    set_text("app-entry-shown", or_dash(&app.entry));
    set_text("app-command-shown", or_dash(&app.command));
    set_text(
        "app-port-shown",
        &app.port.map_or("-".to_owned(), |p| p.to_string()),
    );
    set_text(
        "app-files",
        &format!("{} files, {} bytes", app.files, app.bytes),
    );
    let env: Vec<String> = app.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let env = if env.is_empty() {
        "-".to_owned()
    } else {
        env.join("\n")
    };
    set_text("app-env-shown", &env);
    let process = app.port.is_some();
    let running = matches!(app.state.as_str(), "running" | "starting" | "restarting");
    for (action, shown) in [
        ("start", process && !running),
        ("stop", process && running),
        ("restart", process),
    ] {
        if let Ok(Some(button)) =
            dom::document().query_selector(&format!("[data-detail-action={action}]"))
        {
            let _ = if shown {
                button.remove_attribute("hidden")
            } else {
                button.set_attribute("hidden", "")
            };
        }
    }
}

fn or_dash(text: &str) -> &str {
    if text.is_empty() {
        "-"
    } else {
        text
    }
}

/// Shows the output lines that hold the search text (all when it is empty).
pub(crate) fn show_logs(page: &Page) {
    let text = page.logs.borrow();
    let search = dom::input_value("logs-search").to_lowercase();
    let lines: Vec<&str> = text.lines().collect();
    let shown: Vec<&str> = if search.is_empty() {
        lines.clone()
    } else {
        lines
            .iter()
            .copied()
            .filter(|l| l.to_lowercase().contains(&search))
            .collect()
    };
    let body = if text.is_empty() {
        "(no output yet)".to_owned()
    } else if shown.is_empty() {
        format!("No line holds “{search}”.")
    } else {
        shown.join("\n")
    };
    set_text("logs", &body);
    set_text(
        "logs-count",
        &if search.is_empty() {
            format!("{} lines", lines.len())
        } else {
            format!("{} of {} lines", shown.len(), lines.len())
        },
    );
    if dom::checked("logs-follow") {
        dom::scroll_to_end("logs");
    }
}

fn show_requests(page: &Page, name: &str) {
    let (count, recent) = page.bridge.requests(name);
    set_text("app-requests", &count.to_string());
    let Some(body) = dom::document()
        .query_selector("#requests tbody")
        .ok()
        .flatten()
    else {
        return;
    };
    body.set_text_content(None);
    if recent.is_empty() {
        let row = add(&body, "tr", "");
        let cell = add(&row, "td", "No requests since this page opened.");
        let _ = cell.set_attribute("colspan", "5");
    }
    for r in recent.iter().take(20) {
        let row = add(&body, "tr", "");
        let time = js_sys::Date::new(&r.at_ms.into());
        add(
            &row,
            "td",
            &String::from(time.to_locale_time_string("en-GB")),
        );
        add(&row, "td", &r.method);
        add(&row, "td", &r.target);
        let status = if r.status == 0 {
            "cancelled".to_owned()
        } else {
            r.status.to_string()
        };
        add(&row, "td", &status);
        add(&row, "td", &format!("{:.0}", r.ms));
    }
}

pub(crate) fn wire(page: &Rc<Page>) {
    dom::on_click("app-close", || dom::close_dialog("app-dialog"));
    {
        let page = page.clone();
        dom::on_input("logs-search", move |_| show_logs(&page));
    }
    if let Some(dialog) = dom::by_id("app-dialog") {
        let page = page.clone();
        dom::listen_on::<web_sys::Event>(&dialog, "click", move |event| {
            let action = event
                .target()
                .and_then(|t| wasm_bindgen::JsCast::dyn_into::<web_sys::Element>(t).ok())
                .and_then(|t| t.get_attribute("data-detail-action"));
            let app = page.details_app.borrow().clone();
            if let (Some(action), Some(app)) = (action, app) {
                let page = page.clone();
                spawn_local(async move {
                    crate::app_action(&page, &action, &app).await;
                    refresh(&page, &app).await;
                });
            }
        });
    }
}
