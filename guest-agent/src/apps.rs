//! Deployed apps on disk: extracting an upload, swapping it in, listing and deleting.
//!
//! Layout: `<apps_dir>/<name>/` holds an app's files and `<conf_dir>/<name>.conf`
//! its nginx `location` block. Uploads are extracted into
//! `<apps_dir>/.staging-<name>-<pid>-<seq>` and renamed into place, so a
//! failed upload never touches the version being served.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use appserver_proto::names::validate_app_name;
use appserver_proto::tar::{EntryKind, TarReader};

use appserver_proto::detect::Environment;
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::nginx::Nginx;
use crate::pool::Pool;
use crate::runtime::{self, Meta, Settings};

/// Serializes every change to the served apps and to nginx's configuration.
static MUTATIONS: Mutex<()> = Mutex::new(());

/// Makes staging and trash folder names unique within this process.
static SEQ: AtomicU64 = AtomicU64::new(0);

/// Where apps live and how nginx is driven.
#[derive(Debug, Clone)]
pub struct Config {
    /// Folder holding one sub-folder per app (`/srv/apps`).
    pub apps_dir: PathBuf,
    /// Folder of per-app nginx snippets (`/etc/nginx/apps`).
    pub conf_dir: PathBuf,
    /// The nginx to test and reload; `None` skips that (host tests).
    pub nginx: Option<Nginx>,
    /// The environment this VM is (`/etc/appserver/environment`).
    pub environment: Environment,
    /// The warm runtime pool, in environments that have one.
    pub pool: Option<Pool>,
    /// Where each app's stdout and stderr go (`<name>.log`).
    pub log_dir: PathBuf,
}

/// What an app consists of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppSummary {
    /// The app's name.
    pub name: String,
    /// Number of regular files.
    pub files: u64,
    /// Total size of the regular files in bytes.
    pub bytes: u64,
}

impl AppSummary {
    /// JSON object `{"name":..,"files":..,"bytes":..}`.
    pub fn to_json(&self) -> String {
        format!(
            "{{\"name\":{},\"files\":{},\"bytes\":{}}}",
            crate::http::json_string(&self.name),
            self.files,
            self.bytes
        )
    }
}

/// Checks a name from a URL, turning a refusal into the API error.
pub fn check_name(name: &str) -> Result<(), ApiError> {
    validate_app_name(name).map_err(|why| ApiError::BadName {
        name: name.to_string(),
        why,
    })
}

/// Takes the mutation lock; a panic elsewhere does not make it unusable.
pub(crate) fn lock() -> std::sync::MutexGuard<'static, ()> {
    MUTATIONS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A fresh hidden sibling folder name, e.g. `.staging-demo-42-3`.
fn scratch_path(cfg: &Config, kind: &str, name: &str) -> PathBuf {
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    cfg.apps_dir
        .join(format!(".{kind}-{name}-{}-{seq}", std::process::id()))
}

/// Wraps an I/O error from the agent's own file handling.
fn internal(what: &str, path: &Path, e: io::Error) -> ApiError {
    ApiError::Internal(format!("{what} {}: {e}", path.display()))
}

/// Removes leftovers of interrupted uploads and deletions; called at start-up.
pub fn clean_scratch(cfg: &Config) -> io::Result<()> {
    fs::create_dir_all(&cfg.apps_dir)?;
    fs::create_dir_all(&cfg.conf_dir)?;
    for entry in fs::read_dir(&cfg.apps_dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(".staging-") || name.starts_with(".trash-") {
            remove_any(&entry.path())?;
        }
    }
    Ok(())
}

/// Removes a file or a folder tree; a missing path is fine.
fn remove_any(path: &Path) -> io::Result<()> {
    let result = match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Maps a file-system error while extracting entry `path`: clashes between
/// entries are the archive's fault, anything else is ours.
fn extract_error(path: &str, e: io::Error) -> ApiError {
    match e.kind() {
        io::ErrorKind::AlreadyExists
        | io::ErrorKind::NotADirectory
        | io::ErrorKind::IsADirectory => ApiError::BadArchive(format!(
            "entry {path:?} clashes with an earlier entry (a file and a folder of the same name)"
        )),
        _ => ApiError::Internal(format!("writing entry {path:?} failed: {e}")),
    }
}

/// Extracts a tar stream into the empty folder `dest`, refusing unsafe entries.
pub fn extract(body: impl Read, dest: &Path) -> Result<(), ApiError> {
    let mut tar = TarReader::new(body);
    let mut dirs = DirBuilder::new();
    dirs.recursive(true).mode(0o755);
    while let Some(entry) = tar.next_entry().map_err(ApiError::from_tar)? {
        // Refuses paths that leave `dest`, nameless files, links and devices.
        let parts = entry.segments().map_err(ApiError::from_tar)?;
        let target = parts
            .iter()
            .fold(dest.to_path_buf(), |p, part| p.join(part));
        if entry.kind == EntryKind::Directory {
            dirs.create(&target)
                .map_err(|e| extract_error(&entry.path, e))?;
            continue;
        }
        if let Some(parent) = target.parent() {
            dirs.create(parent)
                .map_err(|e| extract_error(&entry.path, e))?;
        }
        let mode = if entry.mode & 0o111 != 0 {
            0o755
        } else {
            0o644
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&target)
            .map_err(|e| extract_error(&entry.path, e))?;
        tar.copy_data(&mut file).map_err(ApiError::from_tar)?;
    }
    Ok(())
}

/// Counts the regular files under `dir` and their total size.
pub fn measure(dir: &Path) -> io::Result<(u64, u64)> {
    let mut files = 0;
    let mut bytes = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d)? {
            let entry = entry?;
            let meta = fs::symlink_metadata(entry.path())?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                files += 1;
                bytes += meta.len();
            }
        }
    }
    Ok((files, bytes))
}

/// The nginx snippet serving app `name` under `/app/<name>/`.
pub fn location_block(cfg: &Config, name: &str) -> String {
    let root = cfg.apps_dir.join(name);
    format!(
        "# Written by appserver-agent for app {name:?}; replaced on every deploy.\n\
         location = /app/{name} {{ return 301 /app/{name}/; }}\n\
         location /app/{name}/ {{\n    alias {}/;\n    index index.html;\n    \
         add_header {} {name} always;\n}}\n",
        root.display(),
        crate::nginx::APP_HEADER,
    )
}

/// What a deploy did: the files, what they are and how they run.
#[derive(Debug, Clone)]
pub struct Deployed {
    /// Files now served.
    pub summary: AppSummary,
    /// Detected kind, entry, port and settings.
    pub meta: Meta,
    /// How long each step took, in milliseconds.
    pub timings_ms: Map<String, Value>,
}

impl Deployed {
    /// The JSON answer: summary, meta and, for apps with a process, status.
    pub fn to_json(&self, cfg: &Config) -> String {
        let mut m = summary_map(&self.summary);
        m.extend(self.meta.to_json());
        if let Some(st) = runtime::statuses(cfg).remove(&self.summary.name) {
            m.extend(st);
        }
        m.insert("timings_ms".into(), Value::Object(self.timings_ms.clone()));
        Value::Object(m).to_string()
    }
}

fn summary_map(s: &AppSummary) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("name".into(), s.name.clone().into());
    m.insert("files".into(), s.files.into());
    m.insert("bytes".into(), s.bytes.into());
    m
}

/// Deploys the tar stream `body` as app `name` (already validated) with
/// `settings` (`None`: keep the previous deploy's) and returns what is now
/// served. On error the previous version stays in place.
pub fn deploy(
    cfg: &Config,
    name: &str,
    body: impl Read,
    settings: Option<Settings>,
) -> Result<Deployed, ApiError> {
    let staging = scratch_path(cfg, "staging", name);
    let result = stage(cfg, name, body, &staging, settings);
    if result.is_err() {
        // Best effort: a leftover is also removed at the next start.
        let _ = remove_any(&staging);
    }
    result
}

/// Extracts into `staging`, then swaps it in; `staging` may be left behind on error.
fn stage(
    cfg: &Config,
    name: &str,
    body: impl Read,
    staging: &Path,
    settings: Option<Settings>,
) -> Result<Deployed, ApiError> {
    DirBuilder::new()
        .mode(0o755)
        .create(staging)
        .map_err(|e| internal("creating", staging, e))?;
    let t0 = std::time::Instant::now();
    let mut timings = Map::new();
    let mut mark = |what: &str, since: &mut std::time::Instant| {
        timings.insert(what.into(), (since.elapsed().as_millis() as u64).into());
        *since = std::time::Instant::now();
    };
    let mut t = t0;
    extract(body, staging)?;
    mark("receive", &mut t);
    let (files, bytes) = measure(staging).map_err(|e| internal("reading", staging, e))?;
    if files == 0 {
        return Err(ApiError::Empty);
    }
    let found = runtime::detect_dir(staging)?;
    if !cfg.environment.can_run(found.kind) {
        return Err(ApiError::WrongEnvironment {
            what: format!("{} ({})", found.kind.label(), found.reason),
            here: cfg.environment.id(),
            needed: found.kind.environment().id(),
        });
    }
    let _guard = lock();
    let old = runtime::load_meta(cfg, name);
    let settings = settings.unwrap_or_else(|| {
        old.as_ref()
            .map(|m| Settings {
                env: m.env.clone(),
                ..Settings::default()
            })
            .unwrap_or_default()
    });
    let port = if found.kind.runtime() == appserver_proto::detect::Runtime::Static {
        0
    } else {
        runtime::choose_port(cfg, name, settings.port)?
    };
    let meta = Meta::new(found, &settings, port);
    // The old version's process goes first: the new one needs the port.
    if old.as_ref().is_some_and(Meta::runs) {
        runtime::stop(cfg, name)?;
    }
    mark("detect_and_stop_old", &mut t);
    let conf = if meta.runs() {
        runtime::proxy_block(name, &meta)
    } else {
        location_block(cfg, name)
    };
    swap_in(cfg, name, staging, &conf)?;
    runtime::save_meta(cfg, name, &meta)?;
    mark("swap_and_nginx", &mut t);
    if meta.runs() {
        runtime::start(cfg, name, &meta)?;
        mark("start", &mut t);
    }
    timings.insert("total".into(), (t0.elapsed().as_millis() as u64).into());
    Ok(Deployed {
        timings_ms: timings,
        summary: AppSummary {
            name: name.to_string(),
            files,
            bytes,
        },
        meta,
    })
}

/// Renames `staging` to the app folder, writes its nginx snippet and reloads
/// nginx; undoes the swap if nginx refuses the configuration.
fn swap_in(cfg: &Config, name: &str, staging: &Path, wanted: &str) -> Result<(), ApiError> {
    let live = cfg.apps_dir.join(name);
    let trash = scratch_path(cfg, "trash", name);
    let had_old = match fs::rename(&live, &trash) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(internal("moving aside", &live, e)),
    };
    let restore_old = || {
        if had_old {
            let _ = remove_any(&live);
            let _ = fs::rename(&trash, &live);
        }
    };
    if let Err(e) = fs::rename(staging, &live) {
        restore_old();
        return Err(internal("moving into place", &live, e));
    }
    let conf = cfg.conf_dir.join(format!("{name}.conf"));
    let old_conf = fs::read_to_string(&conf).ok();
    let conf_changed = old_conf.as_deref() != Some(wanted);
    let outcome = write_conf(&conf, wanted).and_then(|()| match &cfg.nginx {
        Some(nginx) => nginx.apply(name, true, conf_changed),
        None => Ok(()),
    });
    if let Err(e) = outcome {
        // Put everything back as it was: old files, old snippet (or none).
        let _ = fs::rename(&live, staging);
        restore_old();
        match old_conf {
            Some(text) => {
                let _ = write_conf(&conf, &text);
            }
            None => {
                let _ = fs::remove_file(&conf);
            }
        }
        return Err(e);
    }
    if had_old {
        remove_any(&trash).map_err(|e| internal("removing", &trash, e))?;
    }
    Ok(())
}

/// Writes an nginx snippet atomically (temporary file, then rename).
fn write_conf(path: &Path, text: &str) -> Result<(), ApiError> {
    let tmp = path.with_extension("conf.tmp");
    fs::write(&tmp, text).map_err(|e| internal("writing", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| internal("renaming", &tmp, e))
}

/// Lists the deployed apps, sorted by name.
pub fn list(cfg: &Config) -> Result<Vec<AppSummary>, ApiError> {
    let read = |e| internal("listing", &cfg.apps_dir, e);
    let mut apps = Vec::new();
    for entry in fs::read_dir(&cfg.apps_dir).map_err(read)? {
        let entry = entry.map_err(read)?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if validate_app_name(&name).is_err() || !entry.path().is_dir() {
            continue;
        }
        let (files, bytes) =
            measure(&entry.path()).map_err(|e| internal("reading", &entry.path(), e))?;
        apps.push(AppSummary { name, files, bytes });
    }
    apps.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(apps)
}

/// `{"apps":[...]}`: every app's files, settings and status.
pub fn list_json(cfg: &Config) -> Result<String, ApiError> {
    let apps = list(cfg)?;
    let mut statuses = runtime::statuses(cfg);
    let items: Vec<Value> = apps
        .iter()
        .map(|a| {
            let mut m = summary_map(a);
            m.extend(statuses.remove(&a.name).unwrap_or_else(static_status));
            Value::Object(m)
        })
        .collect();
    Ok(serde_json::json!({ "apps": items }).to_string())
}

/// Status of an app deployed before the agent kept settings: a static site.
fn static_status() -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("kind".into(), "static".into());
    m.insert("state".into(), "static".into());
    m
}

/// One app's files, settings and status.
pub fn app_json(cfg: &Config, name: &str) -> Result<String, ApiError> {
    let live = cfg.apps_dir.join(name);
    if !live.is_dir() {
        return Err(not_deployed(name));
    }
    let (files, bytes) = measure(&live).map_err(|e| internal("reading", &live, e))?;
    let summary = AppSummary {
        name: name.to_string(),
        files,
        bytes,
    };
    let mut m = summary_map(&summary);
    m.extend(
        runtime::statuses(cfg)
            .remove(name)
            .unwrap_or_else(static_status),
    );
    Ok(Value::Object(m).to_string())
}

fn not_deployed(name: &str) -> ApiError {
    ApiError::NotFound(format!(
        "no app named {name:?} is deployed; GET /v1/apps lists the deployed apps"
    ))
}

/// What `POST /v1/apps/<name>/<action>` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Start the app's process (no-op when it runs).
    Start,
    /// Stop it; the supervisor leaves it stopped.
    Stop,
    /// Stop, then start.
    Restart,
}

/// Starts, stops or restarts app `name`, returning its status JSON.
pub fn control(cfg: &Config, name: &str, action: Action) -> Result<String, ApiError> {
    {
        let _guard = lock();
        if !cfg.apps_dir.join(name).is_dir() {
            return Err(not_deployed(name));
        }
        let Some(mut meta) = runtime::load_meta(cfg, name).filter(Meta::runs) else {
            return Err(ApiError::Conflict(format!(
                "{name:?} is a static site served by nginx: it has no process to start or stop"
            )));
        };
        meta.wanted = action != Action::Stop;
        runtime::save_meta(cfg, name, &meta)?;
        let running = runtime::statuses(cfg)
            .get(name)
            .and_then(|s| s["state"].as_str().map(str::to_string))
            .is_some_and(|s| s == "running" || s == "starting");
        match action {
            Action::Stop => runtime::stop(cfg, name)?,
            Action::Restart => {
                runtime::stop(cfg, name)?;
                runtime::start(cfg, name, &meta)?;
            }
            Action::Start if running => {}
            Action::Start => runtime::start(cfg, name, &meta)?,
        }
    }
    app_json(cfg, name)
}

/// Removes app `name` (already validated): its folder and its nginx snippet.
pub fn delete(cfg: &Config, name: &str) -> Result<(), ApiError> {
    let _guard = lock();
    let live = cfg.apps_dir.join(name);
    let conf = cfg.conf_dir.join(format!("{name}.conf"));
    if !live.is_dir() && !conf.exists() {
        return Err(not_deployed(name));
    }
    if runtime::load_meta(cfg, name).is_some_and(|m| m.runs()) {
        runtime::stop(cfg, name)?;
    }
    runtime::remove_meta(cfg, name);
    let trash = scratch_path(cfg, "trash", name);
    match fs::rename(&live, &trash) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(internal("moving aside", &live, e)),
    }
    match fs::remove_file(&conf) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(internal("removing", &conf, e)),
    }
    if let Some(nginx) = &cfg.nginx {
        nginx.apply(name, false, true)?;
    }
    remove_any(&trash).map_err(|e| internal("removing", &trash, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use appserver_proto::tar::testing::{finish, push};

    /// A fresh, empty configuration under the system temp folder.
    fn temp_config(tag: &str) -> Config {
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let root = std::env::temp_dir().join(format!(
            "guest-agent-test-{tag}-{}-{seq}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&root);
        let cfg = Config {
            apps_dir: root.join("apps"),
            conf_dir: root.join("conf"),
            nginx: None,
            environment: appserver_proto::detect::Environment::Static,
            pool: None,
            log_dir: root.join("logs"),
        };
        clean_scratch(&cfg).unwrap();
        cfg
    }

    fn site(index: &str) -> Vec<u8> {
        let mut tar = Vec::new();
        push(&mut tar, "./", b'5', b"");
        push(&mut tar, "./index.html", b'0', index.as_bytes());
        push(&mut tar, "./css/site.css", b'0', b"body{}");
        finish(&mut tar);
        tar
    }

    fn cleanup(cfg: &Config) {
        if let Some(root) = cfg.apps_dir.parent() {
            let _ = fs::remove_dir_all(root);
        }
    }

    fn only_app_dirs(cfg: &Config) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&cfg.apps_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n != ".meta")
            .collect();
        names.sort();
        names
    }

    #[test]
    fn deploy_list_redeploy_delete() {
        let cfg = temp_config("cycle");
        let deployed = deploy(&cfg, "demo", &site("v1")[..], None).unwrap();
        assert_eq!(deployed.meta.kind, appserver_proto::detect::AppKind::Static);
        let json = deployed.to_json(&cfg);
        assert!(json.contains("\"kind\":\"static\""), "{json}");
        assert!(json.contains("\"state\":\"static\""), "{json}");
        let summary = deployed.summary;
        assert_eq!(
            summary,
            AppSummary {
                name: "demo".into(),
                files: 2,
                bytes: 8
            }
        );
        assert_eq!(
            summary.to_json(),
            "{\"name\":\"demo\",\"files\":2,\"bytes\":8}"
        );
        let index = cfg.apps_dir.join("demo/index.html");
        assert_eq!(fs::read_to_string(&index).unwrap(), "v1");
        let conf = fs::read_to_string(cfg.conf_dir.join("demo.conf")).unwrap();
        assert!(conf.contains("location /app/demo/ {"));
        assert!(conf.contains(&format!("alias {}/;", cfg.apps_dir.join("demo").display())));

        deploy(&cfg, "demo", &site("version2")[..], None).unwrap();
        assert_eq!(fs::read_to_string(&index).unwrap(), "version2");
        deploy(&cfg, "other", &site("x")[..], None).unwrap();
        let names: Vec<_> = list(&cfg).unwrap().into_iter().map(|a| a.name).collect();
        assert_eq!(names, ["demo", "other"]);
        assert_eq!(
            only_app_dirs(&cfg),
            ["demo", "other"],
            "no scratch folders left"
        );

        delete(&cfg, "demo").unwrap();
        assert!(!cfg.apps_dir.join("demo").exists());
        assert!(!cfg.conf_dir.join("demo.conf").exists());
        assert!(matches!(delete(&cfg, "demo"), Err(ApiError::NotFound(_))));
        cleanup(&cfg);
    }

    /// An archive of `(path, type flag, data)` entries.
    fn archive(entries: &[(&str, u8, &[u8])]) -> Vec<u8> {
        let mut t = Vec::new();
        for (path, kind, data) in entries {
            push(&mut t, path, *kind, data);
        }
        finish(&mut t);
        t
    }

    #[test]
    fn failed_upload_keeps_old_version() {
        let cfg = temp_config("keep");
        deploy(&cfg, "demo", &site("v1")[..], None).unwrap();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                archive(&[("ok.html", b'0', b"fine"), ("../evil", b'0', b"x")]),
                "path_escapes",
            ),
            (archive(&[("/etc/passwd", b'0', b"x")]), "path_escapes"),
            (archive(&[("link", b'2', b"")]), "unsupported_entry"),
            (
                archive(&[("dir/", b'5', b""), ("v7-dir/", b'0', b"")]),
                "empty",
            ),
            (
                archive(&[("a", b'0', b"file"), ("a/b", b'0', b"under a file")]),
                "bad_archive",
            ),
            (
                b"this is not a tar archive at all".repeat(40),
                "bad_archive",
            ),
            (site("truncated")[..700].to_vec(), "bad_archive"),
        ];
        for (tar, code) in cases {
            let err = deploy(&cfg, "demo", &tar[..], None).unwrap_err();
            assert_eq!(err.code(), code, "{err}");
            let index = cfg.apps_dir.join("demo/index.html");
            assert_eq!(fs::read_to_string(index).unwrap(), "v1");
            assert_eq!(
                only_app_dirs(&cfg),
                ["demo"],
                "staging removed after {code}"
            );
        }
        assert!(!cfg.apps_dir.parent().unwrap().join("evil").exists());
        cleanup(&cfg);
    }

    #[test]
    fn apps_this_environment_cannot_run_are_refused() {
        let cfg = temp_config("wrongenv");
        deploy(&cfg, "demo", &site("v1")[..], None).unwrap();
        let flask = archive(&[(
            "app.py",
            b'0',
            b"from flask import Flask\napp = Flask(__name__)\n",
        )]);
        let err = deploy(&cfg, "demo", &flask[..], None).unwrap_err();
        assert_eq!(err.code(), "wrong_environment");
        let message = err.to_string();
        assert!(message.contains("Flask app"), "{message}");
        assert!(message.contains("`python` environment"), "{message}");
        let express = archive(&[
            ("package.json", b'0', br#"{"dependencies":{"express":"4"}}"#),
            ("server.js", b'0', b"require('express')"),
        ]);
        let err = deploy(&cfg, "api", &express[..], None).unwrap_err();
        assert!(err.to_string().contains("`nodejs` environment"), "{err}");
        let broken = archive(&[("package.json", b'0', b"{ not json")]);
        assert_eq!(
            deploy(&cfg, "api", &broken[..], None).unwrap_err().code(),
            "undetected"
        );
        let index = cfg.apps_dir.join("demo/index.html");
        assert_eq!(fs::read_to_string(index).unwrap(), "v1", "old version kept");
        assert_eq!(only_app_dirs(&cfg), ["demo"]);
        cleanup(&cfg);
    }

    #[test]
    fn scratch_leftovers_are_cleaned() {
        let cfg = temp_config("scratch");
        fs::create_dir_all(cfg.apps_dir.join(".staging-demo-1-1/x")).unwrap();
        fs::create_dir_all(cfg.apps_dir.join(".trash-demo-1-2")).unwrap();
        fs::create_dir_all(cfg.apps_dir.join("kept")).unwrap();
        clean_scratch(&cfg).unwrap();
        assert_eq!(only_app_dirs(&cfg), ["kept"]);
        cleanup(&cfg);
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(check_name("Nope").unwrap_err().code(), "bad_name");
        // Reserved names keep the more precise code `appserver_proto` gives them.
        assert_eq!(check_name("admin").unwrap_err().code(), "reserved_name");
        assert!(check_name("fine-1").is_ok());
    }
}
