//! The runtime model package: a directory with `manifest.json`, `config.json`, `model.safetensors`
//! (weights already in runtime layout) and optionally `tokenizer.json`.

use std::collections::BTreeMap;
#[cfg(not(target_arch = "wasm32"))]
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::ModelConfig;
use crate::model::Model;
use crate::weights::{AlignedBuf, WeightStore};
use crate::{Error, Result};

pub const FORMAT: &str = "blockffn-runtime";
pub const FORMAT_VERSION: u32 = 1;
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const CONFIG_FILE: &str = "config.json";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const MANIFEST_FILE: &str = "manifest.json";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileEntry {
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub format_version: u32,
    /// Dtype of the weight matrices ("f32", "f16", "bf16", "q8"); norms and routers are always f32
    /// (in "q8", so are matrices whose rows are not a multiple of 32 weights).
    pub dtype: String,
    pub files: BTreeMap<String, FileEntry>,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub converter: Option<String>,
}

impl Manifest {
    pub fn parse(text: &str) -> Result<Self> {
        let m: Manifest = serde_json::from_str(text)
            .map_err(|e| Error::InvalidCheckpoint(format!("manifest.json is not a valid manifest: {e}")))?;
        if m.format != FORMAT {
            return Err(Error::InvalidCheckpoint(format!(
                "manifest.json has format \"{}\", expected \"{FORMAT}\"",
                m.format
            )));
        }
        if m.format_version != FORMAT_VERSION {
            return Err(Error::InvalidCheckpoint(format!(
                "manifest.json has format_version {}, this engine reads version {FORMAT_VERSION}; re-convert the model",
                m.format_version
            )));
        }
        for required in [WEIGHTS_FILE, CONFIG_FILE] {
            if !m.files.contains_key(required) {
                return Err(Error::InvalidCheckpoint(format!("manifest.json does not list {required}")));
            }
        }
        Ok(m)
    }

    /// Checks `bytes` against the manifest entry of `name`.
    pub fn verify(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let e = self
            .files
            .get(name)
            .ok_or_else(|| Error::IntegrityMismatch(format!("{name} is not listed in manifest.json")))?;
        if e.size != bytes.len() as u64 {
            return Err(Error::IntegrityMismatch(format!(
                "{name} is {} bytes but manifest.json records {}; the file is truncated or replaced — download or convert it again",
                bytes.len(),
                e.size
            )));
        }
        let got = sha256_hex(bytes);
        if got != e.sha256 {
            return Err(Error::IntegrityMismatch(format!(
                "{name} has sha256 {got} but manifest.json records {}; the file is corrupted — download or convert it again",
                e.sha256
            )));
        }
        Ok(())
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// A loaded package: the model and, when the package has one, its tokenizer JSON.
pub struct Package {
    pub manifest: Manifest,
    pub model: Model,
    pub tokenizer_json: Option<Vec<u8>>,
}

/// Builds a model from already verified parts. `weights` is the safetensors file, already in an
/// aligned buffer (the one copy the weights ever get).
pub fn model_from_parts(config_json: &str, weights: AlignedBuf) -> Result<Model> {
    let config = ModelConfig::from_json_str(config_json)?;
    let store = WeightStore::from_buf(weights)?;
    Model::new(config, store)
}

#[cfg(not(target_arch = "wasm32"))]
fn read_small(dir: &Path, name: &str) -> Result<Vec<u8>> {
    let p = dir.join(name);
    std::fs::read(&p).map_err(|e| Error::io(p, e))
}

/// Loads a converted model directory, verifying every listed file against the manifest.
/// Peak memory is the weight file's size plus small buffers: the file is read straight into the
/// buffer the model computes from.
#[cfg(not(target_arch = "wasm32"))]
pub fn load_dir(dir: &Path) -> Result<Package> {
    use std::io::Read;

    let manifest_path = dir.join(MANIFEST_FILE);
    if !manifest_path.exists() {
        let hint = if dir.join("pytorch_model.bin").exists() || dir.join("model.safetensors.index.json").exists() {
            " — this looks like a Hugging Face checkpoint; convert it first with `blockffn convert HF_DIR OUT_DIR`"
        } else {
            ""
        };
        if !dir.is_dir() {
            return Err(Error::io(dir, std::io::Error::new(std::io::ErrorKind::NotFound, "no such model directory")));
        }
        return Err(Error::InvalidCheckpoint(format!("{} has no manifest.json{hint}", dir.display())));
    }
    let manifest = Manifest::parse(&String::from_utf8_lossy(&read_small(dir, MANIFEST_FILE)?))?;

    let config_bytes = read_small(dir, CONFIG_FILE)?;
    manifest.verify(CONFIG_FILE, &config_bytes)?;
    let config_json =
        String::from_utf8(config_bytes).map_err(|_| Error::InvalidConfig("config.json is not UTF-8".into()))?;

    let tokenizer_json = if manifest.files.contains_key(TOKENIZER_FILE) {
        let t = read_small(dir, TOKENIZER_FILE)?;
        manifest.verify(TOKENIZER_FILE, &t)?;
        Some(t)
    } else {
        None
    };

    let wpath = dir.join(WEIGHTS_FILE);
    let mut f = std::fs::File::open(&wpath).map_err(|e| Error::io(&wpath, e))?;
    let len = f.metadata().map_err(|e| Error::io(&wpath, e))?.len();
    let expected = manifest.files[WEIGHTS_FILE].size;
    if len != expected {
        return Err(Error::IntegrityMismatch(format!(
            "{WEIGHTS_FILE} is {len} bytes but manifest.json records {expected}; the file is truncated or replaced — download or convert it again"
        )));
    }
    let mut buf =
        AlignedBuf::zeroed(usize::try_from(len).map_err(|_| Error::OutOfMemory("weights too large".into()))?)?;
    f.read_exact(buf.as_bytes_mut()).map_err(|e| Error::io(&wpath, e))?;
    manifest.verify(WEIGHTS_FILE, buf.as_bytes())?;
    let model = model_from_parts(&config_json, buf)?;
    Ok(Package { manifest, model, tokenizer_json })
}
