//! How a disk image is cut into fixed-size chunks that are fetched, verified
//! and cached one by one, and how HTTP byte ranges map onto them.

use std::ops::RangeInclusive;

/// Size of one cached chunk of a disk image.
pub const CHUNK_SIZE: u64 = 256 * 1024;

/// Parses a `Range` header (`bytes=a-b`, `bytes=a-`, `bytes=-n`) against a
/// resource of `len` bytes into an inclusive byte range; `None` when it is
/// malformed or unsatisfiable.
pub fn parse_range(value: &str, len: u64) -> Option<(u64, u64)> {
    let spec = value.trim().strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => (len.checked_sub(n.parse().ok()?)?, len.checked_sub(1)?),
        (a, "") => (a.parse().ok()?, len.checked_sub(1)?),
        (a, b) => (
            a.parse().ok()?,
            b.parse::<u64>().ok()?.min(len.checked_sub(1)?),
        ),
    };
    (start <= end && end < len).then_some((start, end))
}

/// The chunks that hold bytes `start..=end`.
pub fn chunks_for(start: u64, end: u64) -> RangeInclusive<u64> {
    start / CHUNK_SIZE..=end / CHUNK_SIZE
}

/// The inclusive byte range of chunk `index` in a resource of `len` bytes.
pub fn chunk_bounds(index: u64, len: u64) -> (u64, u64) {
    let start = index * CHUNK_SIZE;
    (start, (start + CHUNK_SIZE).min(len) - 1)
}

/// Number of chunks of a resource of `len` bytes.
pub fn chunk_count(len: u64) -> u64 {
    len.div_ceil(CHUNK_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        type Case = (&'static str, u64, Option<(u64, u64)>);
        let cases: &[Case] = &[
            ("bytes=0-99", 1000, Some((0, 99))),
            ("bytes=900-", 1000, Some((900, 999))),
            ("bytes=-100", 1000, Some((900, 999))),
            ("bytes=990-2000", 1000, Some((990, 999))),
            ("bytes=1000-", 1000, None),
            ("bytes=5-1", 1000, None),
            ("items=0-1", 1000, None),
            ("bytes=0-0", 0, None),
            ("bytes=-2000", 1000, None),
        ];
        for (header, len, want) in cases {
            assert_eq!(parse_range(header, *len), *want, "{header} of {len}");
        }
    }

    #[test]
    fn chunk_mapping() {
        let len = 3 * CHUNK_SIZE + 10;
        assert_eq!(chunk_count(len), 4);
        assert_eq!(chunks_for(0, 511), 0..=0);
        assert_eq!(chunks_for(CHUNK_SIZE - 1, CHUNK_SIZE), 0..=1);
        assert_eq!(chunks_for(len - 1, len - 1), 3..=3);
        assert_eq!(chunk_bounds(0, len), (0, CHUNK_SIZE - 1));
        assert_eq!(chunk_bounds(3, len), (3 * CHUNK_SIZE, len - 1));
    }
}
