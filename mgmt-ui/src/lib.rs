//! The management page at `/application-server/`: load an environment,
//! deploy a folder as an app, list the apps.
//!
//! The page's markup lives in `web/application-server/index.html`; this
//! crate finds its elements by id and wires them to the bridge.

mod dom;
mod upload;

use appserver_proto::names::validate_app_name;
use dom::set_text;
use std::cell::RefCell;
use std::rc::Rc;
use upload::Upload;
use vm_bridge::v86::{V86Assets, V86Engine};
use vm_bridge::{Bridge, VmState};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::spawn_local;

/// An environment the page offers.
struct Environment {
    id: &'static str,
    base_url: &'static str,
}

const ENVIRONMENTS: &[Environment] = &[
    Environment {
        id: "static",
        base_url: "/images/static/",
    },
    Environment {
        id: "nodejs",
        base_url: "/images/nodejs/",
    },
    Environment {
        id: "python",
        base_url: "/images/python/",
    },
];

struct Page {
    bridge: Bridge,
    upload: RefCell<Option<Upload>>,
    /// True while an app is starting or restarting.
    changing: std::cell::Cell<bool>,
}

/// Starts the page: connects the bridge to the service worker and wires the
/// controls.
#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
    let bridge = Bridge::new(Rc::new(V86Engine::new(V86Assets::default())));
    let page = Rc::new(Page {
        bridge: bridge.clone(),
        upload: RefCell::new(None),
        changing: std::cell::Cell::new(false),
    });
    bridge.on_state(show_state);
    show_state(&bridge.state());
    wire_environments(&page);
    wire_deploy(&page);
    spawn_local(async move {
        if let Err(e) = vm_bridge::sw_link::connect(&bridge, "/sw.js").await {
            set_text(
                "load-status",
                &format!("The service worker could not start: {e:?}"),
            );
        }
    });
}

fn show_state(state: &VmState) {
    dom::set_body_data("vmState", state.name());
    let (text, value, max) = match state {
        VmState::Unloaded => ("Not loaded".to_owned(), 0.0, 1.0),
        VmState::Loading {
            loaded,
            total,
            file,
        } => {
            let name = file.rsplit('/').next().unwrap_or(file);
            let name = name.split('?').next().unwrap_or(name);
            let text = if *total > 0.0 {
                format!("Downloading {name}: {} of {}", mib(*loaded), mib(*total))
            } else {
                format!("Downloading {name}: {}", mib(*loaded))
            };
            (text, *loaded, total.max(*loaded).max(1.0))
        }
        VmState::Booting => ("Starting Linux (cold boot)…".to_owned(), 1.0, 1.0),
        VmState::Restoring => ("Restoring the saved VM…".to_owned(), 1.0, 1.0),
        VmState::Ready => ("Ready".to_owned(), 1.0, 1.0),
        VmState::Error(why) => (format!("Failed: {why}"), 0.0, 1.0),
    };
    set_text("load-status", &text);
    dom::set_progress("load-progress", value, max);
    let ready = *state == VmState::Ready;
    dom::set_disabled("deploy-button", !ready);
}

fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / (1024.0 * 1024.0))
}

/// The localStorage key that remembers the last environment loaded.
const LAST_ENV_KEY: &str = "appserver.environment";

fn wire_environments(page: &Rc<Page>) {
    for env in ENVIRONMENTS {
        let page = page.clone();
        dom::on_click(&format!("load-{}", env.id), move || {
            spawn_local(load(page.clone(), env));
        });
    }
    // Every later visit brings the last environment back by itself.
    let last = dom::local_storage_get(LAST_ENV_KEY);
    if let Some(env) = ENVIRONMENTS.iter().find(|e| Some(e.id) == last.as_deref()) {
        spawn_local(load(page.clone(), env));
    }
}

async fn load(page: Rc<Page>, env: &'static Environment) {
    // One VM per page: another environment is loaded from a fresh page, and
    // each environment keeps its own saved VM and apps for when it comes back.
    let loaded = page.bridge.state() != VmState::Unloaded;
    let current = dom::local_storage_get(LAST_ENV_KEY);
    dom::local_storage_set(LAST_ENV_KEY, env.id);
    if loaded {
        if current.as_deref() != Some(env.id) {
            dom::reload();
        }
        return;
    }
    dom::set_body_data("environment", env.id);
    if let Err(e) = page.bridge.load(env.id, env.base_url).await {
        set_text("load-status", &format!("Failed: {e}"));
        return;
    }
    if page.bridge.wait_ready(600_000).await {
        if let Some(ms) = page.bridge.ready_after_ms() {
            dom::set_body_data("readyMs", &format!("{ms:.0}"));
        }
        refresh_apps(&page).await;
        show_storage().await;
        watch_apps(page).await;
    }
}

/// Keeps the app list current: app processes change state on their own
/// (a crash, a restart). Looks every 2 s while an app is changing, else
/// every 15 s.
async fn watch_apps(page: Rc<Page>) {
    loop {
        let changing = page.changing.get();
        vm_bridge::timer::sleep(if changing { 2_000 } else { 15_000 }).await;
        if page.bridge.state() == VmState::Ready {
            refresh_apps(&page).await;
        }
    }
}

/// Shows the VM's memory as the guest sees it.
async fn show_guest_status(page: &Page) {
    let Ok(status) = page.bridge.guest_status().await else {
        return;
    };
    let mem = &status["meminfo_kb"];
    let (Some(total), Some(available)) = (mem["MemTotal"].as_f64(), mem["MemAvailable"].as_f64())
    else {
        return;
    };
    let used = total - available;
    set_text(
        "vm-status",
        &format!(
            "VM memory: {:.0} MiB in use of {:.0} MiB",
            used / 1024.0,
            total / 1024.0
        ),
    );
    dom::set_data("vm-status", "used-kb", &format!("{used:.0}"));
}

/// Asks the browser to keep our storage, and shows how much is used.
async fn show_storage() {
    let persisted = dom::request_persistent_storage().await;
    if let Some(used) = dom::storage_estimate().await {
        let parts = match (used.caches, used.indexed_db) {
            (Some(images), Some(data)) => {
                format!(
                    " (image cache {}, saved VM and apps {})",
                    mib(images),
                    mib(data)
                )
            }
            _ => String::new(),
        };
        set_text(
            "storage",
            &format!(
                "Browser storage: {} used{parts} of {} available{}",
                mib(used.usage),
                mib(used.quota),
                if persisted {
                    ", kept when space runs low"
                } else {
                    ""
                }
            ),
        );
        dom::set_data("storage", "usage", &format!("{:.0}", used.usage));
    }
}

fn wire_deploy(page: &Rc<Page>) {
    dom::on_input("app-name", |value| {
        let hint = match validate_app_name(&value) {
            Ok(()) => format!("Will be served at /app/{value}/"),
            Err(e) => e.to_string(),
        };
        set_text("name-hint", &hint);
    });
    {
        let page = page.clone();
        dom::on_files_picked("folder-input", move |files| {
            let upload = Upload::from_file_list(&files);
            set_text("picked", &upload.summary());
            *page.upload.borrow_mut() = Some(upload);
        });
    }
    {
        let page = page.clone();
        dom::on_drop("drop-zone", move |transfer| {
            let page = page.clone();
            spawn_local(async move {
                set_text("picked", "Reading the dropped folder…");
                match Upload::from_drop(&transfer).await {
                    Ok(upload) => {
                        set_text("picked", &upload.summary());
                        *page.upload.borrow_mut() = Some(upload);
                    }
                    Err(e) => set_text("picked", &e),
                }
            });
        });
    }
    {
        let page = page.clone();
        dom::on_click("deploy-button", move || {
            let page = page.clone();
            spawn_local(async move { deploy(&page).await });
        });
    }
    let page = page.clone();
    dom::on_list_action("apps", move |action, app| {
        let page = page.clone();
        spawn_local(async move { app_action(&page, &action, &app).await });
    });
}

/// A button in the app list: start, stop, restart, or show the logs.
async fn app_action(page: &Page, action: &str, app: &str) {
    let control = match action {
        "start" => vm_bridge::agent::Action::Start,
        "stop" => vm_bridge::agent::Action::Stop,
        "restart" => vm_bridge::agent::Action::Restart,
        "logs" => return show_logs(page, app).await,
        _ => return,
    };
    set_text("apps-error", &format!("{action}: {app}…"));
    match page.bridge.control(app, control).await {
        Ok(info) => set_text("apps-error", &format!("{app} is {}", info.state)),
        Err(e) => set_text("apps-error", &format!("{action} {app} failed: {e}")),
    }
    refresh_apps(page).await;
}

async fn show_logs(page: &Page, app: &str) {
    set_text("logs-title", &format!("Output of {app}"));
    dom::set_data("logs", "app", app);
    match page.bridge.logs(app).await {
        Ok(text) if text.is_empty() => set_text("logs", "(no output yet)"),
        Ok(text) => set_text("logs", &text),
        Err(e) => set_text("logs", &format!("Reading the logs failed: {e}")),
    }
}

/// The deploy form's environment variables (`KEY=value` per line) as the
/// agent's settings JSON.
fn settings_json(text: &str) -> Result<String, String> {
    let mut env = serde_json::Map::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!(
                "environment variables, line {}: write KEY=value",
                n + 1
            ));
        };
        env.insert(key.trim().to_string(), value.trim().into());
    }
    Ok(serde_json::json!({ "env": env }).to_string())
}

async fn deploy(page: &Page) {
    let name = dom::input_value("app-name");
    if let Err(e) = validate_app_name(&name) {
        return report_deploy("error", &e.to_string());
    }
    let Some(upload) = page.upload.borrow().clone() else {
        return report_deploy("error", "Pick or drop a folder to deploy first.");
    };
    let config = match settings_json(&dom::textarea_value("app-env")) {
        Ok(c) => c,
        Err(e) => return report_deploy("error", &e),
    };
    dom::set_data("deploy-status", "kind", "");
    dom::set_data("deploy-status", "app-state", "");
    report_deploy("working", &format!("Packing {}…", upload.summary()));
    let tar = match upload.to_tar().await {
        Ok(tar) => tar,
        Err(e) => return report_deploy("error", &e),
    };
    report_deploy("working", &format!("Deploying {name}…"));
    let started = js_sys::Date::now();
    let on_deployed = |info: &vm_bridge::agent::AppInfo| {
        dom::set_data(
            "deploy-status",
            "agent-ms",
            &format!("{:.0}", js_sys::Date::now() - started),
        );
        report_deploy(
            "saving",
            &format!(
                "{} is deployed ({}); saving the VM so it survives a reload…",
                info.name, info.state
            ),
        );
    };
    match page
        .bridge
        .deploy(&name, &tar, Some(&config), &on_deployed)
        .await
    {
        Ok(deployed) => {
            let info = &deployed.info;
            let kept = match &deployed.stored_bytes {
                Ok(bytes) => format!("Saved in this browser ({}).", mib(*bytes)),
                Err(e) => format!("Not saved, it will be gone after a reload: {e}"),
            };
            dom::set_data(
                "deploy-status",
                "stored",
                &match &deployed.stored_bytes {
                    Ok(bytes) => format!("{bytes:.0}"),
                    Err(_) => "0".into(),
                },
            );
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
            report_deploy(
                if failed { "failed-start" } else { "done" },
                &format!(
                    "Deployed {} ({} files, {} bytes) at /app/{}/.{how}{error} {kept}",
                    info.name, info.files, info.bytes, info.name
                ),
            );
            refresh_apps(page).await;
            show_storage().await;
        }
        Err(e) => report_deploy("error", &format!("Deploy failed: {e}")),
    }
}

fn report_deploy(state: &str, text: &str) {
    dom::set_data("deploy-status", "state", state);
    set_text("deploy-status", text);
}

async fn refresh_apps(page: &Page) {
    match page.bridge.refresh_apps().await {
        Ok(apps) => {
            let changing = apps
                .iter()
                .any(|a| a.state == "starting" || a.state == "restarting");
            page.changing.set(changing);
            dom::render_apps(&apps);
            show_guest_status(page).await;
        }
        Err(e) => set_text("apps-error", &format!("Listing apps failed: {e}")),
    }
}
