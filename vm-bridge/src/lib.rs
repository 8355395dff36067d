//! The page side of the Application Server: it owns the VM through an
//! [`engine::Engine`], answers the service worker's frames with HTTP/1.1 on
//! TCP connections into the guest, talks to the guest agent for deploys, and
//! hands the deploy API's requests to the page.

pub mod agent;
pub mod api;
pub mod bridge;
pub mod engine;
pub mod image;
mod log;
pub mod store;
pub mod sw_link;
pub mod timer;
pub mod v86;

pub use bridge::{Bridge, Deployed, VmState};
