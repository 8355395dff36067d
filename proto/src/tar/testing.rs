//! Hand-built archives for tests, including entries [`TarWriter`] refuses to
//! write (links, `..` and absolute paths), the way a hostile or foreign
//! archive could look. Built for this crate's tests and with the `test-util`
//! feature (the guest agent's tests turn it on).
//!
//! [`TarWriter`]: super::TarWriter

use super::write::{append_entry, ustar_header};
use super::{TarError, TarReader, BLOCK};

/// A ustar header block for `name` (written as given, cut to 100 bytes) of
/// typeflag `kind` with `size` data bytes; see [`push`] for a whole entry.
pub fn header(name: &str, kind: u8, size: u64) -> [u8; BLOCK] {
    ustar_header(name, kind, size)
}

/// Appends an entry (header, data, padding) to an archive being built,
/// without checking its name or type.
pub fn push(tar: &mut Vec<u8>, name: &str, kind: u8, data: &[u8]) {
    append_entry(tar, name, kind, data);
}

/// Appends the end-of-archive marker, two zero blocks.
pub fn finish(tar: &mut Vec<u8>) {
    tar.resize(tar.len() + 2 * BLOCK, 0);
}

/// Reads a whole archive the way the guest agent does, checking every entry
/// with [`Entry::segments`](super::Entry::segments): the normalised path and
/// the data of each file and directory, or the first error.
pub fn read_all(archive: &[u8]) -> Result<Vec<(String, Vec<u8>)>, TarError> {
    let mut reader = TarReader::new(archive);
    let mut entries = Vec::new();
    while let Some(entry) = reader.next_entry()? {
        let path = entry.segments()?.join("/");
        let mut data = Vec::new();
        reader.copy_data(&mut data)?;
        entries.push((path, data));
    }
    Ok(entries)
}
