//! `cargo xtask test`: host unit tests (Rust, and the images' own scripts
//! under tests/host), then the browser end-to-end tests against a real
//! server, real Chromium and the real images.

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
    let tests = root().join("tests");
    let host = test_files(&tests.join("host"), filters)?;
    if !host.is_empty() {
        // The images' scripts, run with the host's interpreters.
        exec(
            Command::new("node")
                .current_dir(&tests)
                .args(["--test", "--test-reporter=spec"])
                .args(&host),
        )?;
    }

    let site = build::site()?;
    let images = crate::images()?;
    let (port, _server) = serve::start(0, site, images)?;
    npm_install(&tests)?;
    let files = test_files(&tests.join("e2e"), filters)?;
    exec(
        Command::new("node")
            .current_dir(&tests)
            .args(["--test", "--test-concurrency=1", "--test-reporter=spec"])
            .args(&files)
            .env("APP_BASE_URL", format!("http://localhost:{port}")),
    )
}

/// The `*.test.mjs` files in `dir` whose name holds one of `filters` (all
/// with none), sorted.
fn test_files(dir: &std::path::Path, filters: &[String]) -> Result<Vec<std::path::PathBuf>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".test.mjs"))
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()))
        })
        .collect();
    files.sort();
    Ok(files)
}
