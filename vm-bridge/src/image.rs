//! The manifest that describes an environment's image files.

use serde::Deserialize;
use std::collections::BTreeMap;

/// One file of an image, as the manifest lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct ImageFile {
    /// Size in bytes.
    pub size: u64,
    /// Hex SHA-256 of the file.
    pub sha256: String,
}

/// `manifest.json` of an environment image.
#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    /// Environment id, e.g. `static`.
    pub id: String,
    /// Recipe version or hash.
    pub version: String,
    /// The files by role: `vmlinuz`, `initrd`, `disk`.
    pub files: BTreeMap<String, ImageFile>,
    /// Kernel command line.
    pub cmdline: String,
    /// Guest memory in MiB.
    pub memory_mb: u32,
    /// The warm state saved at image build time, if the image has one.
    #[serde(default)]
    pub state: Option<ImageFile>,
}

/// Where an environment's files are served from, and what they are.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// URL of the folder holding the manifest and files, ending in `/`.
    pub base_url: String,
    /// The parsed manifest.
    pub manifest: Manifest,
}

impl ImageSpec {
    /// URL of a file in the image folder, by role.
    pub fn url(&self, role: &str) -> String {
        let name = match role {
            "vmlinuz" => "vmlinuz",
            "initrd" => "initrd.img",
            "state" => "state.bin.zst",
            _ => "disk.img",
        };
        format!("{}{}?v={}", self.base_url, name, self.manifest.version)
    }

    /// Size of a file, by role; 0 when the manifest lacks it.
    pub fn size(&self, role: &str) -> u64 {
        self.manifest.files.get(role).map(|f| f.size).unwrap_or(0)
    }
}
