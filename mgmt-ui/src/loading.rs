//! The loading screen: the steps of a load, a progress bar with bytes,
//! speed and time left, and the way out of a failed load (retry, clear the
//! image cache and retry, choose another environment, copy the details).

use crate::catalog::Environment;
use crate::dom::{self, set_text};
use crate::LAST_ENV_KEY;
use appserver_proto::progress::{format_bytes, format_duration, Meter};
use std::cell::RefCell;
use vm_bridge::VmState;
use wasm_bindgen_futures::spawn_local;

thread_local! {
    static METER: RefCell<Meter> = RefCell::new(Meter::new());
    static LAST_STEP: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Shows `state` on the loading screen.
pub(crate) fn show(state: &VmState, env: Option<&Environment>) {
    let name = env.map_or("the environment", |e| e.name);
    set_text("load-title", &format!("Loading {name}"));
    let (text, value, max, step) = match state {
        VmState::Unloaded => ("Not loaded".to_owned(), 0.0, 1.0, Step::At(0)),
        VmState::Loading {
            loaded,
            total,
            file,
        } => {
            let file = file.rsplit('/').next().unwrap_or(file);
            let file = file.split('?').next().unwrap_or(file);
            show_figures(*loaded, *total);
            (
                format!("Downloading {file}"),
                *loaded,
                total.max(*loaded).max(1.0),
                Step::At(0),
            )
        }
        VmState::Booting => (
            "Starting Linux (cold boot)…".to_owned(),
            1.0,
            1.0,
            Step::At(1),
        ),
        VmState::Restoring => ("Restoring the saved VM…".to_owned(), 1.0, 1.0, Step::At(1)),
        VmState::Ready => ("Ready".to_owned(), 1.0, 1.0, Step::At(2)),
        VmState::Error(why) => (format!("Failed: {why}"), 0.0, 1.0, Step::Failed),
    };
    set_text("load-status", &text);
    dom::set_progress("load-progress", value, max);
    mark_steps(step);
}

/// The load's steps, in order, as `#load-steps li[data-step]` names them.
const STEPS: [&str; 3] = ["download", "start", "ready"];

/// Marks the steps before `current` done and `current` active; a failure
/// marks the step that was active failed. Ready marks every step done.
fn mark_steps(current: Step) {
    let (reached, last_state) = match current {
        Step::At(i) => {
            LAST_STEP.with(|l| l.set(i));
            (
                i,
                if i == STEPS.len() - 1 {
                    "done"
                } else {
                    "active"
                },
            )
        }
        Step::Failed => (LAST_STEP.with(|l| l.get()), "failed"),
    };
    for (i, step) in STEPS.iter().enumerate() {
        let Ok(Some(item)) =
            dom::document().query_selector(&format!("#load-steps li[data-step={step}]"))
        else {
            continue;
        };
        let state = match i.cmp(&reached) {
            std::cmp::Ordering::Less => "done",
            std::cmp::Ordering::Equal => last_state,
            std::cmp::Ordering::Greater => "",
        };
        let _ = item.set_attribute("data-step-state", state);
    }
}

/// Where a load is among [`STEPS`].
#[derive(Clone, Copy)]
enum Step {
    /// At the step with this index.
    At(usize),
    /// Failed at the step that was last reached.
    Failed,
}

fn show_figures(loaded: f64, total: f64) {
    let reading = METER.with(|m| {
        m.borrow_mut()
            .sample(vm_bridge::timer::now_ms(), loaded, total)
    });
    let bytes = if total > 0.0 {
        format!("{} of {}", format_bytes(loaded), format_bytes(total))
    } else {
        format_bytes(loaded)
    };
    set_text("load-bytes", &bytes);
    set_text(
        "load-speed",
        &reading
            .bytes_per_s
            .map(|s| format!("{}/s", format_bytes(s)))
            .unwrap_or_default(),
    );
    set_text(
        "load-eta",
        &reading
            .seconds_left
            .map(|s| format!("{} left", format_duration(s)))
            .unwrap_or_default(),
    );
}

/// Fills the error panel of a failed load of `env`.
pub(crate) fn show_error(env: Option<&Environment>, code: &str, message: &str) {
    set_text("load-error-code", code);
    set_text("load-error-message", &advice(code, message));
    let details = format!(
        "environment: {}\ncode: {code}\nmessage: {message}\npage: {}\nuser agent: {}\ntime: {}",
        env.map_or("-", |e| e.id),
        web_sys::window()
            .and_then(|w| w.location().href().ok())
            .unwrap_or_default(),
        web_sys::window()
            .and_then(|w| w.navigator().user_agent().ok())
            .unwrap_or_default(),
        js_sys::Date::new_0().to_iso_string(),
    );
    if let Some(el) = dom::by_id("load-error-details") {
        el.set_text_content(Some(&details));
        if let Ok(area) = wasm_bindgen::JsCast::dyn_into::<web_sys::HtmlTextAreaElement>(el) {
            area.set_value(&details);
        }
    }
}

/// The failure in words, with what to try.
fn advice(code: &str, message: &str) -> String {
    let hint = match code {
        "download_failed" => {
            "An image file could not be downloaded or did not match its checksum. Retry; if it \
             fails again, clear the cache and retry."
        }
        "manifest_unavailable" => {
            "The environment's description could not be read: the server may be unreachable \
             and this browser has no copy yet. Retry when you are online."
        }
        "engine_failed" | "vm_crashed" => {
            "The emulator stopped. Retry; clearing the cache fetches a fresh copy of the image."
        }
        "guest_unresponsive" => {
            "The VM started but its services did not answer. Retry, or clear the cache and retry."
        }
        _ => "Retry, or choose another environment.",
    };
    format!("{message}. {hint}")
}

/// Wires the error panel's buttons.
pub(crate) fn wire() {
    dom::on_click("retry-load", dom::reload);
    dom::on_click("clear-cache-retry", || {
        spawn_local(async {
            set_text("load-status", "Clearing the image cache…");
            dom::delete_cache("appserver-images").await;
            dom::reload();
        })
    });
    dom::on_click("choose-env", || {
        dom::local_storage_remove(LAST_ENV_KEY);
        dom::reload();
    });
    dom::on_click("copy-details", || {
        spawn_local(async {
            let details = dom::by_id("load-error-details")
                .and_then(|e| e.text_content())
                .unwrap_or_default();
            let copied = dom::copy_text(&details).await;
            set_text(
                "copy-details",
                if copied {
                    "Copied"
                } else {
                    "Select the text below to copy it"
                },
            );
        })
    });
}
