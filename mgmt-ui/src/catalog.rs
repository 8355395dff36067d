//! The environments the page offers, and their cards on the first screen:
//! what each is for, what it can run, what loading it downloads, and whether
//! this browser has it cached already.

use crate::dom::{self, add, attrs};
use appserver_proto::progress::{format_bytes, format_duration};
use serde::Deserialize;
use wasm_bindgen::JsCast;

/// An environment the page offers.
pub(crate) struct Environment {
    /// Its id: the image folder under `/images/` and the guest's name for it.
    pub(crate) id: &'static str,
    /// Its name for people.
    pub(crate) name: &'static str,
    /// One sentence on what it is for.
    pub(crate) about: &'static str,
    /// What it can run.
    pub(crate) runs: &'static [&'static str],
}

impl Environment {
    /// Where its image files are served.
    pub(crate) fn base_url(&self) -> String {
        format!("/images/{}/", self.id)
    }
}

pub(crate) const ENVIRONMENTS: &[Environment] = &[
    Environment {
        id: "static",
        name: "Static Web Server",
        about: "nginx serving folders of HTML, CSS, images and scripts.",
        runs: &["Static sites", "Single-page apps"],
    },
    Environment {
        id: "nodejs",
        name: "Node.js",
        about: "Node.js 18 with npm, git, Express and common packages, kept warm so apps start \
                in seconds.",
        runs: &["Express", "Node.js HTTP servers", "Static sites"],
    },
    Environment {
        id: "nextjs",
        name: "Next.js",
        about: "The Node.js environment plus Next.js 14, React 18 and a wasm SWC, with Next.js \
                loaded ahead: SSR pages and API routes, built offline.",
        runs: &["Next.js", "Express", "Node.js HTTP servers", "Static sites"],
    },
    Environment {
        id: "python",
        name: "Python",
        about: "Python 3.11 with Flask, FastAPI + uvicorn, Django and gunicorn, already loaded \
                so apps start in seconds.",
        runs: &[
            "Flask",
            "FastAPI",
            "Django",
            "WSGI / ASGI apps",
            "Static sites",
        ],
    },
];

/// The environment with `id`.
pub(crate) fn find(id: &str) -> Option<&'static Environment> {
    ENVIRONMENTS.iter().find(|e| e.id == id)
}

/// The parts of a manifest a card shows.
#[derive(Deserialize)]
struct CardManifest {
    version: String,
    files: std::collections::BTreeMap<String, Sized>,
    #[serde(default)]
    state: Option<Sized>,
    memory_mb: u32,
}

#[derive(Deserialize)]
struct Sized {
    size: u64,
}

/// The localStorage key of how long `env` last took to get ready, in ms.
pub(crate) fn ready_ms_key(env: &str) -> String {
    format!("appserver.ready-ms.{env}")
}

/// Draws one card per environment into `#env-cards`, marking `current`,
/// then fills in each card's download size and cache state.
pub(crate) fn render(current: Option<&str>) {
    let Some(list) = dom::clear("env-cards") else {
        return;
    };
    for env in ENVIRONMENTS {
        let card = attrs(
            add(&list, "article", ""),
            &[
                ("class", "card"),
                ("id", &format!("env-{}", env.id)),
                ("data-env", env.id),
                (
                    "data-current",
                    if current == Some(env.id) {
                        "true"
                    } else {
                        "false"
                    },
                ),
            ],
        );
        add(&card, "h3", env.name);
        attrs(add(&card, "p", env.about), &[("class", "muted small")]);
        let runs = add(&card, "ul", "");
        for what in env.runs {
            add(&runs, "li", what);
        }
        let facts = attrs(
            add(&card, "div", ""),
            &[("class", "facts"), ("id", &format!("env-facts-{}", env.id))],
        );
        add(&facts, "span", "Reading its size…");
        let actions = attrs(add(&card, "div", ""), &[("class", "actions")]);
        let label = if current == Some(env.id) {
            "Open"
        } else {
            "Load"
        };
        attrs(
            add(&actions, "button", label),
            &[
                ("type", "button"),
                ("id", &format!("load-{}", env.id)),
                ("data-load", env.id),
            ],
        );
        attrs(
            add(&actions, "span", "checking…"),
            &[("class", "tag"), ("id", &format!("env-cached-{}", env.id))],
        );
        wasm_bindgen_futures::spawn_local(fill_facts(env));
    }
}

/// Reads `env`'s manifest (from the worker's cache when offline) for the
/// download size, and looks whether its warm state is cached.
async fn fill_facts(env: &'static Environment) {
    let facts_id = format!("env-facts-{}", env.id);
    let Some(manifest) = fetch_manifest(env).await else {
        if let Some(facts) = dom::clear(&facts_id) {
            add(
                &facts,
                "span",
                "Not available here (its image was not found).",
            );
        }
        return;
    };
    // What a first load fetches: kernel, initrd and the warm state; the disk
    // is read lazily, a few MB of it, as the guest needs blocks.
    let eager: u64 = ["vmlinuz", "initrd"]
        .iter()
        .filter_map(|role| manifest.files.get(*role).map(|f| f.size))
        .sum::<u64>()
        + manifest.state.as_ref().map_or(0, |s| s.size);
    let key = format!("/images/{}/{}/state.bin.zst", env.id, manifest.version);
    let cached = dom::cache_has("appserver-images", &key).await;
    let last_ms = dom::local_storage_get(&ready_ms_key(env.id)).and_then(|v| v.parse::<f64>().ok());
    let estimate = match (cached, last_ms) {
        (true, Some(ms)) => format!("loads in about {}", format_duration(ms / 1000.0)),
        (true, None) => "loads in about 2 s".to_owned(),
        // A warm state restores in about a second once it is here.
        (false, _) => format!("download {}, then about 2 s", format_bytes(eager as f64)),
    };
    if let Some(facts) = dom::clear(&facts_id) {
        attrs(
            add(
                &facts,
                "span",
                &format!("Download {}", format_bytes(eager as f64)),
            ),
            &[("data-download-bytes", &eager.to_string())],
        );
        add(&facts, "span", &format!("{} MiB RAM", manifest.memory_mb));
        add(&facts, "span", &estimate);
        attrs(
            add(&facts, "span", &format!("v{}", short(&manifest.version))),
            &[("class", "mono")],
        );
    }
    if let Some(tag) = dom::by_id(&format!("env-cached-{}", env.id)) {
        tag.set_text_content(Some(if cached { "cached" } else { "not cached" }));
        let _ = tag.set_attribute("class", if cached { "tag good" } else { "tag" });
        let _ = tag.set_attribute("data-cached", if cached { "true" } else { "false" });
    }
}

/// The first 8 characters of a version hash.
pub(crate) fn short(version: &str) -> &str {
    version.get(..8).unwrap_or(version)
}

async fn fetch_manifest(env: &Environment) -> Option<CardManifest> {
    let window = web_sys::window()?;
    let url = format!("{}manifest.json", env.base_url());
    let response = wasm_bindgen_futures::JsFuture::from(window.fetch_with_str(&url))
        .await
        .ok()?
        .dyn_into::<web_sys::Response>()
        .ok()?;
    if !response.ok() {
        return None;
    }
    let text = wasm_bindgen_futures::JsFuture::from(response.text().ok()?)
        .await
        .ok()?
        .as_string()?;
    serde_json::from_str(&text).ok()
}
