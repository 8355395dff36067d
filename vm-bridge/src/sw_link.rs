//! Registers the service worker and keeps a `MessagePort` to it attached to
//! the bridge, reconnecting whenever the worker restarts and asks again.

use crate::bridge::Bridge;
use crate::log;
use crate::timer::timeout;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{MessageEvent, ServiceWorker, ServiceWorkerContainer, ServiceWorkerRegistration};

/// How long to wait for the worker to take control of a page on first visit.
const CLAIM_WAIT_MS: u32 = 10_000;

fn container() -> Result<ServiceWorkerContainer, JsValue> {
    let window = web_sys::window().ok_or("no window")?;
    Ok(window.navigator().service_worker())
}

/// Registers `script` as a module service worker for the whole origin and
/// connects the bridge to it. A page the worker controls already (every
/// visit after the first) connects at once: `register` checks the script
/// for updates over the network, which can take seconds while the page
/// downloads an image through the same server, and the worker's requests
/// must not wait for that.
pub async fn connect(bridge: &Bridge, script: &str) -> Result<(), JsValue> {
    let container = container()?;
    let on_message = {
        let bridge = bridge.clone();
        let container = container.clone();
        Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
            let kind = js_sys::Reflect::get(&event.data(), &"type".into())
                .ok()
                .and_then(|v| v.as_string());
            if kind.as_deref() == Some("BRIDGE_WANTED") {
                log::info("the service worker asked for the bridge again");
                // The worker that asks is the one controlling this page, or
                // the one that registered since: it posted from `source`.
                let worker = event
                    .source()
                    .and_then(|s| s.dyn_into::<ServiceWorker>().ok())
                    .or_else(|| container.controller());
                match worker {
                    Some(worker) => offer_port(&bridge, &worker),
                    None => log::error("no service worker to connect the bridge to"),
                }
            }
        })
    };
    container.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    on_message.forget();
    let connected = match container.controller() {
        Some(worker) => {
            offer_port(bridge, &worker);
            true
        }
        None => false,
    };

    let options = web_sys::RegistrationOptions::new();
    options.set_scope("/");
    options.set_type("module");
    options.set_update_via_cache(web_sys::ServiceWorkerUpdateViaCache::None);
    JsFuture::from(container.register_with_options(script, &options)).await?;
    let registration: ServiceWorkerRegistration = JsFuture::from(container.ready()?).await?.into();
    if connected {
        return Ok(());
    }
    if container.controller().is_none() {
        // First visit: the worker claims this page when it activates.
        let (tx, rx) = futures::channel::oneshot::channel::<()>();
        let tx = std::cell::RefCell::new(Some(tx));
        let on_change = Closure::<dyn FnMut()>::new(move || {
            if let Some(tx) = tx.borrow_mut().take() {
                let _ = tx.send(());
            }
        });
        container.set_oncontrollerchange(Some(on_change.as_ref().unchecked_ref()));
        on_change.forget();
        if timeout(CLAIM_WAIT_MS, rx).await.is_none() {
            log::error("the service worker did not take control of this page");
        }
    }
    match registration.active() {
        Some(worker) => offer_port(bridge, &worker),
        None => log::error("no active service worker to connect the bridge to"),
    }
    Ok(())
}

/// Hands `worker` a fresh port to the bridge.
fn offer_port(bridge: &Bridge, worker: &ServiceWorker) {
    let channel = match web_sys::MessageChannel::new() {
        Ok(c) => c,
        Err(e) => return log::error(&format!("MessageChannel failed: {e:?}")),
    };
    bridge.attach_port(channel.port1());
    let message = js_sys::Object::new();
    let _ = js_sys::Reflect::set(&message, &"type".into(), &"BRIDGE_CONNECT".into());
    let port = channel.port2();
    if let Err(e) = worker.post_message_with_transferable(&message, &js_sys::Array::of1(&port)) {
        log::error(&format!("offering the bridge port failed: {e:?}"));
    }
}
