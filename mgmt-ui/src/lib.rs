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

const ENVIRONMENTS: &[Environment] = &[Environment {
    id: "static",
    base_url: "/images/static/",
}];

struct Page {
    bridge: Bridge,
    upload: RefCell<Option<Upload>>,
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
    dom::local_storage_set(LAST_ENV_KEY, env.id);
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
    }
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
    let page = page.clone();
    dom::on_click("deploy-button", move || {
        let page = page.clone();
        spawn_local(async move { deploy(&page).await });
    });
}

async fn deploy(page: &Page) {
    let name = dom::input_value("app-name");
    if let Err(e) = validate_app_name(&name) {
        return report_deploy("error", &e.to_string());
    }
    let Some(upload) = page.upload.borrow().clone() else {
        return report_deploy("error", "Pick or drop a folder to deploy first.");
    };
    report_deploy("working", &format!("Packing {}…", upload.summary()));
    let tar = match upload.to_tar().await {
        Ok(tar) => tar,
        Err(e) => return report_deploy("error", &e),
    };
    report_deploy("working", &format!("Deploying {name}…"));
    match page.bridge.deploy(&name, &tar).await {
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
            report_deploy(
                "done",
                &format!(
                    "Deployed {} ({} files, {} bytes) at /app/{}/. {kept}",
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
        Ok(apps) => dom::render_apps(&apps),
        Err(e) => set_text("apps-error", &format!("Listing apps failed: {e}")),
    }
}
