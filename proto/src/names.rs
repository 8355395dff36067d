//! Rules for app names, which become URL segments, folder names and nginx locations.

use std::fmt;

/// Longest app name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 40;

/// Names that would clash with the server's own URLs or the guest's folders.
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

/// Why a proposed app name was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameError {
    /// The name is the empty string.
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`].
    TooLong(usize),
    /// The name holds a character outside `a-z`, `0-9` and `-`.
    BadChar(char),
    /// The name starts with this character, which is not a letter.
    BadStart(char),
    /// The name ends with a dash.
    TrailingDash,
    /// The name is one of [`RESERVED_NAMES`].
    Reserved(String),
}

impl NameError {
    /// A stable machine-readable code for this error.
    pub fn code(&self) -> &'static str {
        match self {
            NameError::Reserved(_) => "reserved_name",
            _ => "bad_name",
        }
    }
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::Empty => write!(f, "app name is empty: give a name like `my-site`"),
            NameError::TooLong(n) => write!(
                f,
                "app name is {n} characters long: use at most {MAX_NAME_LEN}"
            ),
            NameError::BadChar(c) => write!(
                f,
                "app name contains {c:?}: use lowercase letters, digits and dashes only"
            ),
            NameError::BadStart(c) => write!(
                f,
                "app name starts with {c:?}: it must start with a lowercase letter"
            ),
            NameError::TrailingDash => write!(f, "app name must not end with a dash"),
            NameError::Reserved(name) => {
                write!(f, "app name `{name}` is reserved: choose another name")
            }
        }
    }
}

impl std::error::Error for NameError {}

/// Checks that `name` can be used as an app name.
///
/// A valid name is 1 to [`MAX_NAME_LEN`] characters of lowercase ASCII letters,
/// digits and dashes, starts with a letter, does not end with a dash and is not
/// reserved.
pub fn validate_app_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(NameError::BadChar(c));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong(name.len()));
    }
    if let Some(c) = name.chars().next().filter(|c| !c.is_ascii_lowercase()) {
        return Err(NameError::BadStart(c));
    }
    if name.ends_with('-') {
        return Err(NameError::TrailingDash);
    }
    if RESERVED_NAMES.contains(&name) {
        return Err(NameError::Reserved(name.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_table() {
        let cases: &[(&str, Result<(), NameError>)] = &[
            ("site", Ok(())),
            ("my-site-2", Ok(())),
            ("a", Ok(())),
            ("x1", Ok(())),
            (&"a".repeat(40), Ok(())),
            ("", Err(NameError::Empty)),
            (&"a".repeat(41), Err(NameError::TooLong(41))),
            ("Site", Err(NameError::BadChar('S'))),
            ("Abc", Err(NameError::BadChar('A'))),
            ("my_site", Err(NameError::BadChar('_'))),
            ("..", Err(NameError::BadChar('.'))),
            ("a.b", Err(NameError::BadChar('.'))),
            ("a/b", Err(NameError::BadChar('/'))),
            ("café", Err(NameError::BadChar('é'))),
            ("2site", Err(NameError::BadStart('2'))),
            ("1abc", Err(NameError::BadStart('1'))),
            ("-site", Err(NameError::BadStart('-'))),
            ("site-", Err(NameError::TrailingDash)),
            ("api", Err(NameError::Reserved("api".into()))),
            (
                "application-server",
                Err(NameError::Reserved("application-server".into())),
            ),
        ];
        for (name, want) in cases {
            assert_eq!(&validate_app_name(name), want, "name {name:?}");
        }
        for name in RESERVED_NAMES {
            assert_eq!(
                validate_app_name(name),
                Err(NameError::Reserved(name.to_string())),
                "reserved {name:?}"
            );
        }
    }

    #[test]
    fn messages_say_what_to_do() {
        let err = validate_app_name("My App").unwrap_err();
        assert_eq!(err.code(), "bad_name");
        assert!(err.to_string().contains("lowercase letters"), "{err}");
        assert_eq!(
            validate_app_name("api").unwrap_err().code(),
            "reserved_name"
        );
    }
}
