//! The tar archives that carry an app's files from the page into the guest.
//!
//! The page writes ustar archives, with a PAX `path` record for names longer
//! than ustar's fields allow; the guest agent reads them back and checks
//! every path before anything touches its disk.

use crate::paths::{normalize_entry_path, PathError};
use std::fmt;

const BLOCK: usize = 512;

/// Largest archive the guest agent accepts for one deploy.
pub const MAX_ARCHIVE_BYTES: u64 = 64 * 1024 * 1024;

/// The exact size of the archive [`TarWriter`] writes for files of these
/// path lengths and sizes, so a page can refuse an oversized upload before
/// reading a byte of it.
pub fn archive_size<'a>(files: impl IntoIterator<Item = (usize, u64)> + 'a) -> u64 {
    let block = BLOCK as u64;
    let mut total = 2 * block;
    for (path_len, size) in files {
        if path_len > 100 {
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
        if path.len() > 100 {
            let record = pax_record("path", &path);
            self.header("PaxHeader", record.len() as u64, b'x');
            self.out.extend_from_slice(&record);
            self.pad();
        }
        self.header(&path, data.len() as u64, b'0');
        self.out.extend_from_slice(data);
        self.pad();
        Ok(())
    }

    /// Ends the archive with its two zero blocks and returns the bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.out.extend_from_slice(&[0; 2 * BLOCK]);
        self.out
    }

    fn header(&mut self, name: &str, size: u64, kind: u8) {
        let mut h = [0u8; BLOCK];
        let name = name.as_bytes();
        let n = name.len().min(100);
        h[..n].copy_from_slice(&name[..n]);
        octal(&mut h[100..108], 0o644);
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        octal(&mut h[124..136], size);
        octal(&mut h[136..148], 0);
        h[156] = kind;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| *b as u32).sum();
        octal(&mut h[148..155], sum as u64);
        h[155] = b' ';
        self.out.extend_from_slice(&h);
    }

    fn pad(&mut self) {
        let rem = self.out.len() % BLOCK;
        if rem != 0 {
            self.out.resize(self.out.len() + BLOCK - rem, 0);
        }
    }
}

/// Writes `value` as zero-padded octal with a trailing NUL into `field`.
fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(&text.as_bytes()[text.len() - digits..]);
    field[digits] = 0;
}

fn pax_record(key: &str, value: &str) -> Vec<u8> {
    // The length prefix counts itself, so grow it until it is stable.
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while format!("{len}{body}").len() != len {
        len += 1;
    }
    format!("{len}{body}").into_bytes()
}

/// What kind of entry a tar header describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
}

/// One entry read from an archive, with its path already checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The normalised relative path.
    pub path: String,
    /// File or directory.
    pub kind: EntryKind,
    /// The file's bytes (empty for a directory).
    pub data: &'a [u8],
}

/// Why an archive was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TarError {
    /// A header or its data runs past the end of the archive.
    Truncated,
    /// A header's checksum does not match.
    BadChecksum,
    /// A numeric field is not octal.
    BadNumber,
    /// An entry is a link, device or other special file.
    Unsupported(String, u8),
    /// An entry's path would escape the app folder or is malformed.
    Path(PathError),
}

impl TarError {
    /// A stable machine-readable code for this error.
    pub fn code(&self) -> &'static str {
        match self {
            TarError::Path(e) => e.code(),
            TarError::Unsupported(..) => "unsupported_entry",
            _ => "bad_archive",
        }
    }
}

impl fmt::Display for TarError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TarError::Truncated => write!(f, "the archive is cut short: upload it again"),
            TarError::BadChecksum => write!(f, "a tar header is corrupt (checksum mismatch)"),
            TarError::BadNumber => write!(f, "a tar header has a malformed number"),
            TarError::Unsupported(p, k) => write!(
                f,
                "entry {p:?} is a link or special file (type {:?}): only files and folders \
are accepted",
                *k as char
            ),
            TarError::Path(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for TarError {}

impl From<PathError> for TarError {
    fn from(e: PathError) -> Self {
        TarError::Path(e)
    }
}

/// Reads every entry of an archive held in memory, failing on the first bad one.
pub fn read_entries(archive: &[u8]) -> Result<Vec<Entry<'_>>, TarError> {
    let mut entries = Vec::new();
    let mut pos = 0;
    let mut long_path: Option<String> = None;
    loop {
        let header = archive.get(pos..pos + BLOCK).ok_or(TarError::Truncated)?;
        if header.iter().all(|b| *b == 0) {
            return Ok(entries);
        }
        check_sum(header)?;
        let size = parse_octal(&header[124..136])? as usize;
        let kind = header[156];
        let data_start = pos + BLOCK;
        let data_end = data_start.checked_add(size).ok_or(TarError::Truncated)?;
        let data = archive
            .get(data_start..data_end)
            .ok_or(TarError::Truncated)?;
        pos = data_start + size.div_ceil(BLOCK) * BLOCK;
        let raw_name = match long_path.take() {
            Some(p) => p,
            None => header_name(header),
        };
        match kind {
            b'x' => long_path = pax_path(data),
            // Global PAX headers carry nothing an app needs.
            b'g' => {}
            b'0' | 0 | b'7' => entries.push(Entry {
                path: normalize_entry_path(&raw_name)?,
                kind: EntryKind::File,
                data,
            }),
            b'5' => entries.push(Entry {
                path: normalize_entry_path(&raw_name)?,
                kind: EntryKind::Dir,
                data: &[],
            }),
            other => return Err(TarError::Unsupported(raw_name, other)),
        }
    }
}

fn header_name(header: &[u8]) -> String {
    let field = |range: std::ops::Range<usize>| {
        let bytes = &header[range];
        let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
        String::from_utf8_lossy(&bytes[..end]).into_owned()
    };
    let name = field(0..100);
    let prefix = if &header[257..262] == b"ustar" {
        field(345..500)
    } else {
        String::new()
    };
    if prefix.is_empty() {
        name
    } else {
        format!("{prefix}/{name}")
    }
}

fn pax_path(data: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(data).ok()?;
    text.lines().find_map(|line| {
        let (_, kv) = line.split_once(' ')?;
        kv.strip_prefix("path=").map(str::to_owned)
    })
}

fn check_sum(header: &[u8]) -> Result<(), TarError> {
    let stored = parse_octal(&header[148..156])?;
    let sum: u64 = header
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                b' ' as u64
            } else {
                *b as u64
            }
        })
        .sum();
    if sum == stored {
        Ok(())
    } else {
        Err(TarError::BadChecksum)
    }
}

fn parse_octal(field: &[u8]) -> Result<u64, TarError> {
    let text = std::str::from_utf8(field).map_err(|_| TarError::BadNumber)?;
    let text = text.trim_matches(|c: char| c == '\0' || c == ' ');
    if text.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(text, 8).map_err(|_| TarError::BadNumber)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let entries = read_entries(&archive).unwrap();
        let got: Vec<(&str, &[u8])> = entries.iter().map(|e| (e.path.as_str(), e.data)).collect();
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

    /// Builds a header by hand, the way a hostile archive would.
    fn raw_entry(name: &str, kind: u8, data: &[u8]) -> Vec<u8> {
        let mut w = TarWriter::new();
        w.header("placeholder", data.len() as u64, kind);
        let mut out = w.out;
        out[..100].fill(0);
        out[..name.len()].copy_from_slice(name.as_bytes());
        out[148..156].copy_from_slice(b"        ");
        let sum: u32 = out.iter().map(|b| *b as u32).sum();
        octal(&mut out[148..155], sum as u64);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(BLOCK) * BLOCK, 0);
        out.extend_from_slice(&[0; 2 * BLOCK]);
        out
    }

    #[test]
    fn hostile_archives_are_refused() {
        let escape = raw_entry("../../etc/cron.d/x", b'0', b"boom");
        assert!(matches!(
            read_entries(&escape),
            Err(TarError::Path(PathError::Escapes(_)))
        ));
        assert_eq!(read_entries(&escape).unwrap_err().code(), "path_escapes");
        let absolute = raw_entry("/etc/passwd", b'0', b"");
        assert!(matches!(
            read_entries(&absolute),
            Err(TarError::Path(PathError::Absolute(_)))
        ));
        let link = raw_entry("link", b'2', b"");
        assert_eq!(
            read_entries(&link),
            Err(TarError::Unsupported("link".into(), b'2'))
        );
        let mut corrupt = raw_entry("a.txt", b'0', b"abc");
        corrupt[0] = b'b';
        assert_eq!(read_entries(&corrupt), Err(TarError::BadChecksum));
        let good = raw_entry("a.txt", b'0', b"abc");
        assert_eq!(read_entries(&good[..BLOCK + 1]), Err(TarError::Truncated));
        assert_eq!(read_entries(&[]), Err(TarError::Truncated));
    }
}
