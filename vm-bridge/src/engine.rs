//! The interface every VM engine offers the bridge, so that v86 can be joined
//! by another engine (CheerpX, a browser-native runtime) without the bridge
//! changing.

use crate::image::ImageSpec;
use futures::channel::mpsc;
use futures::future::LocalBoxFuture;
use std::fmt;

/// What an engine reports while it starts.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineEvent {
    /// Bytes of image files fetched so far, of the total when known.
    Download {
        /// File being fetched.
        file: String,
        /// Bytes fetched of that file.
        loaded: f64,
        /// Its size, 0 when unknown.
        total: f64,
    },
    /// The emulator runs and the guest is booting.
    Booting,
    /// A saved state was restored: the guest runs again where it was saved.
    Restored,
    /// A line the guest wrote on its console.
    Console(String),
    /// The guest's services are up.
    Ready,
    /// The engine stopped with an error.
    Crashed(String),
}

/// What happens on a guest TCP connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnEvent {
    /// Bytes from the guest.
    Data(Vec<u8>),
    /// The guest finished sending (FIN).
    Shutdown,
    /// The connection is gone (RST, or closed by either side).
    Closed,
}

/// Why an engine operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineError {
    /// The engine's library is missing or refused its options.
    Unavailable(String),
    /// The VM is not running.
    NotRunning,
    /// Nothing listens on that guest port, or the guest did not answer.
    Refused(u16),
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineError::Unavailable(why) => write!(f, "the VM engine cannot start: {why}"),
            EngineError::NotRunning => write!(f, "the VM is not running"),
            EngineError::Refused(port) => write!(f, "guest port {port} refused the connection"),
        }
    }
}

impl std::error::Error for EngineError {}

/// Where a VM starts from.
#[derive(Debug, Clone)]
pub enum StartFrom {
    /// A cold boot of the image's kernel (slow: about half a minute).
    Boot,
    /// A saved state at this URL (the warm state shipped with the image).
    StateUrl(String),
    /// A saved state in memory (one the page saved after a change).
    StateBytes(js_sys::ArrayBuffer),
}

/// The writing half of a guest TCP connection.
pub trait ConnWriter {
    /// Queues bytes for the guest.
    fn write(&self, bytes: &[u8]);
    /// Closes our side of the connection.
    fn close(&self);
}

/// An open TCP connection to a port inside the guest.
pub struct GuestConn {
    /// Events from the guest, in order.
    pub events: mpsc::UnboundedReceiver<ConnEvent>,
    /// Our half.
    pub writer: Box<dyn ConnWriter>,
}

/// A VM engine.
pub trait Engine {
    /// Starts the VM from `image`, reporting progress on the returned channel:
    /// `Ready` once a booted guest printed its ready line, `Restored` once a
    /// saved state runs again.
    fn start(
        &self,
        image: &ImageSpec,
        from: StartFrom,
    ) -> Result<mpsc::UnboundedReceiver<EngineEvent>, EngineError>;

    /// Saves the whole machine (memory, devices, the disk blocks written).
    fn save_state(&self) -> LocalBoxFuture<'static, Result<js_sys::ArrayBuffer, EngineError>>;

    /// Opens a TCP connection to `port` in the guest.
    fn connect(&self, port: u16) -> LocalBoxFuture<'static, Result<GuestConn, EngineError>>;

    /// Stops the VM and frees its memory.
    fn stop(&self);
}
