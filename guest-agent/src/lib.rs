//! The guest agent of the Application Server: an HTTP/1.1 API on port 8081
//! inside the VM that deploys apps (static sites served by nginx, Node.js and
//! Python apps started from the environment's warm pool), supervises their
//! processes and reports their status and logs.
//!
//! Plain `std` (no async runtime, a thread per connection) plus the app-name,
//! path and tar rules of `appserver_proto`, which the page shares.

pub mod apps;
pub mod clock;
pub mod error;
pub mod http;
pub mod nginx;
pub mod pool;
pub mod runtime;
pub mod server;
