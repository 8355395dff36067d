//! The files a user picked or dropped, and their packing into a tar archive.

use appserver_proto::tar::{archive_size, TarWriter, MAX_ARCHIVE_BYTES};
use futures::channel::oneshot;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    DataTransfer, File, FileList, FileSystemDirectoryEntry, FileSystemEntry, FileSystemFileEntry,
};

/// The files of one folder, with their paths relative to it.
#[derive(Clone, Default)]
pub(crate) struct Upload {
    files: Vec<(String, File)>,
}

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
            files.push((path, file));
        }
        Upload { files }
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
                upload.files.push((file.name(), file));
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
        for (path, file) in &self.files {
            let buffer = JsFuture::from(file.array_buffer())
                .await
                .map_err(|e| format!("Reading {path} failed: {e:?}"))?;
            let bytes = js_sys::Uint8Array::new(&buffer).to_vec();
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
    out: &mut Vec<(String, File)>,
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
                    out.push((path, entry_file(entry.unchecked_into()).await?));
                }
            }
        }
    }
    Ok(())
}
