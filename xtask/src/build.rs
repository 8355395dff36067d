//! Builds the two wasm modules (service worker, management page) and lays
//! out the site that `serve` hands to the browser under `target/site`.

use crate::{cache, root};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The wasm-bindgen version; must equal the `wasm-bindgen` crate's in Cargo.lock.
const WASM_BINDGEN: &str = "0.2.130";
/// The wasm crates and the module names wasm-bindgen gives them.
const WASM_CRATES: &[(&str, &str)] = &[("sw", "sw"), ("mgmt-ui", "mgmt_ui")];

/// How this machine builds Rust for wasm32.
enum Toolchain {
    /// rustup with the wasm32 target installed.
    Rustup,
    /// Debian's rustc-web, which builds `std` for wasm32 from its own sources.
    Debian,
}

fn detect_toolchain() -> Result<Toolchain> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    if let Ok(out) = installed {
        if String::from_utf8_lossy(&out.stdout).contains("wasm32-unknown-unknown") {
            return Ok(Toolchain::Rustup);
        }
    }
    if Path::new("/usr/lib/rustlib/src/rust/library").is_dir()
        && Path::new("/usr/bin/cargo").exists()
    {
        return Ok(Toolchain::Debian);
    }
    let added = Command::new("timeout")
        .args(["120", "rustup", "target", "add", "wasm32-unknown-unknown"])
        .status();
    if matches!(added, Ok(s) if s.success()) {
        return Ok(Toolchain::Rustup);
    }
    bail!(
        "no Rust toolchain for wasm32 found: run `rustup target add wasm32-unknown-unknown`, or on \
Debian `apt-get install rustc-web cargo-web rust-web-src rust-web-llvm lld-22`"
    )
}

/// Builds `packages` for `target` in release mode into `target_dir`,
/// with Debian's toolchain and `-Zbuild-std` where rustup cannot help.
pub(crate) fn cargo_build_std(
    target: &str,
    target_dir: &Path,
    packages: &[&str],
    env: &[(&str, &str)],
) -> Result<()> {
    let mut cmd = Command::new("/usr/bin/cargo");
    let path = format!("/usr/bin:{}", std::env::var("PATH").unwrap_or_default());
    cmd.current_dir(root())
        .env("PATH", path)
        .env("RUSTC", "/usr/bin/rustc")
        .env("RUSTC_BOOTSTRAP", "1")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .env("CARGO_TARGET_DIR", target_dir)
        .args([
            "build",
            "--release",
            "--target",
            target,
            "-Zbuild-std=std,panic_abort",
        ]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    for p in packages {
        cmd.args(["-p", p]);
    }
    exec(&mut cmd)
}

fn build_wasm() -> Result<PathBuf> {
    let target_dir = root().join("target/wasm");
    let packages: Vec<&str> = WASM_CRATES.iter().map(|(c, _)| *c).collect();
    match detect_toolchain()? {
        Toolchain::Debian => {
            cargo_build_std("wasm32-unknown-unknown", &target_dir, &packages, &[])?
        }
        Toolchain::Rustup => {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.current_dir(root())
                .env("CARGO_TARGET_DIR", &target_dir)
                .args(["build", "--release", "--target", "wasm32-unknown-unknown"]);
            for p in &packages {
                cmd.args(["-p", p]);
            }
            exec(&mut cmd)?;
        }
    }
    Ok(target_dir.join("wasm32-unknown-unknown/release"))
}

/// The wasm-bindgen binary, installed into the cache on first use.
fn wasm_bindgen() -> Result<PathBuf> {
    let prefix = cache::dir().join(format!("tools/wasm-bindgen-{WASM_BINDGEN}"));
    let bin = prefix.join("bin/wasm-bindgen");
    if bin.exists() {
        return Ok(bin);
    }
    eprintln!(
        "xtask: installing wasm-bindgen-cli {WASM_BINDGEN} into {} (a few minutes, once)",
        prefix.display()
    );
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    exec(
        Command::new(cargo)
            .args([
                "install",
                "wasm-bindgen-cli",
                "--version",
                WASM_BINDGEN,
                "--root",
            ])
            .arg(&prefix),
    )?;
    Ok(bin)
}

/// Installs the browser packages (v86) with npm when they are missing.
pub(crate) fn npm_install(dir: &Path) -> Result<()> {
    if dir.join("node_modules/.package-lock.json").exists() {
        return Ok(());
    }
    let verb = if dir.join("package-lock.json").exists() {
        "ci"
    } else {
        "install"
    };
    exec(
        Command::new("npm")
            .current_dir(dir)
            .args([verb, "--no-audit", "--no-fund"]),
    )
}

/// Builds everything the browser loads and returns the site folder.
pub(crate) fn site() -> Result<PathBuf> {
    let wasm_dir = build_wasm()?;
    let bindgen = wasm_bindgen()?;
    let site = root().join("target/site");
    let pkg = site.join("pkg");
    std::fs::create_dir_all(&pkg)?;
    for (_, module) in WASM_CRATES {
        exec(
            Command::new(&bindgen)
                .args(["--target", "web", "--no-typescript", "--out-dir"])
                .arg(&pkg)
                .arg(wasm_dir.join(format!("{module}.wasm"))),
        )?;
    }
    let web = root().join("web");
    npm_install(&web)?;
    copy_tree(
        &web,
        &site,
        &["node_modules", "package.json", "package-lock.json"],
    )?;
    let v86 = web.join("node_modules/v86/build");
    let v86_out = site.join("v86");
    std::fs::create_dir_all(v86_out.join("bios"))?;
    for file in ["libv86.js", "v86.wasm"] {
        std::fs::copy(v86.join(file), v86_out.join(file))
            .with_context(|| format!("copying v86's {file}"))?;
    }
    // v86's npm package has no BIOS: Debian's seabios package does.
    for (from, to) in [
        ("bios.bin", "seabios.bin"),
        ("vgabios-stdvga.bin", "vgabios.bin"),
    ] {
        let src = Path::new("/usr/share/seabios").join(from);
        std::fs::copy(&src, v86_out.join("bios").join(to))
            .with_context(|| format!("copying {} (apt-get install seabios)", src.display()))?;
    }
    Ok(site)
}

fn copy_tree(from: &Path, to: &Path, skip: &[&str]) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        if skip.iter().any(|s| name == *s) {
            continue;
        }
        let dest = to.join(&name);
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &dest, skip)?;
        } else {
            std::fs::copy(entry.path(), &dest)?;
        }
    }
    Ok(())
}

/// Runs a command, failing with its command line when it fails.
pub(crate) fn exec(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}
