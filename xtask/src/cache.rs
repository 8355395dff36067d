//! The build cache outside the checkout, and the recipe hashes that key it.

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// `$XDG_CACHE_HOME/appserver`, or `~/.cache/appserver`.
pub(crate) fn dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    base.join("appserver")
}

/// A short hex hash over the contents of `paths` (files, or folders walked
/// in sorted order), with each file's path relative to `root` mixed in,
/// then `extra`. Files for which `skip` says true (given the path relative
/// to `root`) are left out.
pub(crate) fn recipe_hash(
    root: &Path,
    paths: &[&str],
    extra: &[u8],
    skip: impl Fn(&Path) -> bool,
) -> Result<String> {
    let mut files = Vec::new();
    for p in paths {
        collect(&root.join(p), &mut files)?;
    }
    files.retain(|f| !skip(f.strip_prefix(root).unwrap_or(f)));
    files.sort();
    let mut hasher = Sha256::new();
    for file in files {
        let rel = file.strip_prefix(root).unwrap_or(&file);
        hasher.update(rel.to_string_lossy().as_bytes());
        hasher.update([0]);
        hasher.update(std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?);
    }
    hasher.update(extra);
    Ok(hex(&hasher.finalize()[..8]))
}

fn collect(path: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    if path.is_dir() {
        for entry in std::fs::read_dir(path)? {
            let entry = entry?;
            if entry.file_name() == "node_modules" || entry.file_name() == "__pycache__" {
                continue;
            }
            collect(&entry.path(), out)?;
        }
    } else if path.exists() {
        out.push(path.to_owned());
    }
    Ok(())
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Holds the cache's lock named `name` (a file under the cache folder) until
/// the returned file is dropped, so that two checkouts building the same
/// image at once do not write into each other's work folders.
pub(crate) fn lock(name: &str) -> Result<std::fs::File> {
    let path = dir().join(format!("{name}.lock"));
    std::fs::create_dir_all(dir())?;
    let file =
        std::fs::File::create(&path).with_context(|| format!("opening {}", path.display()))?;
    if file.try_lock().is_err() {
        eprintln!(
            "xtask: waiting for another build holding {}",
            path.display()
        );
        file.lock()?;
    }
    Ok(file)
}
