//! What kind of app an upload is, how to start it, and which environment can
//! run it: decided from the uploaded file names and a few small files
//! (`package.json`, `manage.py`, the Python entry module).
//!
//! The guest agent runs this on every deploy; the page can run it before the
//! upload to show the user what will happen.

use std::fmt;

/// The runtime an app needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// Files served by nginx as they are.
    Static,
    /// A Node.js process.
    Node,
    /// A Python process (WSGI or ASGI).
    Python,
}

/// The kind of app, as far as the files tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppKind {
    /// Plain files (an `index.html`, or nothing a runtime would start).
    Static,
    /// A Node.js app using Express.
    Express,
    /// Any other Node.js server script.
    Node,
    /// A Next.js app (`next` in package.json).
    Next,
    /// A Flask app.
    Flask,
    /// A FastAPI app.
    FastApi,
    /// A Django project (`manage.py`).
    Django,
    /// Another WSGI app (`wsgi.py`).
    Wsgi,
    /// Another ASGI app (`asgi.py`).
    Asgi,
}

impl AppKind {
    /// Every kind, for tests and tables.
    pub const ALL: [AppKind; 9] = [
        AppKind::Static,
        AppKind::Express,
        AppKind::Node,
        AppKind::Next,
        AppKind::Flask,
        AppKind::FastApi,
        AppKind::Django,
        AppKind::Wsgi,
        AppKind::Asgi,
    ];

    /// Stable lowercase id, used in the API and by the warm pools.
    pub fn id(self) -> &'static str {
        match self {
            AppKind::Static => "static",
            AppKind::Express => "express",
            AppKind::Node => "node",
            AppKind::Next => "next",
            AppKind::Flask => "flask",
            AppKind::FastApi => "fastapi",
            AppKind::Django => "django",
            AppKind::Wsgi => "wsgi",
            AppKind::Asgi => "asgi",
        }
    }

    /// The kind with id `id`.
    pub fn from_id(id: &str) -> Option<AppKind> {
        AppKind::ALL.into_iter().find(|k| k.id() == id)
    }

    /// Name for people.
    pub fn label(self) -> &'static str {
        match self {
            AppKind::Static => "static site",
            AppKind::Express => "Express app",
            AppKind::Node => "Node.js app",
            AppKind::Next => "Next.js app",
            AppKind::Flask => "Flask app",
            AppKind::FastApi => "FastAPI app",
            AppKind::Django => "Django project",
            AppKind::Wsgi => "WSGI app",
            AppKind::Asgi => "ASGI app",
        }
    }

    /// The runtime this kind needs.
    pub fn runtime(self) -> Runtime {
        match self {
            AppKind::Static => Runtime::Static,
            AppKind::Express | AppKind::Node | AppKind::Next => Runtime::Node,
            AppKind::Flask | AppKind::FastApi | AppKind::Django | AppKind::Wsgi | AppKind::Asgi => {
                Runtime::Python
            }
        }
    }

    /// The smallest environment that runs this kind.
    pub fn environment(self) -> Environment {
        match self {
            AppKind::Static => Environment::Static,
            AppKind::Express | AppKind::Node => Environment::Nodejs,
            AppKind::Next => Environment::Nextjs,
            _ => Environment::Python,
        }
    }
}

/// The environments a user can load, one VM image each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    /// nginx only.
    Static,
    /// nginx and Node.js with Express.
    Nodejs,
    /// The nodejs environment plus Next.js and React.
    Nextjs,
    /// nginx and Python 3.11 with Flask, FastAPI and Django.
    Python,
}

impl Environment {
    /// Every environment.
    pub const ALL: [Environment; 4] = [
        Environment::Static,
        Environment::Nodejs,
        Environment::Nextjs,
        Environment::Python,
    ];

    /// Stable id (the image name).
    pub fn id(self) -> &'static str {
        match self {
            Environment::Static => "static",
            Environment::Nodejs => "nodejs",
            Environment::Nextjs => "nextjs",
            Environment::Python => "python",
        }
    }

    /// The environment with id `id`.
    pub fn from_id(id: &str) -> Option<Environment> {
        Environment::ALL.into_iter().find(|e| e.id() == id)
    }

    /// Whether apps of `kind` run here. Every environment has nginx, so every
    /// one serves static sites.
    pub fn can_run(self, kind: AppKind) -> bool {
        match kind.runtime() {
            Runtime::Static => true,
            Runtime::Node => match self {
                Environment::Nodejs => kind != AppKind::Next,
                Environment::Nextjs => true,
                _ => false,
            },
            Runtime::Python => self == Environment::Python,
        }
    }
}

/// What [`detect`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    /// The kind of app.
    pub kind: AppKind,
    /// What the runtime loads: a script path relative to the app folder for
    /// Node (`server.js`), `module:attribute` for WSGI/ASGI (`app:app`, or
    /// just `module` for a factory), the settings module for Django, empty
    /// for static sites and Next.js.
    pub entry: String,
    /// The start command as the user would type it (shown, not executed:
    /// the warm pools load `entry` in a process that is already running).
    pub command: String,
    /// Which file decided, for people (`package.json depends on express`).
    pub reason: String,
}

/// Why an upload cannot be started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DetectError {
    /// `package.json` is not valid JSON.
    BadPackageJson(String),
    /// A Node.js app whose entry script is missing.
    NoNodeEntry(String),
    /// A Django project whose `manage.py` names no settings module.
    NoDjangoSettings,
}

impl fmt::Display for DetectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DetectError::BadPackageJson(why) => write!(f, "package.json is not valid JSON: {why}"),
            DetectError::NoNodeEntry(what) => write!(
                f,
                "{what}: add a server.js (or set \"main\" or a \"start\" script of the form \
                 `node <file>` in package.json)"
            ),
            DetectError::NoDjangoSettings => write!(
                f,
                "manage.py does not set DJANGO_SETTINGS_MODULE, so the settings module is unknown"
            ),
        }
    }
}

impl std::error::Error for DetectError {}

/// Files a caller must pass the contents of (when present) to [`detect`].
pub const READ_FILES: &[&str] = &[
    "package.json",
    "manage.py",
    "app.py",
    "main.py",
    "wsgi.py",
    "asgi.py",
    "server.py",
];

/// Python modules tried as entry points, in order.
const PYTHON_ENTRIES: &[&str] = &["app", "main", "server", "wsgi", "asgi"];

/// Node scripts tried as entry points when package.json names none.
const NODE_ENTRIES: &[&str] = &["server.js", "app.js", "index.js", "main.js", "server.mjs"];

/// Decides what the upload is. `files` are the paths of its regular files
/// relative to the app folder (`/`-separated); `read` returns the text of one
/// of [`READ_FILES`] (or `None`).
pub fn detect(
    files: &[&str],
    read: &dyn Fn(&str) -> Option<String>,
) -> Result<Detected, DetectError> {
    let has = |path: &str| files.contains(&path);
    if has("manage.py") {
        let text = read("manage.py").unwrap_or_default();
        let settings = django_settings(&text).ok_or(DetectError::NoDjangoSettings)?;
        return Ok(Detected {
            kind: AppKind::Django,
            command: format!("gunicorn (WSGI) with DJANGO_SETTINGS_MODULE={settings}"),
            entry: settings,
            reason: "manage.py".into(),
        });
    }
    if has("package.json") {
        return detect_node(files, &read("package.json").unwrap_or_default());
    }
    for module in PYTHON_ENTRIES {
        let file = format!("{module}.py");
        if has(&file) {
            let text = read(&file).unwrap_or_default();
            return Ok(detect_python(module, &file, &text));
        }
    }
    if !has("index.html") {
        if let Some(script) = NODE_ENTRIES.iter().find(|f| has(f)) {
            return Ok(Detected {
                kind: AppKind::Node,
                entry: script.to_string(),
                command: format!("node {script}"),
                reason: format!("{script} and no index.html"),
            });
        }
    }
    Ok(Detected {
        kind: AppKind::Static,
        entry: String::new(),
        command: "nginx serves the files".into(),
        reason: if has("index.html") {
            "index.html".into()
        } else {
            "no server code found".into()
        },
    })
}

/// The settings module named in manage.py's `os.environ.setdefault(...)`.
fn django_settings(manage_py: &str) -> Option<String> {
    let at = manage_py.find("DJANGO_SETTINGS_MODULE")?;
    let rest = &manage_py[at + "DJANGO_SETTINGS_MODULE".len()..];
    // Skip the closing quote, the comma and spaces up to the value's quote.
    let rest = rest.trim_start_matches(['"', '\'']).trim_start();
    let rest = rest.strip_prefix(',')?.trim_start();
    let quote = rest.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let value: String = rest[1..].chars().take_while(|c| *c != quote).collect();
    let valid = !value.is_empty()
        && value
            .split('.')
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    valid.then_some(value)
}

fn detect_python(module: &str, file: &str, text: &str) -> Detected {
    let (kind, class) = if text.contains("FastAPI(") {
        (AppKind::FastApi, Some("FastAPI("))
    } else if text.contains("Flask(") {
        (AppKind::Flask, Some("Flask("))
    } else if module == "asgi" {
        (AppKind::Asgi, None)
    } else {
        (AppKind::Wsgi, None)
    };
    let attr = class.and_then(|c| assigned_name(text, c));
    let factory = attr.is_none() && text.contains("def create_app(");
    let entry = match &attr {
        Some(a) => format!("{module}:{a}"),
        None => module.to_string(),
    };
    let command = match kind {
        AppKind::FastApi | AppKind::Asgi => format!("uvicorn {entry}"),
        _ if factory => format!("gunicorn '{module}:create_app()'"),
        _ => format!("gunicorn {entry}"),
    };
    Detected {
        kind,
        entry,
        command,
        reason: match class {
            Some(c) => format!("{file} creates {}", &c[..c.len() - 1]),
            None => file.to_string(),
        },
    }
}

/// The variable a line like `app = Flask(__name__)` assigns to.
fn assigned_name(text: &str, constructor: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (left, right) = line.split_once('=')?;
        let name = left.trim();
        let call = right.trim_start();
        let is_ident = !name.is_empty()
            && !line.starts_with([' ', '\t'])
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        let calls = call.starts_with(constructor)
            || call
                .split_once('.')
                .is_some_and(|(_, tail)| tail.starts_with(constructor));
        (is_ident && calls).then(|| name.to_string())
    })
}

fn detect_node(files: &[&str], package_json: &str) -> Result<Detected, DetectError> {
    let pkg: serde_json::Value = serde_json::from_str(package_json)
        .map_err(|e| DetectError::BadPackageJson(e.to_string()))?;
    let depends_on = |dep: &str| {
        ["dependencies", "devDependencies"]
            .iter()
            .any(|k| pkg[k].get(dep).is_some())
    };
    let start = pkg["scripts"]["start"].as_str().map(str::to_string);
    if depends_on("next") {
        return Ok(Detected {
            kind: AppKind::Next,
            entry: String::new(),
            command: start.unwrap_or_else(|| "next start".into()),
            reason: "package.json depends on next".into(),
        });
    }
    let kind = if depends_on("express") {
        AppKind::Express
    } else {
        AppKind::Node
    };
    let reason = if kind == AppKind::Express {
        "package.json depends on express"
    } else {
        "package.json"
    };
    let has = |path: &str| files.contains(&path);
    let from_start = start.as_deref().and_then(node_script);
    let main = pkg["main"].as_str().map(normalize);
    let entry = from_start
        .clone()
        .or(main)
        .or_else(|| NODE_ENTRIES.iter().find(|f| has(f)).map(|f| f.to_string()));
    let Some(entry) = entry else {
        return Err(DetectError::NoNodeEntry(
            "package.json has no start script or main, and there is no server.js, app.js or index.js"
                .into(),
        ));
    };
    if !has(&entry) {
        return Err(DetectError::NoNodeEntry(format!(
            "package.json starts {entry}, which is not in the upload"
        )));
    }
    Ok(Detected {
        kind,
        command: start
            .filter(|_| from_start.is_some())
            .unwrap_or_else(|| format!("node {entry}")),
        entry,
        reason: reason.into(),
    })
}

/// The script of a start command `node [options] <script> [args]`.
fn node_script(command: &str) -> Option<String> {
    let mut words = command.split_whitespace();
    if words.next()? != "node" {
        return None;
    }
    words.find(|w| !w.starts_with('-')).map(normalize)
}

/// `./server.js` -> `server.js`.
fn normalize(path: &str) -> String {
    path.trim_start_matches("./").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(files: &[(&str, &str)]) -> Result<Detected, DetectError> {
        let names: Vec<&str> = files.iter().map(|(n, _)| *n).collect();
        let read = |path: &str| {
            files
                .iter()
                .find(|(n, _)| *n == path)
                .map(|(_, t)| t.to_string())
        };
        detect(&names, &read)
    }

    /// Upload files (name, text), then the expected kind, entry and command.
    type Case<'a> = (&'a [(&'a str, &'a str)], AppKind, &'a str, &'a str);

    #[test]
    fn table() {
        let flask = "from flask import Flask\napp = Flask(__name__)\n";
        let fastapi = "import fastapi\napi = fastapi.FastAPI(title='x')\n";
        let manage = "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'mysite.settings')\n";
        let cases: &[Case] = &[
            (
                &[("index.html", ""), ("css/a.css", "")],
                AppKind::Static,
                "",
                "nginx serves the files",
            ),
            (
                &[("readme.txt", "")],
                AppKind::Static,
                "",
                "nginx serves the files",
            ),
            (
                &[("app.py", flask), ("templates/index.html", "")],
                AppKind::Flask,
                "app:app",
                "gunicorn app:app",
            ),
            (
                &[("main.py", fastapi)],
                AppKind::FastApi,
                "main:api",
                "uvicorn main:api",
            ),
            (
                &[("manage.py", manage), ("mysite/settings.py", "")],
                AppKind::Django,
                "mysite.settings",
                "gunicorn (WSGI) with DJANGO_SETTINGS_MODULE=mysite.settings",
            ),
            (
                &[("wsgi.py", "def application(e, s): pass")],
                AppKind::Wsgi,
                "wsgi",
                "gunicorn wsgi",
            ),
            (
                &[("asgi.py", "async def app(scope, r, s): pass")],
                AppKind::Asgi,
                "asgi",
                "uvicorn asgi",
            ),
            (
                &[(
                    "app.py",
                    "from flask import Flask\ndef create_app():\n    return Flask(__name__)\n",
                )],
                AppKind::Flask,
                "app",
                "gunicorn 'app:create_app()'",
            ),
            (
                &[
                    (
                        "package.json",
                        r#"{"dependencies":{"express":"^4"},"main":"app.js"}"#,
                    ),
                    ("app.js", ""),
                ],
                AppKind::Express,
                "app.js",
                "node app.js",
            ),
            (
                &[
                    (
                        "package.json",
                        r#"{"scripts":{"start":"node ./src/server.js --port 1"},"dependencies":{"express":"4"}}"#,
                    ),
                    ("src/server.js", ""),
                ],
                AppKind::Express,
                "src/server.js",
                "node ./src/server.js --port 1",
            ),
            (
                &[("package.json", r#"{"name":"x"}"#), ("index.js", "")],
                AppKind::Node,
                "index.js",
                "node index.js",
            ),
            (
                &[
                    (
                        "package.json",
                        r#"{"dependencies":{"next":"14","react":"18"},"scripts":{"start":"next start"}}"#,
                    ),
                    ("pages/index.js", ""),
                ],
                AppKind::Next,
                "",
                "next start",
            ),
            (
                &[("server.js", "require('http')")],
                AppKind::Node,
                "server.js",
                "node server.js",
            ),
            (
                &[("server.js", ""), ("index.html", "")],
                AppKind::Static,
                "",
                "nginx serves the files",
            ),
        ];
        for (files, kind, entry, command) in cases {
            let got = run(files).unwrap_or_else(|e| panic!("{files:?}: {e}"));
            assert_eq!(
                (got.kind, got.entry.as_str(), got.command.as_str()),
                (*kind, *entry, *command),
                "{files:?}"
            );
        }
    }

    #[test]
    fn refusals() {
        assert!(matches!(
            run(&[("package.json", "{")]),
            Err(DetectError::BadPackageJson(_))
        ));
        assert!(matches!(
            run(&[("package.json", "{}")]),
            Err(DetectError::NoNodeEntry(_))
        ));
        let missing = run(&[("package.json", r#"{"main":"gone.js"}"#)]).unwrap_err();
        assert!(missing.to_string().contains("gone.js"), "{missing}");
        assert_eq!(
            run(&[("manage.py", "print(1)")]),
            Err(DetectError::NoDjangoSettings)
        );
    }

    #[test]
    fn django_settings_forms() {
        assert_eq!(
            django_settings(r#"os.environ.setdefault("DJANGO_SETTINGS_MODULE", "a.b")"#).as_deref(),
            Some("a.b")
        );
        assert_eq!(
            django_settings("os.environ['DJANGO_SETTINGS_MODULE'] = 'x'"),
            None
        );
        assert_eq!(
            django_settings("setdefault('DJANGO_SETTINGS_MODULE', 'a;rm')"),
            None
        );
    }

    #[test]
    fn environments() {
        use Environment::*;
        for kind in AppKind::ALL {
            assert!(kind.environment().can_run(kind), "{kind:?}");
            assert!(
                Static.can_run(kind) == (kind == AppKind::Static),
                "{kind:?}"
            );
            assert_eq!(AppKind::from_id(kind.id()), Some(kind));
        }
        assert!(Nextjs.can_run(AppKind::Express));
        assert!(!Nodejs.can_run(AppKind::Next));
        assert!(!Python.can_run(AppKind::Express));
        assert!(!Nodejs.can_run(AppKind::Flask));
        for env in Environment::ALL {
            assert_eq!(Environment::from_id(env.id()), Some(env));
        }
    }
}
