//! The tar archives that carry an app's files from the page into the guest.
//!
//! The page packs ustar archives with [`TarWriter`], adding a PAX `path`
//! record for names longer than ustar's 100-byte field; the guest agent reads
//! them back with [`TarReader`] while they stream in, and checks every entry
//! with [`Entry::segments`] before anything touches its disk. The reader also
//! takes what GNU tar and bsdtar write, so `tar -cf app.tar -C dir .` works.
//!
//! This file holds the header layout that both sides share.

mod read;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
mod write;

pub use read::{Entry, EntryKind, TarError, TarReader};
pub use write::{archive_size, TarWriter};

use std::ops::Range;

/// Largest archive the guest agent accepts for one deploy.
pub const MAX_ARCHIVE_BYTES: u64 = 64 * 1024 * 1024;

/// Size of a tar block: a header is one block, data is padded to whole blocks.
const BLOCK: usize = 512;

// Fields of a ustar header block, by byte range.
const NAME: Range<usize> = 0..100;
const MODE: Range<usize> = 100..108;
const UID: Range<usize> = 108..116;
const GID: Range<usize> = 116..124;
const SIZE: Range<usize> = 124..136;
const MTIME: Range<usize> = 136..148;
const CHECKSUM: Range<usize> = 148..156;
const TYPEFLAG: usize = 156;
const MAGIC: Range<usize> = 257..263;
const VERSION: Range<usize> = 263..265;
const PREFIX: Range<usize> = 345..500;

/// Sum of the header bytes with the checksum field counted as spaces.
fn checksum(block: &[u8; BLOCK]) -> u64 {
    block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if CHECKSUM.contains(&i) {
                u64::from(b' ')
            } else {
                u64::from(b)
            }
        })
        .sum()
}

/// Fills in the checksum field the way GNU tar does: six octal digits, NUL, space.
fn seal(block: &mut [u8; BLOCK]) {
    let sum = checksum(block);
    octal(&mut block[CHECKSUM.start..CHECKSUM.end - 1], sum);
    block[CHECKSUM.end - 1] = b' ';
}

/// Writes `value` as zero-padded octal with a trailing NUL into `field`.
fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(&text.as_bytes()[text.len() - digits..]);
    field[digits] = 0;
}

/// Padding needed after `size` data bytes to reach a block boundary.
fn pad(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

/// One PAX extended header record, `"<len> <key>=<value>\n"`, where the
/// length counts the whole record including its own digits.
fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while format!("{len}{body}").len() != len {
        len += 1;
    }
    format!("{len}{body}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::testing::{finish, push, read_all};
    use super::*;
    use crate::paths::PathError;

    #[test]
    fn written_archives_read_back() {
        let long = format!("{}/deep.txt", "nested-folder".repeat(10));
        let mut w = TarWriter::new();
        w.add_file("index.html", b"<h1>hi</h1>").unwrap();
        w.add_file("./css//main.css", b"body{}").unwrap();
        w.add_file(&long, b"x").unwrap();
        w.add_file("empty.txt", b"").unwrap();
        let archive = w.finish();
        assert_eq!(archive.len() % BLOCK, 0);
        let entries = read_all(&archive).unwrap();
        let got: Vec<(&str, &[u8])> = entries
            .iter()
            .map(|(path, data)| (path.as_str(), data.as_slice()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("index.html", &b"<h1>hi</h1>"[..]),
                ("css/main.css", b"body{}"),
                (long.as_str(), b"x"),
                ("empty.txt", b""),
            ]
        );
    }

    /// An archive of one entry, written without any of [`TarWriter`]'s checks.
    fn raw_entry(name: &str, kind: u8, data: &[u8]) -> Vec<u8> {
        let mut tar = Vec::new();
        push(&mut tar, name, kind, data);
        finish(&mut tar);
        tar
    }

    #[test]
    fn hostile_archives_are_refused() {
        let escape = raw_entry("../../etc/cron.d/x", b'0', b"boom");
        assert!(matches!(
            read_all(&escape),
            Err(TarError::Path(PathError::Escapes(_)))
        ));
        assert_eq!(read_all(&escape).unwrap_err().code(), "path_escapes");
        let absolute = raw_entry("/etc/passwd", b'0', b"");
        assert!(matches!(
            read_all(&absolute),
            Err(TarError::Path(PathError::Absolute(_)))
        ));
        let link = raw_entry("link", b'2', b"");
        assert!(matches!(
            read_all(&link),
            Err(TarError::Unsupported { ref path, kind: EntryKind::Symlink }) if path == "link"
        ));
        assert_eq!(read_all(&link).unwrap_err().code(), "unsupported_entry");
        let mut corrupt = raw_entry("a.txt", b'0', b"abc");
        corrupt[0] = b'b';
        assert!(matches!(
            read_all(&corrupt),
            Err(TarError::BadChecksum { offset: 0 })
        ));
        assert_eq!(read_all(&corrupt).unwrap_err().code(), "bad_archive");
        let good = raw_entry("a.txt", b'0', b"abc");
        assert!(matches!(
            read_all(&good[..BLOCK + 1]),
            Err(TarError::Truncated)
        ));
        assert!(matches!(read_all(&[]), Err(TarError::Truncated)));
        let nameless = raw_entry("./", b'0', b"data");
        assert!(matches!(
            read_all(&nameless),
            Err(TarError::Path(PathError::Empty))
        ));
        assert_eq!(read_all(&nameless).unwrap_err().code(), "bad_archive");
    }

    #[test]
    fn layout_helpers() {
        // 98 bytes of body plus a 2-digit length make 100, which has 3 digits.
        let rec = pax_record("k", &"v".repeat(94));
        assert_eq!(rec.len(), 101);
        assert!(rec.starts_with(b"101 k=v"));
        let mut field = [0xffu8; 8];
        octal(&mut field, 0o644);
        assert_eq!(&field, b"0000644\0");
    }
}
