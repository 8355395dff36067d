//! Download progress for people: bytes so far, speed and time left.
//!
//! The page feeds every progress event of a load into a [`Meter`]; the
//! speed is taken over a sliding window of recent samples, so a stall shows
//! up within seconds and a burst from the cache does not promise a minute
//! of nothing left.

/// How far back the speed looks, in milliseconds.
const WINDOW_MS: f64 = 3_000.0;

/// Speed and time left of one download.
#[derive(Debug, Default, Clone)]
pub struct Meter {
    /// `(time in ms, total bytes loaded)`, oldest first, within the window.
    samples: Vec<(f64, f64)>,
}

/// What a [`Meter`] reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// Bytes per second over the window; `None` until two samples exist.
    pub bytes_per_s: Option<f64>,
    /// Seconds left at that speed; `None` when the total or speed is unknown.
    pub seconds_left: Option<f64>,
}

impl Meter {
    /// A meter with no samples.
    pub fn new() -> Self {
        Meter::default()
    }

    /// Records that `loaded` bytes of `total` (0: unknown) had arrived at
    /// `now_ms`, and reads the speed and time left.
    pub fn sample(&mut self, now_ms: f64, loaded: f64, total: f64) -> Reading {
        // A new file starts again from zero: the old samples say nothing.
        if self.samples.last().is_some_and(|&(_, l)| loaded < l) {
            self.samples.clear();
        }
        self.samples.push((now_ms, loaded));
        // Keep one sample older than the window, so the window is full.
        while self.samples.len() > 2 && now_ms - self.samples[1].0 >= WINDOW_MS {
            self.samples.remove(0);
        }
        let (t0, l0) = self.samples[0];
        let elapsed_s = (now_ms - t0) / 1000.0;
        let bytes_per_s = (elapsed_s > 0.05).then(|| (loaded - l0).max(0.0) / elapsed_s);
        let seconds_left = match bytes_per_s {
            _ if total > 0.0 && loaded >= total => Some(0.0),
            Some(speed) if speed > 0.0 && total > 0.0 => Some((total - loaded) / speed),
            _ => None,
        };
        Reading {
            bytes_per_s,
            seconds_left,
        }
    }
}

/// "1.5 MiB", "320 kB", "12 bytes".
pub fn format_bytes(bytes: f64) -> String {
    if bytes >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", bytes / (1024.0 * 1024.0))
    } else if bytes >= 1024.0 {
        format!("{:.0} kB", bytes / 1024.0)
    } else {
        format!("{bytes:.0} bytes")
    }
}

/// "3 s", "2 min 5 s", "1 h 3 min".
pub fn format_duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speed_and_time_left_come_from_the_recent_window() {
        let mut m = Meter::new();
        let first = m.sample(0.0, 0.0, 10_000_000.0);
        assert_eq!(first.bytes_per_s, None, "one sample has no speed");
        assert_eq!(first.seconds_left, None);
        // 1 MB/s for two seconds.
        m.sample(1_000.0, 1_000_000.0, 10_000_000.0);
        let r = m.sample(2_000.0, 2_000_000.0, 10_000_000.0);
        assert_eq!(r.bytes_per_s, Some(1_000_000.0));
        assert_eq!(r.seconds_left, Some(8.0));
        // Then a stall: the speed falls as the window moves past the burst.
        m.sample(5_000.0, 2_000_000.0, 10_000_000.0);
        let stalled = m.sample(9_000.0, 2_000_000.0, 10_000_000.0);
        assert_eq!(stalled.bytes_per_s, Some(0.0));
        assert_eq!(
            stalled.seconds_left, None,
            "no promise while nothing arrives"
        );
    }

    #[test]
    fn a_finished_or_restarted_download() {
        let mut m = Meter::new();
        m.sample(0.0, 0.0, 100.0);
        assert_eq!(m.sample(500.0, 100.0, 100.0).seconds_left, Some(0.0));
        // The next file starts from zero: no negative speed.
        let next = m.sample(600.0, 0.0, 50.0);
        assert_eq!(next.bytes_per_s, None);
        let unknown_total = m.sample(1_600.0, 25.0, 0.0);
        assert_eq!(unknown_total.bytes_per_s, Some(25.0));
        assert_eq!(unknown_total.seconds_left, None);
    }

    #[test]
    fn figures_for_people() {
        let cases = [
            (12.0, "12 bytes"),
            (2048.0, "2 kB"),
            (1.5 * 1024.0 * 1024.0, "1.5 MiB"),
        ];
        for (bytes, text) in cases {
            assert_eq!(format_bytes(bytes), text);
        }
        let cases = [
            (0.4, "0 s"),
            (59.0, "59 s"),
            (125.0, "2 min 5 s"),
            (3780.0, "1 h 3 min"),
        ];
        for (s, text) in cases {
            assert_eq!(format_duration(s), text);
        }
    }
}
