//! Validating source tensors against the config and writing the runtime package.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use half::{bf16, f16};
use safetensors::tensor::TensorView;

use super::raw::{Dtype, RawTensor};
use super::read_source;
use crate::config::ModelConfig;
use crate::layout::{tensor_table, TensorEntry, Transform};
use crate::package::{self, FileEntry, Manifest};
use crate::tokenizer::Tokenizer;
use crate::weights::{quantize_q8, Q8_BLOCK, Q8_SCALES_SUFFIX};
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
}

/// Optional companion files copied verbatim when present.
const COPIED: [&str; 4] =
    ["tokenizer.json", "tokenizer_config.json", "generation_config.json", "special_tokens_map.json"];

fn to_f32(t: &RawTensor) -> Vec<f32> {
    match t.dtype {
        Dtype::F32 => t.data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        Dtype::F16 => t.data.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        Dtype::BF16 => t.data.chunks_exact(2).map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        _ => unreachable!("source dtypes are checked when read"),
    }
}

fn relayout(v: Vec<f32>, e: &TensorEntry) -> Vec<f32> {
    match e.transform {
        Transform::Identity => v,
        Transform::TransposeDown => {
            // [H, N] -> [N, H]
            let (h, n) = (e.hf_shape[0], e.hf_shape[1]);
            let mut out = vec![0.0; v.len()];
            for r in 0..h {
                for c in 0..n {
                    out[c * h + r] = v[r * n + c];
                }
            }
            out
        }
        Transform::TransposeDownBlocks { experts } => {
            // [Ne, H, de] -> [Ne, de, H]
            let (h, de) = (e.hf_shape[1], e.hf_shape[2]);
            let mut out = vec![0.0; v.len()];
            for x in 0..experts {
                let base = x * h * de;
                for r in 0..h {
                    for j in 0..de {
                        out[base + j * h + r] = v[base + r * de + j];
                    }
                }
            }
            out
        }
    }
}

/// Encodes f32 values in the output dtype; returns the bytes and the largest rounding error.
fn encode(name: &str, v: &[f32], dtype: Dtype) -> Result<(Vec<u8>, f32)> {
    let mut err = 0.0f32;
    let bytes = match dtype {
        Dtype::F32 => bytemuck::cast_slice(v).to_vec(),
        Dtype::F16 => {
            let mut out = Vec::with_capacity(v.len() * 2);
            for &x in v {
                let y = f16::from_f32(x);
                if y.is_infinite() && x.is_finite() {
                    return Err(Error::InvalidCheckpoint(format!(
                        "tensor `{name}` holds {x}, beyond the f16 range; convert with --dtype bf16 or f32"
                    )));
                }
                err = err.max((y.to_f32() - x).abs());
                out.extend_from_slice(&y.to_le_bytes());
            }
            out
        }
        Dtype::BF16 => {
            let mut out = Vec::with_capacity(v.len() * 2);
            for &x in v {
                let y = bf16::from_f32(x);
                err = err.max((y.to_f32() - x).abs());
                out.extend_from_slice(&y.to_le_bytes());
            }
            out
        }
        _ => unreachable!(),
    };
    Ok((bytes, err))
}

/// Quantizes a runtime-layout matrix to q8; returns the int8 bytes, the f32 scale bytes and the
/// largest |dequantized − source|.
fn encode_q8(name: &str, v: &[f32]) -> Result<(Vec<u8>, Vec<u8>, f32)> {
    let (q, scales) = quantize_q8(v).ok_or_else(|| {
        Error::InvalidCheckpoint(format!("tensor `{name}` holds a NaN or infinite weight, which q8 cannot store"))
    })?;
    let mut err = 0.0f32;
    for (i, (&w, &x)) in v.iter().zip(&q).enumerate() {
        err = err.max((scales[i / Q8_BLOCK] * x as f32 - w).abs());
    }
    Ok((bytemuck::cast_slice(&q).to_vec(), bytemuck::cast_slice(&scales).to_vec(), err))
}

/// Matches source tensors to the config's table: every expected tensor present with its exact
/// shape, nothing unexplained left over.
///
/// With `runtime_source` the source is a runtime package (already in runtime names, shapes and
/// layout), so tensors are looked up by their runtime name and copied without re-layout.
fn match_tensors(
    cfg: &ModelConfig,
    src: Vec<(String, RawTensor)>,
    runtime_source: bool,
) -> Result<Vec<(TensorEntry, RawTensor)>> {
    let mut table = tensor_table(cfg);
    if runtime_source {
        for e in table.iter_mut() {
            e.hf_name = e.rt_name.clone();
            e.hf_shape = e.rt_shape.clone();
            e.transform = crate::layout::Transform::Identity;
        }
    }
    let mut by_name: HashMap<String, RawTensor> = HashMap::new();
    for (name, t) in src {
        // Non-persistent rotary buffers that some exports include: derived data, not weights.
        if name.ends_with(".rotary_emb.inv_freq") {
            continue;
        }
        by_name.insert(name, t);
    }
    if cfg.tie_word_embeddings {
        if let Some(head) = by_name.remove("lm_head.weight") {
            let same =
                by_name.get("model.embed_tokens.weight").is_some_and(|e| e.data == head.data && e.shape == head.shape);
            if !same {
                return Err(Error::InvalidCheckpoint(
                    "config says tie_word_embeddings=true but lm_head.weight differs from model.embed_tokens.weight"
                        .into(),
                ));
            }
        }
    }
    let mut out = Vec::with_capacity(table.len());
    for e in table {
        let t = by_name.remove(&e.hf_name).ok_or_else(|| {
            let hint = if e.hf_name == "lm_head.weight" { " (or set tie_word_embeddings=true)" } else { "" };
            Error::InvalidCheckpoint(format!(
                "missing tensor `{}` (shape {:?}) required by config.json{hint}",
                e.hf_name, e.hf_shape
            ))
        })?;
        if t.shape != e.hf_shape {
            return Err(Error::InvalidCheckpoint(format!(
                "tensor `{}` has shape {:?}, but config.json implies {:?}",
                e.hf_name, t.shape, e.hf_shape
            )));
        }
        out.push((e, t));
    }
    if let Some(extra) = by_name.keys().min() {
        return Err(Error::InvalidCheckpoint(format!(
            "unexpected tensor `{extra}` that config.json does not account for (wrong config, or an unsupported variant)"
        )));
    }
    Ok(out)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<FileEntry> {
    std::fs::write(path, bytes).map_err(|e| Error::io(path, e))?;
    Ok(FileEntry { size: bytes.len() as u64, sha256: package::sha256_hex(bytes) })
}

/// Converts the Hugging Face checkpoint in `hf_dir` into a runtime package in `out_dir`.
pub fn convert_dir(
    hf_dir: &Path,
    out_dir: &Path,
    dtype: OutDtype,
    mut progress: impl FnMut(Progress),
) -> Result<ConvertReport> {
    let cfg_path = hf_dir.join("config.json");
    let config_bytes = std::fs::read(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
    let config_text =
        std::str::from_utf8(&config_bytes).map_err(|_| Error::InvalidConfig("config.json is not UTF-8".into()))?;
    let cfg = ModelConfig::from_json_str(config_text)?;

    let tokenizer = match std::fs::read(hf_dir.join("tokenizer.json")) {
        Ok(b) => {
            Tokenizer::from_bytes(&b, cfg.bos_token_id)?;
            Some(b)
        }
        Err(_) => None,
    };

    // A runtime package (it has a manifest) can be re-encoded to another dtype, e.g. the embedded
    // f16 demo model to f32 or q8; its q8 packages cannot (int8 is not a source format).
    let runtime_source = hf_dir.join(package::MANIFEST_FILE).is_file();
    let (source, tensors) = read_source(hf_dir)?;
    let matched = match_tensors(&cfg, tensors, runtime_source)?;
    let tensor_count = matched.len();
    let total: u64 = matched.iter().map(|(_, t)| t.data.len() as u64).sum();

    let mut encoded: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::with_capacity(matched.len());
    let (mut done, mut params, mut max_err) = (0u64, 0u64, 0f32);
    for (e, t) in matched {
        progress(Progress { done_bytes: done, total_bytes: total, tensor: &e.hf_name });
        done += t.data.len() as u64;
        params += t.numel() as u64;
        let v = relayout(to_f32(&t), &e);
        drop(t);
        let cols = e.rt_shape.last().copied().unwrap_or(1);
        if dtype == OutDtype::Q8 && !e.keep_f32 && e.rt_shape.len() >= 2 && cols.is_multiple_of(Q8_BLOCK) {
            let (q, scales, err) = encode_q8(&e.hf_name, &v)?;
            max_err = max_err.max(err);
            let mut scale_shape = e.rt_shape.clone();
            *scale_shape.last_mut().expect("rank ≥ 2") = cols / Q8_BLOCK;
            encoded.push((format!("{}{Q8_SCALES_SUFFIX}", e.rt_name), Dtype::F32, scale_shape, scales));
            encoded.push((e.rt_name, Dtype::I8, e.rt_shape, q));
            continue;
        }
        let out_dtype = match (e.keep_f32, dtype) {
            (true, _) | (false, OutDtype::F32) | (false, OutDtype::Q8) => Dtype::F32,
            (false, OutDtype::F16) => Dtype::F16,
            (false, OutDtype::BF16) => Dtype::BF16,
        };
        let (bytes, err) = encode(&e.hf_name, &v, out_dtype)?;
        max_err = max_err.max(err);
        encoded.push((e.rt_name, out_dtype, e.rt_shape, bytes));
    }
    progress(Progress { done_bytes: total, total_bytes: total, tensor: "" });

    if out_dir.exists() && std::fs::canonicalize(out_dir).ok() == std::fs::canonicalize(hf_dir).ok() {
        return Err(Error::InvalidInput("the output directory must differ from the input directory".into()));
    }
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    // Remove a stale manifest first: a package is complete only once its new manifest is written.
    let manifest_path = out_dir.join(package::MANIFEST_FILE);
    let _ = std::fs::remove_file(&manifest_path);

    let views: Vec<(String, TensorView)> = encoded
        .iter()
        .map(|(n, d, s, b)| {
            TensorView::new(*d, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| Error::InvalidCheckpoint(format!("{n}: {e}")))
        })
        .collect::<Result<_>>()?;
    let mut meta = HashMap::new();
    // One key only: safetensors writes metadata in hash order, and the output must be reproducible.
    meta.insert("format".to_string(), format!("{}/{}", package::FORMAT, package::FORMAT_VERSION));
    let weights = safetensors::serialize(views, Some(meta))
        .map_err(|e| Error::InvalidCheckpoint(format!("cannot serialize weights: {e}")))?;
    drop(encoded);

    let mut files = BTreeMap::new();
    files.insert(package::WEIGHTS_FILE.to_string(), write_file(&out_dir.join(package::WEIGHTS_FILE), &weights)?);
    files.insert(package::CONFIG_FILE.to_string(), write_file(&out_dir.join(package::CONFIG_FILE), &config_bytes)?);
    if let Some(t) = &tokenizer {
        files.insert("tokenizer.json".to_string(), write_file(&out_dir.join("tokenizer.json"), t)?);
    }
    for name in COPIED.iter().skip(1) {
        if let Ok(b) = std::fs::read(hf_dir.join(name)) {
            files.insert(name.to_string(), write_file(&out_dir.join(name), &b)?);
        }
    }
    let manifest = Manifest {
        format: package::FORMAT.into(),
        format_version: package::FORMAT_VERSION,
        dtype: dtype.name().into(),
        files,
        source: Some(source.clone()),
        converter: Some(format!("blockffn {}", env!("CARGO_PKG_VERSION"))),
    };
    let text = serde_json::to_string_pretty(&manifest).expect("manifest serializes");
    std::fs::write(&manifest_path, text).map_err(|e| Error::io(&manifest_path, e))?;

    Ok(ConvertReport {
        source,
        tensors: tensor_count,
        parameters: params,
        dtype: dtype.name(),
        weight_bytes: weights.len() as u64,
        max_abs_rounding_error: max_err,
    })
}
