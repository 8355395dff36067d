//! The guest agent of the Application Server: an HTTP/1.1 API on port 8081
//! inside the VM that deploys, lists and deletes static apps served by nginx.
//!
//! Plain `std` only (no async runtime): a thread per connection.

pub mod apps;
pub mod error;
pub mod http;
pub mod nginx;
pub mod server;
pub mod tar;
pub mod validate;
