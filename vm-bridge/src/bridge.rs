//! The bridge: the VM's lifecycle, and the streams the service worker opens.
//!
//! Each request stream arrives as a `Request` frame, its body as `Data`
//! frames and an `End`. The bridge then waits for the VM to be ready, opens
//! a TCP connection to nginx on guest port 80, writes the request as
//! HTTP/1.1 and sends the parsed response back as frames, never sending more
//! body bytes than the worker has granted credit for.

use crate::agent::{self, AgentError, AppInfo};
use crate::engine::{ConnEvent, Engine, EngineEvent};
use crate::image::{ImageSpec, Manifest};
use crate::log;
use crate::timer::{now_ms, timeout};
use appserver_proto::flow::SendWindow;
use appserver_proto::frame::{Envelope, Frame, RequestHead, ResetCode};
use appserver_proto::http1::{request_head, Event, ResponseParser};
use futures::channel::{mpsc, oneshot};
use futures::{FutureExt, StreamExt};
use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{spawn_local, JsFuture};
use web_sys::{MessageEvent, MessagePort};

/// The guest port nginx listens on.
pub const HTTP_PORT: u16 = 80;
/// How long a request waits for a VM that is still starting.
const READY_WAIT_MS: u32 = 20_000;
/// How long opening a guest connection may take.
const CONNECT_TIMEOUT_MS: u32 = 10_000;
/// Largest data frame sent to the worker.
const CHUNK: usize = 64 * 1024;

/// Where the VM is in its life.
#[derive(Debug, Clone, PartialEq)]
pub enum VmState {
    /// No environment loaded.
    Unloaded,
    /// Fetching image files.
    Loading {
        /// Bytes fetched.
        loaded: f64,
        /// Bytes to fetch, 0 when unknown.
        total: f64,
        /// The file being fetched.
        file: String,
    },
    /// The emulator runs and the guest boots.
    Booting,
    /// nginx and the agent answer.
    Ready,
    /// Loading or booting failed.
    Error(String),
}

impl VmState {
    /// A short stable name for the state, for the page and tests.
    pub fn name(&self) -> &'static str {
        match self {
            VmState::Unloaded => "unloaded",
            VmState::Loading { .. } => "loading",
            VmState::Booting => "booting",
            VmState::Ready => "ready",
            VmState::Error(_) => "error",
        }
    }
}

/// Why a bridge operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BridgeError {
    /// The manifest could not be fetched or read.
    Manifest(String),
    /// The engine could not start.
    Engine(String),
    /// The VM is not ready.
    NotReady,
    /// The guest agent refused or failed.
    Agent(AgentError),
}

impl std::fmt::Display for BridgeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BridgeError::Manifest(why) => write!(f, "cannot read the image manifest: {why}"),
            BridgeError::Engine(why) => write!(f, "{why}"),
            BridgeError::NotReady => {
                write!(f, "the environment is not running: load it first")
            }
            BridgeError::Agent(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for BridgeError {}

struct StreamCtx {
    head: Option<RequestHead>,
    body: Vec<u8>,
    credit: mpsc::UnboundedSender<u32>,
    credit_rx: Option<mpsc::UnboundedReceiver<u32>>,
    /// Dropped when the worker resets the stream, which cancels it.
    _cancel: oneshot::Sender<()>,
    cancel_rx: Option<oneshot::Receiver<()>>,
}

struct Inner {
    engine: Rc<dyn Engine>,
    state: RefCell<VmState>,
    ready_waiters: RefCell<Vec<oneshot::Sender<()>>>,
    apps: RefCell<Option<BTreeSet<String>>>,
    port: RefCell<Option<(MessagePort, Closure<dyn FnMut(MessageEvent)>)>>,
    streams: RefCell<HashMap<u32, StreamCtx>>,
    listeners: RefCell<Vec<Rc<dyn Fn(&VmState)>>>,
    load_started_ms: RefCell<f64>,
    ready_after_ms: RefCell<Option<f64>>,
}

/// The page's handle on the VM. Cheap to clone.
#[derive(Clone)]
pub struct Bridge {
    inner: Rc<Inner>,
}

impl Bridge {
    /// A bridge over `engine`, with no environment loaded.
    pub fn new(engine: Rc<dyn Engine>) -> Self {
        Bridge {
            inner: Rc::new(Inner {
                engine,
                state: RefCell::new(VmState::Unloaded),
                ready_waiters: RefCell::new(Vec::new()),
                apps: RefCell::new(None),
                port: RefCell::new(None),
                streams: RefCell::new(HashMap::new()),
                listeners: RefCell::new(Vec::new()),
                load_started_ms: RefCell::new(0.0),
                ready_after_ms: RefCell::new(None),
            }),
        }
    }

    /// The VM's current state.
    pub fn state(&self) -> VmState {
        self.inner.state.borrow().clone()
    }

    /// Milliseconds from the start of the last load to ready, once ready.
    pub fn ready_after_ms(&self) -> Option<f64> {
        *self.inner.ready_after_ms.borrow()
    }

    /// Calls `listener` on every state change.
    pub fn on_state(&self, listener: impl Fn(&VmState) + 'static) {
        self.inner.listeners.borrow_mut().push(Rc::new(listener));
    }

    fn set_state(&self, state: VmState) {
        *self.inner.state.borrow_mut() = state.clone();
        if state == VmState::Ready {
            for waiter in self.inner.ready_waiters.borrow_mut().drain(..) {
                let _ = waiter.send(());
            }
        }
        let listeners = self.inner.listeners.borrow().clone();
        for listener in listeners {
            listener(&state);
        }
    }

    /// Loads the environment whose files are under `base_url` (ending in `/`):
    /// reads its manifest, starts the engine and follows it to ready.
    pub async fn load(&self, base_url: &str) -> Result<(), BridgeError> {
        if matches!(
            self.state(),
            VmState::Loading { .. } | VmState::Booting | VmState::Ready
        ) {
            return Ok(());
        }
        *self.inner.load_started_ms.borrow_mut() = now_ms();
        self.set_state(VmState::Loading {
            loaded: 0.0,
            total: 0.0,
            file: "manifest.json".into(),
        });
        let manifest = match fetch_manifest(base_url).await {
            Ok(m) => m,
            Err(e) => {
                self.set_state(VmState::Error(e.to_string()));
                return Err(e);
            }
        };
        let spec = ImageSpec {
            base_url: base_url.to_owned(),
            manifest,
        };
        let mut events = match self.inner.engine.start(&spec) {
            Ok(rx) => rx,
            Err(e) => {
                let e = BridgeError::Engine(e.to_string());
                self.set_state(VmState::Error(e.to_string()));
                return Err(e);
            }
        };
        log::info(&format!(
            "starting environment {} {}",
            spec.manifest.id, spec.manifest.version
        ));
        let this = self.clone();
        spawn_local(async move {
            while let Some(event) = events.next().await {
                match event {
                    EngineEvent::Download {
                        file,
                        loaded,
                        total,
                    } => {
                        if matches!(this.state(), VmState::Loading { .. }) {
                            this.set_state(VmState::Loading {
                                loaded,
                                total,
                                file,
                            });
                        }
                    }
                    EngineEvent::Booting => this.set_state(VmState::Booting),
                    EngineEvent::Console(line) => {
                        web_sys::console::debug_1(&format!("[guest] {line}").into())
                    }
                    EngineEvent::Ready => this.on_guest_ready().await,
                    EngineEvent::Crashed(why) => this.set_state(VmState::Error(why)),
                }
            }
        });
        Ok(())
    }

    async fn on_guest_ready(&self) {
        match agent::list_apps(&*self.inner.engine).await {
            Ok(apps) => self.set_apps(apps.into_iter().map(|a| a.name).collect()),
            Err(e) => log::error(&format!("listing apps after boot failed: {e}")),
        }
        let elapsed = now_ms() - *self.inner.load_started_ms.borrow();
        *self.inner.ready_after_ms.borrow_mut() = Some(elapsed);
        log::info(&format!("environment ready after {elapsed:.0} ms"));
        self.set_state(VmState::Ready);
    }

    /// Waits until the VM is ready, for at most `ms` milliseconds.
    pub async fn wait_ready(&self, ms: u32) -> bool {
        if self.state() == VmState::Ready {
            return true;
        }
        if matches!(self.state(), VmState::Unloaded | VmState::Error(_)) {
            return false;
        }
        let (tx, rx) = oneshot::channel();
        self.inner.ready_waiters.borrow_mut().push(tx);
        matches!(timeout(ms, rx).await, Some(Ok(())))
    }

    /// The apps deployed in the guest, as last read from its agent.
    pub fn apps(&self) -> Vec<String> {
        self.inner.apps.borrow().iter().flatten().cloned().collect()
    }

    fn set_apps(&self, apps: BTreeSet<String>) {
        let names: Vec<String> = apps.iter().cloned().collect();
        *self.inner.apps.borrow_mut() = Some(apps);
        self.send(0, Frame::Apps(names));
    }

    /// Deploys a tar archive as app `name` and refreshes the app list.
    pub async fn deploy(&self, name: &str, tar: &[u8]) -> Result<AppInfo, BridgeError> {
        if self.state() != VmState::Ready {
            return Err(BridgeError::NotReady);
        }
        let info = agent::deploy(&*self.inner.engine, name, tar)
            .await
            .map_err(BridgeError::Agent)?;
        self.refresh_apps().await?;
        Ok(info)
    }

    /// Deletes app `name` and refreshes the app list.
    pub async fn delete(&self, name: &str) -> Result<(), BridgeError> {
        if self.state() != VmState::Ready {
            return Err(BridgeError::NotReady);
        }
        agent::delete(&*self.inner.engine, name)
            .await
            .map_err(BridgeError::Agent)?;
        self.refresh_apps().await?;
        Ok(())
    }

    /// Reads the app list from the agent, with sizes.
    pub async fn refresh_apps(&self) -> Result<Vec<AppInfo>, BridgeError> {
        let apps = agent::list_apps(&*self.inner.engine)
            .await
            .map_err(BridgeError::Agent)?;
        self.set_apps(apps.iter().map(|a| a.name.clone()).collect());
        Ok(apps)
    }

    /// Takes `port` as the channel to the service worker, replacing any
    /// previous one (whose streams died with the worker that held them).
    pub fn attach_port(&self, port: MessagePort) {
        let this = self.clone();
        let onmessage = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
            this.on_frame(event.data());
        });
        port.set_onmessage(Some(onmessage.as_ref().unchecked_ref()));
        port.start();
        if let Some((old, _)) = self.inner.port.borrow_mut().replace((port, onmessage)) {
            old.close();
        }
        self.inner.streams.borrow_mut().clear();
        if let Some(apps) = self.inner.apps.borrow().clone() {
            self.send(0, Frame::Apps(apps.into_iter().collect()));
        }
    }

    fn send(&self, stream: u32, frame: Frame) {
        let port = self.inner.port.borrow().as_ref().map(|(p, _)| p.clone());
        if let Some(port) = port {
            send_on(&port, stream, frame);
        }
    }

    fn on_frame(&self, data: JsValue) {
        let Some(buffer) = data.dyn_ref::<js_sys::ArrayBuffer>() else {
            return;
        };
        let envelope = match Envelope::decode(&js_sys::Uint8Array::new(buffer).to_vec()) {
            Ok(env) => env,
            Err(e) => {
                log::error(&format!("dropped a bad frame from the worker: {e}"));
                return;
            }
        };
        let id = envelope.stream;
        let mut streams = self.inner.streams.borrow_mut();
        match envelope.frame {
            Frame::Request(head) => {
                let (credit, credit_rx) = mpsc::unbounded();
                let (cancel, cancel_rx) = oneshot::channel();
                streams.insert(
                    id,
                    StreamCtx {
                        head: Some(head),
                        body: Vec::new(),
                        credit,
                        credit_rx: Some(credit_rx),
                        _cancel: cancel,
                        cancel_rx: Some(cancel_rx),
                    },
                );
            }
            Frame::Data(bytes) => {
                if let Some(ctx) = streams.get_mut(&id) {
                    ctx.body.extend(bytes);
                }
            }
            Frame::End => {
                let Some(ctx) = streams.get_mut(&id) else {
                    return;
                };
                let (Some(head), Some(credit_rx), Some(cancel_rx)) =
                    (ctx.head.take(), ctx.credit_rx.take(), ctx.cancel_rx.take())
                else {
                    return;
                };
                let body = std::mem::take(&mut ctx.body);
                let port = self.inner.port.borrow().as_ref().map(|(p, _)| p.clone());
                let Some(port) = port else { return };
                let this = self.clone();
                spawn_local(async move {
                    let exchange = Exchange {
                        id,
                        port: port.clone(),
                        credit_rx,
                    };
                    futures::select! {
                        _ = this.run_stream(exchange, head, body).fuse() => {}
                        _ = cancel_rx.fuse() => {}
                    }
                    this.inner.streams.borrow_mut().remove(&id);
                });
            }
            Frame::Credit(n) => {
                if let Some(ctx) = streams.get(&id) {
                    let _ = ctx.credit.unbounded_send(n);
                }
            }
            Frame::Reset(..) => {
                streams.remove(&id);
            }
            Frame::Response(_)
            | Frame::Apps(_)
            | Frame::WsMessage { .. }
            | Frame::WsClose { .. } => {}
        }
    }

    async fn run_stream(&self, mut ex: Exchange, head: RequestHead, body: Vec<u8>) {
        if !self.wait_ready(READY_WAIT_MS).await {
            let message = match self.state() {
                VmState::Unloaded => {
                    "No environment is loaded. Open /application-server/ and load \
one."
                        .to_owned()
                }
                VmState::Error(why) => format!("The environment failed to start: {why}"),
                _ => format!(
                    "The environment is still starting ({} s passed). Try again in a moment.",
                    READY_WAIT_MS / 1000
                ),
            };
            return ex.reset(ResetCode::NotRunning, message);
        }
        let known = self
            .inner
            .apps
            .borrow()
            .as_ref()
            .map(|a| a.contains(&head.app));
        if known == Some(false) {
            let message = format!(
                "No app named `{}` is deployed. Deploy it from /application-server/.",
                head.app
            );
            return ex.reset(ResetCode::UnknownApp, message);
        }
        let connect = self.inner.engine.connect(HTTP_PORT);
        let mut conn = match timeout(CONNECT_TIMEOUT_MS, connect).await {
            Some(Ok(conn)) => conn,
            Some(Err(e)) => return ex.reset(ResetCode::GuestUnreachable, e.to_string()),
            None => {
                return ex.reset(
                    ResetCode::GuestUnreachable,
                    "nginx in the guest did not accept \
the connection in time"
                        .to_owned(),
                )
            }
        };
        let body_len = if body.is_empty() && head.method == "GET" {
            None
        } else {
            Some(body.len() as u64)
        };
        let request = request_head(
            &head.method,
            &head.target,
            &head.headers,
            &head.prefix,
            body_len,
        );
        conn.writer.write(&request);
        if !body.is_empty() {
            conn.writer.write(&body);
        }
        let mut parser = ResponseParser::new(&head.method);
        let mut window = SendWindow::default();
        let outcome = loop {
            let events = match conn.events.next().await {
                Some(ConnEvent::Data(bytes)) => parser.feed(&bytes),
                // FIXME(#2): a close-delimited body (no length, not chunked)
                // may lose its last segment to v86's FIN handling; nginx and
                // the app servers here always send a length or chunks.
                Some(ConnEvent::Shutdown) | Some(ConnEvent::Closed) | None => parser.finish(),
            };
            let events = match events {
                Ok(events) => events,
                Err(e) => break Err(e.to_string()),
            };
            let mut done = false;
            for event in events {
                match event {
                    Event::Head(head) => ex.send(Frame::Response(head)),
                    Event::Body(bytes) => {
                        if !ex.send_body(&mut window, &bytes).await {
                            break;
                        }
                    }
                    Event::Done => done = true,
                }
            }
            if done {
                break Ok(());
            }
        };
        conn.writer.close();
        match outcome {
            Ok(()) => ex.send(Frame::End),
            Err(why) => ex.reset(
                ResetCode::BadGateway,
                format!("nginx's answer was broken: {why}"),
            ),
        }
    }
}

/// One request in flight: where its frames go and the credit it receives.
struct Exchange {
    id: u32,
    port: MessagePort,
    credit_rx: mpsc::UnboundedReceiver<u32>,
}

impl Exchange {
    fn send(&self, frame: Frame) {
        send_on(&self.port, self.id, frame);
    }

    fn reset(&self, code: ResetCode, message: String) {
        self.send(Frame::Reset(code, message));
    }

    /// Sends body bytes within the worker's credit; false when the worker
    /// went away while we waited for credit.
    // FIXME(#2): v86's TCP stack acknowledges every guest segment at once and
    // offers no receive window, so a reader that stops reading makes the
    // bridge buffer the rest of the guest's response instead of slowing it.
    async fn send_body(&mut self, window: &mut SendWindow, mut bytes: &[u8]) -> bool {
        while !bytes.is_empty() {
            let granted = window.take(bytes.len().min(CHUNK));
            if granted == 0 {
                match self.credit_rx.next().await {
                    Some(n) => window.grant(n),
                    None => return false,
                }
                continue;
            }
            self.send(Frame::Data(bytes[..granted].to_vec()));
            bytes = &bytes[granted..];
        }
        true
    }
}

fn send_on(port: &MessagePort, stream: u32, frame: Frame) {
    let bytes = js_sys::Uint8Array::from(&Envelope::new(stream, frame).encode()[..]);
    let buffer = bytes.buffer();
    if let Err(e) = port.post_message_with_transferable(&buffer, &js_sys::Array::of1(&buffer)) {
        log::error(&format!("posting a frame to the worker failed: {e:?}"));
    }
}

async fn fetch_manifest(base_url: &str) -> Result<Manifest, BridgeError> {
    let url = format!("{base_url}manifest.json");
    let window = web_sys::window().ok_or_else(|| BridgeError::Manifest("no window".into()))?;
    let response: web_sys::Response = JsFuture::from(window.fetch_with_str(&url))
        .await
        .map_err(|e| BridgeError::Manifest(format!("fetching {url} failed: {e:?}")))?
        .unchecked_into();
    if !response.ok() {
        return Err(BridgeError::Manifest(format!(
            "{url} answered {}",
            response.status()
        )));
    }
    let text = JsFuture::from(
        response
            .text()
            .map_err(|e| BridgeError::Manifest(format!("{e:?}")))?,
    )
    .await
    .map_err(|e| BridgeError::Manifest(format!("{e:?}")))?
    .as_string()
    .unwrap_or_default();
    serde_json::from_str(&text).map_err(|e| BridgeError::Manifest(format!("{url}: {e}")))
}
