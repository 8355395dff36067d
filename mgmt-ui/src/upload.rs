//! The files a user picked, dropped or unpacked from a ZIP, what they are
//! (detection), and their packing into a tar archive.

use appserver_proto::detect::{detect, DetectError, Detected, READ_FILES};
use appserver_proto::tar::{archive_size, TarWriter, MAX_ARCHIVE_BYTES};
use futures::channel::oneshot;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    DataTransfer, File, FileList, FileSystemDirectoryEntry, FileSystemEntry, FileSystemFileEntry,
};

/// One file of an upload: picked from disk, or unpacked in memory.
#[derive(Clone)]
enum Source {
    File(File),
    Bytes(std::rc::Rc<Vec<u8>>),
}

impl Source {
    fn size(&self) -> f64 {
        match self {
            Source::File(f) => f.size(),
            Source::Bytes(b) => b.len() as f64,
        }
    }

    async fn bytes(&self, path: &str) -> Result<Vec<u8>, String> {
        match self {
            Source::File(file) => {
                let buffer = JsFuture::from(file.array_buffer())
                    .await
                    .map_err(|e| format!("Reading {path} failed: {e:?}"))?;
                Ok(js_sys::Uint8Array::new(&buffer).to_vec())
            }
            Source::Bytes(bytes) => Ok(bytes.to_vec()),
        }
    }
}

/// The files of one folder, with their paths relative to it.
#[derive(Clone, Default)]
pub(crate) struct Upload {
    files: Vec<(String, Source)>,
}

/// Largest file read to decide what an upload is (package.json, app.py, ...).
const DETECT_READ_LIMIT: f64 = 256.0 * 1024.0;

impl Upload {
    /// The files from a `webkitdirectory` picker; the picked folder's own
    /// name is dropped from each path.
    pub(crate) fn from_file_list(list: &FileList) -> Self {
        let mut files = Vec::new();
        for i in 0..list.length() {
            let Some(file) = list.get(i) else { continue };
            let relative = js_sys::Reflect::get(&file, &"webkitRelativePath".into())
                .ok()
                .and_then(|v| v.as_string())
                .unwrap_or_default();
            let path = match relative.split_once('/') {
                Some((_folder, rest)) => rest.to_owned(),
                None => file.name(),
            };
            files.push((path, Source::File(file)));
        }
        Upload { files }
    }

    /// Files unpacked in memory (from a ZIP), by path.
    pub(crate) fn from_entries(entries: Vec<(String, Vec<u8>)>) -> Self {
        let files = entries
            .into_iter()
            .map(|(path, bytes)| (path, Source::Bytes(std::rc::Rc::new(bytes))))
            .collect();
        Upload { files }
    }

    /// The files' paths.
    pub(crate) fn paths(&self) -> Vec<&str> {
        self.files.iter().map(|(p, _)| p.as_str()).collect()
    }

    /// Decides what the upload is, reading the few files detection needs.
    pub(crate) async fn detect(&self) -> Result<Detected, DetectError> {
        let mut texts = std::collections::HashMap::new();
        for (path, source) in &self.files {
            if READ_FILES.contains(&path.as_str()) && source.size() <= DETECT_READ_LIMIT {
                if let Ok(bytes) = source.bytes(path).await {
                    texts.insert(path.clone(), String::from_utf8_lossy(&bytes).into_owned());
                }
            }
        }
        detect(&self.paths(), &|p| texts.get(p).cloned())
    }

    /// The files from a drag and drop: a dropped folder's contents, or
    /// dropped files at the top level.
    pub(crate) async fn from_drop(transfer: &DataTransfer) -> Result<Self, String> {
        let items = transfer.items();
        let mut entries = Vec::new();
        for i in 0..items.length() {
            if let Some(Some(entry)) = items
                .get(i)
                .map(|item| item.webkit_get_as_entry().ok().flatten())
            {
                entries.push(entry);
            }
        }
        let mut upload = Upload::default();
        let single_folder = entries.len() == 1 && entries[0].is_directory();
        for entry in entries {
            let prefix = if single_folder {
                String::new()
            } else {
                entry.name()
            };
            if entry.is_directory() {
                let dir: FileSystemDirectoryEntry = entry.unchecked_into();
                walk(&mut upload.files, dir, prefix).await?;
            } else {
                let file = entry_file(entry.unchecked_into()).await?;
                upload.files.push((file.name(), Source::File(file)));
            }
        }
        Ok(upload)
    }

    fn total_bytes(&self) -> f64 {
        self.files.iter().map(|(_, f)| f.size()).sum()
    }

    /// "12 files, 1.2 MiB".
    pub(crate) fn summary(&self) -> String {
        if self.files.is_empty() {
            return "The folder is empty: nothing to deploy.".into();
        }
        format!(
            "{} files, {:.1} MiB",
            self.files.len(),
            self.total_bytes() / (1024.0 * 1024.0)
        )
    }

    /// Checks the limits, then reads every file and packs them. Nothing is
    /// read when the folder is empty or too large.
    pub(crate) async fn to_tar(&self) -> Result<Vec<u8>, String> {
        if self.files.is_empty() {
            return Err("The folder is empty: nothing to deploy.".into());
        }
        let size = archive_size(self.files.iter().map(|(p, f)| (p.len(), f.size() as u64)));
        if size > MAX_ARCHIVE_BYTES {
            let biggest = self
                .files
                .iter()
                .max_by(|a, b| a.1.size().total_cmp(&b.1.size()))
                .map(|(p, f)| format!(" (the largest file, {p}, is {:.1} MiB)", mib(f.size())))
                .unwrap_or_default();
            return Err(format!(
                "The folder holds {:.1} MiB{biggest}; the upload limit is {} MiB. Leave large \
files out and deploy again.",
                mib(self.total_bytes()),
                MAX_ARCHIVE_BYTES / (1024 * 1024)
            ));
        }
        let mut tar = TarWriter::new();
        for (path, source) in &self.files {
            let bytes = source.bytes(path).await?;
            tar.add_file(path, &bytes)
                .map_err(|e| format!("Cannot deploy {path}: {e}"))?;
        }
        Ok(tar.finish())
    }
}

fn mib(bytes: f64) -> f64 {
    bytes / (1024.0 * 1024.0)
}

async fn entry_file(entry: FileSystemFileEntry) -> Result<File, String> {
    let (tx, rx) = oneshot::channel::<Result<File, String>>();
    let tx = std::rc::Rc::new(std::cell::RefCell::new(Some(tx)));
    let ok_tx = tx.clone();
    let ok = Closure::once(move |file: File| {
        if let Some(tx) = ok_tx.borrow_mut().take() {
            let _ = tx.send(Ok(file));
        }
    });
    let err = Closure::once(move |e: JsValue| {
        if let Some(tx) = tx.borrow_mut().take() {
            let _ = tx.send(Err(format!("reading a dropped file failed: {e:?}")));
        }
    });
    entry
        .file_with_callback_and_callback(ok.as_ref().unchecked_ref(), err.as_ref().unchecked_ref());
    rx.await
        .unwrap_or_else(|_| Err("reading a dropped file was abandoned".into()))
}

/// Reads one batch of a directory's entries; an empty batch means the end.
async fn read_batch(
    reader: &web_sys::FileSystemDirectoryReader,
) -> Result<Vec<FileSystemEntry>, String> {
    let promise = js_sys::Promise::new(&mut |resolve, reject| {
        if let Err(e) = reader.read_entries_with_callback_and_callback(&resolve, &reject) {
            let _ = reject.call1(&JsValue::NULL, &e);
        }
    });
    let list = JsFuture::from(promise)
        .await
        .map_err(|e| format!("reading a folder failed: {e:?}"))?;
    Ok(js_sys::Array::from(&list)
        .iter()
        .map(|v| v.unchecked_into())
        .collect())
}

async fn walk(
    out: &mut Vec<(String, Source)>,
    root: FileSystemDirectoryEntry,
    prefix: String,
) -> Result<(), String> {
    let mut stack = vec![(root, prefix)];
    while let Some((dir, prefix)) = stack.pop() {
        let reader = dir.create_reader();
        loop {
            let batch = read_batch(&reader).await?;
            if batch.is_empty() {
                break;
            }
            for entry in batch {
                let path = if prefix.is_empty() {
                    entry.name()
                } else {
                    format!("{prefix}/{}", entry.name())
                };
                if entry.is_directory() {
                    stack.push((entry.unchecked_into(), path));
                } else {
                    out.push((
                        path,
                        Source::File(entry_file(entry.unchecked_into()).await?),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The files of a ZIP file the user picked.
pub(crate) async fn from_zip_file(file: &File) -> Result<Upload, String> {
    if file.size() > MAX_ARCHIVE_BYTES as f64 {
        return Err(too_large(&file.name(), file.size()));
    }
    let buffer = JsFuture::from(file.array_buffer())
        .await
        .map_err(|e| format!("Reading {} failed: {e:?}", file.name()))?;
    from_zip_bytes(&file.name(), &js_sys::Uint8Array::new(&buffer).to_vec())
}

/// The files of a ZIP fetched from `url` (same origin, or one that allows
/// this page with CORS).
pub(crate) async fn from_zip_url(url: &str) -> Result<Upload, String> {
    if url.trim().is_empty() {
        return Err("Type the URL of a ZIP file first.".into());
    }
    let window = web_sys::window().ok_or("no window")?;
    let response = JsFuture::from(window.fetch_with_str(url.trim()))
        .await
        .map_err(|e| format!("Fetching {url} failed: {e:?}"))?;
    let response: web_sys::Response = response.unchecked_into();
    if !response.ok() {
        return Err(format!("Fetching {url} failed: HTTP {}", response.status()));
    }
    let buffer = JsFuture::from(response.array_buffer().map_err(|e| format!("{e:?}"))?)
        .await
        .map_err(|e| format!("Reading {url} failed: {e:?}"))?;
    let bytes = js_sys::Uint8Array::new(&buffer).to_vec();
    if bytes.len() as u64 > MAX_ARCHIVE_BYTES {
        return Err(too_large(url, bytes.len() as f64));
    }
    from_zip_bytes(url, &bytes)
}

fn too_large(what: &str, size: f64) -> String {
    format!(
        "{what} is {:.1} MiB; the upload limit is {} MiB.",
        mib(size),
        MAX_ARCHIVE_BYTES / (1024 * 1024)
    )
}

fn from_zip_bytes(what: &str, bytes: &[u8]) -> Result<Upload, String> {
    let entries = unzip(bytes).map_err(|e| format!("{what}: {e}"))?;
    if entries.is_empty() {
        return Err(format!("{what} holds no files: nothing to deploy."));
    }
    Ok(Upload::from_entries(entries))
}

fn unzip(bytes: &[u8]) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut files =
        appserver_upload::zip::read(bytes, MAX_ARCHIVE_BYTES).map_err(|e| e.to_string())?;
    appserver_upload::strip_common_folder(&mut files);
    Ok(files)
}
