//! The worker's end of the channel to the page bridge: one port, the streams
//! open on it, and the forwarding of one app request.
//!
//! A page that runs the VM posts `{type: "BRIDGE_CONNECT"}` with a
//! `MessagePort`. After a worker restart the port is gone, so the first app
//! request posts `{type: "BRIDGE_WANTED"}` to every open page and waits a
//! moment for one of them to connect again.

use crate::body;
use crate::log;
use crate::pages::{self, Failure};
use crate::timer::sleep;
use appserver_proto::api::API_PREFIX;
use appserver_proto::flow::SendWindow;
use appserver_proto::frame::{Envelope, Frame, RequestHead, ResetCode, ResponseHead};
use appserver_proto::route::AppUrl;
use futures::channel::{mpsc, oneshot};
use futures::{FutureExt, StreamExt};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{MessageEvent, MessagePort, Request, Response, ServiceWorkerGlobalScope};

/// How long an app request waits for a page to offer its bridge.
const BRIDGE_WAIT_MS: u32 = 3_000;
/// How long a check that the bridge's page is still open stays good.
const LIVENESS_MS: f64 = 1_000.0;
/// How long an app request waits for the response head.
const HEAD_TIMEOUT_MS: u32 = 60_000;
/// How long a deploy API request waits: a deploy unpacks, starts the app
/// and saves the whole VM before it answers.
const API_TIMEOUT_MS: u32 = 300_000;
/// Largest request body forwarded to an app.
pub(crate) const MAX_REQUEST_BODY: usize = 64 * 1024 * 1024;
/// Size of the data frames a request body is cut into.
const CHUNK: usize = 64 * 1024;

/// What the response head future resolves to: the head and, for responses
/// with a body, the stream the body frames are fed into.
type HeadResult = Result<(ResponseHead, Option<web_sys::ReadableStream>), Failure>;

struct Conn {
    port: MessagePort,
    client_id: String,
    _onmessage: Closure<dyn FnMut(MessageEvent)>,
}

struct Stream {
    /// The app's URL, whose redirects are rewritten; `None` for the API.
    app: Option<AppUrl>,
    method: String,
    head: Option<oneshot::Sender<HeadResult>>,
    body: Option<body::Sink>,
    credit: Option<mpsc::UnboundedSender<u32>>,
}

#[derive(Default)]
struct State {
    conn: Option<Conn>,
    /// Apps the bridge last reported; `None` until it has said.
    apps: Option<HashSet<String>>,
    streams: HashMap<u32, Stream>,
    next_id: u32,
    waiters: Vec<oneshot::Sender<()>>,
    /// When the bridge's page was last seen open (ms since the epoch).
    bridge_checked_ms: f64,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

fn scope() -> ServiceWorkerGlobalScope {
    js_sys::global().unchecked_into()
}

/// Posts one frame to the bridge, transferring its buffer.
pub(crate) fn send(stream: u32, frame: Frame) {
    let port = STATE.with(|s| s.borrow().conn.as_ref().map(|c| c.port.clone()));
    if let Some(port) = port {
        let bytes = js_sys::Uint8Array::from(&Envelope::new(stream, frame).encode()[..]);
        let buffer = bytes.buffer();
        let _ = port.post_message_with_transferable(&buffer, &js_sys::Array::of1(&buffer));
    }
}

/// Handles `BRIDGE_CONNECT` from a page.
pub(crate) fn on_message(event: web_sys::ExtendableMessageEvent) {
    let data = event.data();
    let kind = js_sys::Reflect::get(&data, &"type".into())
        .ok()
        .and_then(|v| v.as_string());
    if kind.as_deref() != Some("BRIDGE_CONNECT") {
        return;
    }
    let Some(port) = event.ports().get(0).dyn_into::<MessagePort>().ok() else {
        log::error("BRIDGE_CONNECT without a port");
        return;
    };
    let client_id = event
        .source()
        .and_then(|s| s.dyn_into::<web_sys::Client>().ok())
        .map(|c| c.id())
        .unwrap_or_default();
    log::info(&format!("the page {client_id} connected its bridge"));
    let onmessage = Closure::<dyn FnMut(MessageEvent)>::new(|event: MessageEvent| {
        on_frame(event.data());
    });
    port.set_onmessage(Some(onmessage.as_ref().unchecked_ref()));
    port.start();
    let (orphans, waiters) = STATE.with(|s| {
        let mut s = s.borrow_mut();
        s.conn = Some(Conn {
            port,
            client_id,
            _onmessage: onmessage,
        });
        s.bridge_checked_ms = js_sys::Date::now();
        s.apps = None;
        (
            std::mem::take(&mut s.streams),
            std::mem::take(&mut s.waiters),
        )
    });
    // Streams of a previous bridge will never be answered: fail them now.
    if !orphans.is_empty() {
        log::info(&format!(
            "{} streams of the previous bridge failed",
            orphans.len()
        ));
    }
    for (_, stream) in orphans {
        fail_stream(stream, Failure::not_running());
    }
    for waiter in waiters {
        let _ = waiter.send(());
    }
}

/// Dispatches one frame that arrived from the bridge.
fn on_frame(data: JsValue) {
    let Some(buffer) = data.dyn_ref::<js_sys::ArrayBuffer>() else {
        return;
    };
    let bytes = js_sys::Uint8Array::new(buffer).to_vec();
    let envelope = match Envelope::decode(&bytes) {
        Ok(env) => env,
        Err(e) => {
            log::error(&format!("dropped a bad frame: {e}"));
            return;
        }
    };
    let id = envelope.stream;
    match envelope.frame {
        Frame::Apps(names) => {
            STATE.with(|s| s.borrow_mut().apps = Some(names.into_iter().collect()));
        }
        Frame::Response(head) => on_response_head(id, head),
        Frame::Data(chunk) => {
            let sink = STATE.with(|s| s.borrow().streams.get(&id).and_then(|st| st.body.clone()));
            if let Some(sink) = sink {
                sink.push(&chunk);
            }
        }
        Frame::End => {
            if let Some(stream) = remove(id) {
                if let Some(sink) = stream.body {
                    sink.close();
                }
            }
        }
        Frame::Credit(n) => STATE.with(|s| {
            if let Some(tx) = s
                .borrow()
                .streams
                .get(&id)
                .and_then(|st| st.credit.as_ref())
            {
                let _ = tx.unbounded_send(n);
            }
        }),
        Frame::Reset(code, message) => {
            if let Some(stream) = remove(id) {
                fail_stream(stream, Failure::new(code, message));
            }
        }
        // Requests only travel from the worker to the bridge; WebSocket
        // frames get their handlers with the WebSocket tunnel.
        Frame::Request(_)
        | Frame::ApiRequest(_)
        | Frame::WsMessage { .. }
        | Frame::WsClose { .. } => {}
    }
}

fn on_response_head(id: u32, mut head: ResponseHead) {
    let Some((sender, app, method)) = STATE.with(|s| {
        let mut s = s.borrow_mut();
        let stream = s.streams.get_mut(&id)?;
        Some((
            stream.head.take()?,
            stream.app.clone(),
            stream.method.clone(),
        ))
    }) else {
        return;
    };
    for (name, value) in head.headers.iter_mut() {
        if let (true, Some(app)) = (name.eq_ignore_ascii_case("location"), &app) {
            let guest = String::from_utf8_lossy(value).into_owned();
            *value = app.browser_location(&guest).into_bytes();
        }
    }
    let bodiless = method == "HEAD" || matches!(head.status, 101 | 204 | 205 | 304);
    let stream = if bodiless {
        None
    } else {
        let (readable, sink) = body::channel(id);
        STATE.with(|s| {
            if let Some(st) = s.borrow_mut().streams.get_mut(&id) {
                st.body = Some(sink);
            }
        });
        Some(readable)
    };
    let _ = sender.send(Ok((head, stream)));
}

fn remove(id: u32) -> Option<Stream> {
    STATE.with(|s| s.borrow_mut().streams.remove(&id))
}

fn fail_stream(stream: Stream, failure: Failure) {
    if let Some(head) = stream.head {
        let _ = head.send(Err(failure));
    } else if let Some(sink) = stream.body {
        // The browser got a status already: all it can see now is a network
        // error, so say here what broke the body off.
        let app = stream.app.as_ref().map_or("the API", |a| a.name.as_str());
        log::error(&format!(
            "a response of {app} broke off after its head: {}",
            failure.message
        ));
        sink.fail(&failure.message);
    }
}

/// Called by a response body stream when its reader wants more: hands the
/// bytes it took back to the bridge as credit.
pub(crate) fn on_pull(id: u32, consumed: u32) {
    if consumed > 0 {
        send(id, Frame::Credit(consumed));
    }
}

/// Called when the page reading a response body gives up on it.
pub(crate) fn on_cancel(id: u32) {
    if remove(id).is_some() {
        send(
            id,
            Frame::Reset(
                ResetCode::Cancelled,
                "the browser cancelled the response".into(),
            ),
        );
    }
}

/// Makes sure a bridge is connected and its page still open, asking the open
/// pages for one if not.
async fn ensure_bridge() -> Result<(), Failure> {
    let (client_id, checked) = STATE.with(|s| {
        let s = s.borrow();
        (
            s.conn.as_ref().map(|c| c.client_id.clone()),
            s.bridge_checked_ms,
        )
    });
    let now = js_sys::Date::now();
    if client_id.is_some() && now - checked < LIVENESS_MS {
        return Ok(());
    }
    if let Some(id) = client_id {
        let alive = match JsFuture::from(scope().clients().get(&id)).await {
            Ok(client) => !client.is_undefined() || id.is_empty(),
            Err(_) => false,
        };
        if alive {
            STATE.with(|s| s.borrow_mut().bridge_checked_ms = now);
            return Ok(());
        }
        log::info(&format!("the bridge's page {id} is gone"));
        let orphans = STATE.with(|s| {
            let mut s = s.borrow_mut();
            s.conn = None;
            std::mem::take(&mut s.streams)
        });
        for (_, stream) in orphans {
            fail_stream(stream, Failure::not_running());
        }
    }
    let (tx, rx) = oneshot::channel();
    STATE.with(|s| s.borrow_mut().waiters.push(tx));
    let options = web_sys::ClientQueryOptions::new();
    options.set_include_uncontrolled(true);
    options.set_type(web_sys::ClientType::Window);
    if let Ok(list) = JsFuture::from(scope().clients().match_all_with_options(&options)).await {
        let wanted = js_sys::Object::new();
        let _ = js_sys::Reflect::set(&wanted, &"type".into(), &"BRIDGE_WANTED".into());
        for client in js_sys::Array::from(&list).iter() {
            if let Ok(client) = client.dyn_into::<web_sys::Client>() {
                let _ = client.post_message(&wanted);
            }
        }
    }
    log::info("asked the open pages for a bridge");
    futures::select! {
        _ = rx.fuse() => Ok(()),
        _ = sleep(BRIDGE_WAIT_MS).fuse() => {
            log::info(&format!("no page offered a bridge within {BRIDGE_WAIT_MS} ms"));
            Err(Failure::not_running())
        }
    }
}

/// Forwards one app request to the bridge and builds the browser's response.
pub(crate) async fn forward(request: Request) -> Result<Response, Failure> {
    let url = web_sys::Url::new(&request.url())
        .map_err(|_| Failure::new(ResetCode::Internal, "the request URL cannot be parsed"))?;
    let path = format!("{}{}", url.pathname(), url.search());
    let app = crate::with_routes(|t| t.classify(&path))
        .ok_or_else(|| Failure::new(ResetCode::UnknownApp, "this URL does not name an app"))?;
    if let Err(e) = app.validate_name() {
        return Err(Failure::new(
            ResetCode::UnknownApp,
            format!("No app can be called that: {e}."),
        ));
    }
    if app.needs_slash() {
        return Ok(pages::redirect(&app.slash_location()));
    }
    ensure_bridge().await?;
    let known = STATE.with(|s| {
        s.borrow()
            .apps
            .as_ref()
            .map(|apps| apps.contains(&app.name))
    });
    if known == Some(false) {
        return Err(unknown_app(&app.name));
    }
    let head = RequestHead {
        app: app.name.clone(),
        method: request.method(),
        target: app.guest_target(),
        prefix: app.prefix.clone(),
        headers: Vec::new(),
        websocket: false,
    };
    exchange(&request, Frame::Request, head, Some(app), HEAD_TIMEOUT_MS).await
}

/// Forwards one deploy API request to the page that runs the bridge, which
/// answers it itself.
pub(crate) async fn forward_api(request: Request) -> Result<Response, Failure> {
    let url = web_sys::Url::new(&request.url())
        .map_err(|_| Failure::new(ResetCode::Internal, "the request URL cannot be parsed"))?;
    ensure_bridge().await.map_err(|_| Failure::no_page())?;
    let head = RequestHead {
        app: String::new(),
        method: request.method(),
        target: format!("{}{}", url.pathname(), url.search()),
        prefix: API_PREFIX.to_owned(),
        headers: Vec::new(),
        websocket: false,
    };
    exchange(&request, Frame::ApiRequest, head, None, API_TIMEOUT_MS).await
}

/// Sends `head` (wrapped by `open`) with the request's headers and body on a
/// new stream, and builds the browser's response from the answer.
async fn exchange(
    request: &Request,
    open: fn(RequestHead) -> Frame,
    mut head: RequestHead,
    app: Option<AppUrl>,
    timeout_ms: u32,
) -> Result<Response, Failure> {
    let body = read_body(request).await?;
    head.headers = request_headers(request);
    if let Some(body) = &body {
        head.headers
            .push(("content-length".into(), body.len().to_string().into_bytes()));
    }
    let (head_tx, head_rx) = oneshot::channel();
    let (credit_tx, mut credit_rx) = mpsc::unbounded();
    let method = head.method.clone();
    let id = STATE.with(|s| {
        let mut s = s.borrow_mut();
        s.next_id = s.next_id.wrapping_add(1).max(1);
        let id = s.next_id;
        s.streams.insert(
            id,
            Stream {
                app,
                method,
                head: Some(head_tx),
                body: None,
                credit: Some(credit_tx),
            },
        );
        id
    });
    send(id, open(head));
    if let Some(body) = body {
        let mut window = SendWindow::default();
        let mut offset = 0;
        while offset < body.len() {
            let granted = window.take(CHUNK.min(body.len() - offset));
            if granted == 0 {
                match credit_rx.next().await {
                    Some(n) => window.grant(n),
                    // The stream was reset or answered before the body went out.
                    None => break,
                }
                continue;
            }
            send(id, Frame::Data(body[offset..offset + granted].to_vec()));
            offset += granted;
        }
    }
    send(id, Frame::End);
    let outcome = futures::select! {
        head = head_rx.fuse() => head.unwrap_or_else(|_| {
            log::info(&format!("stream {id} ended without an answer"));
            Err(Failure::not_running())
        }),
        _ = sleep(timeout_ms).fuse() => {
            if remove(id).is_some() {
                send(id, Frame::Reset(ResetCode::Timeout, "no response head in time".into()));
            }
            Err(Failure::new(
                ResetCode::Timeout,
                format!("No answer came within {} s.", timeout_ms / 1000),
            ))
        }
    };
    let (head, stream) = outcome?;
    if stream.is_none() {
        // A bodiless response: the End frame may already have removed the stream.
        remove(id);
    }
    Ok(body::response(head, stream))
}

fn unknown_app(name: &str) -> Failure {
    Failure::new(
        ResetCode::UnknownApp,
        format!("No app named `{name}` is deployed. Deploy it from /application-server/."),
    )
}

fn request_headers(request: &Request) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    if let Ok(Some(iter)) = js_sys::try_iter(&request.headers()) {
        for pair in iter.flatten() {
            let pair = js_sys::Array::from(&pair);
            if let (Some(name), Some(value)) = (pair.get(0).as_string(), pair.get(1).as_string()) {
                out.push((name, value.into_bytes()));
            }
        }
    }
    out
}

/// Reads a request body, refusing one over [`MAX_REQUEST_BODY`] as soon as it
/// passes the limit rather than after buffering all of it.
async fn read_body(request: &Request) -> Result<Option<Vec<u8>>, Failure> {
    let Some(stream) = request.body() else {
        return Ok(None);
    };
    let reader: web_sys::ReadableStreamDefaultReader = stream.get_reader().unchecked_into();
    let mut body = Vec::new();
    loop {
        let result = JsFuture::from(reader.read()).await.map_err(|e| {
            Failure::new(
                ResetCode::Internal,
                format!("reading the request body failed: {e:?}"),
            )
        })?;
        let done = js_sys::Reflect::get(&result, &"done".into())
            .ok()
            .and_then(|v| v.as_bool());
        if done != Some(false) {
            break;
        }
        let value = js_sys::Reflect::get(&result, &"value".into()).unwrap_or(JsValue::UNDEFINED);
        let chunk = js_sys::Uint8Array::new(&value);
        if body.len() + chunk.length() as usize > MAX_REQUEST_BODY {
            let _ = reader.cancel();
            return Err(Failure::new(
                ResetCode::TooLarge,
                format!(
                    "The request body is larger than the {} MiB limit.",
                    MAX_REQUEST_BODY / (1024 * 1024)
                ),
            ));
        }
        body.extend(chunk.to_vec());
    }
    Ok(Some(body))
}
