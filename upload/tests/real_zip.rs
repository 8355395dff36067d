//! A ZIP written by another tool (Python's `zipfile`, deflated, with the
//! site wrapped in a folder) unpacks to the fixture site's exact files.

use appserver_upload::{strip_common_folder, zip};
use std::path::{Path, PathBuf};

fn walk(dir: &Path, base: &Path, out: &mut Vec<(String, Vec<u8>)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(&path, base, out);
        } else {
            let rel = path
                .strip_prefix(base)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            out.push((rel, std::fs::read(&path).unwrap()));
        }
    }
}

#[test]
fn a_python_zip_unpacks_to_the_fixture_site() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let archive = std::fs::read(root.join("tests/data/static-site.zip")).unwrap();
    let mut files = zip::read(&archive, 64 << 20).unwrap();
    assert!(files.iter().all(|(p, _)| p.starts_with("static-site/")));
    strip_common_folder(&mut files);
    files.sort();

    let site = root.join("../tests/fixtures/static-site");
    let mut want = Vec::new();
    walk(&site, &site, &mut want);
    want.sort();
    assert_eq!(files.len(), want.len());
    assert_eq!(files, want);
}
