//! The bridge's one logger: console output with a fixed prefix.

/// Logs an error the user may need to see in the console.
pub(crate) fn error(message: &str) {
    web_sys::console::error_1(&format!("[appserver bridge] {message}").into());
}

/// Logs a notable step (boot, connect, deploy).
pub(crate) fn info(message: &str) {
    web_sys::console::info_1(&format!("[appserver bridge] {message}").into());
}
