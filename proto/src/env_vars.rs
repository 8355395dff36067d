//! An app's environment variables as the deploy form collects them: names
//! checked the way a shell would accept them, values kept as typed.

use std::collections::BTreeMap;
use std::fmt;

/// Why a variable was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvVarError {
    /// The name is empty or not `[A-Za-z_][A-Za-z0-9_]*`.
    BadName(String),
    /// The same name twice.
    Duplicate(String),
    /// A `KEY=value` line without `=`.
    NoEquals { line: usize },
}

impl EnvVarError {
    /// A stable code for the error.
    pub fn code(&self) -> &'static str {
        match self {
            EnvVarError::BadName(_) => "bad_env_name",
            EnvVarError::Duplicate(_) => "duplicate_env_name",
            EnvVarError::NoEquals { .. } => "bad_env_line",
        }
    }
}

impl fmt::Display for EnvVarError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvVarError::BadName(name) if name.is_empty() => {
                write!(
                    f,
                    "an environment variable has a value but no name: give it one"
                )
            }
            EnvVarError::BadName(name) => write!(
                f,
                "`{name}` is not a valid variable name: use letters, digits and _, not starting \
                 with a digit"
            ),
            EnvVarError::Duplicate(name) => {
                write!(f, "`{name}` is set twice: keep one of them")
            }
            EnvVarError::NoEquals { line } => {
                write!(f, "environment variables, line {line}: write KEY=value")
            }
        }
    }
}

impl std::error::Error for EnvVarError {}

/// Checks `(name, value)` rows; rows with an empty name and value are
/// skipped (the form's blank last row).
pub fn collect<'a>(
    rows: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<BTreeMap<String, String>, EnvVarError> {
    let mut vars = BTreeMap::new();
    for (name, value) in rows {
        let name = name.trim();
        if name.is_empty() && value.is_empty() {
            continue;
        }
        let mut chars = name.chars();
        let valid = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(EnvVarError::BadName(name.to_owned()));
        }
        if vars.insert(name.to_owned(), value.to_owned()).is_some() {
            return Err(EnvVarError::Duplicate(name.to_owned()));
        }
    }
    Ok(vars)
}

/// Reads `KEY=value` lines (blank lines and `#` comments skipped).
pub fn parse_lines(text: &str) -> Result<BTreeMap<String, String>, EnvVarError> {
    let mut rows = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or(EnvVarError::NoEquals { line: n + 1 })?;
        rows.push((key.trim(), value.trim()));
    }
    collect(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_checked() {
        let ok = collect([("NODE_ENV", "production"), ("", ""), ("_X1", "a=b")]).unwrap();
        assert_eq!(ok.len(), 2);
        assert_eq!(ok["_X1"], "a=b");
        let cases: &[(&[(&str, &str)], EnvVarError)] = &[
            (&[("1X", "v")], EnvVarError::BadName("1X".into())),
            (&[("A-B", "v")], EnvVarError::BadName("A-B".into())),
            (&[("", "v")], EnvVarError::BadName("".into())),
            (
                &[("A", "1"), (" A ", "2")],
                EnvVarError::Duplicate("A".into()),
            ),
        ];
        for (rows, want) in cases {
            assert_eq!(
                collect(rows.iter().copied()).unwrap_err(),
                *want,
                "{rows:?}"
            );
        }
    }

    #[test]
    fn lines_are_parsed() {
        let vars = parse_lines("# comment\nAPP_MODE=e2e\n\n  PORT_HINT = 1 \n").unwrap();
        assert_eq!(vars["APP_MODE"], "e2e");
        assert_eq!(vars["PORT_HINT"], "1");
        let err = parse_lines("A=1\nnonsense").unwrap_err();
        assert_eq!(err, EnvVarError::NoEquals { line: 2 });
        assert_eq!(err.code(), "bad_env_line");
        assert!(err.to_string().contains("line 2"));
    }
}
