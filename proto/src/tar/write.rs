//! [`TarWriter`]: packs an app's files into a ustar archive in memory (in the page).

use super::{
    octal, pad, pax_record, seal, BLOCK, GID, MAGIC, MODE, MTIME, NAME, SIZE, TYPEFLAG, UID,
    VERSION,
};
use crate::paths::{normalize_entry_path, PathError};

/// The exact size of the archive [`TarWriter`] writes for files of these
/// path lengths and sizes, so a page can refuse an oversized upload before
/// reading a byte of it.
pub fn archive_size<'a>(files: impl IntoIterator<Item = (usize, u64)> + 'a) -> u64 {
    let block = BLOCK as u64;
    let mut total = 2 * block;
    for (path_len, size) in files {
        if path_len > NAME.len() {
            total += 2 * block;
        }
        total += block + size.div_ceil(block) * block;
    }
    total
}

/// Appends files to an in-memory tar archive.
#[derive(Debug, Default)]
pub struct TarWriter {
    out: Vec<u8>,
}

impl TarWriter {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one regular file. The path is checked and normalised first, so a
    /// bad name is reported before any bytes are read from disk.
    pub fn add_file(&mut self, path: &str, data: &[u8]) -> Result<(), PathError> {
        let path = normalize_entry_path(path)?;
        if path.len() > NAME.len() {
            // The name field would cut the path short: a PAX header carries it whole.
            append_entry(&mut self.out, "PaxHeader", b'x', &pax_record("path", &path));
        }
        append_entry(&mut self.out, &path, b'0', data);
        Ok(())
    }

    /// Ends the archive with its two zero blocks and returns the bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.out.extend_from_slice(&[0; 2 * BLOCK]);
        self.out
    }
}

/// Appends one entry (header, data, padding) to `out`, which must end on a
/// block boundary. Nothing is checked: `name` is written as given, cut to
/// the 100 bytes of the name field.
pub(super) fn append_entry(out: &mut Vec<u8>, name: &str, kind: u8, data: &[u8]) {
    out.extend_from_slice(&ustar_header(name, kind, data.len() as u64));
    out.extend_from_slice(data);
    out.resize(out.len() + pad(data.len() as u64) as usize, 0);
}

/// A ustar header block for an entry of `kind` with `size` data bytes, owned
/// by root, mode 0644, dated 1970.
pub(super) fn ustar_header(name: &str, kind: u8, size: u64) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    let name = name.as_bytes();
    let n = name.len().min(NAME.len());
    h[..n].copy_from_slice(&name[..n]);
    octal(&mut h[MODE], 0o644);
    octal(&mut h[UID], 0);
    octal(&mut h[GID], 0);
    octal(&mut h[SIZE], size);
    octal(&mut h[MTIME], 0);
    h[TYPEFLAG] = kind;
    h[MAGIC].copy_from_slice(b"ustar\0");
    h[VERSION].copy_from_slice(b"00");
    seal(&mut h);
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_size_is_exact() {
        let files: [(&str, usize); 3] = [("a.txt", 0), ("b/c.bin", 513), (&"x".repeat(150), 7)];
        let mut w = TarWriter::new();
        for (path, size) in files {
            w.add_file(path, &vec![1; size]).unwrap();
        }
        let predicted = archive_size(files.iter().map(|(p, s)| (p.len(), *s as u64)));
        assert_eq!(predicted, w.finish().len() as u64);
    }

    #[test]
    fn writer_refuses_escaping_paths() {
        let mut w = TarWriter::new();
        assert!(matches!(
            w.add_file("../x", b""),
            Err(PathError::Escapes(_))
        ));
        assert!(matches!(
            w.add_file("/etc/passwd", b""),
            Err(PathError::Absolute(_))
        ));
    }

    #[test]
    fn header_layout_is_stable() {
        let h = ustar_header("index.html", b'0', 11);
        assert_eq!(&h[..11], b"index.html\0");
        assert_eq!(&h[MODE], b"0000644\0");
        assert_eq!(&h[SIZE], b"00000000013\0");
        assert_eq!(h[TYPEFLAG], b'0');
        assert_eq!(&h[MAGIC], b"ustar\0");
        assert_eq!(&h[crate::tar::CHECKSUM], b"007734\0 ");
    }
}
