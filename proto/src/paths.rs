//! Rules for file paths inside an uploaded app, so no entry can escape its folder.

use std::fmt;

/// Longest relative path accepted for one file, in bytes.
pub const MAX_PATH_LEN: usize = 1024;

/// Longest single folder or file name accepted, in bytes (ext4's limit in the guest).
pub const MAX_SEGMENT_LEN: usize = 255;

/// Why an entry path was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    /// The path is empty or only slashes and dots.
    Empty,
    /// The path starts with `/` (or a drive letter), so it is not relative.
    Absolute(String),
    /// A segment is `..`, which would leave the app's folder.
    Escapes(String),
    /// The path holds a backslash, a NUL or another control character.
    BadChar(String),
    /// The path is longer than [`MAX_PATH_LEN`].
    TooLong(usize),
    /// One folder or file name in the path is longer than [`MAX_SEGMENT_LEN`].
    SegmentTooLong {
        /// The whole path.
        path: String,
        /// The length of the long name, in bytes.
        len: usize,
    },
}

impl PathError {
    /// True when the path points outside the app folder (absolute or `..`),
    /// rather than being merely malformed.
    pub fn escapes(&self) -> bool {
        matches!(self, PathError::Absolute(_) | PathError::Escapes(_))
    }

    /// A stable machine-readable code for this error.
    pub fn code(&self) -> &'static str {
        if self.escapes() {
            "path_escapes"
        } else {
            "bad_path"
        }
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathError::Empty => write!(f, "a file has an empty path"),
            PathError::Absolute(p) => write!(
                f,
                "file path {p:?} is absolute: paths must be relative to the app folder"
            ),
            PathError::Escapes(p) => write!(
                f,
                "file path {p:?} uses `..` and would escape the app folder: remove that entry"
            ),
            PathError::BadChar(p) => write!(
                f,
                "file path {p:?} holds a backslash or control character: rename the file"
            ),
            PathError::TooLong(n) => {
                write!(
                    f,
                    "a file path is {n} bytes long: the limit is {MAX_PATH_LEN}"
                )
            }
            PathError::SegmentTooLong { path, len } => write!(
                f,
                "file path {path:?} holds a name of {len} bytes: shorten it to {MAX_SEGMENT_LEN}"
            ),
        }
    }
}

impl std::error::Error for PathError {}

/// Checks a path from an upload and returns it normalised: `./` segments and
/// repeated or trailing slashes removed, segments joined by `/`.
pub fn normalize_entry_path(path: &str) -> Result<String, PathError> {
    let segments = entry_segments(path)?;
    if segments.is_empty() {
        return Err(PathError::Empty);
    }
    Ok(segments.join("/"))
}

/// Checks a path from an upload and returns its folder and file names in
/// order, with empty and `.` segments dropped: `./a//b/` gives `["a", "b"]`.
///
/// No segments at all (`./`, or the empty string) means the app folder
/// itself, which a tar archive may list as a directory entry.
pub fn entry_segments(path: &str) -> Result<Vec<&str>, PathError> {
    if path.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong(path.len()));
    }
    if path.chars().any(|c| c == '\\' || c.is_control()) {
        return Err(PathError::BadChar(path.to_owned()));
    }
    let bytes = path.as_bytes();
    if path.starts_with('/') || (bytes.len() >= 2 && bytes[1] == b':') {
        return Err(PathError::Absolute(path.to_owned()));
    }
    let mut segments = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => continue,
            ".." => return Err(PathError::Escapes(path.to_owned())),
            s if s.len() > MAX_SEGMENT_LEN => {
                return Err(PathError::SegmentTooLong {
                    path: path.to_owned(),
                    len: s.len(),
                })
            }
            s => segments.push(s),
        }
    }
    Ok(segments)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_table() {
        let ok: &[(&str, &str)] = &[
            ("index.html", "index.html"),
            ("css/main.css", "css/main.css"),
            ("./img//logo.png", "img/logo.png"),
            ("a/b/c/", "a/b/c"),
            ("..hidden/x", "..hidden/x"),
            ("my file.txt", "my file.txt"),
        ];
        for (input, want) in ok {
            assert_eq!(
                normalize_entry_path(input).as_deref(),
                Ok(*want),
                "{input:?}"
            );
        }
        let bad: &[(&str, PathError)] = &[
            ("", PathError::Empty),
            ("./", PathError::Empty),
            ("/etc/passwd", PathError::Absolute("/etc/passwd".into())),
            ("C:/x", PathError::Absolute("C:/x".into())),
            ("../x", PathError::Escapes("../x".into())),
            ("a/../../x", PathError::Escapes("a/../../x".into())),
            ("a\\b", PathError::BadChar("a\\b".into())),
            ("a\0b", PathError::BadChar("a\0b".into())),
        ];
        for (input, want) in bad {
            assert_eq!(&normalize_entry_path(input).unwrap_err(), want, "{input:?}");
        }
        assert_eq!(
            normalize_entry_path(&"a".repeat(2000)),
            Err(PathError::TooLong(2000))
        );
    }

    #[test]
    fn segments_table() {
        let ok: &[(&str, &[&str])] = &[
            ("index.html", &["index.html"]),
            ("./a//b/", &["a", "b"]),
            ("a/.../b", &["a", "...", "b"]),
            ("./", &[]),
            ("", &[]),
        ];
        for (input, want) in ok {
            assert_eq!(entry_segments(input).as_deref(), Ok(*want), "{input:?}");
        }
        let long = format!("x/{}", "a".repeat(MAX_SEGMENT_LEN + 1));
        let bad: &[(&str, PathError)] = &[
            ("/etc/passwd", PathError::Absolute("/etc/passwd".into())),
            ("../x", PathError::Escapes("../x".into())),
            ("a/../../x", PathError::Escapes("a/../../x".into())),
            ("a/..", PathError::Escapes("a/..".into())),
            ("a\0b", PathError::BadChar("a\0b".into())),
            (
                &long,
                PathError::SegmentTooLong {
                    path: long.clone(),
                    len: 256,
                },
            ),
        ];
        for (input, want) in bad {
            assert_eq!(&entry_segments(input).unwrap_err(), want, "{input:?}");
        }
        assert!(entry_segments(&"a".repeat(MAX_SEGMENT_LEN)).is_ok());
    }

    #[test]
    fn only_absolute_and_dotdot_escape() {
        assert!(PathError::Escapes("..".into()).escapes());
        assert!(PathError::Absolute("/x".into()).escapes());
        assert!(!PathError::BadChar("a\0b".into()).escapes());
        let too_long = PathError::SegmentTooLong {
            path: "x".into(),
            len: 256,
        };
        assert!(!too_long.escapes());
        assert_eq!(too_long.code(), "bad_path");
        assert_eq!(PathError::Escapes("..".into()).code(), "path_escapes");
    }
}
