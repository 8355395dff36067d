//! Plain-Rust core shared by the service worker, the page bridge and the guest agent.
//!
//! Nothing here touches the browser or the operating system, so every rule the
//! product depends on (which URLs belong to which app, what a valid app name is,
//! how frames and HTTP/1.1 bytes are laid out) is tested on the host with
//! `cargo test`.

pub mod api;
pub mod chunks;
pub mod detect;
pub mod env_vars;
pub mod flow;
pub mod frame;
pub mod http1;
pub mod names;
pub mod paths;
pub mod progress;
pub mod requests;
pub mod route;
pub mod tar;
pub mod tcp;
