//! The guest's wall clock, set from the page after a saved state is
//! restored: the state carries the clock of the moment it was saved, and
//! files deployed later would otherwise get modification times (and nginx
//! ETags) that repeat from one session to the next.

use crate::error::ApiError;
use std::io::Read;
use std::process::Command;

/// Longest body accepted: a decimal count of seconds.
const MAX_BODY: u64 = 32;

/// Parses a body holding Unix seconds, e.g. `1796313600`.
pub fn parse_seconds(body: &[u8]) -> Result<u64, ApiError> {
    let text = std::str::from_utf8(body).unwrap_or("").trim();
    text.parse::<u64>().map_err(|_| {
        ApiError::BadRequest(format!(
            "the clock body {text:?} is not a number of seconds since 1970: send e.g. 1796313600"
        ))
    })
}

/// `PUT /v1/clock`: sets the system clock to the seconds in the body.
pub fn set(body: &mut impl Read, content_length: Option<u64>) -> Result<u64, ApiError> {
    let len = content_length.ok_or(ApiError::LengthRequired)?;
    if len > MAX_BODY {
        return Err(ApiError::TooLarge { len, max: MAX_BODY });
    }
    let mut buf = vec![0; len as usize];
    body.read_exact(&mut buf)
        .map_err(|e| ApiError::BadRequest(format!("short body: {e}")))?;
    let seconds = parse_seconds(&buf)?;
    let status = Command::new("date")
        .args(["-u", "-s", &format!("@{seconds}")])
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| ApiError::Internal(format!("running date failed: {e}")))?;
    if !status.success() {
        return Err(ApiError::Internal(format!(
            "date -s @{seconds} failed with {status}"
        )));
    }
    Ok(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_parsed_strictly() {
        assert_eq!(parse_seconds(b"1796313600").unwrap(), 1_796_313_600);
        assert_eq!(parse_seconds(b" 42\n").unwrap(), 42);
        for bad in [&b""[..], b"-1", b"12.5", b"soon", b"\xff"] {
            assert!(
                matches!(parse_seconds(bad), Err(ApiError::BadRequest(_))),
                "{bad:?}"
            );
        }
    }
}
