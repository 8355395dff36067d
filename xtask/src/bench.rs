//! `cargo xtask bench`: prints the figures, one `name: value unit` per line.

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
    let (port, _server) = serve::start(0, site, images)?;
    let tests = root().join("tests");
    npm_install(&tests)?;
    exec(
        Command::new("node")
            .current_dir(&tests)
            .arg("bench/bench.mjs")
            .env("APP_BASE_URL", format!("http://localhost:{port}")),
    )
}
