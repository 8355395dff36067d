//! The worker's console lines, each with one prefix so they can be told
//! from the page's.

/// A rare event worth seeing: the page link connecting or going.
pub(crate) fn info(message: &str) {
    web_sys::console::info_1(&format!("[appserver sw] {message}").into());
}

/// Something went wrong and was recovered from.
pub(crate) fn warn(message: &str) {
    web_sys::console::warn_1(&format!("[appserver sw] {message}").into());
}

/// Something failed.
pub(crate) fn error(message: &str) {
    web_sys::console::error_1(&format!("[appserver sw] {message}").into());
}
