//! The system packages a fresh Debian machine lacks, installed with apt when
//! running as root, or named in the error otherwise.

use crate::build::exec;
use anyhow::{bail, Result};
use std::process::Command;

/// Debian packages the build, the images and the tests need, and why.
const PACKAGES: &[(&str, &str)] = &[
    (
        "rustc-web",
        "builds std for wasm32 where rustup cannot add the target",
    ),
    ("cargo-web", "the cargo that goes with rustc-web"),
    ("rust-web-src", "the std sources -Zbuild-std compiles"),
    ("rust-web-llvm", "the linker support for wasm32"),
    ("lld-22", "rust-lld for wasm32"),
    ("gcc-multilib", "links the static i386 guest agent"),
    ("debootstrap", "builds the Debian i386 root file systems"),
    ("e2fsprogs", "mke2fs makes the disk images"),
    ("busybox-static", "the initrd's userland"),
    ("cpio", "packs the initrd"),
    ("zstd", "caches the debootstrap base"),
    ("seabios", "the BIOS v86 boots (its npm package has none)"),
    ("chromium", "the browser the end-to-end tests drive"),
    ("nginx-light", "the native denominator in the bench"),
    ("python3", "runs the python image's pool in tests/host"),
];

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// Installs whatever of [`PACKAGES`] is missing.
pub(crate) fn ensure_packages() -> Result<()> {
    if Command::new("dpkg-query")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("xtask: not a Debian system; make sure these are installed:");
        for (p, why) in PACKAGES {
            eprintln!("  {p}: {why}");
        }
        return Ok(());
    }
    let missing: Vec<&str> = PACKAGES
        .iter()
        .map(|(p, _)| *p)
        .filter(|p| !installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if !is_root {
        bail!(
            "missing Debian packages; run: sudo apt-get install -y {}",
            missing.join(" ")
        );
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    exec(Command::new("apt-get").arg("update").arg("-q"))?;
    exec(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}
