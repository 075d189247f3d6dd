//! Validating source tensors against the config and writing the runtime package.
//!
//! Order of work, so that bad input costs little: read the small files (config, tokenizer,
//! companions; bounded, regular files only) → index the checkpoint (no weights read) → match the
//! index against the config's table (names, shapes) → convert and write one tensor at a time into
//! a temporary weights file → rename every file into place, the manifest last.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::encode::{encode_tensor, Target};
use super::files::{is_regular_file, read_input, InputFile, OutputDir};
use super::plan::{check_tied, plan, Plan};
use super::raw::{Dtype, RawTensor};
use super::source::Checkpoint;
use super::weights_out::{OutTensor, WeightsLayout, WeightsWriter};
use crate::config::ModelConfig;
use crate::package::{self, FileEntry, Manifest};
use crate::tensor::Q8_BLOCK;
use crate::tokenizer::Tokenizer;
use crate::weights::Q8_SCALES_SUFFIX;
use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutDtype {
    F32,
    F16,
    BF16,
    /// Block-quantized int8 (see [`crate::weights`]): every matrix whose rows are a whole number of
    /// 32-weight blocks; other matrices, norms and routers stay f32.
    Q8,
}

impl OutDtype {
    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(OutDtype::F32),
            "f16" => Ok(OutDtype::F16),
            "bf16" => Ok(OutDtype::BF16),
            "q8" => Ok(OutDtype::Q8),
            _ => Err(Error::InvalidInput(format!("unknown dtype \"{s}\" (choose f32, f16, bf16 or q8)"))),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            OutDtype::F32 => "f32",
            OutDtype::F16 => "f16",
            OutDtype::BF16 => "bf16",
            OutDtype::Q8 => "q8",
        }
    }
}

/// Progress of a conversion, for a progress bar.
#[derive(Debug, Clone)]
pub struct Progress<'a> {
    pub done_bytes: u64,
    pub total_bytes: u64,
    pub tensor: &'a str,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ConvertReport {
    pub source: String,
    pub tensors: usize,
    pub parameters: u64,
    pub dtype: &'static str,
    pub weight_bytes: u64,
    /// Largest |converted − source| over all weights (0 for an exact conversion).
    pub max_abs_rounding_error: f32,
    /// Companion files that were present but not copied, and why. [`convert_dir`] has already
    /// printed each to stderr as `warning: …`.
    pub warnings: Vec<String>,
}

/// Largest `config.json` read (a real one is 1–2 KB).
const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// Largest `tokenizer.json` read (the runtime loader's limit; 122,753-token vocabularies are ~5 MB).
const MAX_TOKENIZER_BYTES: u64 = 64 << 20;
/// Largest companion file copied (`tokenizer_config.json` with a chat template is ~200 KB).
const MAX_COMPANION_BYTES: u64 = 16 << 20;

/// Optional JSON files copied verbatim when present, regular and valid JSON.
const COMPANIONS: [&str; 3] = ["tokenizer_config.json", "generation_config.json", "special_tokens_map.json"];

/// The small files of the input folder, read and checked before any weight.
struct Inputs {
    config_bytes: Vec<u8>,
    cfg: ModelConfig,
    tokenizer: Option<Vec<u8>>,
    companions: Vec<(&'static str, Vec<u8>)>,
    /// A runtime package's draft head (`eagle.json`, `eagle.safetensors`), copied as it is.
    draft_head: Option<(Vec<u8>, Vec<u8>)>,
    warnings: Vec<String>,
}

impl Inputs {
    fn read(dir: &Path) -> Result<Self> {
        let config_bytes = read_config(dir)?;
        let config_text =
            std::str::from_utf8(&config_bytes).map_err(|_| Error::InvalidConfig("config.json is not UTF-8".into()))?;
        let cfg = ModelConfig::from_json_str(config_text)?;
        let tokenizer = read_tokenizer(dir, &cfg)?;
        let mut warnings = Vec::new();
        let mut companions = Vec::new();
        for name in COMPANIONS {
            match read_companion(dir, name) {
                Ok(Some(bytes)) => companions.push((name, bytes)),
                Ok(None) => {}
                Err(why) => {
                    let w = format!("skipped {name}: {why}; it was not copied into the package");
                    eprintln!("warning: {w}");
                    warnings.push(w);
                }
            }
        }
        let draft_head = read_draft_head(dir, &cfg)?;
        Ok(Inputs { config_bytes, cfg, tokenizer, companions, draft_head, warnings })
    }
}

fn read_config(dir: &Path) -> Result<Vec<u8>> {
    let path = dir.join(package::CONFIG_FILE);
    match read_input(&path, MAX_CONFIG_BYTES)? {
        InputFile::Bytes(b) => Ok(b),
        InputFile::Missing(e) => Err(Error::io(&path, e)),
        InputFile::Refused(why) => Err(Error::InvalidInput(format!("{}: {why}", path.display()))),
    }
}

/// `tokenizer.json` is optional, but one that is present must be readable and valid: a package
/// silently missing its tokenizer only fails later, at the first prompt.
fn read_tokenizer(dir: &Path, cfg: &ModelConfig) -> Result<Option<Vec<u8>>> {
    let path = dir.join(package::TOKENIZER_FILE);
    match read_input(&path, MAX_TOKENIZER_BYTES)? {
        InputFile::Missing(_) => Ok(None),
        InputFile::Refused(why) => {
            Err(Error::InvalidInput(format!("{}: {why} (remove it to convert without a tokenizer)", path.display())))
        }
        InputFile::Bytes(b) => {
            Tokenizer::from_bytes(&b, cfg.bos_token_id)?;
            Ok(Some(b))
        }
    }
}

/// Both draft-head files when the folder has them (checked against the model's config: a package
/// never ships a head it cannot load), none when it has neither.
fn read_draft_head(dir: &Path, cfg: &ModelConfig) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
    use crate::spec::eagle::{EagleHead, EAGLE_CONFIG, EAGLE_WEIGHTS, MAX_EAGLE_CONFIG_BYTES};
    let json = read_input(&dir.join(EAGLE_CONFIG), MAX_EAGLE_CONFIG_BYTES)?;
    let weights = read_input(&dir.join(EAGLE_WEIGHTS), package::MAX_DRAFT_HEAD_BYTES)?;
    let (json, weights) = match (json, weights) {
        (InputFile::Missing(_), InputFile::Missing(_)) => return Ok(None),
        (InputFile::Bytes(j), InputFile::Bytes(w)) => (j, w),
        (InputFile::Refused(why), _) | (_, InputFile::Refused(why)) => {
            return Err(Error::InvalidInput(format!("the draft head in {}: {why}", dir.display())))
        }
        _ => {
            return Err(Error::InvalidInput(format!(
                "{} has only one of {EAGLE_CONFIG} and {EAGLE_WEIGHTS}: a draft head needs both (or remove it)",
                dir.display()
            )))
        }
    };
    let text = std::str::from_utf8(&json).map_err(|_| Error::InvalidInput(format!("{EAGLE_CONFIG} is not UTF-8")))?;
    let mut buf = crate::weights::AlignedBuf::zeroed(weights.len())?;
    buf.as_bytes_mut().copy_from_slice(&weights);
    EagleHead::new(text, buf, cfg)?;
    Ok(Some((json, weights)))
}

/// A companion file's bytes if it is there and fit to copy; `Err` says why it is skipped.
fn read_companion(dir: &Path, name: &str) -> std::result::Result<Option<Vec<u8>>, String> {
    let bytes = match read_input(&dir.join(name), MAX_COMPANION_BYTES) {
        Ok(InputFile::Missing(_)) => return Ok(None),
        Ok(InputFile::Refused(why)) => return Err(why),
        Ok(InputFile::Bytes(b)) => b,
        Err(e) => return Err(e.to_string()),
    };
    serde_json::from_slice::<serde_json::Value>(&bytes).map_err(|e| format!("it is not valid JSON ({e})"))?;
    Ok(Some(bytes))
}

/// Converts the Hugging Face checkpoint in `hf_dir` into a runtime package in `out_dir`.
pub fn convert_dir(
    hf_dir: &Path,
    out_dir: &Path,
    dtype: OutDtype,
    mut progress: impl FnMut(Progress),
) -> Result<ConvertReport> {
    let inputs = Inputs::read(hf_dir)?;
    // A runtime package (it has a manifest) can be re-encoded to another dtype, e.g. the embedded
    // f16 demo model to f32 or q8; its q8 packages cannot (int8 is not a source format).
    let runtime_source = is_regular_file(&hf_dir.join(package::MANIFEST_FILE));
    let mut ckpt = Checkpoint::open(hf_dir)?;
    let plan = plan(&inputs.cfg, ckpt.tensors(), runtime_source, dtype)?;
    if let Some((embed, head)) = plan.tied_head {
        check_tied_head(&mut ckpt, embed, head)?;
    }
    let out = OutputDir::prepare(out_dir, hf_dir)?;
    match write_package(&out, &inputs, &mut ckpt, &plan, dtype, &mut progress) {
        Ok(report) => Ok(report),
        Err(e) => {
            out.abandon();
            Err(e)
        }
    }
}

fn check_tied_head(ckpt: &mut Checkpoint, embed: usize, head: usize) -> Result<()> {
    let mut got: Vec<(usize, RawTensor)> = Vec::with_capacity(2);
    ckpt.read_each(&[embed, head], |i, t| {
        got.push((i, t));
        Ok(())
    })?;
    let find = |i: usize| got.iter().find(|(j, _)| *j == i).map(|(_, t)| t);
    match (find(embed), find(head)) {
        (Some(e), Some(h)) => check_tied(e, h),
        _ => Err(Error::InvalidInput("tied embedding check read no tensors".into())),
    }
}

/// The runtime tensors a planned tensor becomes.
fn outputs_of(p: &super::plan::Planned) -> Vec<OutTensor> {
    let e = &p.entry;
    match p.target {
        Target::Plain(dtype) => vec![OutTensor { name: e.rt_name.clone(), dtype, shape: e.rt_shape.clone() }],
        Target::Q8 => {
            let mut scale_shape = e.rt_shape.clone();
            if let Some(last) = scale_shape.last_mut() {
                *last /= Q8_BLOCK;
            }
            vec![
                OutTensor { name: format!("{}{Q8_SCALES_SUFFIX}", e.rt_name), dtype: Dtype::F32, shape: scale_shape },
                OutTensor { name: e.rt_name.clone(), dtype: Dtype::I8, shape: e.rt_shape.clone() },
            ]
        }
    }
}

struct Converted {
    parameters: u64,
    max_err: f32,
}

/// Converts every planned tensor into `w`, one at a time.
fn convert_tensors(
    ckpt: &mut Checkpoint,
    plan: &Plan,
    w: &mut WeightsWriter,
    progress: &mut impl FnMut(Progress),
) -> Result<Converted> {
    let src_bytes = |i: usize| ckpt.tensors()[i].byte_len().unwrap_or(0);
    let total: u64 = plan.tensors.iter().map(|p| src_bytes(p.source)).sum();
    let by_source: HashMap<usize, usize> = plan.tensors.iter().enumerate().map(|(k, p)| (p.source, k)).collect();
    let order: Vec<usize> = plan.tensors.iter().map(|p| p.source).collect();
    let (mut done, mut parameters, mut max_err) = (0u64, 0u64, 0f32);
    ckpt.read_each(&order, |source, t| {
        let p = &plan.tensors[by_source[&source]];
        progress(Progress { done_bytes: done, total_bytes: total, tensor: &p.entry.hf_name });
        done += t.data.len() as u64;
        parameters += t.numel() as u64;
        let enc = encode_tensor(&p.entry, t, p.target)?;
        max_err = max_err.max(enc.max_err);
        if let Some(scales) = &enc.scales {
            w.put(&format!("{}{Q8_SCALES_SUFFIX}", p.entry.rt_name), scales)?;
        }
        w.put(&p.entry.rt_name, &enc.data)
    })?;
    progress(Progress { done_bytes: total, total_bytes: total, tensor: "" });
    Ok(Converted { parameters, max_err })
}

fn write_package(
    out: &OutputDir,
    inputs: &Inputs,
    ckpt: &mut Checkpoint,
    plan: &Plan,
    dtype: OutDtype,
    progress: &mut impl FnMut(Progress),
) -> Result<ConvertReport> {
    let mut meta = HashMap::new();
    // One key only: safetensors writes metadata in hash order, and the output must be reproducible.
    meta.insert("format".to_string(), format!("{}/{}", package::FORMAT, package::FORMAT_VERSION));
    let layout = WeightsLayout::new(plan.tensors.iter().flat_map(outputs_of).collect(), meta)?;
    let weight_bytes = layout.total_bytes();
    let mut w = WeightsWriter::create(out, layout)?;
    let converted = convert_tensors(ckpt, plan, &mut w, progress)?;
    let (weights_tmp, weights_entry) = w.finish()?;

    // Remove a stale manifest first: a package is complete only once its new manifest is written.
    out.remove(package::MANIFEST_FILE)?;
    weights_tmp.persist()?;
    let mut files = BTreeMap::new();
    files.insert(package::WEIGHTS_FILE.to_string(), weights_entry);
    let mut publish = |name: &str, bytes: &[u8]| -> Result<()> {
        out.write(name, bytes)?;
        files.insert(name.to_string(), FileEntry { size: bytes.len() as u64, sha256: package::sha256_hex(bytes) });
        Ok(())
    };
    publish(package::CONFIG_FILE, &inputs.config_bytes)?;
    if let Some(t) = &inputs.tokenizer {
        publish(package::TOKENIZER_FILE, t)?;
    }
    for (name, bytes) in &inputs.companions {
        publish(name, bytes)?;
    }
    if let Some((json, weights)) = &inputs.draft_head {
        publish(crate::spec::eagle::EAGLE_CONFIG, json)?;
        publish(crate::spec::eagle::EAGLE_WEIGHTS, weights)?;
    }
    let manifest = Manifest {
        format: package::FORMAT.into(),
        format_version: package::FORMAT_VERSION,
        dtype: dtype.name().into(),
        files,
        source: Some(ckpt.description().to_string()),
        converter: Some(format!("blockffn {}", env!("CARGO_PKG_VERSION"))),
    };
    let text = serde_json::to_string_pretty(&manifest)
        .map_err(|e| Error::InvalidInput(format!("cannot serialize the manifest: {e}")))?;
    out.write(package::MANIFEST_FILE, text.as_bytes())?;

    Ok(ConvertReport {
        source: ckpt.description().to_string(),
        tensors: plan.tensors.len(),
        parameters: converted.parameters,
        dtype: dtype.name(),
        weight_bytes,
        max_abs_rounding_error: converted.max_err,
        warnings: inputs.warnings.clone(),
    })
}
