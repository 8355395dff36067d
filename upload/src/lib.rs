//! What users hand in for a deploy, read into a checked list of files: ZIP
//! archives ([`zip`]) and `multipart/form-data` bodies ([`multipart`]).
//!
//! Kept apart from `appserver-proto` because it needs an inflater, which the
//! guest agent (built from proto) does not. Every path is checked with
//! proto's upload path rules before a byte of its data is unpacked.

pub mod deploy;
pub mod multipart;
pub mod zip;

/// One file of an upload: its path relative to the app folder, and its bytes.
pub type File = (String, Vec<u8>);

/// Drops a folder that wraps every file (`site/index.html`,
/// `site/css/a.css` become `index.html`, `css/a.css`), as when a user zips a
/// folder rather than its contents. Nothing changes when a file lies at the
/// top or the files are in more than one folder.
pub fn strip_common_folder(files: &mut [File]) {
    let Some(first) = files.first() else { return };
    let Some((folder, _)) = first.0.split_once('/') else {
        return;
    };
    let prefix = format!("{folder}/");
    if files.iter().all(|(p, _)| p.starts_with(&prefix)) {
        for (path, _) in files.iter_mut() {
            path.drain(..prefix.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::strip_common_folder;

    fn paths(list: &[&str]) -> Vec<String> {
        let mut files: Vec<super::File> = list.iter().map(|p| (p.to_string(), vec![])).collect();
        strip_common_folder(&mut files);
        files.into_iter().map(|(p, _)| p).collect()
    }

    #[test]
    fn a_wrapping_folder_is_dropped() {
        let cases: &[(&[&str], &[&str])] = &[
            (
                &["site/index.html", "site/css/a.css"],
                &["index.html", "css/a.css"],
            ),
            (&["index.html", "css/a.css"], &["index.html", "css/a.css"]),
            (&["a/x", "b/y"], &["a/x", "b/y"]),
            (&["a/b/x"], &["b/x"]),
            (&["ab/x", "a/y"], &["ab/x", "a/y"]),
            (&[], &[]),
        ];
        for (input, want) in cases {
            assert_eq!(paths(input), *want, "{input:?}");
        }
    }
}
