//! Validation of app names and of paths found inside uploaded tar archives.
//!
//! Self-contained for now; the same rules live in `appserver_proto::{names, paths}`
//! and the agent can switch to those once they are settled.

use std::fmt;

/// Longest app name accepted, in bytes (names are ASCII, so also in characters).
pub const MAX_NAME_LEN: usize = 40;

/// Names that would collide with the server's own URL space.
pub const RESERVED_NAMES: &[&str] = &[
    "api",
    "admin",
    "app",
    "apps",
    "static",
    "assets",
    "application-server",
    "sw",
    "pkg",
    "images",
    "v86",
    "bios",
    "health",
];

/// Longest path accepted for one archive entry, in bytes.
pub const MAX_PATH_LEN: usize = 1024;

/// Longest single path component accepted, in bytes (ext4's limit).
pub const MAX_COMPONENT_LEN: usize = 255;

/// Why an app name was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameError {
    /// The name is the empty string.
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`].
    TooLong(usize),
    /// The first character is not a lowercase ASCII letter.
    BadStart(char),
    /// The name ends with '-'.
    TrailingDash,
    /// A character other than `a-z`, `0-9` or `-`.
    BadChar(char),
    /// One of [`RESERVED_NAMES`].
    Reserved,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => write!(f, "the name is empty"),
            Self::TooLong(n) => {
                write!(
                    f,
                    "the name is {n} characters long, at most {MAX_NAME_LEN} are allowed"
                )
            }
            Self::BadStart(c) => {
                write!(
                    f,
                    "the name starts with {c:?}, it must start with a letter a-z"
                )
            }
            Self::TrailingDash => write!(f, "the name ends with '-'"),
            Self::BadChar(c) => write!(
                f,
                "the name contains {c:?}; only lowercase letters a-z, digits and '-' are allowed"
            ),
            Self::Reserved => write!(f, "the name is reserved for the server itself"),
        }
    }
}

/// Checks an app name: 1..=40 chars of `a-z0-9-`, starting with a letter,
/// not ending with '-', and not one of [`RESERVED_NAMES`].
pub fn validate_app_name(name: &str) -> Result<(), NameError> {
    let first = name.chars().next().ok_or(NameError::Empty)?;
    let len = name.chars().count();
    if len > MAX_NAME_LEN {
        return Err(NameError::TooLong(len));
    }
    if !first.is_ascii_lowercase() {
        return Err(NameError::BadStart(first));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '-'))
    {
        return Err(NameError::BadChar(c));
    }
    if name.ends_with('-') {
        return Err(NameError::TrailingDash);
    }
    if RESERVED_NAMES.contains(&name) {
        return Err(NameError::Reserved);
    }
    Ok(())
}

/// Why an archive entry path was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    /// The path starts with '/'.
    Absolute,
    /// A `..` component.
    ParentDir,
    /// The path contains a NUL byte.
    Nul,
    /// The path is longer than [`MAX_PATH_LEN`].
    TooLong(usize),
    /// One component is longer than [`MAX_COMPONENT_LEN`].
    ComponentTooLong(usize),
}

impl PathError {
    /// True for errors that mean "this path points outside the app folder".
    pub fn escapes(&self) -> bool {
        matches!(self, Self::Absolute | Self::ParentDir)
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Absolute => write!(f, "the path is absolute"),
            Self::ParentDir => write!(f, "the path contains a '..' component"),
            Self::Nul => write!(f, "the path contains a NUL byte"),
            Self::TooLong(n) => {
                write!(
                    f,
                    "the path is {n} bytes long, at most {MAX_PATH_LEN} are allowed"
                )
            }
            Self::ComponentTooLong(n) => write!(
                f,
                "a path component is {n} bytes long, at most {MAX_COMPONENT_LEN} are allowed"
            ),
        }
    }
}

/// Checks one archive entry path and returns its normal components:
/// empty and `.` components are dropped (so `./a//b/` gives `["a", "b"]`).
/// An empty result means the entry names the archive root itself.
pub fn entry_components(path: &str) -> Result<Vec<&str>, PathError> {
    if path.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong(path.len()));
    }
    if path.contains('\0') {
        return Err(PathError::Nul);
    }
    if path.starts_with('/') {
        return Err(PathError::Absolute);
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(PathError::ParentDir),
            _ if part.len() > MAX_COMPONENT_LEN => {
                return Err(PathError::ComponentTooLong(part.len()))
            }
            _ => parts.push(part),
        }
    }
    Ok(parts)
}

/// Checks one archive entry path (see [`entry_components`]).
pub fn validate_entry_path(path: &str) -> Result<(), PathError> {
    entry_components(path).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_names() {
        for name in ["a", "demo", "my-app-2", "x1", &"a".repeat(40)] {
            assert_eq!(validate_app_name(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn bad_names() {
        assert_eq!(validate_app_name(""), Err(NameError::Empty));
        assert_eq!(
            validate_app_name(&"a".repeat(41)),
            Err(NameError::TooLong(41))
        );
        assert_eq!(validate_app_name("1abc"), Err(NameError::BadStart('1')));
        assert_eq!(validate_app_name("-abc"), Err(NameError::BadStart('-')));
        assert_eq!(validate_app_name("Abc"), Err(NameError::BadStart('A')));
        assert_eq!(validate_app_name("abc-"), Err(NameError::TrailingDash));
        assert_eq!(validate_app_name("a_b"), Err(NameError::BadChar('_')));
        assert_eq!(validate_app_name("a.b"), Err(NameError::BadChar('.')));
        assert_eq!(validate_app_name("aé"), Err(NameError::BadChar('é')));
        assert_eq!(validate_app_name("a/b"), Err(NameError::BadChar('/')));
        for name in RESERVED_NAMES {
            assert_eq!(validate_app_name(name), Err(NameError::Reserved), "{name}");
        }
    }

    #[test]
    fn entry_paths() {
        assert_eq!(entry_components("index.html"), Ok(vec!["index.html"]));
        assert_eq!(entry_components("./a//b/"), Ok(vec!["a", "b"]));
        assert_eq!(entry_components("./"), Ok(vec![]));
        assert_eq!(entry_components("a/.../b"), Ok(vec!["a", "...", "b"]));
        assert_eq!(entry_components("/etc/passwd"), Err(PathError::Absolute));
        assert_eq!(entry_components("../x"), Err(PathError::ParentDir));
        assert_eq!(entry_components("a/../../x"), Err(PathError::ParentDir));
        assert_eq!(entry_components("a/.."), Err(PathError::ParentDir));
        assert_eq!(entry_components("a\0b"), Err(PathError::Nul));
        let long = "a".repeat(256);
        assert_eq!(
            entry_components(&long),
            Err(PathError::ComponentTooLong(256))
        );
        assert!(PathError::ParentDir.escapes());
        assert!(!PathError::Nul.escapes());
    }
}
