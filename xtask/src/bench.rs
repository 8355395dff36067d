//! `cargo xtask bench`: prints the figures, one `name: value unit` per line:
//! the browser's (tests/bench), then a cold boot of the static image.

use crate::build::{exec, npm_install};
use crate::{build, root, serve};
use anyhow::Result;
use std::process::Command;

pub(crate) fn run() -> Result<()> {
    let site = build::site()?;
    let images = crate::images()?;
    for (env, dir) in &images {
        for (name, file) in [
            ("disk", "disk.img"),
            ("kernel", "vmlinuz"),
            ("initrd", "initrd.img"),
        ] {
            let len = std::fs::metadata(dir.join(file))?.len();
            println!("image_{env}_{name}_size: {:.1} MB", len as f64 / 1e6);
        }
    }
    let static_dir = images
        .iter()
        .find(|(e, _)| e == "static")
        .map(|(_, d)| d.clone());
    let (port, _server) = serve::start(0, site, images)?;
    let tests = root().join("tests");
    npm_install(&tests)?;
    exec(
        Command::new("node")
            .current_dir(&tests)
            .arg("bench/bench.mjs")
            .env("APP_BASE_URL", format!("http://localhost:{port}")),
    )?;
    if let Some(dir) = static_dir {
        cold_boot(&dir)?;
    }
    Ok(())
}

/// Boots the static image from nothing (no warm state) in v86 under Node,
/// as `images/boot-test.mjs` does, and prints how long it took: what every
/// load would cost without the warm state.
fn cold_boot(dir: &std::path::Path) -> Result<()> {
    let out = Command::new("node")
        .current_dir(root())
        .arg("images/boot-test.mjs")
        .arg(dir)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let ms = text
        .lines()
        .find_map(|l| l.strip_prefix("boot_to_ready_ms: "))
        .and_then(|v| v.trim().parse::<f64>().ok());
    match ms {
        Some(ms) if out.status.success() => {
            println!("cold_boot_to_ready_static: {:.1} s", ms / 1000.0);
            Ok(())
        }
        _ => anyhow::bail!(
            "images/boot-test.mjs failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}
