//! What survives a reload: the VM state saved after each change, and every
//! deployed app's archive, in IndexedDB.
//!
//! A saved state is the whole machine (RAM and the disk blocks the guest
//! wrote), so restoring it brings back every app exactly as it was. It only
//! fits the image it was saved on; the archives are the fallback that
//! survives an image change or a state that will not restore: the bridge
//! redeploys them on a fresh image state. A state and the archive that made
//! it are written in one transaction, so a tab closed half-way leaves the
//! previous pair whole.

use idb::{Database, DatabaseEvent, Factory, ObjectStoreParams, TransactionMode};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

const DB_NAME: &str = "appserver";
const DB_VERSION: u32 = 1;
/// Saved VM states, keyed by environment id.
const STATES: &str = "states";
/// Deployed app archives, keyed by `<env>/<app>`.
const APPS: &str = "apps";

#[wasm_bindgen]
extern "C" {
    type CompressionStream;
    #[wasm_bindgen(constructor)]
    fn new(format: &str) -> CompressionStream;

    type DecompressionStream;
    #[wasm_bindgen(constructor)]
    fn new(format: &str) -> DecompressionStream;
}

/// Why the store failed; the message names the operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "browser storage: {}", self.0)
    }
}

impl std::error::Error for StoreError {}

fn err(what: &str) -> impl Fn(idb::Error) -> StoreError + '_ {
    move |e| StoreError(format!("{what}: {e}"))
}

fn js_err(what: &str) -> impl Fn(JsValue) -> StoreError + '_ {
    move |e| StoreError(format!("{what}: {e:?}"))
}

/// A saved machine state.
pub struct SavedState {
    /// The image version it was saved on.
    pub image_version: String,
    /// The gzip-compressed v86 state.
    pub blob: web_sys::Blob,
}

/// The browser's store for one origin.
pub struct Store {
    db: Database,
}

impl Store {
    /// Opens (and on first use creates) the database.
    pub async fn open() -> Result<Self, StoreError> {
        let factory = Factory::new().map_err(err("IndexedDB is unavailable"))?;
        let mut request = factory
            .open(DB_NAME, Some(DB_VERSION))
            .map_err(err("opening"))?;
        request.on_upgrade_needed(|event| {
            let Ok(db) = event.database() else { return };
            for name in [STATES, APPS] {
                if !db.store_names().iter().any(|n| n == name) {
                    let _ = db.create_object_store(name, ObjectStoreParams::new());
                }
            }
        });
        let db = request.await.map_err(err("opening"))?;
        Ok(Store { db })
    }

    /// The state saved for `env`, if any.
    pub async fn load_state(&self, env: &str) -> Result<Option<SavedState>, StoreError> {
        let tx = self
            .db
            .transaction(&[STATES], TransactionMode::ReadOnly)
            .map_err(err("reading"))?;
        let store = tx.object_store(STATES).map_err(err("reading"))?;
        let value = store
            .get(JsValue::from_str(env))
            .map_err(err("reading the state"))?
            .await
            .map_err(err("reading the state"))?;
        let Some(value) = value else { return Ok(None) };
        let field = |k: &str| js_sys::Reflect::get(&value, &k.into()).unwrap_or(JsValue::UNDEFINED);
        let (Some(image_version), Ok(blob)) = (
            field("imageVersion").as_string(),
            field("blob").dyn_into::<web_sys::Blob>(),
        ) else {
            return Ok(None);
        };
        Ok(Some(SavedState {
            image_version,
            blob,
        }))
    }

    /// Saves `state` for `env` and, in the same transaction, puts or removes
    /// one app's archive. Returns the stored state's size in bytes.
    pub async fn save(
        &self,
        env: &str,
        image_version: &str,
        state: &js_sys::ArrayBuffer,
        app: Option<(&str, Option<StoredApp<'_>>)>,
    ) -> Result<f64, StoreError> {
        let blob = compress(state).await?;
        let size = blob.size();
        let record = js_sys::Object::new();
        let set = |k: &str, v: &JsValue| js_sys::Reflect::set(&record, &k.into(), v);
        let _ = set("imageVersion", &image_version.into());
        let _ = set("blob", &blob);
        let _ = set("rawSize", &state.byte_length().into());
        let _ = set("savedAt", &js_sys::Date::now().into());
        let tx = self
            .db
            .transaction(&[STATES, APPS], TransactionMode::ReadWrite)
            .map_err(err("saving"))?;
        let states = tx.object_store(STATES).map_err(err("saving"))?;
        states
            .put(&record, Some(&JsValue::from_str(env)))
            .map_err(err("saving the state"))?
            .await
            .map_err(err("saving the state"))?;
        if let Some((name, archive)) = app {
            let apps = tx.object_store(APPS).map_err(err("saving"))?;
            let key = JsValue::from_str(&format!("{env}/{name}"));
            match archive {
                Some(stored) => {
                    let value = js_sys::Object::new();
                    let archive = js_sys::Uint8Array::from(stored.archive);
                    let _ = js_sys::Reflect::set(&value, &"archive".into(), &archive);
                    if let Some(config) = stored.config {
                        let _ = js_sys::Reflect::set(&value, &"config".into(), &config.into());
                    }
                    apps.put(&value, Some(&key))
                        .map_err(err("saving the app"))?
                        .await
                        .map_err(err("saving the app"))?;
                }
                None => {
                    apps.delete(key)
                        .map_err(err("removing the app"))?
                        .await
                        .map_err(err("removing the app"))?;
                }
            }
        }
        tx.commit()
            .map_err(err("committing"))?
            .await
            .map_err(err("committing"))?;
        Ok(size)
    }

    /// Forgets the saved state of `env` (it would not restore).
    pub async fn drop_state(&self, env: &str) -> Result<(), StoreError> {
        let tx = self
            .db
            .transaction(&[STATES], TransactionMode::ReadWrite)
            .map_err(err("removing"))?;
        let store = tx.object_store(STATES).map_err(err("removing"))?;
        store
            .delete(JsValue::from_str(env))
            .map_err(err("removing"))?
            .await
            .map_err(err("removing"))?;
        tx.commit()
            .map_err(err("committing"))?
            .await
            .map_err(err("committing"))?;
        Ok(())
    }

    /// Every stored app of `env`, as (name, archive, settings JSON).
    pub async fn apps(
        &self,
        env: &str,
    ) -> Result<Vec<(String, Vec<u8>, Option<String>)>, StoreError> {
        let tx = self
            .db
            .transaction(&[APPS], TransactionMode::ReadOnly)
            .map_err(err("reading"))?;
        let store = tx.object_store(APPS).map_err(err("reading"))?;
        let keys = store
            .get_all_keys(None, None)
            .map_err(err("listing apps"))?
            .await
            .map_err(err("listing apps"))?;
        let prefix = format!("{env}/");
        let mut out = Vec::new();
        for key in keys {
            let Some(name) = key
                .as_string()
                .and_then(|k| k.strip_prefix(&prefix).map(str::to_owned))
            else {
                continue;
            };
            let value = store
                .get(key)
                .map_err(err("reading an app"))?
                .await
                .map_err(err("reading an app"))?;
            let Some(value) = value else { continue };
            // Records of earlier versions are the bare archive.
            if value.is_instance_of::<js_sys::Uint8Array>() {
                out.push((name, js_sys::Uint8Array::new(&value).to_vec(), None));
            } else {
                let get = |k: &str| js_sys::Reflect::get(&value, &k.into()).unwrap_or_default();
                let archive = js_sys::Uint8Array::new(&get("archive")).to_vec();
                out.push((name, archive, get("config").as_string()));
            }
        }
        Ok(out)
    }
}

/// One app as kept for replaying it: its archive and its settings.
#[derive(Debug, Clone, Copy)]
pub struct StoredApp<'a> {
    /// The tar archive deployed.
    pub archive: &'a [u8],
    /// Its settings JSON (`X-Appserver-Config`), if any were given.
    pub config: Option<&'a str>,
}

/// Pipes `input` through a (de)compression stream into a Blob.
async fn pipe(input: &web_sys::Blob, transform: &JsValue) -> Result<web_sys::Blob, StoreError> {
    let stream = input.stream();
    let piped = stream.pipe_through(transform.unchecked_ref());
    let response = web_sys::Response::new_with_opt_readable_stream(Some(&piped))
        .map_err(js_err("streaming"))?;
    let blob = JsFuture::from(response.blob().map_err(js_err("streaming"))?)
        .await
        .map_err(js_err("streaming"))?;
    Ok(blob.unchecked_into())
}

/// gzip-compresses a state with the browser's own compressor.
async fn compress(state: &js_sys::ArrayBuffer) -> Result<web_sys::Blob, StoreError> {
    let parts = js_sys::Array::of1(state);
    let blob = web_sys::Blob::new_with_buffer_source_sequence(&parts).map_err(js_err("packing"))?;
    pipe(&blob, &CompressionStream::new("gzip").into()).await
}

/// Unpacks a stored state for the engine.
pub async fn decompress(blob: &web_sys::Blob) -> Result<js_sys::ArrayBuffer, StoreError> {
    let raw = pipe(blob, &DecompressionStream::new("gzip").into()).await?;
    let buffer = JsFuture::from(raw.array_buffer())
        .await
        .map_err(js_err("unpacking"))?;
    Ok(buffer.unchecked_into())
}
