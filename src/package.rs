//! The runtime model package: a directory with `manifest.json`, `config.json`, `model.safetensors`
//! (weights already in runtime layout) and optionally `tokenizer.json`.

use std::collections::BTreeMap;
#[cfg(not(target_arch = "wasm32"))]
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::ModelConfig;
use crate::model::Model;
use crate::spec::eagle::{EagleHead, EAGLE_CONFIG, EAGLE_WEIGHTS, MAX_EAGLE_CONFIG_BYTES};
#[cfg(not(target_arch = "wasm32"))]
use crate::sink::{fill_from, HostSink, WeightSink};
use crate::tensor::DType;
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

/// Largest `manifest.json` accepted (a real one is a few hundred bytes).
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;
/// Largest `config.json` accepted (a real one is 1–2 KB).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// Largest `tokenizer.json` accepted (122,753-token vocabularies are ~5 MB).
pub const MAX_TOKENIZER_BYTES: u64 = 64 << 20;
/// Largest draft-head weights file accepted (the demo's is 1.6 MB; a head is one decoder layer).
pub const MAX_DRAFT_HEAD_BYTES: u64 = 1 << 30;

impl Manifest {
    pub fn parse(text: &str) -> Result<Self> {
        if text.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(Error::InvalidCheckpoint(format!(
                "manifest.json is {} bytes, more than the {MAX_MANIFEST_BYTES} a manifest can be; it is not a blockffn manifest",
                text.len()
            )));
        }
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut m: Manifest = serde_json::from_str(text)
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
        for (name, e) in m.files.iter_mut() {
            // Hex digests compare case-insensitively; stored lower-case like sha256_hex writes them.
            if e.sha256.len() != 64 || !e.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Error::InvalidCheckpoint(format!(
                    "manifest.json: the sha256 of {name} must be 64 hex digits, got \"{}\"",
                    e.sha256.escape_debug()
                )));
            }
            e.sha256.make_ascii_lowercase();
        }
        if !["f32", "f16", "bf16", "q8"].contains(&m.dtype.as_str()) {
            return Err(Error::InvalidCheckpoint(format!(
                "manifest.json has dtype \"{}\" (runtime packages are f32, f16, bf16 or q8)",
                m.dtype.escape_debug()
            )));
        }
        Ok(m)
    }

    /// Checks `bytes` against the manifest entry of `name`.
    pub fn verify(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.verify_digest(name, bytes.len() as u64, &sha256_hex(bytes))
    }

    /// Checks a file's size and SHA-256 (lowercase hex) against the manifest entry of `name`.
    pub fn verify_digest(&self, name: &str, size: u64, got: &str) -> Result<()> {
        let e = self
            .files
            .get(name)
            .ok_or_else(|| Error::IntegrityMismatch(format!("{name} is not listed in manifest.json")))?;
        if e.size != size {
            return Err(Error::IntegrityMismatch(format!(
                "{name} is {size} bytes but manifest.json records {}; the file is truncated or replaced — download or convert it again",
                e.size
            )));
        }
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

/// Checks the manifest's `dtype` against the stored weight matrices, so a package reports what it
/// really holds: every matrix not kept in f32 (norms, routers) must be stored in that dtype; in q8,
/// matrices whose rows are not whole 32-weight blocks stay f32 and at least one must be int8.
pub fn check_dtype(model: &Model, dtype: &str) -> Result<()> {
    let stored = model.matrix_dtypes();
    let ok = match dtype {
        "f32" => stored.iter().all(|d| *d == DType::F32),
        "f16" => stored.iter().all(|d| *d == DType::F16),
        "bf16" => stored.iter().all(|d| *d == DType::BF16),
        "q8" => stored.iter().all(|d| matches!(d, DType::I8 | DType::F32)) && stored.contains(&DType::I8),
        _ => false,
    };
    if ok {
        return Ok(());
    }
    let mut names: Vec<&str> = stored.iter().map(|d| d.name()).collect();
    names.sort_unstable();
    names.dedup();
    Err(Error::InvalidCheckpoint(format!(
        "manifest.json says dtype \"{dtype}\" but the weight matrices are stored as {}; the package was altered — convert it again",
        names.join(" and ")
    )))
}

/// Reads one of the package's small files: at most `cap` bytes (the manifest's record for it, or
/// the manifest's own cap).
#[cfg(not(target_arch = "wasm32"))]
fn read_small(dir: &Path, name: &str, cap: u64) -> Result<Vec<u8>> {
    let bytes = read_capped(&dir.join(name), cap)?;
    if bytes.len() as u64 <= cap {
        return Ok(bytes);
    }
    Err(if name == MANIFEST_FILE {
        Error::InvalidCheckpoint(format!("{name} is larger than the {cap} bytes a manifest can be; it is not a blockffn package"))
    } else {
        Error::IntegrityMismatch(format!(
            "{name} is larger than the {cap} bytes manifest.json records; the file is replaced or corrupted — download or convert it again"
        ))
    })
}

/// Reads a file of at most `cap` bytes that must be a regular file; see [`read_capped`].
#[cfg(not(target_arch = "wasm32"))]
pub fn read_bounded(path: &Path, cap: u64) -> Result<Vec<u8>> {
    let bytes = read_capped(path, cap)?;
    if bytes.len() as u64 > cap {
        return Err(Error::InvalidInput(format!("{} is larger than the {cap} bytes accepted here", path.display())));
    }
    Ok(bytes)
}

/// Reads at most `cap + 1` bytes of a regular file (never a FIFO or a device, which could block or
/// never end): one byte past the cap tells a longer file, and a file growing underneath cannot make
/// the read unbounded.
#[cfg(not(target_arch = "wasm32"))]
fn read_capped(path: &Path, cap: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let f = open_regular(path)?;
    let mut bytes = Vec::new();
    f.take(cap.saturating_add(1)).read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
    Ok(bytes)
}

/// Opens `path` for reading only if it is a regular file. `metadata` is checked before opening
/// (opening a FIFO blocks until a writer appears) and again on the open handle.
#[cfg(not(target_arch = "wasm32"))]
pub fn open_regular(path: &Path) -> Result<std::fs::File> {
    let not_regular =
        || Error::InvalidCheckpoint(format!("{} is not a regular file (a device, FIFO or folder)", path.display()));
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(not_regular());
    }
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    if !f.metadata().map_err(|e| Error::io(path, e))?.is_file() {
        return Err(not_regular());
    }
    Ok(f)
}

/// Loads a converted model directory, verifying every listed file against the manifest.
/// Peak memory is the weight file's size plus small buffers: the file is streamed through a
/// [`crate::sink::WeightSink`] straight into the buffer the model computes from, hashed on the way.
#[cfg(not(target_arch = "wasm32"))]
pub fn load_dir(dir: &Path) -> Result<Package> {
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
    let manifest = Manifest::parse(&String::from_utf8_lossy(&read_small(dir, MANIFEST_FILE, MAX_MANIFEST_BYTES)?))?;
    // Small files are read no further than the manifest's size (+1 to see a longer file).
    let listed = |name: &str, cap: u64| manifest.files.get(name).map_or(0, |e| e.size).min(cap);

    let config_bytes = read_small(dir, CONFIG_FILE, listed(CONFIG_FILE, MAX_CONFIG_BYTES))?;
    manifest.verify(CONFIG_FILE, &config_bytes)?;
    let config_json =
        String::from_utf8(config_bytes).map_err(|_| Error::InvalidConfig("config.json is not UTF-8".into()))?;

    let tokenizer_json = if manifest.files.contains_key(TOKENIZER_FILE) {
        let t = read_small(dir, TOKENIZER_FILE, listed(TOKENIZER_FILE, MAX_TOKENIZER_BYTES))?;
        manifest.verify(TOKENIZER_FILE, &t)?;
        Some(t)
    } else {
        None
    };

    let weights = read_listed_weights(dir, &manifest, WEIGHTS_FILE, u64::MAX)?;
    let mut model = model_from_parts(&config_json, weights)?;
    check_dtype(&model, &manifest.dtype)?;
    if has_draft_head(&manifest)? {
        let json = read_small(dir, EAGLE_CONFIG, listed(EAGLE_CONFIG, MAX_EAGLE_CONFIG_BYTES))?;
        manifest.verify(EAGLE_CONFIG, &json)?;
        let json = String::from_utf8(json).map_err(|_| Error::InvalidCheckpoint(format!("{EAGLE_CONFIG} is not UTF-8")))?;
        let weights = read_listed_weights(dir, &manifest, EAGLE_WEIGHTS, MAX_DRAFT_HEAD_BYTES)?;
        model.set_draft_head(Some(EagleHead::new(&json, weights, model.config())?));
    }
    Ok(Package { manifest, model, tokenizer_json })
}

/// Streams the weights file `name` (at most `cap` bytes) into its final aligned buffer, hashed on
/// the way, after checking its size against the manifest: one copy, one pass.
#[cfg(not(target_arch = "wasm32"))]
fn read_listed_weights(dir: &Path, manifest: &Manifest, name: &str, cap: u64) -> Result<AlignedBuf> {
    let path = dir.join(name);
    let mut f = open_regular(&path)?;
    let len = f.metadata().map_err(|e| Error::io(&path, e))?.len();
    let expected = manifest.files[name].size;
    if len != expected || len > cap {
        return Err(Error::IntegrityMismatch(format!(
            "{name} is {len} bytes but manifest.json records {expected}; the file is truncated or replaced — download or convert it again"
        )));
    }
    let mut sink = HostSink::new(usize::try_from(len).map_err(|_| Error::OutOfMemory(format!("{name} is too large")))?)?;
    fill_from(&mut sink, &mut f, 8 << 20).map_err(|e| Error::io(&path, e))?;
    manifest.verify_digest(name, len, &sink.sha256())?;
    Ok(sink.into_buf())
}

/// True when the manifest lists a draft head; its two files come together or not at all.
pub fn has_draft_head(manifest: &Manifest) -> Result<bool> {
    match (manifest.files.contains_key(EAGLE_CONFIG), manifest.files.contains_key(EAGLE_WEIGHTS)) {
        (true, true) => Ok(true),
        (false, false) => Ok(false),
        (has_config, _) => Err(Error::InvalidCheckpoint(format!(
            "manifest.json lists {} without {}: a draft head needs both files",
            if has_config { EAGLE_CONFIG } else { EAGLE_WEIGHTS },
            if has_config { EAGLE_WEIGHTS } else { EAGLE_CONFIG },
        ))),
    }
}
