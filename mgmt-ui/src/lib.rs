//! The management page at `/application-server/`: choose and load an
//! environment, follow the load, run its apps from a dashboard, deploy apps
//! through a dialog, read an app's logs and requests, switch environments.
//!
//! The page's markup lives in `web/application-server/index.html`; this
//! crate finds its elements by id and wires them to the bridge. Which screen
//! shows is `body[data-screen]`: `environments`, `loading` or `dashboard`.

mod api;
mod catalog;
mod dashboard;
mod deploy;
mod details;
mod dom;
mod loading;
mod upload;

use catalog::Environment;
use dom::set_text;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use upload::Upload;
use vm_bridge::agent::AppInfo;
use vm_bridge::v86::{V86Assets, V86Engine};
use vm_bridge::{Bridge, VmState};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::spawn_local;

/// The page's state, shared by its screens and dialogs.
pub(crate) struct Page {
    bridge: Bridge,
    /// The files picked in the deploy dialog.
    upload: RefCell<Option<Upload>>,
    /// What those files are, once detected.
    detected: RefCell<Option<appserver_proto::detect::Detected>>,
    /// The app list as last read from the guest.
    apps: RefCell<Vec<AppInfo>>,
    /// True while an app is starting or restarting.
    changing: Cell<bool>,
    /// The app the details dialog shows, its output, and a counter that
    /// stops the previous dialog's refresh loop.
    details_app: RefCell<Option<String>>,
    logs: RefCell<String>,
    details_generation: Cell<u32>,
    /// The environment being loaded or run.
    env: Cell<Option<&'static Environment>>,
    /// The environment a confirmed switch goes to.
    switch_to: Cell<Option<&'static Environment>>,
    /// When the environment became ready (ms since the epoch).
    ready_at_ms: Cell<f64>,
    /// True while the user looks at the environment cards with an
    /// environment running.
    browsing: Cell<bool>,
}

/// The localStorage key that remembers the last environment loaded.
pub(crate) const LAST_ENV_KEY: &str = "appserver.environment";

/// Starts the page: connects the bridge to the service worker and wires the
/// screens.
#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
    let bridge = Bridge::new(Rc::new(V86Engine::new(V86Assets::default())));
    let page = Rc::new(Page {
        bridge: bridge.clone(),
        upload: RefCell::new(None),
        detected: RefCell::new(None),
        apps: RefCell::new(Vec::new()),
        changing: Cell::new(false),
        details_app: RefCell::new(None),
        logs: RefCell::new(String::new()),
        details_generation: Cell::new(0),
        env: Cell::new(None),
        switch_to: Cell::new(None),
        ready_at_ms: Cell::new(0.0),
        browsing: Cell::new(false),
    });
    {
        let page = page.clone();
        bridge.on_state(move |state| show_state(&page, state));
    }
    catalog::render(None);
    show_state(&page, &bridge.state());
    wire(&page);
    loading::wire();
    deploy::wire(&page);
    details::wire(&page);
    api::install(&page);
    // Every later visit brings the last environment back by itself.
    let last = dom::local_storage_get(LAST_ENV_KEY);
    if let Some(env) = last.as_deref().and_then(catalog::find) {
        spawn_local(load(page.clone(), env));
    }
    // Tests (and scripts) wait for this before reading the page's state.
    dom::set_body_data("started", "true");
    spawn_local(async move {
        if let Err(e) = vm_bridge::sw_link::connect(&bridge, "/sw.js").await {
            set_text(
                "load-status",
                &format!("The service worker could not start: {e:?}"),
            );
        }
    });
}

/// Which screen a state shows.
fn screen_for(page: &Page, state: &VmState) -> &'static str {
    match state {
        VmState::Unloaded => "environments",
        _ if page.browsing.get() => "environments",
        VmState::Ready => "dashboard",
        _ => "loading",
    }
}

fn show_screen(page: &Page) {
    let state = page.bridge.state();
    dom::set_body_data("screen", screen_for(page, &state));
    let ready = state == VmState::Ready;
    dom::set_disabled(
        "nav-dashboard",
        !ready && !matches!(state, VmState::Error(_)),
    );
    dom::set_disabled("open-deploy", !ready);
    dom::set_disabled("deploy-button", !ready);
}

fn show_state(page: &Page, state: &VmState) {
    dom::set_body_data("vmState", state.name());
    loading::show(state, page.env.get());
    if let VmState::Error(why) = state {
        let code = page.bridge.error_code().unwrap_or_default();
        dom::set_body_data("errorCode", &code);
        loading::show_error(page.env.get(), &code, why);
    }
    show_screen(page);
}

fn wire(page: &Rc<Page>) {
    if let Some(cards) = dom::by_id("env-cards") {
        let page = page.clone();
        dom::listen_on::<web_sys::Event>(&cards, "click", move |event| {
            let id = event
                .target()
                .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
                .and_then(|t| t.get_attribute("data-load"));
            if let Some(env) = id.as_deref().and_then(catalog::find) {
                ask_switch(&page, env);
            }
        });
    }
    {
        let page = page.clone();
        dom::on_click("nav-environments", move || {
            page.browsing.set(true);
            catalog::render(page.env.get().map(|e| e.id));
            show_screen(&page);
        });
    }
    {
        let page = page.clone();
        dom::on_click("nav-dashboard", move || {
            page.browsing.set(false);
            show_screen(&page);
        });
    }
    {
        let page = page.clone();
        dom::on_click("switch-env", move || {
            page.browsing.set(true);
            catalog::render(page.env.get().map(|e| e.id));
            show_screen(&page);
        });
    }
    dom::on_click("switch-cancel", || dom::close_dialog("switch-dialog"));
    {
        let page = page.clone();
        dom::on_click("switch-confirm", move || {
            if let Some(env) = page.switch_to.get() {
                let page = page.clone();
                spawn_local(switch(page, env));
            }
        });
    }
    {
        let page = page.clone();
        dom::on_click("refresh-apps", move || {
            let page = page.clone();
            spawn_local(async move { refresh_apps(&page).await });
        });
    }
    let page = page.clone();
    dom::on_list_action("apps", move |action, app| {
        let page = page.clone();
        spawn_local(async move { app_action(&page, &action, &app).await });
    });
}

/// The user picked `env` on its card: load it, go back to it, or ask before
/// switching away from the one that runs.
pub(crate) fn ask_switch(page: &Rc<Page>, env: &'static Environment) {
    let current = page.env.get();
    match current {
        None => spawn_local(load(page.clone(), env)),
        Some(c) if c.id == env.id => {
            page.browsing.set(false);
            show_screen(page);
        }
        Some(c) => {
            page.switch_to.set(Some(env));
            set_text(
                "switch-title",
                &format!("Switch from {} to {}?", c.name, env.name),
            );
            let running: Vec<String> = page
                .apps
                .borrow()
                .iter()
                .filter(|a| matches!(a.state.as_str(), "running" | "starting" | "static"))
                .map(|a| a.name.clone())
                .collect();
            let text = if running.is_empty() {
                format!("No app of {} is running; nothing stops.", c.name)
            } else {
                format!(
                    "These apps of {} stop answering at their URLs until you load it again:",
                    c.name
                )
            };
            set_text("switch-text", &text);
            if let Some(list) = dom::clear("switch-apps") {
                for name in &running {
                    let item = dom::add(&list, "li", "");
                    dom::add(&item, "strong", name);
                    dom::add(&item, "span", &format!(" at /app/{name}/"));
                }
            }
            dom::set_data("switch-dialog", "to", env.id);
            dom::open_dialog("switch-dialog");
        }
    }
}

/// Saves the running VM, then reloads into `env`: one VM per page, and
/// each environment keeps its own saved VM and apps for when it comes back.
async fn switch(page: Rc<Page>, env: &'static Environment) {
    set_text("switch-text", "Saving the running environment…");
    dom::set_disabled("switch-confirm", true);
    if let Err(e) = page.bridge.save().await {
        // A VM that failed has nothing newer to keep than its last save.
        if page.bridge.state() == VmState::Ready {
            set_text(
                "switch-text",
                &format!("Saving failed, nothing was switched: {e}"),
            );
            dom::set_disabled("switch-confirm", false);
            return;
        }
    }
    dom::local_storage_set(LAST_ENV_KEY, env.id);
    dom::reload();
}

async fn load(page: Rc<Page>, env: &'static Environment) {
    page.env.set(Some(env));
    page.browsing.set(false);
    dom::local_storage_set(LAST_ENV_KEY, env.id);
    dom::set_body_data("environment", env.id);
    catalog::render(Some(env.id));
    show_screen(&page);
    if let Err(e) = page.bridge.load(env.id, &env.base_url()).await {
        set_text("load-status", &format!("Failed: {e}"));
        return;
    }
    if !page.bridge.wait_ready(600_000).await {
        return;
    }
    page.ready_at_ms.set(js_sys::Date::now());
    if let Some(ms) = page.bridge.ready_after_ms() {
        dom::set_body_data("readyMs", &format!("{ms:.0}"));
    }
    dashboard::show_environment(&page.bridge);
    set_text("env-status", "Running");
    refresh_apps(&page).await;
    dashboard::show_storage().await;
    watch(page).await;
}

/// Keeps the dashboard current: app processes change state on their own
/// (a crash, a restart). Looks every 2 s while an app is changing, else
/// every 15 s, and not while a deploy or a start or stop is under way (the
/// guest's CPU is theirs, and they refresh the list when done); the uptime
/// moves every 2 s.
async fn watch(page: Rc<Page>) {
    let mut since_refresh = 0;
    loop {
        vm_bridge::timer::sleep(2_000).await;
        dashboard::show_uptime(page.ready_at_ms.get());
        since_refresh += 2_000;
        let due = if page.changing.get() { 2_000 } else { 15_000 };
        if since_refresh >= due && page.bridge.state() == VmState::Ready && !page.bridge.busy() {
            since_refresh = 0;
            refresh_apps(&page).await;
        }
    }
}

/// A button of an app: start, stop, restart, delete, or show its details.
pub(crate) async fn app_action(page: &Rc<Page>, action: &str, app: &str) {
    let control = match action {
        "start" => vm_bridge::agent::Action::Start,
        "stop" => vm_bridge::agent::Action::Stop,
        "restart" => vm_bridge::agent::Action::Restart,
        "logs" | "details" => return details::open(page, app),
        "delete" => return delete(page, app).await,
        _ => return,
    };
    set_text("apps-error", &format!("{action}: {app}…"));
    match page.bridge.control(app, control).await {
        Ok(info) => set_text("apps-error", &format!("{app} is {}", info.state)),
        Err(e) => set_text("apps-error", &format!("{action} {app} failed: {e}")),
    }
    refresh_apps(page).await;
}

async fn delete(page: &Rc<Page>, app: &str) {
    let confirmed = web_sys::window()
        .and_then(|w| {
            w.confirm_with_message(&format!(
                "Delete {app}? Its files and data in this environment are removed."
            ))
            .ok()
        })
        .unwrap_or(false);
    if !confirmed {
        return;
    }
    dom::close_dialog("app-dialog");
    set_text("apps-error", &format!("Deleting {app}…"));
    match page.bridge.delete(app).await {
        Ok(()) => set_text("apps-error", &format!("{app} was deleted")),
        Err(e) => set_text("apps-error", &format!("Deleting {app} failed: {e}")),
    }
    refresh_apps(page).await;
}

pub(crate) async fn refresh_apps(page: &Page) {
    match page.bridge.refresh_apps().await {
        Ok(apps) => show_apps(page, apps).await,
        Err(e) => set_text("apps-error", &format!("Listing apps failed: {e}")),
    }
}

/// Shows `apps`, just read from the guest, on the dashboard.
pub(crate) async fn show_apps(page: &Page, apps: Vec<AppInfo>) {
    let changing = apps
        .iter()
        .any(|a| a.state == "starting" || a.state == "restarting");
    page.changing.set(changing);
    dashboard::render_apps(&apps, &page.bridge);
    *page.apps.borrow_mut() = apps;
    if let Ok(status) = page.bridge.guest_status().await {
        dashboard::show_memory(&status);
    }
}
