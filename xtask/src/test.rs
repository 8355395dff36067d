//! `cargo xtask test`: host unit tests, then the browser end-to-end tests
//! against a real server, real Chromium and the real images.

use crate::build::{exec, npm_install};
use crate::{build, root, serve};
use anyhow::Result;
use std::process::Command;

/// The crates whose tests run on the host.
const HOST_CRATES: &[&str] = &[
    "appserver-proto",
    "appserver-upload",
    "guest-agent",
    "xtask",
];

/// Runs every test; with `filters`, only the end-to-end files whose name
/// holds one of them (`cargo xtask test python`).
pub(crate) fn run(filters: &[String]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root()).arg("test");
    for c in HOST_CRATES {
        cmd.args(["-p", c]);
    }
    exec(&mut cmd)?;

    let site = build::site()?;
    let images = crate::images()?;
    let (port, _server) = serve::start(0, site, images)?;
    let tests = root().join("tests");
    npm_install(&tests)?;
    let mut files: Vec<_> = std::fs::read_dir(tests.join("e2e"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".test.mjs"))
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()))
        })
        .collect();
    files.sort();
    exec(
        Command::new("node")
            .current_dir(&tests)
            .args(["--test", "--test-concurrency=1", "--test-reporter=spec"])
            .args(&files)
            .env("APP_BASE_URL", format!("http://localhost:{port}")),
    )
}
