//! The requests each app answered, as the page's bridge saw them: a count
//! per app and the most recent ones, for the app details screen.

use std::collections::{BTreeMap, VecDeque};

/// How many recent requests are kept per app.
pub const RECENT: usize = 50;

/// One answered (or failed) request.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// When it arrived, ms since the epoch.
    pub at_ms: f64,
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path and query inside the app (after `/app/<name>`).
    pub target: String,
    /// The HTTP status the browser got.
    pub status: u16,
    /// From arrival to the end of the response, in ms.
    pub ms: f64,
}

/// Counts and recent requests by app.
#[derive(Debug, Default)]
pub struct RequestLog {
    apps: BTreeMap<String, (u64, VecDeque<Record>)>,
}

impl RequestLog {
    /// An empty log.
    pub fn new() -> Self {
        RequestLog::default()
    }

    /// Adds a request of `app`; the oldest past [`RECENT`] is dropped.
    pub fn record(&mut self, app: &str, record: Record) {
        let (count, recent) = self.apps.entry(app.to_owned()).or_default();
        *count += 1;
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(record);
    }

    /// Requests `app` answered since the page loaded.
    pub fn count(&self, app: &str) -> u64 {
        self.apps.get(app).map_or(0, |(n, _)| *n)
    }

    /// `app`'s recent requests, newest first.
    pub fn recent(&self, app: &str) -> Vec<Record> {
        self.apps
            .get(app)
            .map(|(_, r)| r.iter().rev().cloned().collect())
            .unwrap_or_default()
    }

    /// Forgets `app` (deleted).
    pub fn forget(&mut self, app: &str) {
        self.apps.remove(app);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(i: usize) -> Record {
        Record {
            at_ms: i as f64,
            method: "GET".into(),
            target: format!("/{i}"),
            status: 200,
            ms: 1.0,
        }
    }

    #[test]
    fn counts_all_and_keeps_the_newest() {
        let mut log = RequestLog::new();
        for i in 0..RECENT + 5 {
            log.record("site", req(i));
        }
        log.record("api", req(0));
        assert_eq!(log.count("site"), (RECENT + 5) as u64);
        assert_eq!(log.count("api"), 1);
        assert_eq!(log.count("other"), 0);
        let recent = log.recent("site");
        assert_eq!(recent.len(), RECENT);
        assert_eq!(recent[0].target, format!("/{}", RECENT + 4), "newest first");
        assert_eq!(
            recent[RECENT - 1].target,
            "/5",
            "the oldest five were dropped"
        );
        log.forget("site");
        assert_eq!(log.count("site"), 0);
        assert!(log.recent("site").is_empty());
    }
}
