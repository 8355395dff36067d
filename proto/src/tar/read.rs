//! [`TarReader`]: reads an uncompressed tar archive entry by entry as it
//! streams in (ustar, PAX and GNU long names), in the guest agent.
//!
//! The reader only decodes headers and hands out entry data; whether an
//! entry may be extracted into an app's folder is [`Entry::segments`]' call.

use std::fmt;
use std::io::{self, Read, Write};

use super::{checksum, pad, BLOCK, CHECKSUM, MAGIC, MODE, NAME, PREFIX, SIZE, TYPEFLAG};
use crate::paths::{entry_segments, PathError};

/// Longest PAX extended header or GNU long-name block accepted, in bytes.
const MAX_META_LEN: u64 = 64 * 1024;

/// What kind of thing an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file (typeflag '0', NUL or '7').
    File,
    /// A directory (typeflag '5', or an old-style empty file whose name ends in '/').
    Directory,
    /// A hard link ('1').
    HardLink,
    /// A symbolic link ('2').
    Symlink,
    /// A character device ('3').
    CharDevice,
    /// A block device ('4').
    BlockDevice,
    /// A FIFO ('6').
    Fifo,
    /// Any other typeflag.
    Other(u8),
}

impl EntryKind {
    fn from_flag(flag: u8) -> Self {
        match flag {
            b'0' | 0 | b'7' => Self::File,
            b'5' => Self::Directory,
            b'1' => Self::HardLink,
            b'2' => Self::Symlink,
            b'3' => Self::CharDevice,
            b'4' => Self::BlockDevice,
            b'6' => Self::Fifo,
            other => Self::Other(other),
        }
    }
}

impl fmt::Display for EntryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File => write!(f, "regular file"),
            Self::Directory => write!(f, "directory"),
            Self::HardLink => write!(f, "hard link"),
            Self::Symlink => write!(f, "symbolic link"),
            Self::CharDevice => write!(f, "character device"),
            Self::BlockDevice => write!(f, "block device"),
            Self::Fifo => write!(f, "FIFO"),
            Self::Other(flag) if flag.is_ascii_graphic() => {
                write!(f, "entry of type '{}'", char::from(*flag))
            }
            Self::Other(flag) => write!(f, "entry of type {flag:#04x}"),
        }
    }
}

/// One archive member's header, with long names and PAX overrides applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The member's path exactly as stored (not yet checked).
    pub path: String,
    /// File, directory, link, ...
    pub kind: EntryKind,
    /// Number of data bytes that follow the header.
    pub size: u64,
    /// Permission bits from the header.
    pub mode: u32,
}

impl Entry {
    /// Checks that this entry may be extracted into an app's folder and
    /// returns the folder and file names of its path there (see
    /// [`entry_segments`]).
    ///
    /// The path must stay inside the folder, the entry must be a regular
    /// file or a directory, and a file must have a name. A directory entry
    /// for the folder itself (`./`) gives no segments.
    pub fn segments(&self) -> Result<Vec<&str>, TarError> {
        // The path is checked first, so an escaping link is reported as escaping.
        let segments = entry_segments(&self.path)?;
        match self.kind {
            EntryKind::Directory => Ok(segments),
            EntryKind::File if segments.is_empty() => Err(TarError::Path(PathError::Empty)),
            EntryKind::File => Ok(segments),
            kind => Err(TarError::Unsupported {
                path: self.path.clone(),
                kind,
            }),
        }
    }
}

/// Why an archive could not be read, or one of its entries was refused.
#[derive(Debug)]
pub enum TarError {
    /// The stream ended inside a header or inside entry data, or was empty.
    Truncated,
    /// A header's checksum does not match its contents.
    BadChecksum {
        /// Byte offset of the header in the archive.
        offset: u64,
    },
    /// A numeric header field could not be parsed.
    BadNumber {
        /// Which field.
        field: &'static str,
        /// Byte offset of the header in the archive.
        offset: u64,
    },
    /// A PAX extended header is malformed.
    BadPax(String),
    /// A PAX header or GNU long name is larger than we accept.
    MetaTooLarge(u64),
    /// An entry path is not valid UTF-8.
    NotUtf8(String),
    /// A link, device or other entry that is neither a file nor a directory.
    Unsupported {
        /// The entry path as stored in the archive.
        path: String,
        /// What it is.
        kind: EntryKind,
    },
    /// An entry's path is malformed or would leave the app folder.
    Path(PathError),
    /// Reading the stream or writing entry data failed.
    Io(io::Error),
}

impl TarError {
    /// A stable machine-readable code for this error: `path_escapes` for
    /// absolute and `..` paths, `unsupported_entry` for links and devices,
    /// `io_error` when the stream or the output failed, and `bad_archive`
    /// for everything else, including other malformed entry paths.
    pub fn code(&self) -> &'static str {
        match self {
            TarError::Path(e) if e.escapes() => "path_escapes",
            TarError::Unsupported { .. } => "unsupported_entry",
            TarError::Io(_) => "io_error",
            _ => "bad_archive",
        }
    }
}

impl fmt::Display for TarError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => write!(
                f,
                "the archive ends early, inside a header or an entry's data (was the upload \
                 cut short?)"
            ),
            Self::BadChecksum { offset } => write!(
                f,
                "the header at byte {offset} has a wrong checksum (not a tar file?)"
            ),
            Self::BadNumber { field, offset } => write!(
                f,
                "the header at byte {offset} has an unreadable {field} field"
            ),
            Self::BadPax(why) => write!(f, "a PAX extended header is malformed: {why}"),
            Self::MetaTooLarge(n) => write!(
                f,
                "a PAX header or long name is {n} bytes, at most {MAX_META_LEN} allowed"
            ),
            Self::NotUtf8(lossy) => write!(f, "the entry path {lossy:?} is not valid UTF-8"),
            Self::Unsupported { path, kind } => write!(
                f,
                "archive entry {path:?} is a {kind}: only regular files and directories are \
                 allowed, replace links by copies of the files"
            ),
            Self::Path(e) => e.fmt(f),
            Self::Io(e) => write!(f, "I/O error: {e}"),
        }
    }
}

impl std::error::Error for TarError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Path(e) => Some(e),
            Self::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for TarError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            Self::Truncated
        } else {
            Self::Io(e)
        }
    }
}

impl From<PathError> for TarError {
    fn from(e: PathError) -> Self {
        Self::Path(e)
    }
}

/// Reads entries one after another from an uncompressed tar stream.
///
/// Call [`TarReader::next_entry`]; then either [`TarReader::copy_data`] to get
/// the entry's bytes or just call `next_entry` again, which skips them.
pub struct TarReader<R> {
    inner: R,
    /// Bytes consumed so far (for error messages).
    offset: u64,
    /// Data bytes of the current entry not yet read.
    remaining: u64,
    /// Padding bytes after the current entry's data.
    padding: u64,
    /// Set once the end-of-archive marker (or a clean end of stream) was seen.
    done: bool,
}

impl<R: Read> TarReader<R> {
    /// Wraps a stream positioned at the start of an archive.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            offset: 0,
            remaining: 0,
            padding: 0,
            done: false,
        }
    }

    /// Returns the next entry's header, or `None` at the end of the archive.
    /// PAX headers ('x', 'g') and GNU long names ('L', 'K') are consumed here.
    pub fn next_entry(&mut self) -> Result<Option<Entry>, TarError> {
        self.skip_rest()?;
        let mut long_name: Option<Vec<u8>> = None;
        let mut pax_path: Option<Vec<u8>> = None;
        let mut pax_size: Option<u64> = None;
        loop {
            if self.done {
                return Ok(None);
            }
            let header_offset = self.offset;
            let Some(block) = self.read_header_block()? else {
                self.done = true;
                return Ok(None);
            };
            let field = |name| TarError::BadNumber {
                field: name,
                offset: header_offset,
            };
            if parse_number(&block[CHECKSUM]) != Some(checksum(&block)) {
                return Err(TarError::BadChecksum {
                    offset: header_offset,
                });
            }
            let size = parse_number(&block[SIZE]).ok_or_else(|| field("size"))?;
            let mode = parse_number(&block[MODE]).ok_or_else(|| field("mode"))?;
            let flag = block[TYPEFLAG];
            match flag {
                // Metadata for the next entry: remember what we use, read on.
                b'x' | b'g' | b'L' | b'K' => {
                    let data = self.read_meta(size)?;
                    match flag {
                        b'x' => {
                            for (key, value) in parse_pax(&data)? {
                                match key {
                                    b"path" => pax_path = Some(value.to_vec()),
                                    b"size" => pax_size = Some(parse_pax_size(value)?),
                                    _ => {}
                                }
                            }
                        }
                        b'L' => long_name = Some(trim_nul(&data).to_vec()),
                        // Global PAX headers and GNU long link names don't
                        // change anything we use.
                        _ => {}
                    }
                }
                // A real entry: apply the metadata and hand it out.
                _ => {
                    let path_bytes = pax_path.or(long_name).unwrap_or_else(|| ustar_path(&block));
                    let path = String::from_utf8(path_bytes).map_err(|e| {
                        TarError::NotUtf8(String::from_utf8_lossy(e.as_bytes()).into_owned())
                    })?;
                    let size = pax_size.unwrap_or(size);
                    let kind = match EntryKind::from_flag(flag) {
                        // Old (V7) archives mark directories only by a trailing '/'.
                        EntryKind::File if path.ends_with('/') && size == 0 => EntryKind::Directory,
                        kind => kind,
                    };
                    // Only regular files carry data for our purposes; the size field
                    // of links and devices is ignored by tar implementations too.
                    let data_len = match kind {
                        EntryKind::File | EntryKind::Other(_) => size,
                        _ => 0,
                    };
                    self.remaining = data_len;
                    self.padding = pad(data_len);
                    let mode = u32::try_from(mode & 0o7777).unwrap_or(0o644);
                    return Ok(Some(Entry {
                        path,
                        kind,
                        size: data_len,
                        mode,
                    }));
                }
            }
        }
    }

    /// Copies the current entry's remaining data into `out`; returns the byte count.
    pub fn copy_data(&mut self, out: &mut impl Write) -> Result<u64, TarError> {
        let mut buf = [0u8; 16 * 1024];
        let mut copied = 0;
        while self.remaining > 0 {
            let want = usize::try_from(self.remaining.min(buf.len() as u64)).unwrap_or(buf.len());
            let n = self.inner.read(&mut buf[..want])?;
            if n == 0 {
                return Err(TarError::Truncated);
            }
            out.write_all(&buf[..n]).map_err(TarError::Io)?;
            self.remaining -= n as u64;
            self.offset += n as u64;
            copied += n as u64;
        }
        Ok(copied)
    }

    /// Gives back the underlying stream (e.g. to drain what follows the archive).
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Skips the unread data and padding of the current entry.
    fn skip_rest(&mut self) -> Result<(), TarError> {
        let n = self.remaining + self.padding;
        if n > 0 {
            let skipped = io::copy(&mut (&mut self.inner).take(n), &mut io::sink())?;
            self.offset += skipped;
            if skipped < n {
                return Err(TarError::Truncated);
            }
        }
        self.remaining = 0;
        self.padding = 0;
        Ok(())
    }

    /// Reads one header block; `None` at a zero block, or at a clean end of
    /// stream after the first header (some writers leave out the end marker).
    /// An empty stream is not an archive.
    fn read_header_block(&mut self) -> Result<Option<[u8; BLOCK]>, TarError> {
        let mut block = [0u8; BLOCK];
        let mut filled = 0;
        while filled < BLOCK {
            let n = self.inner.read(&mut block[filled..])?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        let at_start = self.offset == 0;
        self.offset += filled as u64;
        match filled {
            0 if !at_start => Ok(None),
            BLOCK if block.iter().all(|&b| b == 0) => Ok(None),
            BLOCK => Ok(Some(block)),
            _ => Err(TarError::Truncated),
        }
    }

    /// Reads the data of a metadata entry (PAX header or long name) plus its padding.
    fn read_meta(&mut self, size: u64) -> Result<Vec<u8>, TarError> {
        if size > MAX_META_LEN {
            return Err(TarError::MetaTooLarge(size));
        }
        let mut data = Vec::new();
        self.remaining = size;
        self.padding = pad(size);
        self.copy_data(&mut data)?;
        self.skip_rest()?;
        Ok(data)
    }
}

/// The ustar name, joined with the prefix field when the archive is POSIX ustar.
fn ustar_path(block: &[u8; BLOCK]) -> Vec<u8> {
    let name = trim_nul(&block[NAME]);
    let posix = &block[MAGIC] == b"ustar\0";
    let prefix = trim_nul(&block[PREFIX]);
    if posix && !prefix.is_empty() {
        let mut path = prefix.to_vec();
        path.push(b'/');
        path.extend_from_slice(name);
        path
    } else {
        name.to_vec()
    }
}

/// The bytes before the first NUL.
fn trim_nul(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    &bytes[..end]
}

/// Parses an octal header number (NUL/space padded) or GNU base-256.
fn parse_number(field: &[u8]) -> Option<u64> {
    if let Some((&first, rest)) = field.split_first() {
        if first & 0x80 != 0 {
            // Base-256: the remaining bits of the first byte and the rest, big-endian.
            if first & 0x40 != 0 {
                return None; // negative
            }
            let mut n = u64::from(first & 0x3f);
            for &b in rest {
                n = n.checked_mul(256)?.checked_add(u64::from(b))?;
            }
            return Some(n);
        }
    }
    let text = std::str::from_utf8(field).ok()?;
    let text = text.trim_matches(|c| c == '\0' || c == ' ');
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

/// One PAX record: key and value bytes.
type PaxRecord<'a> = (&'a [u8], &'a [u8]);

/// Splits PAX extended header records (`"<len> <key>=<value>\n"`).
fn parse_pax(mut data: &[u8]) -> Result<Vec<PaxRecord<'_>>, TarError> {
    let mut records = Vec::new();
    while !data.is_empty() {
        if data.iter().all(|&b| b == 0) {
            break;
        }
        let space = data
            .iter()
            .position(|&b| b == b' ')
            .ok_or_else(|| TarError::BadPax("a record has no length".into()))?;
        let len: usize = std::str::from_utf8(&data[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| TarError::BadPax("a record length is not a number".into()))?;
        if len <= space + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err(TarError::BadPax(format!(
                "a record length of {len} is wrong"
            )));
        }
        let record = &data[space + 1..len - 1];
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(|| TarError::BadPax("a record has no '='".into()))?;
        records.push((&record[..eq], &record[eq + 1..]));
        data = &data[len..];
    }
    Ok(records)
}

/// Parses the decimal value of a PAX `size` record.
fn parse_pax_size(value: &[u8]) -> Result<u64, TarError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| TarError::BadPax("the size record is not a number".into()))
}

#[cfg(test)]
mod tests {
    use super::super::testing::{finish, header, push};
    use super::super::{pax_record, seal};
    use super::*;

    #[test]
    fn reads_files_and_dirs() {
        let mut tar = Vec::new();
        push(&mut tar, "site/", b'5', b"");
        push(&mut tar, "site/index.html", b'0', b"<h1>hi</h1>");
        push(&mut tar, "site/big.bin", b'0', &[7u8; 1000]);
        finish(&mut tar);
        let mut r = TarReader::new(&tar[..]);
        let e = r.next_entry().unwrap().unwrap();
        assert_eq!((e.path.as_str(), e.kind), ("site/", EntryKind::Directory));
        let e = r.next_entry().unwrap().unwrap();
        assert_eq!(
            (e.path.as_str(), e.kind, e.size),
            ("site/index.html", EntryKind::File, 11)
        );
        let mut out = Vec::new();
        assert_eq!(r.copy_data(&mut out).unwrap(), 11);
        assert_eq!(out, b"<h1>hi</h1>");
        // The next file's data is skipped without being read.
        let e = r.next_entry().unwrap().unwrap();
        assert_eq!(e.size, 1000);
        assert!(r.next_entry().unwrap().is_none());
        assert!(r.next_entry().unwrap().is_none());
    }

    #[test]
    fn missing_end_marker_is_a_clean_end() {
        let mut tar = Vec::new();
        push(&mut tar, "a.txt", b'0', b"abc");
        let mut r = TarReader::new(&tar[..]);
        assert_eq!(r.next_entry().unwrap().unwrap().path, "a.txt");
        assert!(r.next_entry().unwrap().is_none());
    }

    #[test]
    fn old_style_directories() {
        let mut tar = Vec::new();
        push(&mut tar, "v7-dir/", 0, b"");
        push(&mut tar, "not-a-dir/", b'0', b"x");
        finish(&mut tar);
        let mut r = TarReader::new(&tar[..]);
        assert_eq!(r.next_entry().unwrap().unwrap().kind, EntryKind::Directory);
        assert_eq!(r.next_entry().unwrap().unwrap().kind, EntryKind::File);
    }

    #[test]
    fn pax_and_gnu_long_names() {
        let long = format!("{}/file.txt", "d".repeat(150));
        let mut tar = Vec::new();
        let rec = pax_record("path", &long);
        push(&mut tar, "PaxHeader/x", b'x', &rec);
        push(&mut tar, "short", b'0', b"abc");
        push(
            &mut tar,
            "././@LongLink",
            b'L',
            format!("{long}2\0").as_bytes(),
        );
        push(&mut tar, "short2", b'0', b"");
        finish(&mut tar);
        let mut r = TarReader::new(&tar[..]);
        assert_eq!(r.next_entry().unwrap().unwrap().path, long);
        assert_eq!(r.next_entry().unwrap().unwrap().path, format!("{long}2"));
        assert!(r.next_entry().unwrap().is_none());
    }

    #[test]
    fn ustar_prefix_is_joined() {
        let mut h = header("name.txt", b'0', 0);
        h[PREFIX][..6].copy_from_slice(b"prefix");
        seal(&mut h);
        let mut tar = h.to_vec();
        finish(&mut tar);
        let e = TarReader::new(&tar[..]).next_entry().unwrap().unwrap();
        assert_eq!(e.path, "prefix/name.txt");
    }

    #[test]
    fn rejects_garbage_and_truncation() {
        let garbage = [b'x'; 1024];
        assert!(matches!(
            TarReader::new(&garbage[..]).next_entry(),
            Err(TarError::BadChecksum { offset: 0 })
        ));
        let mut tar = Vec::new();
        push(&mut tar, "a", b'0', &[1u8; 600]);
        tar.truncate(800);
        let mut r = TarReader::new(&tar[..]);
        r.next_entry().unwrap().unwrap();
        assert!(matches!(
            r.copy_data(&mut Vec::new()),
            Err(TarError::Truncated)
        ));
        let half = &tar[..100];
        assert!(matches!(
            TarReader::new(half).next_entry(),
            Err(TarError::Truncated)
        ));
    }

    #[test]
    fn entries_are_checked_before_extraction() {
        let entry = |path: &str, kind| Entry {
            path: path.into(),
            kind,
            size: 0,
            mode: 0o644,
        };
        let dir = entry("./", EntryKind::Directory);
        assert_eq!(dir.segments().unwrap(), Vec::<&str>::new());
        let file = entry("./css//site.css", EntryKind::File);
        assert_eq!(file.segments().unwrap(), ["css", "site.css"]);
        let escaping_link = entry("../x", EntryKind::Symlink);
        assert_eq!(escaping_link.segments().unwrap_err().code(), "path_escapes");
        let fifo = entry("pipe", EntryKind::Fifo);
        assert_eq!(fifo.segments().unwrap_err().code(), "unsupported_entry");
        let backslash = entry("a\\b", EntryKind::File);
        assert_eq!(backslash.segments().unwrap_err().code(), "bad_archive");
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_number(b"0000644\0"), Some(0o644));
        assert_eq!(parse_number(b"     12 "), Some(0o12));
        assert_eq!(parse_number(b"\0\0\0\0"), Some(0));
        assert_eq!(parse_number(&[0x80, 0, 0, 1, 0]), Some(256));
        assert_eq!(parse_number(b"99"), None);
        assert_eq!(pad(0), 0);
        assert_eq!(pad(1), 511);
        assert_eq!(pad(512), 0);
    }

    #[test]
    fn pax_records() {
        let rec = pax_record("path", "a/b");
        assert_eq!(rec, b"12 path=a/b\n");
        let recs = parse_pax(&rec).unwrap();
        assert_eq!(recs, vec![(&b"path"[..], &b"a/b"[..])]);
        assert!(parse_pax(b"99 path=x\n").is_err());
        assert!(parse_pax(b"x path=x\n").is_err());
    }
}
