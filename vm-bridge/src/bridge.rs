//! The bridge: the VM's lifecycle, and the streams the service worker opens.
//!
//! Each request stream arrives as a `Request` frame, its body as `Data`
//! frames and an `End`. The bridge then waits for the VM to be ready, opens
//! a TCP connection to nginx on guest port 80, writes the request as
//! HTTP/1.1 and sends the parsed response back as frames, never sending more
//! body bytes than the worker has granted credit for.

use crate::agent::{self, AgentError, AppInfo};
use crate::api::{ApiHandler, ApiRequest, ApiResponse};
use crate::engine::{ConnEvent, Engine, EngineEvent, StartFrom};
use crate::image::{ImageSpec, Manifest};
use crate::log;
use crate::store::{decompress, Store, StoredApp};
use crate::timer::{now_ms, sleep, timeout};
use appserver_proto::flow::SendWindow;
use appserver_proto::frame::{Envelope, Frame, RequestHead, ResetCode, ResponseHead};
use appserver_proto::http1::{request_head, Event, ResponseParser};
use appserver_proto::requests::{Record, RequestLog};
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
/// How long a restored VM may take to answer before it counts as broken.
const RESTORE_WAIT_MS: u32 = 15_000;
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
    /// A saved state was restored; waiting for the guest to answer.
    Restoring,
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
            VmState::Restoring => "restoring",
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
    /// Browser storage failed: the change will not survive a reload.
    Store(String),
    /// An image file could not be fetched, or did not match its hash.
    Download(String),
}

/// A finished deploy.
#[derive(Debug, Clone)]
pub struct Deployed {
    /// What the agent reports about the app.
    pub info: AppInfo,
    /// The compressed machine state stored for reloads, or why it was not.
    pub stored_bytes: Result<f64, BridgeError>,
}

impl BridgeError {
    /// A stable code for the error, for the page and the API.
    pub fn code(&self) -> &str {
        match self {
            BridgeError::Manifest(_) => "manifest_unavailable",
            BridgeError::Engine(_) => "engine_failed",
            BridgeError::NotReady => "not_running",
            BridgeError::Agent(e) => e.code(),
            BridgeError::Store(_) => "storage_failed",
            BridgeError::Download(_) => "download_failed",
        }
    }
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
            BridgeError::Store(why) => write!(f, "{why}"),
            BridgeError::Download(why) => write!(f, "{why}"),
        }
    }
}

impl std::error::Error for BridgeError {}

struct StreamCtx {
    head: Option<RequestHead>,
    /// True for a deploy API request, which the page answers itself.
    api: bool,
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
    /// The loaded environment's id and image.
    env: RefCell<Option<(String, Rc<ImageSpec>)>>,
    store: RefCell<Option<Rc<Store>>>,
    /// Counts engine starts, so events of a replaced start are ignored.
    generation: std::cell::Cell<u32>,
    ready_after_ms: RefCell<Option<f64>>,
    /// The code of the last load failure.
    error_code: RefCell<String>,
    /// Requests answered, by app.
    requests: RefCell<RequestLog>,
    /// What answers the deploy API.
    api: RefCell<Option<ApiHandler>>,
    /// Deploys, deletes and controls under way: the guest is busy with them.
    busy: std::cell::Cell<u32>,
    /// Whether a task waits for the Node.js pool to refill (one at a time).
    refill_watch: std::cell::Cell<bool>,
}

/// Counts an operation as under way until dropped.
struct Busy(Rc<Inner>);

impl Busy {
    fn new(inner: &Rc<Inner>) -> Self {
        inner.busy.set(inner.busy.get() + 1);
        Busy(inner.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.set(self.0.busy.get().saturating_sub(1));
    }
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
                env: RefCell::new(None),
                store: RefCell::new(None),
                generation: std::cell::Cell::new(0),
                ready_after_ms: RefCell::new(None),
                error_code: RefCell::new(String::new()),
                requests: RefCell::new(RequestLog::new()),
                api: RefCell::new(None),
                busy: std::cell::Cell::new(0),
                refill_watch: std::cell::Cell::new(false),
            }),
        }
    }

    /// The VM's current state.
    pub fn state(&self) -> VmState {
        self.inner.state.borrow().clone()
    }

    /// True while a deploy, delete, start, stop or restart is under way. The
    /// guest's CPU is what they wait for, so pollers hold back meanwhile.
    pub fn busy(&self) -> bool {
        self.inner.busy.get() > 0
    }

    /// Milliseconds from the start of the last load to ready, once ready.
    pub fn ready_after_ms(&self) -> Option<f64> {
        *self.inner.ready_after_ms.borrow()
    }

    /// Sets what answers the deploy API's requests.
    pub fn set_api_handler(&self, handler: ApiHandler) {
        *self.inner.api.borrow_mut() = Some(handler);
    }

    /// Calls `listener` on every state change.
    pub fn on_state(&self, listener: impl Fn(&VmState) + 'static) {
        self.inner.listeners.borrow_mut().push(Rc::new(listener));
    }

    /// Why the last load failed: a stable code and the message, while the
    /// state is [`VmState::Error`].
    pub fn error_code(&self) -> Option<String> {
        matches!(self.state(), VmState::Error(_)).then(|| self.inner.error_code.borrow().clone())
    }

    fn fail(&self, code: &str, message: String) {
        log::error(&format!("{code}: {message}"));
        *self.inner.error_code.borrow_mut() = code.to_owned();
        self.set_state(VmState::Error(message));
    }

    /// The loaded environment's id and manifest.
    pub fn environment(&self) -> Option<(String, Manifest)> {
        let env = self.inner.env.borrow();
        env.as_ref()
            .map(|(id, spec)| (id.clone(), spec.manifest.clone()))
    }

    /// How many requests app `name` answered since the page loaded, and the
    /// most recent ones, newest first.
    pub fn requests(&self, name: &str) -> (u64, Vec<Record>) {
        let log = self.inner.requests.borrow();
        (log.count(name), log.recent(name))
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

    /// Loads environment `env`, whose files are under `base_url` (ending in
    /// `/`): reads its manifest and starts the VM from the best state there
    /// is (the one saved after the user's last change, else the image's warm
    /// state, else a cold boot), then follows it to ready.
    pub async fn load(&self, env: &str, base_url: &str) -> Result<(), BridgeError> {
        if matches!(
            self.state(),
            VmState::Loading { .. } | VmState::Booting | VmState::Restoring | VmState::Ready
        ) {
            return Ok(());
        }
        *self.inner.load_started_ms.borrow_mut() = now_ms();
        self.set_state(VmState::Loading {
            loaded: 0.0,
            total: 0.0,
            file: "manifest.json".into(),
        });
        let result = self.start_env(env, base_url).await;
        if let Err(e) = &result {
            self.fail(&e.code().to_owned(), e.to_string());
        }
        result
    }

    async fn start_env(&self, env: &str, base_url: &str) -> Result<(), BridgeError> {
        let manifest = fetch_manifest(base_url).await?;
        let spec = Rc::new(ImageSpec {
            base_url: base_url.to_owned(),
            manifest,
        });
        *self.inner.env.borrow_mut() = Some((env.to_owned(), spec.clone()));
        if self.inner.store.borrow().is_none() {
            match Store::open().await {
                Ok(store) => *self.inner.store.borrow_mut() = Some(Rc::new(store)),
                Err(e) => log::error(&format!("changes will not survive a reload: {e}")),
            }
        }
        let mut from = self.image_start(&spec);
        if let Some(store) = self.store() {
            match store.load_state(env).await {
                Ok(Some(saved)) if saved.image_version == spec.manifest.version => {
                    self.set_state(VmState::Loading {
                        loaded: saved.blob.size(),
                        total: saved.blob.size(),
                        file: "saved state".into(),
                    });
                    match decompress(&saved.blob).await {
                        Ok(buffer) => from = StartFrom::StateBytes(buffer),
                        Err(e) => log::error(&format!("the saved state is unreadable: {e}")),
                    }
                }
                Ok(Some(_)) => log::info("the saved state belongs to another image version"),
                Ok(None) => {}
                Err(e) => log::error(&e.to_string()),
            }
        }
        // Only the user's own saved state arrives here as bytes.
        let from_saved = matches!(from, StartFrom::StateBytes(_));
        let from = self.fetch_state(&spec, from).await?;
        self.start_engine(spec, from, from_saved)
    }

    /// Fetches the image's warm state here rather than in the emulator, which
    /// retries a failed download forever: a file that cannot be had, or that
    /// the worker found corrupt, then fails the load with the reason.
    async fn fetch_state(
        &self,
        spec: &ImageSpec,
        from: StartFrom,
    ) -> Result<StartFrom, BridgeError> {
        let StartFrom::StateUrl(url) = from else {
            return Ok(from);
        };
        let total = spec.manifest.state.as_ref().map_or(0.0, |s| s.size as f64);
        let file = "state.bin.zst".to_owned();
        self.set_state(VmState::Loading {
            loaded: 0.0,
            total,
            file: file.clone(),
        });
        let buffer = fetch_bytes(&url).await.map_err(BridgeError::Download)?;
        let loaded = buffer.byte_length() as f64;
        self.set_state(VmState::Loading {
            loaded,
            total: total.max(loaded),
            file,
        });
        Ok(StartFrom::StateBytes(buffer))
    }

    /// How to start from the image alone: its warm state if it ships one.
    fn image_start(&self, spec: &ImageSpec) -> StartFrom {
        match spec.manifest.state {
            Some(_) => StartFrom::StateUrl(spec.url("state")),
            None => StartFrom::Boot,
        }
    }

    fn store(&self) -> Option<Rc<Store>> {
        self.inner.store.borrow().clone()
    }

    /// Starts the engine `from` a boot or a state; `from_saved` says that
    /// the state is the user's saved one, which may fall back to the image's.
    fn start_engine(
        &self,
        spec: Rc<ImageSpec>,
        from: StartFrom,
        from_saved: bool,
    ) -> Result<(), BridgeError> {
        let label = match &from {
            StartFrom::Boot => "a cold boot",
            _ if from_saved => "the saved state",
            _ => "the image's warm state",
        };
        let mut events = self
            .inner
            .engine
            .start(&spec, from)
            .map_err(|e| BridgeError::Engine(e.to_string()))?;
        let generation = self.inner.generation.get() + 1;
        self.inner.generation.set(generation);
        if from_saved {
            // A state v86 cannot read fails inside the emulator without an
            // event: if this start is not ready in time, take the image's.
            let this = self.clone();
            let spec = spec.clone();
            spawn_local(async move {
                sleep(RESTORE_WAIT_MS).await;
                let current = this.inner.generation.get() == generation;
                if current && this.state() != VmState::Ready {
                    log::error("the saved state did not restore in time; starting from the image");
                    this.fall_back(spec).await;
                }
            });
        }
        let m = &spec.manifest;
        log::info(&format!(
            "starting environment {} {} from {label}",
            m.id, m.version
        ));
        let this = self.clone();
        spawn_local(async move {
            while let Some(event) = events.next().await {
                if this.inner.generation.get() != generation {
                    return;
                }
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
                    EngineEvent::Restored => {
                        this.set_state(VmState::Restoring);
                        if this.wait_for_agent().await {
                            let now = (js_sys::Date::now() / 1000.0) as u64;
                            if let Err(e) = agent::set_clock(&*this.inner.engine, now).await {
                                log::error(&format!("setting the guest clock failed: {e}"));
                            }
                            this.on_guest_ready().await;
                        } else if from_saved {
                            // The saved state does not come back: start from
                            // the image and redeploy the stored apps instead.
                            log::error("the saved state did not answer; starting from the image");
                            this.fall_back(spec.clone()).await;
                            return;
                        } else {
                            this.fail(
                                "guest_unresponsive",
                                "the restored VM does not answer".into(),
                            );
                        }
                    }
                    EngineEvent::Console(line) => {
                        web_sys::console::debug_1(&format!("[guest] {line}").into())
                    }
                    EngineEvent::Ready => this.on_guest_ready().await,
                    EngineEvent::Crashed(why) => {
                        let code = match this.state() {
                            VmState::Loading { .. } => "download_failed",
                            _ => "vm_crashed",
                        };
                        this.fail(code, why);
                    }
                }
            }
        });
        Ok(())
    }

    async fn fall_back(&self, spec: Rc<ImageSpec>) {
        let env = spec.manifest.id.clone();
        if let Some(store) = self.store() {
            if let Err(e) = store.drop_state(&env).await {
                log::error(&e.to_string());
            }
        }
        let from = self.image_start(&spec);
        let started = match self.fetch_state(&spec, from).await {
            Ok(from) => self.start_engine(spec, from, false),
            Err(e) => Err(e),
        };
        if let Err(e) = started {
            self.fail(&e.code().to_owned(), e.to_string());
        }
    }

    /// Polls the guest agent until it answers, for a VM just restored.
    async fn wait_for_agent(&self) -> bool {
        let deadline = now_ms() + RESTORE_WAIT_MS as f64;
        while now_ms() < deadline {
            let probe = agent::list_apps(&*self.inner.engine);
            if let Some(Ok(_)) = timeout(2_000, probe).await {
                return true;
            }
            sleep(100).await;
        }
        false
    }

    async fn on_guest_ready(&self) {
        match agent::list_apps(&*self.inner.engine).await {
            Ok(apps) => {
                let names: BTreeSet<String> = apps.into_iter().map(|a| a.name).collect();
                self.set_apps(names.clone());
                self.replay_missing(&names).await;
            }
            Err(e) => log::error(&format!("listing apps after start failed: {e}")),
        }
        let elapsed = now_ms() - *self.inner.load_started_ms.borrow();
        *self.inner.ready_after_ms.borrow_mut() = Some(elapsed);
        log::info(&format!("environment ready after {elapsed:.0} ms"));
        self.set_state(VmState::Ready);
    }

    /// Redeploys the stored apps the guest lacks (after an image change or a
    /// state that would not restore), then saves a state that has them.
    async fn replay_missing(&self, present: &BTreeSet<String>) {
        let (Some(store), Some(env)) = (self.store(), self.env_id()) else {
            return;
        };
        let stored = match store.apps(&env).await {
            Ok(apps) => apps,
            Err(e) => return log::error(&e.to_string()),
        };
        let mut replayed = false;
        for (name, archive, config) in stored.iter().filter(|(n, _, _)| !present.contains(n)) {
            match agent::deploy(&*self.inner.engine, name, archive, config.as_deref()).await {
                Ok(_) => replayed = true,
                Err(e) => log::error(&format!("redeploying {name} failed: {e}")),
            }
        }
        if replayed {
            if let Ok(apps) = agent::list_apps(&*self.inner.engine).await {
                self.set_apps(apps.into_iter().map(|a| a.name).collect());
            }
            if let Err(e) = self.persist(None).await {
                log::error(&e.to_string());
            }
        }
    }

    fn env_id(&self) -> Option<String> {
        self.inner.env.borrow().as_ref().map(|(id, _)| id.clone())
    }

    /// Saves the machine's state, and with it one app's archive (or its
    /// removal), so both survive a reload. Returns the stored bytes.
    /// Saves the whole machine now (apps, their processes and the data they
    /// wrote since the last save), as before a switch of environment;
    /// resolves to the bytes stored.
    pub async fn save(&self) -> Result<f64, BridgeError> {
        if self.state() != VmState::Ready {
            return Err(BridgeError::NotReady);
        }
        self.persist(None).await
    }

    async fn persist(
        &self,
        app: Option<(&str, Option<StoredApp<'_>>)>,
    ) -> Result<f64, BridgeError> {
        let (Some(store), Some((env, spec))) = (self.store(), self.inner.env.borrow().clone())
        else {
            return Err(BridgeError::Store("browser storage is unavailable".into()));
        };
        let state = self
            .inner
            .engine
            .save_state()
            .await
            .map_err(|e| BridgeError::Engine(e.to_string()))?;
        store
            .save(&env, &spec.manifest.version, &state, app)
            .await
            .map_err(|e| BridgeError::Store(e.to_string()))
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

    /// Deploys a tar archive as app `name` with settings `config` (JSON, see
    /// [`agent::deploy`]), refreshes the app list and saves the machine so
    /// the app survives a reload. `on_deployed` hears about the app as soon
    /// as the guest serves it, before the (slower) save.
    pub async fn deploy(
        &self,
        name: &str,
        tar: &[u8],
        config: Option<&str>,
        on_deployed: &dyn Fn(&AppInfo),
    ) -> Result<Deployed, BridgeError> {
        if self.state() != VmState::Ready {
            return Err(BridgeError::NotReady);
        }
        let _busy = Busy::new(&self.inner);
        let started = now_ms();
        let info = agent::deploy(&*self.inner.engine, name, tar, config)
            .await
            .map_err(BridgeError::Agent)?;
        on_deployed(&info);
        self.refresh_apps().await?;
        let deployed = now_ms();
        let stored_app = StoredApp {
            archive: tar,
            config,
        };
        let stored = self.persist(Some((name, Some(stored_app)))).await;
        self.save_when_pool_refilled();
        log::info(&format!(
            "deployed {name} ({} bytes) in {:.0} ms (in the guest: {:?}), saved the VM in {:.0} ms",
            tar.len(),
            deployed - started,
            info.timings_ms,
            now_ms() - deployed
        ));
        Ok(Deployed {
            info,
            stored_bytes: stored,
        })
    }

    /// Deletes app `name`, refreshes the app list and saves the machine.
    pub async fn delete(&self, name: &str) -> Result<(), BridgeError> {
        if self.state() != VmState::Ready {
            return Err(BridgeError::NotReady);
        }
        let _busy = Busy::new(&self.inner);
        agent::delete(&*self.inner.engine, name)
            .await
            .map_err(BridgeError::Agent)?;
        self.inner.requests.borrow_mut().forget(name);
        self.refresh_apps().await?;
        self.persist(Some((name, None))).await.map(|_| ())
    }

    /// Starts, stops or restarts app `name`'s process, and saves the machine
    /// so a reload finds it in the same state.
    pub async fn control(&self, name: &str, action: agent::Action) -> Result<AppInfo, BridgeError> {
        if self.state() != VmState::Ready {
            return Err(BridgeError::NotReady);
        }
        let _busy = Busy::new(&self.inner);
        let info = agent::control(&*self.inner.engine, name, action)
            .await
            .map_err(BridgeError::Agent)?;
        self.persist(None).await?;
        self.save_when_pool_refilled();
        Ok(info)
    }

    /// A pool that cannot fork (Node) replaces the warm process an app took
    /// with a new one, which takes a minute in the emulator. Once it is warm,
    /// save the machine again so the next reload has a full pool too.
    /// One such task runs at a time: a deploy while it waits leaves it to
    /// the one waiting, which then saves once for both.
    fn save_when_pool_refilled(&self) {
        if self.inner.refill_watch.replace(true) {
            return;
        }
        let this = self.clone();
        spawn_local(async move {
            this.watch_refill().await;
            this.inner.refill_watch.set(false);
        });
    }

    async fn watch_refill(&self) {
        // Give up after 10 minutes; a later deploy tries again.
        for _ in 0..120 {
            sleep(5_000).await;
            if self.state() != VmState::Ready {
                return;
            }
            if self.busy() {
                // A deploy or a start is under way: its status can wait.
                continue;
            }
            let Ok(status) = agent::status(&*self.inner.engine).await else {
                return;
            };
            let warming = status["pool"]["pool"]["warming"].as_u64();
            match warming {
                // This pool does not refill (Python forks), or has nothing to report.
                None => return,
                Some(0) => {
                    if let Err(e) = self.persist(None).await {
                        log::error(&format!("saving after the pool refilled: {e}"));
                    }
                    log::info("saved the VM with its warm pool refilled");
                    return;
                }
                Some(_) => {}
            }
        }
    }

    /// The environment's status from the guest agent: its pool and the
    /// VM's memory (`meminfo_kb`).
    pub async fn guest_status(&self) -> Result<serde_json::Value, BridgeError> {
        if self.state() != VmState::Ready {
            return Err(BridgeError::NotReady);
        }
        agent::status(&*self.inner.engine)
            .await
            .map_err(BridgeError::Agent)
    }

    /// The end of app `name`'s output.
    pub async fn logs(&self, name: &str) -> Result<String, BridgeError> {
        if self.state() != VmState::Ready {
            return Err(BridgeError::NotReady);
        }
        agent::logs(&*self.inner.engine, name)
            .await
            .map_err(BridgeError::Agent)
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
        let api = matches!(envelope.frame, Frame::ApiRequest(_));
        let mut streams = self.inner.streams.borrow_mut();
        match envelope.frame {
            Frame::Request(head) | Frame::ApiRequest(head) => {
                let (credit, credit_rx) = mpsc::unbounded();
                let (cancel, cancel_rx) = oneshot::channel();
                streams.insert(
                    id,
                    StreamCtx {
                        head: Some(head),
                        api,
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
                let api = ctx.api;
                let port = self.inner.port.borrow().as_ref().map(|(p, _)| p.clone());
                let Some(port) = port else { return };
                let this = self.clone();
                if api {
                    let exchange = Exchange {
                        id,
                        port,
                        credit_rx,
                        status: Rc::new(std::cell::Cell::new(0)),
                    };
                    spawn_local(async move {
                        futures::select! {
                            _ = this.run_api(exchange, head, body).fuse() => {}
                            _ = cancel_rx.fuse() => {}
                        }
                        this.inner.streams.borrow_mut().remove(&id);
                    });
                    return;
                }
                spawn_local(async move {
                    let status = Rc::new(std::cell::Cell::new(0));
                    let exchange = Exchange {
                        id,
                        port: port.clone(),
                        credit_rx,
                        status: status.clone(),
                    };
                    let started = now_ms();
                    let (app, method) = (head.app.clone(), head.method.clone());
                    let target = head
                        .target
                        .strip_prefix(&format!("/app/{app}"))
                        .unwrap_or(&head.target)
                        .to_owned();
                    futures::select! {
                        _ = this.run_stream(exchange, head, body).fuse() => {}
                        _ = cancel_rx.fuse() => {}
                    }
                    this.inner.streams.borrow_mut().remove(&id);
                    let record = Record {
                        at_ms: js_sys::Date::now(),
                        method,
                        target,
                        status: status.get(),
                        ms: now_ms() - started,
                    };
                    this.inner.requests.borrow_mut().record(&app, record);
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

    /// Answers one deploy API request with the page's handler.
    async fn run_api(&self, mut ex: Exchange, head: RequestHead, body: Vec<u8>) {
        let handler = self.inner.api.borrow().clone();
        let response = match handler {
            Some(handler) => {
                handler(ApiRequest {
                    method: head.method,
                    target: head.target,
                    headers: head.headers,
                    body,
                })
                .await
            }
            None => ApiResponse::error(
                503,
                "not_running",
                "This page does not answer the deploy API: open /application-server/.",
            ),
        };
        ex.send(Frame::Response(ResponseHead {
            status: response.status,
            headers: response.headers,
        }));
        let mut window = SendWindow::default();
        if ex.send_body(&mut window, &response.body).await {
            ex.send(Frame::End);
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
    /// The status the browser gets: the response's, or the error page's
    /// for a reset; 0 while neither was sent (a cancelled request).
    status: Rc<std::cell::Cell<u16>>,
}

impl Exchange {
    fn send(&self, frame: Frame) {
        match &frame {
            Frame::Response(head) => self.status.set(head.status),
            Frame::Reset(code, _) if self.status.get() == 0 => self.status.set(code.status()),
            _ => {}
        }
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

/// The body of `url`, or why there is none: the status and the error text
/// the worker answered with.
async fn fetch_bytes(url: &str) -> Result<js_sys::ArrayBuffer, String> {
    let window = web_sys::window().ok_or("no window")?;
    let response: web_sys::Response = JsFuture::from(window.fetch_with_str(url))
        .await
        .map_err(|e| format!("fetching {url} failed: {e:?}"))?
        .unchecked_into();
    if !response.ok() {
        let text = match response.text() {
            Ok(p) => JsFuture::from(p).await.ok().and_then(|t| t.as_string()),
            Err(_) => None,
        };
        let why = text.unwrap_or_default();
        return Err(format!(
            "{url} answered {}: {}",
            response.status(),
            why.trim()
        ));
    }
    let body = response
        .array_buffer()
        .map_err(|e| format!("reading {url} failed: {e:?}"))?;
    JsFuture::from(body)
        .await
        .map_err(|e| format!("reading {url} failed: {e:?}"))
        .map(|b| b.unchecked_into())
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
