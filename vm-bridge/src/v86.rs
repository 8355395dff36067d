//! The v86 engine: the emulator from npm `v86`, driven through its JS API.
//!
//! `libv86.js` must be loaded by the page (it defines the global `V86`).
//! Guest TCP goes through v86's `fetch` network adapter, whose small TCP/IP
//! stack can open connections from the page to a port in the guest.

use crate::engine::{
    ConnEvent, ConnWriter, Engine, EngineError, EngineEvent, GuestConn, StartFrom,
};
use crate::image::ImageSpec;
use crate::log;
use crate::timer::timeout;
use appserver_proto::tcp::{add_mss_option, split_fin};
use futures::channel::{mpsc, oneshot};
use futures::future::LocalBoxFuture;
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::prelude::*;

/// The line the guest's init prints on the serial console once nginx and the
/// agent accept connections.
pub const READY_LINE: &str = "APPSERVER-READY";

#[wasm_bindgen]
extern "C" {
    /// The emulator object from `libv86.js`.
    #[wasm_bindgen(js_name = V86)]
    type V86;

    #[wasm_bindgen(constructor, js_class = "V86", catch)]
    fn new(options: &JsValue) -> Result<V86, JsValue>;

    #[wasm_bindgen(method)]
    fn add_listener(this: &V86, event: &str, listener: &JsValue);

    #[wasm_bindgen(method, catch)]
    fn destroy(this: &V86) -> Result<JsValue, JsValue>;

    #[wasm_bindgen(method, catch)]
    fn save_state(this: &V86) -> Result<js_sys::Promise, JsValue>;

    #[wasm_bindgen(method, getter)]
    fn network_adapter(this: &V86) -> Option<NetAdapter>;

    /// v86's fetch network adapter (its connect API is missing from v86.d.ts).
    #[derive(Clone)]
    type NetAdapter;

    #[wasm_bindgen(method, catch)]
    fn connect(this: &NetAdapter, port: u16) -> Result<TcpConn, JsValue>;

    /// One host-to-guest TCP connection of the adapter.
    type TcpConn;

    #[wasm_bindgen(method)]
    fn on(this: &TcpConn, event: &str, handler: &JsValue);

    #[wasm_bindgen(method)]
    fn write(this: &TcpConn, data: &js_sys::Uint8Array);

    #[wasm_bindgen(method)]
    fn close(this: &TcpConn);
}

/// Where the page serves v86's own files.
#[derive(Debug, Clone)]
pub struct V86Assets {
    /// URL of `v86.wasm`.
    pub wasm: String,
    /// URL of the SeaBIOS image.
    pub bios: String,
    /// URL of the VGA BIOS image.
    pub vga_bios: String,
}

impl Default for V86Assets {
    fn default() -> Self {
        V86Assets {
            wasm: "/v86/v86.wasm".into(),
            bios: "/v86/bios/seabios.bin".into(),
            vga_bios: "/v86/bios/vgabios.bin".into(),
        }
    }
}

/// The v86 engine.
pub struct V86Engine {
    assets: V86Assets,
    emulator: RefCell<Option<V86>>,
}

impl V86Engine {
    /// An engine that loads v86's files from `assets`.
    pub fn new(assets: V86Assets) -> Self {
        V86Engine {
            assets,
            emulator: RefCell::new(None),
        }
    }
}

fn obj(pairs: &[(&str, JsValue)]) -> JsValue {
    let o = js_sys::Object::new();
    for (k, v) in pairs {
        let _ = js_sys::Reflect::set(&o, &(*k).into(), v);
    }
    o.into()
}

fn field(value: &JsValue, name: &str) -> JsValue {
    js_sys::Reflect::get(value, &name.into()).unwrap_or(JsValue::UNDEFINED)
}

impl Engine for V86Engine {
    fn start(
        &self,
        image: &ImageSpec,
        from: StartFrom,
    ) -> Result<mpsc::UnboundedReceiver<EngineEvent>, EngineError> {
        self.stop();
        let m = &image.manifest;
        let mut options = vec![
            ("wasm_path", self.assets.wasm.clone().into()),
            ("memory_size", (m.memory_mb as f64 * 1024.0 * 1024.0).into()),
            ("vga_memory_size", (2.0 * 1024.0 * 1024.0).into()),
            ("bios", obj(&[("url", self.assets.bios.clone().into())])),
            (
                "vga_bios",
                obj(&[("url", self.assets.vga_bios.clone().into())]),
            ),
            (
                "hda",
                obj(&[
                    ("url", image.url("disk").into()),
                    ("async", true.into()),
                    ("size", (image.size("disk") as f64).into()),
                ]),
            ),
            (
                "net_device",
                obj(&[("type", "virtio".into()), ("relay_url", "fetch".into())]),
            ),
            ("autostart", true.into()),
            ("disable_keyboard", true.into()),
            ("disable_mouse", true.into()),
            ("disable_speaker", true.into()),
            // A state saved elsewhere keeps the MAC the guest configured.
            ("preserve_mac_from_state_image", true.into()),
        ];
        let restoring = !matches!(from, StartFrom::Boot);
        match from {
            StartFrom::Boot => {
                options.push(("bzimage", obj(&[("url", image.url("vmlinuz").into())])));
                options.push(("initrd", obj(&[("url", image.url("initrd").into())])));
                options.push(("cmdline", m.cmdline.clone().into()));
            }
            StartFrom::StateUrl(url) => {
                options.push(("initial_state", obj(&[("url", url.into())])));
            }
            StartFrom::StateBytes(buffer) => {
                options.push(("initial_state", obj(&[("buffer", buffer.into())])));
            }
        }
        let emulator = V86::new(&obj(&options))
            .map_err(|e| EngineError::Unavailable(format!("{e:?} (is libv86.js loaded?)")))?;
        let (tx, rx) = mpsc::unbounded();

        let progress_tx = tx.clone();
        let on_progress = Closure::<dyn FnMut(JsValue)>::new(move |e: JsValue| {
            let _ = progress_tx.unbounded_send(EngineEvent::Download {
                file: field(&e, "file_name").as_string().unwrap_or_default(),
                loaded: field(&e, "loaded").as_f64().unwrap_or(0.0),
                total: field(&e, "total").as_f64().unwrap_or(0.0),
            });
        });
        emulator.add_listener("download-progress", &on_progress.into_js_value());

        let ready_tx = tx.clone();
        let on_ready = Closure::<dyn FnMut(JsValue)>::new(move |_: JsValue| {
            if !restoring {
                let _ = ready_tx.unbounded_send(EngineEvent::Booting);
            }
        });
        emulator.add_listener("emulator-ready", &on_ready.into_js_value());
        // v86 restores `initial_state` before it announces `emulator-loaded`.
        let loaded_tx = tx.clone();
        let on_loaded = Closure::<dyn FnMut(JsValue)>::new(move |_: JsValue| {
            if restoring {
                let _ = loaded_tx.unbounded_send(EngineEvent::Restored);
            }
        });
        emulator.add_listener("emulator-loaded", &on_loaded.into_js_value());

        let line = Rc::new(RefCell::new(Vec::<u8>::new()));
        let console_tx = tx;
        let on_serial = Closure::<dyn FnMut(JsValue)>::new(move |byte: JsValue| {
            let byte = byte.as_f64().unwrap_or(0.0) as u8;
            let mut line = line.borrow_mut();
            if byte != b'\n' {
                if byte != b'\r' && line.len() < 4096 {
                    line.push(byte);
                }
                return;
            }
            let text = String::from_utf8_lossy(&line).into_owned();
            line.clear();
            let ready = text.trim() == READY_LINE;
            let _ = console_tx.unbounded_send(EngineEvent::Console(text));
            if ready {
                let _ = console_tx.unbounded_send(EngineEvent::Ready);
            }
        });
        emulator.add_listener("serial0-output-byte", &on_serial.into_js_value());

        *self.emulator.borrow_mut() = Some(emulator);
        Ok(rx)
    }

    fn connect(&self, port: u16) -> LocalBoxFuture<'static, Result<GuestConn, EngineError>> {
        let adapter = self
            .emulator
            .borrow()
            .as_ref()
            .and_then(|e| e.network_adapter());
        Box::pin(async move {
            let adapter = adapter.ok_or(EngineError::NotRunning)?;
            split_guest_fins(&adapter);
            // v86 sends its SYN once and never again; the first one after a
            // restore is usually lost. Give up on a silent attempt quickly and
            // send a new one, waiting a little longer each time.
            for wait_ms in SYN_WAITS_MS {
                let (conn, events, opened) = open(&adapter, port)?;
                match timeout(wait_ms, opened).await {
                    Some(Ok(true)) => {
                        return Ok(GuestConn {
                            events,
                            writer: Box::new(V86Writer(conn)),
                        })
                    }
                    Some(_) => return Err(EngineError::Refused(port)),
                    None => conn.close(),
                }
            }
            Err(EngineError::Refused(port))
        })
    }

    fn save_state(&self) -> LocalBoxFuture<'static, Result<js_sys::ArrayBuffer, EngineError>> {
        let promise = self.emulator.borrow().as_ref().map(|e| e.save_state());
        Box::pin(async move {
            let promise = promise
                .ok_or(EngineError::NotRunning)?
                .map_err(|e| EngineError::Unavailable(format!("save_state failed: {e:?}")))?;
            let state = wasm_bindgen_futures::JsFuture::from(promise)
                .await
                .map_err(|e| EngineError::Unavailable(format!("save_state failed: {e:?}")))?;
            state
                .dyn_into::<js_sys::ArrayBuffer>()
                .map_err(|_| EngineError::Unavailable("save_state returned no buffer".into()))
        })
    }

    fn stop(&self) {
        if let Some(emulator) = self.emulator.borrow_mut().take() {
            let _ = emulator.destroy();
        }
    }
}

/// How long each connection attempt waits for the guest's SYN-ACK.
const SYN_WAITS_MS: [u32; 5] = [250, 500, 1_000, 2_000, 4_000];

/// The MSS the guest may use towards the page: a full 1500-byte frame.
const MSS: u16 = 1460;

/// Calls the adapter's `connect` with its `receive` wrapped for that one
/// call, so the SYN it sends into the guest carries an MSS option (see
/// [`add_mss_option`]).
fn connect_with_mss(adapter: &NetAdapter, port: u16) -> Result<TcpConn, JsValue> {
    let target: JsValue = adapter.clone().into();
    let original: js_sys::Function =
        js_sys::Reflect::get(&target, &"receive".into())?.dyn_into()?;
    let (this, receive) = (target.clone(), original.clone());
    let wrapper =
        Closure::<dyn FnMut(js_sys::Uint8Array)>::new(move |frame: js_sys::Uint8Array| {
            let fixed =
                add_mss_option(&frame.to_vec(), MSS).map(|v| js_sys::Uint8Array::from(&v[..]));
            let _ = receive.call1(&this, fixed.as_ref().unwrap_or(&frame));
        });
    js_sys::Reflect::set(&target, &"receive".into(), wrapper.as_ref())?;
    let conn = adapter.connect(port);
    // The SYN went out synchronously inside `connect`; the prototype's own
    // `receive` serves every later frame.
    js_sys::Reflect::delete_property(target.unchecked_ref::<js_sys::Object>(), &"receive".into())?;
    conn
}

/// The property that marks an adapter whose `send` [`split_guest_fins`]
/// already wrapped.
const FIN_SPLIT_MARK: &str = "appserverSplitsFin";

/// Wraps the adapter's `send` (the guest's frames on their way into v86's
/// TCP stack) so that a segment with both data and FIN arrives as two (see
/// [`split_fin`]): v86 drops the data of such a segment, which cut the last
/// bytes off a response nginx ended with a close. Once per adapter.
fn split_guest_fins(adapter: &NetAdapter) {
    let target: JsValue = adapter.clone().into();
    if js_sys::Reflect::has(&target, &FIN_SPLIT_MARK.into()).unwrap_or(true) {
        return;
    }
    let Ok(original) = js_sys::Reflect::get(&target, &"send".into())
        .and_then(|f| f.dyn_into::<js_sys::Function>().map_err(JsValue::from))
    else {
        log::error("v86's network adapter has no send(): guest FINs are not split");
        return;
    };
    let this = target.clone();
    let wrapper =
        Closure::<dyn FnMut(js_sys::Uint8Array)>::new(move |frame: js_sys::Uint8Array| {
            // Look at the flags in place: only a FIN is worth a copy.
            let ihl = u32::from(frame.get_index(14) & 0x0f) * 4;
            let fin = frame.length() > 14 + ihl + 13
                && frame.get_index(23) == 6
                && frame.get_index(14 + ihl + 13) & 0x01 != 0;
            match fin.then(|| split_fin(&frame.to_vec())).flatten() {
                Some(parts) => {
                    for part in parts {
                        let _ = original.call1(&this, &js_sys::Uint8Array::from(&part[..]));
                    }
                }
                None => {
                    let _ = original.call1(&this, &frame);
                }
            }
        });
    let _ = js_sys::Reflect::set(&target, &"send".into(), &wrapper.into_js_value());
    let _ = js_sys::Reflect::set(&target, &FIN_SPLIT_MARK.into(), &true.into());
}

/// One connection attempt: the connection, its events, and whether the guest
/// accepted it.
type Attempt = (
    TcpConn,
    mpsc::UnboundedReceiver<ConnEvent>,
    oneshot::Receiver<bool>,
);

/// Starts one connection attempt: the connection, its events, and a future
/// that says whether the guest accepted (true) or refused (false).
fn open(adapter: &NetAdapter, port: u16) -> Result<Attempt, EngineError> {
    let conn = connect_with_mss(adapter, port).map_err(|_| EngineError::Refused(port))?;
    let (tx, rx) = mpsc::unbounded();
    let (open_tx, open_rx) = oneshot::channel::<bool>();
    let open_tx = Rc::new(RefCell::new(Some(open_tx)));

    let opened = open_tx.clone();
    let on_connect = Closure::<dyn FnMut()>::new(move || {
        if let Some(o) = opened.borrow_mut().take() {
            let _ = o.send(true);
        }
    });
    let data_tx = tx.clone();
    let on_data =
        Closure::<dyn FnMut(js_sys::Uint8Array)>::new(move |bytes: js_sys::Uint8Array| {
            // v86 reuses its packet buffer: copy before returning.
            let _ = data_tx.unbounded_send(ConnEvent::Data(bytes.to_vec()));
        });
    let shut_tx = tx.clone();
    let on_shutdown = Closure::<dyn FnMut()>::new(move || {
        let _ = shut_tx.unbounded_send(ConnEvent::Shutdown);
    });
    let on_close = Closure::<dyn FnMut()>::new(move || {
        if let Some(o) = open_tx.borrow_mut().take() {
            let _ = o.send(false);
        }
        let _ = tx.unbounded_send(ConnEvent::Closed);
    });
    // The adapter may call these after we stop listening, so JS owns them.
    conn.on("connect", &on_connect.into_js_value());
    conn.on("data", &on_data.into_js_value());
    conn.on("shutdown", &on_shutdown.into_js_value());
    conn.on("close", &on_close.into_js_value());
    Ok((conn, rx, open_rx))
}

struct V86Writer(TcpConn);

impl ConnWriter for V86Writer {
    fn write(&self, bytes: &[u8]) {
        self.0.write(&js_sys::Uint8Array::from(bytes));
    }

    fn close(&self) {
        self.0.close();
    }
}
