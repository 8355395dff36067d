//! The guest agent of the Application Server: an HTTP/1.1 API on port 8081
//! inside the VM that deploys, lists and deletes static apps served by nginx.
//!
//! Plain `std` (no async runtime, a thread per connection) plus the app-name,
//! path and tar rules of `appserver_proto`, which the page shares.

pub mod apps;
pub mod clock;
pub mod error;
pub mod http;
pub mod nginx;
pub mod server;
