//! `cargo xtask`: builds, serves, tests and benchmarks the Application Server.
//!
//! Everything slow to make (wasm-bindgen-cli, disk images) is kept in a cache
//! outside the checkout, under `$XDG_CACHE_HOME/appserver` (default
//! `~/.cache/appserver`), keyed by a hash of its recipe.

mod bench;
mod build;
mod cache;
mod image;
mod serve;
mod setup;
mod test;

use anyhow::{bail, Result};
use std::path::PathBuf;

const USAGE: &str = "usage: cargo xtask <command>

commands:
  serve [--port N]   build what is missing and serve on http://localhost:8080
  test [FILTER..]    run every test: host unit tests, then browser end-to-end tests
                     (with FILTERs, only the e2e files whose name holds one)
  bench              print performance figures, one `name: value unit` per line
  build              build the wasm modules and assemble the site
  image [ENV]        build (or reuse from the cache) the disk image of ENV (default: static)
";

fn main() {
    if let Err(e) = run() {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first() else {
        eprint!("{USAGE}");
        bail!("no command given");
    };
    if matches!(
        command.as_str(),
        "serve" | "test" | "bench" | "build" | "image"
    ) {
        setup::ensure_packages()?;
    }
    match command.as_str() {
        "serve" => {
            let port = flag_value(&args, "--port").unwrap_or(8080);
            let site = build::site()?;
            let images = images()?;
            serve::run(port, site, images)
        }
        "test" => test::run(&args[1..]),
        "bench" => bench::run(),
        "build" => build::site().map(|p| println!("site: {}", p.display())),
        "image" => {
            let env = args.get(1).map(String::as_str).unwrap_or("static");
            let _lock = cache::lock(&format!("image-{env}"))?;
            let dir = image::ensure(env)?;
            println!("image {env}: {}", dir.display());
            Ok(())
        }
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            Ok(())
        }
        other => {
            eprint!("{USAGE}");
            bail!("unknown command `{other}`")
        }
    }
}

/// Every environment's image, built first where the cache lacks it; one
/// checkout at a time builds each environment (an image given by hand with
/// `APPSERVER_IMAGE_<ENV>` waits for no build).
pub(crate) fn images() -> Result<Vec<(String, PathBuf)>> {
    let _locks = image::envs()?
        .iter()
        .filter(|env| std::env::var_os(format!("APPSERVER_IMAGE_{}", env.to_uppercase())).is_none())
        .map(|env| cache::lock(&format!("image-{env}")))
        .collect::<Result<Vec<_>>>()?;
    image::ensure_all()
}

fn flag_value(args: &[String], flag: &str) -> Option<u16> {
    let i = args.iter().position(|a| a == flag)?;
    args.get(i + 1)?.parse().ok()
}

/// The checkout's root folder.
pub(crate) fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .into()
}
