//! Credit-based flow control for one direction of one stream.
//!
//! A sender may have at most `window` bytes in flight. The receiver hands
//! credit back as its consumer drains data, so a slow reader (a browser tab
//! reading a large file) slows the writer down instead of filling memory.

/// Bytes a sender may send before the first credit arrives.
pub const INITIAL_WINDOW: u32 = 256 * 1024;

/// The sending side's view of a stream's window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendWindow {
    available: u64,
}

impl Default for SendWindow {
    fn default() -> Self {
        SendWindow {
            available: INITIAL_WINDOW as u64,
        }
    }
}

impl SendWindow {
    /// How many bytes may be sent now.
    pub fn available(&self) -> u64 {
        self.available
    }

    /// Takes up to `wanted` bytes of the window and returns how many were granted.
    pub fn take(&mut self, wanted: usize) -> usize {
        let granted = (wanted as u64).min(self.available);
        self.available -= granted;
        granted as usize
    }

    /// Adds credit the receiver sent back.
    pub fn grant(&mut self, credit: u32) {
        self.available = self.available.saturating_add(credit as u64);
    }
}

/// The receiving side's view: it counts consumed bytes and says when to send
/// them back as credit, in batches so that credit frames stay rare.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecvWindow {
    consumed: u32,
}

impl RecvWindow {
    /// Records that the consumer took `n` bytes; returns credit to send back
    /// once at least a quarter of the initial window has been consumed.
    pub fn consumed(&mut self, n: usize) -> Option<u32> {
        self.consumed = self.consumed.saturating_add(n as u32);
        if self.consumed >= INITIAL_WINDOW / 4 {
            Some(std::mem::take(&mut self.consumed))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sender_stops_at_window_and_resumes_on_credit() {
        let mut w = SendWindow::default();
        assert_eq!(w.take(200 * 1024), 200 * 1024);
        assert_eq!(w.take(100 * 1024), 56 * 1024);
        assert_eq!(w.take(1), 0);
        w.grant(10);
        assert_eq!(w.take(100), 10);
    }

    #[test]
    fn receiver_batches_credit() {
        let mut r = RecvWindow::default();
        assert_eq!(r.consumed(1000), None);
        let quarter = (INITIAL_WINDOW / 4) as usize;
        assert_eq!(r.consumed(quarter), Some(quarter as u32 + 1000));
        assert_eq!(r.consumed(1), None);
    }
}
