//! Response bodies as `ReadableStream`s fed by data frames, with credit sent
//! back to the bridge as the browser reads.
//!
//! The bridge may have at most one window of bytes queued here. Each time the
//! stream's reader pulls, the bytes enqueued since the previous pull are
//! returned to the bridge as credit, so a reader that stops reading stops the
//! guest's sender too, and no body is ever held whole in memory.

use crate::bridge;
use appserver_proto::frame::ResponseHead;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use web_sys::{Headers, ReadableStream, ReadableStreamDefaultController, Response, ResponseInit};

/// The frame side of a response body.
#[derive(Clone)]
pub(crate) struct Sink {
    controller: Rc<RefCell<Option<ReadableStreamDefaultController>>>,
    unacked: Rc<Cell<u32>>,
}

impl Sink {
    /// Queues one chunk for the reader.
    pub(crate) fn push(&self, chunk: &[u8]) {
        let controller = self.controller.borrow().clone();
        if let Some(controller) = controller {
            self.unacked
                .set(self.unacked.get().saturating_add(chunk.len() as u32));
            let _ = controller.enqueue_with_chunk(&js_sys::Uint8Array::from(chunk));
        }
    }

    /// Ends the body normally.
    pub(crate) fn close(&self) {
        if let Some(controller) = self.controller.borrow_mut().take() {
            let _ = controller.close();
        }
    }

    /// Ends the body with an error the reader sees.
    pub(crate) fn fail(&self, message: &str) {
        if let Some(controller) = self.controller.borrow_mut().take() {
            controller.error_with_e(&js_sys::Error::new(message));
        }
    }
}

/// A body stream for stream `id`, and the sink that feeds it.
pub(crate) fn channel(id: u32) -> (ReadableStream, Sink) {
    let sink = Sink {
        controller: Rc::new(RefCell::new(None)),
        unacked: Rc::new(Cell::new(0)),
    };
    let source = js_sys::Object::new();

    let slot = sink.controller.clone();
    let start = Closure::once_into_js(move |controller: ReadableStreamDefaultController| {
        *slot.borrow_mut() = Some(controller);
    });
    let unacked = sink.unacked.clone();
    // The closures are handed to JS for good: the stream may call them after
    // the frames have ended, so their lifetime is the stream's, not ours.
    let pull = Closure::<dyn FnMut(JsValue)>::new(move |_controller: JsValue| {
        bridge::on_pull(id, unacked.replace(0));
    })
    .into_js_value();
    let cancel = Closure::<dyn FnMut(JsValue)>::new(move |_reason: JsValue| {
        bridge::on_cancel(id);
    })
    .into_js_value();
    let _ = js_sys::Reflect::set(&source, &"start".into(), &start);
    let _ = js_sys::Reflect::set(&source, &"pull".into(), &pull);
    let _ = js_sys::Reflect::set(&source, &"cancel".into(), &cancel);
    let stream = ReadableStream::new_with_underlying_source(&source)
        .expect("an underlying source with start/pull/cancel is valid");
    (stream, sink)
}

/// Builds the browser's response from the guest's head and body stream.
pub(crate) fn response(head: ResponseHead, body: Option<ReadableStream>) -> Response {
    let headers = Headers::new().expect("Headers constructor");
    for (name, value) in &head.headers {
        // A header the Fetch API refuses is dropped rather than failing the response.
        let _ = headers.append(name, &String::from_utf8_lossy(value));
    }
    let init = ResponseInit::new();
    init.set_status(head.status);
    init.set_headers(&headers);
    match Response::new_with_opt_readable_stream_and_init(body.as_ref(), &init) {
        Ok(response) => response,
        Err(_) => crate::pages::Failure::new(
            appserver_proto::frame::ResetCode::BadGateway,
            format!(
                "The app answered with status {}, which a browser cannot use.",
                head.status
            ),
        )
        .into_response(),
    }
}
