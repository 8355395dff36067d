//! Reads ZIP archives (stored and deflated entries) into checked files.
//!
//! The central directory at the end of the archive is the list of entries;
//! each entry's data sits behind a local header that the central directory
//! points at. Every entry is checked before anything is unpacked: its path
//! must stay inside the app folder, it must be a regular file or folder, and
//! the declared sizes must fit the limit, so a hostile archive costs no more
//! than its own bytes. Each file's CRC-32 is checked after unpacking.

use crate::File;
use appserver_proto::paths::{entry_segments, normalize_entry_path, PathError};
use std::fmt;

/// Why an archive was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZipError {
    /// No end-of-central-directory record: not a ZIP file, or cut short.
    NotZip,
    /// A record points outside the archive.
    Truncated(&'static str),
    /// ZIP64 archives (over 4 GiB or 65535 entries) are not read.
    Zip64,
    /// The entry is encrypted.
    Encrypted(String),
    /// The entry uses a compression other than stored or deflate.
    Method {
        /// The entry's path.
        path: String,
        /// The method number from the archive.
        method: u16,
    },
    /// The entry's path is refused (absolute, `..`, bad characters).
    Path(PathError),
    /// The entry's name is not UTF-8.
    NameNotUtf8,
    /// The entry is a symbolic link or a device, not a file or a folder.
    NotAFile(String),
    /// The unpacked files would exceed this many bytes.
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The entry's data does not unpack, or does not match its CRC-32.
    Corrupt(String),
}

impl ZipError {
    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ZipError::Path(e) => e.code(),
            ZipError::NotAFile(_) => "not_a_file",
            ZipError::TooLarge { .. } => "too_large",
            ZipError::Zip64 | ZipError::Encrypted(_) | ZipError::Method { .. } => {
                "unsupported_archive"
            }
            _ => "bad_archive",
        }
    }
}

impl fmt::Display for ZipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ZipError::NotZip => write!(f, "this is not a ZIP file (or it was cut short)"),
            ZipError::Truncated(what) => {
                write!(f, "the ZIP file is damaged: its {what} runs past the end")
            }
            ZipError::Zip64 => write!(
                f,
                "ZIP64 archives are not supported: zip fewer or smaller files"
            ),
            ZipError::Encrypted(p) => write!(f, "{p} is encrypted: zip it without a password"),
            ZipError::Method { path, method } => write!(
                f,
                "{path} uses compression method {method}: only stored and deflate are read"
            ),
            ZipError::Path(e) => write!(f, "{e}"),
            ZipError::NameNotUtf8 => write!(f, "a file name in the ZIP is not UTF-8"),
            ZipError::NotAFile(p) => write!(
                f,
                "{p} is a link or a device file: only files and folders can be deployed"
            ),
            ZipError::TooLarge { limit } => write!(
                f,
                "the ZIP unpacks to more than the {} MiB upload limit",
                limit / (1024 * 1024)
            ),
            ZipError::Corrupt(p) => write!(f, "{p} is damaged in the ZIP: zip it again"),
        }
    }
}

impl std::error::Error for ZipError {}

const EOCD_SIG: u32 = 0x0605_4b50;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const LOCAL_SIG: u32 = 0x0403_4b50;
const EOCD_LEN: usize = 22;
const CENTRAL_LEN: usize = 46;
const LOCAL_LEN: usize = 30;

/// Little-endian fields at fixed offsets of a record.
struct Record<'a>(&'a [u8]);

impl Record<'_> {
    fn u16(&self, at: usize) -> u16 {
        u16::from_le_bytes([self.0[at], self.0[at + 1]])
    }
    fn u32(&self, at: usize) -> u32 {
        u32::from_le_bytes([self.0[at], self.0[at + 1], self.0[at + 2], self.0[at + 3]])
    }
}

/// `len` bytes of `bytes` from `at`, or the named part was cut short.
fn slice<'a>(
    bytes: &'a [u8],
    at: usize,
    len: usize,
    what: &'static str,
) -> Result<&'a [u8], ZipError> {
    at.checked_add(len)
        .and_then(|end| bytes.get(at..end))
        .ok_or(ZipError::Truncated(what))
}

/// Finds the end-of-central-directory record: the last one in the final
/// 64 KiB (its comment may be up to 65535 bytes long).
fn find_eocd(bytes: &[u8]) -> Result<usize, ZipError> {
    let last = bytes.len().checked_sub(EOCD_LEN).ok_or(ZipError::NotZip)?;
    let first = last.saturating_sub(u16::MAX as usize);
    (first..=last)
        .rev()
        .find(|&at| Record(&bytes[at..]).u32(0) == EOCD_SIG)
        .ok_or(ZipError::NotZip)
}

/// The regular files of `bytes`, with checked and normalised paths, in
/// archive order; folders are left out. Refuses the archive when its files
/// unpack to more than `limit` bytes in all.
pub fn read(bytes: &[u8], limit: u64) -> Result<Vec<File>, ZipError> {
    let eocd = Record(&bytes[find_eocd(bytes)?..]);
    let count = eocd.u16(10);
    let dir_offset = eocd.u32(16);
    if count == u16::MAX || dir_offset == u32::MAX {
        return Err(ZipError::Zip64);
    }
    let mut at = dir_offset as usize;
    let mut total: u64 = 0;
    let mut files = Vec::new();
    for _ in 0..count {
        let header = Record(slice(bytes, at, CENTRAL_LEN, "central directory")?);
        if header.u32(0) != CENTRAL_SIG {
            return Err(ZipError::Truncated("central directory"));
        }
        let made_by_unix = header.u16(4) >> 8 == 3;
        let flags = header.u16(8);
        let method = header.u16(10);
        let crc = header.u32(16);
        let packed = header.u32(20);
        let size = header.u32(24);
        let name_len = header.u16(28) as usize;
        let extra_len = header.u16(30) as usize;
        let comment_len = header.u16(32) as usize;
        let mode = header.u32(38) >> 16;
        let local_at = header.u32(42);
        let name = slice(bytes, at + CENTRAL_LEN, name_len, "central directory")?;
        at += CENTRAL_LEN + name_len + extra_len + comment_len;

        let name = std::str::from_utf8(name).map_err(|_| ZipError::NameNotUtf8)?;
        // A folder entry carries no data; its path is still checked.
        if name.ends_with('/') {
            entry_segments(name).map_err(ZipError::Path)?;
            continue;
        }
        let path = normalize_entry_path(name).map_err(ZipError::Path)?;
        let kind = mode & 0o170_000;
        if made_by_unix && kind != 0 && kind != 0o100_000 {
            return Err(ZipError::NotAFile(path));
        }
        if flags & 1 != 0 {
            return Err(ZipError::Encrypted(path));
        }
        if packed == u32::MAX || size == u32::MAX || local_at == u32::MAX {
            return Err(ZipError::Zip64);
        }
        if method != 0 && method != 8 {
            return Err(ZipError::Method { path, method });
        }
        total += size as u64;
        if total > limit {
            return Err(ZipError::TooLarge { limit });
        }

        let local = Record(slice(bytes, local_at as usize, LOCAL_LEN, "file header")?);
        if local.u32(0) != LOCAL_SIG {
            return Err(ZipError::Corrupt(path));
        }
        let data_at =
            local_at as usize + LOCAL_LEN + local.u16(26) as usize + local.u16(28) as usize;
        let data = slice(bytes, data_at, packed as usize, "file data")?;
        let unpacked = match method {
            0 => data.to_vec(),
            _ => miniz_oxide::inflate::decompress_to_vec_with_limit(data, size as usize)
                .map_err(|_| ZipError::Corrupt(path.clone()))?,
        };
        if unpacked.len() != size as usize || crc32(&unpacked) != crc {
            return Err(ZipError::Corrupt(path));
        }
        files.push((path, unpacked));
    }
    Ok(files)
}

/// CRC-32 (IEEE), as ZIP stores it.
pub fn crc32(data: &[u8]) -> u32 {
    !data.iter().fold(!0u32, |crc, &b| {
        CRC_TABLE[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8)
    })
}

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// Writes ZIP archives for tests, including hostile ones.
#[cfg(test)]
pub(crate) mod testing {
    use super::crc32;

    /// One entry to write.
    pub(crate) struct Entry<'a> {
        pub(crate) name: &'a str,
        pub(crate) data: &'a [u8],
        pub(crate) deflate: bool,
        /// Unix mode bits (`0o100644`), or 0 for an archive made elsewhere.
        pub(crate) mode: u32,
    }

    impl<'a> Entry<'a> {
        pub(crate) fn file(name: &'a str, data: &'a [u8]) -> Self {
            Entry {
                name,
                data,
                deflate: true,
                mode: 0o100_644,
            }
        }
    }

    /// The archive of `entries`.
    pub(crate) fn zip(entries: &[Entry<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut central = Vec::new();
        for e in entries {
            let packed = if e.deflate {
                miniz_oxide::deflate::compress_to_vec(e.data, 6)
            } else {
                e.data.to_vec()
            };
            let method: u16 = if e.deflate { 8 } else { 0 };
            let offset = out.len() as u32;
            let crc = crc32(e.data);
            out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
            out.extend_from_slice(&[20, 0, 0, 0]);
            out.extend_from_slice(&method.to_le_bytes());
            out.extend_from_slice(&[0; 4]);
            out.extend_from_slice(&crc.to_le_bytes());
            out.extend_from_slice(&(packed.len() as u32).to_le_bytes());
            out.extend_from_slice(&(e.data.len() as u32).to_le_bytes());
            out.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(e.name.as_bytes());
            out.extend_from_slice(&packed);

            central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
            central.extend_from_slice(&[20, 3, 20, 0, 0, 0]);
            central.extend_from_slice(&method.to_le_bytes());
            central.extend_from_slice(&[0; 4]);
            central.extend_from_slice(&crc.to_le_bytes());
            central.extend_from_slice(&(packed.len() as u32).to_le_bytes());
            central.extend_from_slice(&(e.data.len() as u32).to_le_bytes());
            central.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
            central.extend_from_slice(&[0; 8]);
            central.extend_from_slice(&(e.mode << 16).to_le_bytes());
            central.extend_from_slice(&offset.to_le_bytes());
            central.extend_from_slice(e.name.as_bytes());
        }
        let dir_offset = out.len() as u32;
        out.extend_from_slice(&central);
        out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
        out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
        out.extend_from_slice(&(central.len() as u32).to_le_bytes());
        out.extend_from_slice(&dir_offset.to_le_bytes());
        out.extend_from_slice(&[0, 0]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{zip, Entry};
    use super::*;

    const LIMIT: u64 = 1 << 20;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn stored_and_deflated_files_unpack() {
        let big = "body { color: red }\n".repeat(500);
        let archive = zip(&[
            Entry {
                deflate: false,
                ..Entry::file("index.html", b"<h1>hi</h1>")
            },
            Entry::file("css/main.css", big.as_bytes()),
            Entry::file("empty.txt", b""),
            Entry {
                mode: 0o040_755,
                ..Entry::file("img/", b"")
            },
            Entry::file("./img//logo.png", &[0, 159, 146, 150]),
        ]);
        let files = read(&archive, LIMIT).unwrap();
        let want: Vec<(String, Vec<u8>)> = vec![
            ("index.html".into(), b"<h1>hi</h1>".to_vec()),
            ("css/main.css".into(), big.into_bytes()),
            ("empty.txt".into(), vec![]),
            ("img/logo.png".into(), vec![0, 159, 146, 150]),
        ];
        assert_eq!(files, want);
    }

    #[test]
    fn hostile_entries_are_refused_with_codes() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (zip(&[Entry::file("../evil.sh", b"x")]), "path_escapes"),
            (zip(&[Entry::file("a/../../evil.sh", b"x")]), "path_escapes"),
            (zip(&[Entry::file("/etc/passwd", b"x")]), "path_escapes"),
            (zip(&[Entry::file("../", b"")]), "path_escapes"),
            (zip(&[Entry::file("a\\b", b"x")]), "bad_path"),
            (
                zip(&[Entry {
                    mode: 0o120_777,
                    ..Entry::file("link", b"/etc/passwd")
                }]),
                "not_a_file",
            ),
            (b"not a zip at all".to_vec(), "bad_archive"),
            (Vec::new(), "bad_archive"),
        ];
        for (archive, code) in cases {
            let e = read(&archive, LIMIT).unwrap_err();
            assert_eq!(e.code(), code, "{e}");
        }
    }

    #[test]
    fn sizes_over_the_limit_are_refused_before_unpacking() {
        // 2 MiB of zeros packs into a few kB: a small bomb.
        let zeros = vec![0u8; 2 << 20];
        let archive = zip(&[Entry::file("zeros.bin", &zeros)]);
        assert!(archive.len() < 10_000);
        assert_eq!(
            read(&archive, LIMIT).unwrap_err(),
            ZipError::TooLarge { limit: LIMIT }
        );
    }

    #[test]
    fn damage_is_detected() {
        let mut archive = zip(&[Entry {
            deflate: false,
            ..Entry::file("a.txt", b"hello world")
        }]);
        // Flip a byte of the stored data: the CRC no longer matches.
        let at = archive.windows(5).position(|w| w == b"hello").unwrap();
        archive[at] = b'j';
        assert_eq!(
            read(&archive, LIMIT).unwrap_err(),
            ZipError::Corrupt("a.txt".into())
        );
        // Cut the archive short: the end record is gone.
        let whole = zip(&[Entry::file("a.txt", b"hello world")]);
        assert_eq!(
            read(&whole[..whole.len() - 30], LIMIT).unwrap_err(),
            ZipError::NotZip
        );
        // Point the central directory past the end.
        let mut moved = whole.clone();
        let n = moved.len();
        moved[n - 6..n - 2].copy_from_slice(&(n as u32 + 100).to_le_bytes());
        assert_eq!(
            read(&moved, LIMIT).unwrap_err(),
            ZipError::Truncated("central directory")
        );
    }

    #[test]
    fn errors_name_the_file_and_the_fix() {
        let e = read(&zip(&[Entry::file("../x", b"")]), LIMIT).unwrap_err();
        assert!(e.to_string().contains("\"../x\""), "{e}");
        let e = ZipError::Method {
            path: "a".into(),
            method: 12,
        };
        assert_eq!(e.code(), "unsupported_archive");
        assert!(e.to_string().contains("method 12"));
    }
}
