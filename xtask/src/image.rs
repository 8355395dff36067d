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

/// The environments there are images for: one per `images/envs/<env>.packages`
/// (`base.packages` is every image's), static first, then by name. Read from
/// the folder, so that a new environment does not change this file, which is
/// part of every image's recipe.
pub(crate) fn envs() -> Result<Vec<String>> {
    let mut envs = Vec::new();
    for entry in std::fs::read_dir(root().join("images/envs"))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some(env) = name.strip_suffix(".packages") {
            if env != "base" {
                envs.push(env.to_owned());
            }
        }
    }
    envs.sort_by_key(|e| (e != "static", e.clone()));
    Ok(envs)
}

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
    // The modules of proto the agent is built from (and only those, so that
    // work on the worker's or the page's parts of proto rebuilds no image);
    // `agent_proto_modules_are_in_the_recipe` keeps this list honest.
    "proto/Cargo.toml",
    "proto/src/detect.rs",
    "proto/src/names.rs",
    "proto/src/paths.rs",
    "proto/src/tar.rs",
    "proto/src/tar",
    "xtask/src/image.rs",
];

/// The crates the guest agent is built from, by name and version, one per
/// line and sorted: the part of Cargo.lock that belongs to the image, so
/// that a dependency of the worker or the page rebuilds no image.
fn agent_dependencies() -> Result<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(root())
        .args(["tree", "--locked", "-p", "guest-agent"])
        .args(["--target", "i686-unknown-linux-gnu", "-e", "normal,build"])
        .args(["--prefix", "none"])
        .output()
        .context("running cargo tree")?;
    if !out.status.success() {
        bail!(
            "cargo tree -p guest-agent failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut crates: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        // "name vX.Y.Z (/checkout/path) (*)": keep the name and version, as
        // the path differs between checkouts.
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            Some(format!("{} {}", words.next()?, words.next()?))
        })
        .collect();
    crates.sort();
    crates.dedup();
    Ok(crates.join("\n"))
}

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
    let envs = envs()?;
    if !envs.iter().any(|e| e == env) {
        bail!(
            "unknown environment `{env}`: choose one of {}",
            envs.join(", ")
        );
    }
    // For working on the recipe: serve an image built by hand instead.
    if let Some(dir) = std::env::var_os(format!("APPSERVER_IMAGE_{}", env.to_uppercase())) {
        return Ok(PathBuf::from(dir));
    }
    let layers = layers(env)?;
    let hash = cache::recipe_hash(&root(), RECIPE, agent_dependencies()?.as_bytes(), |path| {
        other_env_file(path, &layers)
    })?;
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

/// The environments an image of `env` is made of: `env` and the one its
/// `<env>.conf` builds on with `BASE_ENV=` (images/build.sh reads the same
/// line), whose files are then part of its recipe too.
fn layers(env: &str) -> Result<Vec<String>> {
    let conf = root().join(format!("images/envs/{env}.conf"));
    let text = std::fs::read_to_string(&conf).unwrap_or_default();
    let mut layers = vec![env.to_owned()];
    if let Some(base) = base_env(&text) {
        if !envs()?.contains(&base) || base == env {
            bail!("{} builds on unknown environment `{base}`", conf.display());
        }
        layers.push(base);
    }
    Ok(layers)
}

/// The value of a `BASE_ENV=name` line of an environment's conf.
fn base_env(conf: &str) -> Option<String> {
    conf.lines()
        .find_map(|line| line.trim().strip_prefix("BASE_ENV="))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .filter(|v| !v.is_empty())
}

/// True for the files of an environment other than those in `layers`:
/// `images/envs/<other>.*` and everything under them (`base` is everyone's).
fn other_env_file(path: &Path, layers: &[String]) -> bool {
    let Ok(rest) = path.strip_prefix("images/envs") else {
        return false;
    };
    let first = rest.components().next();
    let name = first.map(|c| c.as_os_str().to_string_lossy().into_owned());
    let owner = name
        .as_deref()
        .and_then(|n| n.split('.').next())
        .unwrap_or("");
    owner != "base" && !layers.iter().any(|l| l == owner)
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
    envs()?
        .into_iter()
        .map(|env| {
            let dir = ensure(&env)?;
            Ok((env, dir))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{base_env, other_env_file, RECIPE};
    use crate::root;
    use std::collections::BTreeSet;
    use std::path::Path;

    /// Adds the proto modules named as `prefix<module>` in the Rust file
    /// `path`, or in every Rust file under the folder `path`, to `out`.
    fn modules_named(path: &Path, prefix: &str, out: &mut BTreeSet<String>) {
        if path.is_dir() {
            for entry in std::fs::read_dir(path).unwrap() {
                modules_named(&entry.unwrap().path(), prefix, out);
            }
            return;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            return;
        }
        let text = std::fs::read_to_string(path).unwrap();
        for (i, _) in text.match_indices(prefix) {
            let name: String = text[i + prefix.len()..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }

    #[test]
    fn agent_proto_modules_are_in_the_recipe() {
        let root = root();
        let mut modules = BTreeSet::new();
        modules_named(
            &root.join("guest-agent/src"),
            "appserver_proto::",
            &mut modules,
        );
        // Follow the modules' uses of each other until nothing new turns up.
        loop {
            let mut more = modules.clone();
            for m in &modules {
                for path in [format!("proto/src/{m}.rs"), format!("proto/src/{m}")] {
                    let path = root.join(path);
                    if path.exists() {
                        modules_named(&path, "crate::", &mut more);
                    }
                }
            }
            if more == modules {
                break;
            }
            modules = more;
        }
        assert!(modules.contains("tar"), "the agent reads tar: {modules:?}");
        for m in &modules {
            let file = format!("proto/src/{m}.rs");
            assert!(
                RECIPE.contains(&file.as_str()),
                "the guest agent is built from {file}: add it to image::RECIPE"
            );
        }
    }

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
            ("images/envs/nodejs.setup", "nextjs", false),
            ("images/envs/nodejs.rootfs/x", "nextjs", false),
            ("images/envs/nextjs.npm/package.json", "nodejs", true),
        ];
        for (path, env, skipped) in cases {
            // nextjs builds on nodejs.
            let layers: Vec<String> = match env {
                "nextjs" => vec!["nextjs".into(), "nodejs".into()],
                _ => vec![env.into()],
            };
            assert_eq!(
                other_env_file(Path::new(path), &layers),
                skipped,
                "{path} for {env}"
            );
        }
    }

    #[test]
    fn a_conf_names_the_environment_it_builds_on() {
        assert_eq!(
            base_env("# x\nMEMORY_MB=1\nBASE_ENV=nodejs\n").as_deref(),
            Some("nodejs")
        );
        assert_eq!(base_env("BASE_ENV=\"nodejs\"").as_deref(), Some("nodejs"));
        assert_eq!(base_env("BASE_ENV=\nMEMORY_MB=1"), None);
        assert_eq!(base_env("MEMORY_MB=1"), None);
    }
}
