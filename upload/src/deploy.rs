//! A deploy request of the API, read whole: the app's files from a ZIP, a
//! tar or a multipart body, and its settings from the query string or the
//! form's fields, packed into the tar archive and settings the guest agent
//! takes.

use crate::multipart::{self, MultipartError};
use crate::zip::{self, ZipError};
use crate::{strip_common_folder, File};
use appserver_proto::api::query_values;
use appserver_proto::env_vars::{self, EnvVarError};
use appserver_proto::paths::PathError;
use appserver_proto::tar::{EntryKind, TarError, TarReader, TarWriter, MAX_ARCHIVE_BYTES};
use std::collections::BTreeMap;
use std::fmt;

/// What a deploy request hands in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployRequest {
    /// The app's files, paths checked and relative to its folder.
    pub files: Vec<File>,
    /// Environment variables for its process.
    pub env: BTreeMap<String, String>,
    /// The entry point, when the caller overrides the detected one.
    pub entry: Option<String>,
    /// The port, when the caller picks it.
    pub port: Option<u16>,
}

/// Why a deploy request was refused.
#[derive(Debug)]
pub enum DeployError {
    /// The content type is none the API reads.
    MediaType(String),
    /// The ZIP was refused.
    Zip(ZipError),
    /// The tar was refused.
    Tar(TarError),
    /// The multipart body was refused.
    Multipart(MultipartError),
    /// A multipart file name was refused.
    Path(PathError),
    /// An environment variable was refused.
    EnvVar(EnvVarError),
    /// The port is not a number from 1024 to 65535.
    Port(String),
    /// There are no files.
    Empty,
    /// The files exceed the upload limit.
    TooLarge,
}

impl DeployError {
    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            DeployError::MediaType(_) => "unsupported_media_type",
            DeployError::Zip(e) => e.code(),
            DeployError::Tar(e) => e.code(),
            DeployError::Multipart(e) => e.code(),
            DeployError::Path(e) => e.code(),
            DeployError::EnvVar(e) => e.code(),
            DeployError::Port(_) => "bad_port",
            DeployError::Empty => "empty",
            DeployError::TooLarge => "too_large",
        }
    }

    /// The HTTP status the API answers with.
    pub fn status(&self) -> u16 {
        match self.code() {
            "unsupported_media_type" => 415,
            "too_large" => 413,
            _ => 400,
        }
    }
}

impl fmt::Display for DeployError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeployError::MediaType(t) => write!(
                f,
                "cannot deploy a body of type {t:?}: send application/zip, application/x-tar \
                 or multipart/form-data"
            ),
            DeployError::Zip(e) => write!(f, "{e}"),
            DeployError::Tar(e) => write!(f, "{e}"),
            DeployError::Multipart(e) => write!(f, "{e}"),
            DeployError::Path(e) => write!(f, "{e}"),
            DeployError::EnvVar(e) => write!(f, "{e}"),
            DeployError::Port(p) => {
                write!(f, "port {p:?}: give a number from 1024 to 65535, or none")
            }
            DeployError::Empty => write!(f, "the upload holds no files: nothing to deploy"),
            DeployError::TooLarge => write!(
                f,
                "the files unpack to more than the {} MiB upload limit",
                MAX_ARCHIVE_BYTES / (1024 * 1024)
            ),
        }
    }
}

impl std::error::Error for DeployError {}

/// Reads a deploy request: its body of `content_type` and the settings of
/// its `query` string (`env=NAME%3Dvalue` repeated, `entry`, `port`). A
/// multipart body's `env` (lines of `NAME=value`), `entry` and `port`
/// fields count too; its files are the parts with a file name, or the
/// contents of a part holding a `.zip`.
pub fn read(content_type: &str, body: &[u8], query: &str) -> Result<DeployRequest, DeployError> {
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let mut env_lines = query_values(query, "env");
    let mut entry = query_values(query, "entry").pop();
    let mut port = query_values(query, "port").pop();
    let mut files = match mime.as_str() {
        "application/zip" | "application/x-zip-compressed" => {
            zip::read(body, MAX_ARCHIVE_BYTES).map_err(DeployError::Zip)?
        }
        "application/x-tar" | "application/tar" => read_tar(body)?,
        "multipart/form-data" => {
            let boundary = multipart::boundary(content_type).map_err(DeployError::Multipart)?;
            let parts = multipart::parse(body, &boundary).map_err(DeployError::Multipart)?;
            let mut files = Vec::new();
            for part in parts {
                match (part.name.as_str(), part.filename) {
                    (_, Some(name)) if name.to_ascii_lowercase().ends_with(".zip") => files.extend(
                        zip::read(&part.data, MAX_ARCHIVE_BYTES).map_err(DeployError::Zip)?,
                    ),
                    (_, Some(name)) => {
                        let path = appserver_proto::paths::normalize_entry_path(&name)
                            .map_err(DeployError::Path)?;
                        files.push((path, part.data));
                    }
                    ("env", None) => env_lines.extend(
                        String::from_utf8_lossy(&part.data)
                            .lines()
                            .map(str::to_owned),
                    ),
                    ("entry", None) => entry = Some(text(&part.data)),
                    ("port", None) => port = Some(text(&part.data)),
                    _ => {}
                }
            }
            files
        }
        _ => return Err(DeployError::MediaType(content_type.to_owned())),
    };
    if files.is_empty() {
        return Err(DeployError::Empty);
    }
    let total: u64 = files.iter().map(|(_, d)| d.len() as u64).sum();
    if total > MAX_ARCHIVE_BYTES {
        return Err(DeployError::TooLarge);
    }
    strip_common_folder(&mut files);
    Ok(DeployRequest {
        files,
        env: env_vars::parse_lines(&env_lines.join("\n")).map_err(DeployError::EnvVar)?,
        entry: entry.map(|e| e.trim().to_owned()).filter(|e| !e.is_empty()),
        port: port_number(port.as_deref())?,
    })
}

impl DeployRequest {
    /// The files packed as the tar archive the agent takes.
    pub fn to_tar(&self) -> Result<Vec<u8>, DeployError> {
        let mut tar = TarWriter::new();
        for (path, data) in &self.files {
            tar.add_file(path, data).map_err(DeployError::Path)?;
        }
        Ok(tar.finish())
    }

    /// The agent's settings header: `{"env": {..}, "entry": .., "port": ..}`.
    pub fn settings(&self) -> String {
        let mut config = serde_json::json!({ "env": self.env });
        if let Some(entry) = &self.entry {
            config["entry"] = entry.as_str().into();
        }
        if let Some(port) = self.port {
            config["port"] = port.into();
        }
        config.to_string()
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_owned()
}

/// The regular files of a tar archive; folders are left out, anything else
/// (links, devices) is refused.
fn read_tar(body: &[u8]) -> Result<Vec<File>, DeployError> {
    let mut reader = TarReader::new(body);
    let mut files = Vec::new();
    while let Some(entry) = reader.next_entry().map_err(DeployError::Tar)? {
        let path = entry.segments().map_err(DeployError::Tar)?.join("/");
        let mut data = Vec::new();
        reader.copy_data(&mut data).map_err(DeployError::Tar)?;
        if entry.kind == EntryKind::File {
            files.push((path, data));
        }
    }
    Ok(files)
}

fn port_number(port: Option<&str>) -> Result<Option<u16>, DeployError> {
    let Some(port) = port.map(str::trim).filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    match port.parse::<u16>() {
        Ok(p) if p >= 1024 => Ok(Some(p)),
        _ => Err(DeployError::Port(port.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zip::testing::{zip, Entry};

    fn tar(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut t = TarWriter::new();
        for (p, d) in files {
            t.add_file(p, d).unwrap();
        }
        t.finish()
    }

    #[test]
    fn a_zip_with_settings_in_the_query() {
        let body = zip(&[
            Entry::file("app/app.py", b"app = 1"),
            Entry::file("app/templates/i.html", b"<p>"),
        ]);
        let q = "env=GREETING%3Dhi+there&env=DEBUG%3D1&entry=app%3Aapp&port=9100";
        let got = read("application/zip", &body, q).unwrap();
        assert_eq!(
            got.files,
            vec![
                ("app.py".to_owned(), b"app = 1".to_vec()),
                ("templates/i.html".to_owned(), b"<p>".to_vec()),
            ]
        );
        assert_eq!(got.env["GREETING"], "hi there");
        assert_eq!(got.entry.as_deref(), Some("app:app"));
        assert_eq!(got.port, Some(9100));
        let settings: serde_json::Value = serde_json::from_str(&got.settings()).unwrap();
        assert_eq!(
            settings,
            serde_json::json!({"env": {"DEBUG": "1", "GREETING": "hi there"},
                               "entry": "app:app", "port": 9100})
        );
    }

    #[test]
    fn a_tar_round_trips_through_to_tar() {
        let body = tar(&[("index.html", b"hi"), ("css/a.css", b"x")]);
        let got = read("application/x-tar", &body, "").unwrap();
        assert_eq!(got.files.len(), 2);
        assert_eq!(
            read("application/x-tar", &got.to_tar().unwrap(), "").unwrap(),
            got
        );
        assert_eq!(got.settings(), r#"{"env":{}}"#);
    }

    #[test]
    fn a_multipart_form_with_files_and_fields() {
        let b = "XyZ";
        let mut body = Vec::new();
        for (name, filename, data) in [
            ("files", Some("index.html"), "<h1>x</h1>"),
            ("files", Some("js/app.js"), "1"),
            ("env", None, "A=1\r\nB=x=y\r\n"),
            ("port", None, ""),
        ] {
            body.extend(
                format!("--{b}\r\nContent-Disposition: form-data; name=\"{name}\"").bytes(),
            );
            if let Some(f) = filename {
                body.extend(format!("; filename=\"{f}\"").bytes());
            }
            body.extend(format!("\r\n\r\n{data}\r\n").bytes());
        }
        body.extend(format!("--{b}--\r\n").bytes());
        let got = read(&format!("multipart/form-data; boundary={b}"), &body, "").unwrap();
        let paths: Vec<&str> = got.files.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["index.html", "js/app.js"]);
        assert_eq!(got.env["B"], "x=y");
        assert_eq!(got.port, None);
    }

    #[test]
    fn bad_requests_are_refused_with_codes() {
        let ok_zip = zip(&[Entry::file("a.txt", b"a")]);
        let cases: Vec<(&str, Vec<u8>, &str, &str, u16)> = vec![
            (
                "text/plain",
                b"hi".to_vec(),
                "",
                "unsupported_media_type",
                415,
            ),
            ("", b"hi".to_vec(), "", "unsupported_media_type", 415),
            ("application/zip", b"junk".to_vec(), "", "bad_archive", 400),
            (
                "application/zip",
                zip(&[Entry::file("../../etc/x", b"")]),
                "",
                "path_escapes",
                400,
            ),
            ("application/zip", zip(&[]), "", "empty", 400),
            (
                "application/zip",
                ok_zip.clone(),
                "port=80",
                "bad_port",
                400,
            ),
            ("application/zip", ok_zip.clone(), "port=x", "bad_port", 400),
            (
                "application/zip",
                ok_zip.clone(),
                "env=NOEQUALS",
                "bad_env_line",
                400,
            ),
            (
                "application/zip",
                ok_zip.clone(),
                "env=1X%3Dy",
                "bad_env_name",
                400,
            ),
            (
                "multipart/form-data",
                b"".to_vec(),
                "",
                "bad_multipart",
                400,
            ),
            (
                "application/x-tar",
                b"not a tar".to_vec(),
                "",
                "bad_archive",
                400,
            ),
        ];
        for (ct, body, q, code, status) in cases {
            let e = read(ct, &body, q).expect_err(code);
            assert_eq!((e.code(), e.status()), (code, status), "{ct} {q}: {e}");
        }
    }
}
