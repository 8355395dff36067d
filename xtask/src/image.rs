//! Disk images of the environments: the guest agent cross-built for i686,
//! then `images/build.sh` run once per recipe hash into the cache.

use crate::build::{cargo_build_std, exec};
use crate::{cache, root};
use anyhow::{bail, Context, Result};
use appserver_proto::chunks::CHUNK_SIZE;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The environments there are images for.
pub(crate) const ENVS: &[&str] = &["static", "nodejs", "python"];

/// Everything an image is made from; a change to any of it makes a new image.
const RECIPE: &[&str] = &[
    "images/build.sh",
    "images/initrd",
    "images/rootfs",
    "images/envs",
    "images/warm-state.mjs",
    "images/restore-test.mjs",
    "images/v86-node.mjs",
    "guest-agent",
    "proto/src",
    "Cargo.lock",
    "xtask/src/image.rs",
];

/// Builds the guest agent as a static i386 binary and returns its path.
fn build_agent() -> Result<PathBuf> {
    let target_dir = root().join("target/i686");
    cargo_build_std(
        "i686-unknown-linux-gnu",
        &target_dir,
        &["guest-agent"],
        &[
            ("CARGO_TARGET_I686_UNKNOWN_LINUX_GNU_LINKER", "gcc"),
            (
                "RUSTFLAGS",
                "-C link-arg=-m32 -C target-feature=+crt-static",
            ),
        ],
    )?;
    Ok(target_dir.join("i686-unknown-linux-gnu/release/appserver-agent"))
}

/// Returns the cached image folder of `env`, building it first if its recipe
/// changed. The folder holds `manifest.json`, `vmlinuz`, `initrd.img` and
/// `disk.img`.
pub(crate) fn ensure(env: &str) -> Result<PathBuf> {
    if !ENVS.contains(&env) {
        bail!(
            "unknown environment `{env}`: choose one of {}",
            ENVS.join(", ")
        );
    }
    // For working on the recipe: serve an image built by hand instead.
    if let Some(dir) = std::env::var_os(format!("APPSERVER_IMAGE_{}", env.to_uppercase())) {
        return Ok(PathBuf::from(dir));
    }
    let hash = cache::recipe_hash(&root(), RECIPE, |path| other_env_file(path, env))?;
    let out = cache::dir().join("images").join(format!("{env}-{hash}"));
    if out.join("manifest.json").exists() {
        return Ok(out);
    }
    eprintln!(
        "xtask: building the `{env}` image into {} (several minutes, once)",
        out.display()
    );
    let agent = build_agent()?;
    let staging = out.with_extension("partial");
    if staging.exists() {
        std::fs::remove_dir_all(&staging)?;
    }
    std::fs::create_dir_all(&staging)?;
    exec(
        Command::new("bash")
            // A work folder of its own, apart from hand-run builds of the same env.
            .env(
                "APPSERVER_WORK",
                cache::dir().join("work").join(format!("xtask-{env}")),
            )
            .arg(root().join("images/build.sh"))
            .arg(env)
            .arg(&staging)
            .arg(&agent),
    )?;
    let manifest = staging.join("manifest.json");
    let text = std::fs::read_to_string(&manifest).context("build.sh wrote no manifest.json")?;
    let mut json: serde_json::Value = serde_json::from_str(&text)?;
    // The manifest's version is the recipe hash, so browsers never mix files
    // of two builds.
    json["version"] = hash.clone().into();
    json["chunks"] = write_chunk_hashes(&staging)?;
    std::fs::write(&manifest, serde_json::to_string_pretty(&json)?)?;
    std::fs::rename(&staging, &out)?;
    Ok(out)
}

/// True for the files of another environment than `env`:
/// `images/envs/<other>.*` and everything under them (`base` is everyone's).
fn other_env_file(path: &Path, env: &str) -> bool {
    let Ok(rest) = path.strip_prefix("images/envs") else {
        return false;
    };
    let first = rest.components().next();
    let name = first.map(|c| c.as_os_str().to_string_lossy().into_owned());
    let owner = name
        .as_deref()
        .and_then(|n| n.split('.').next())
        .unwrap_or("");
    owner != env && owner != "base"
}

/// Writes `disk.chunks`, the SHA-256 of each [`CHUNK_SIZE`] chunk of the
/// disk, which the service worker checks every cached chunk against, and
/// returns its manifest entry.
fn write_chunk_hashes(dir: &Path) -> Result<serde_json::Value> {
    let mut disk = std::fs::File::open(dir.join("disk.img")).context("opening disk.img")?;
    let mut hashes = Vec::new();
    let mut chunk = vec![0u8; CHUNK_SIZE as usize];
    loop {
        let mut filled = 0;
        while filled < chunk.len() {
            match disk.read(&mut chunk[filled..])? {
                0 => break,
                n => filled += n,
            }
        }
        if filled == 0 {
            break;
        }
        hashes.extend_from_slice(&Sha256::digest(&chunk[..filled]));
    }
    let path = dir.join("disk.chunks");
    std::fs::write(&path, &hashes)?;
    Ok(serde_json::json!({
        "path": "disk.chunks",
        "size": hashes.len(),
        "sha256": cache::hex(&Sha256::digest(&hashes)),
        "chunk_size": CHUNK_SIZE,
    }))
}

/// Every environment's image folder, by environment id.
pub(crate) fn ensure_all() -> Result<Vec<(String, PathBuf)>> {
    ENVS.iter()
        .map(|env| Ok((env.to_string(), ensure(env)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::other_env_file;
    use std::path::Path;

    #[test]
    fn files_of_other_environments_leave_the_recipe() {
        let cases = [
            ("images/envs/python.packages", "static", true),
            ("images/envs/python.rootfs/etc/x", "static", true),
            ("images/envs/python.rootfs/etc/x", "python", false),
            ("images/envs/static.conf", "static", false),
            ("images/envs/base.packages", "python", false),
            ("images/build.sh", "python", false),
            ("guest-agent/src/main.rs", "static", false),
        ];
        for (path, env, skipped) in cases {
            assert_eq!(
                other_env_file(Path::new(path), env),
                skipped,
                "{path} for {env}"
            );
        }
    }
}
