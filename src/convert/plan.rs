//! Matching a checkpoint's index against the config's tensor table, before any weight is read:
//! every expected tensor present with its exact shape, nothing unexplained left over. A hostile
//! checkpoint's extra or oversized tensors are refused here, so their storages are never
//! inflated.

use std::collections::HashMap;

use super::encode::Target;
use super::raw::{Dtype, TensorMeta};
use super::OutDtype;
use crate::config::ModelConfig;
use crate::layout::{tensor_table, TensorEntry, Transform};
use crate::tensor::Q8_BLOCK;
use crate::{Error, Result};

const EMBED: &str = "model.embed_tokens.weight";
const HEAD: &str = "lm_head.weight";

/// One runtime tensor to produce.
pub(super) struct Planned {
    pub entry: TensorEntry,
    /// Index of its source in the checkpoint's index.
    pub source: usize,
    pub target: Target,
}

pub(super) struct Plan {
    pub tensors: Vec<Planned>,
    /// With tied embeddings, a stored `lm_head.weight` (source index) must equal the embedding
    /// (source index); the shapes are checked here, the bytes by the caller.
    pub tied_head: Option<(usize, usize)>,
}

/// Matches `src` against the table for `cfg`.
///
/// With `runtime_source` the source is a runtime package (already in runtime names, shapes and
/// layout), so tensors are looked up by their runtime name and copied without re-layout.
pub(super) fn plan(cfg: &ModelConfig, src: &[TensorMeta], runtime_source: bool, dtype: OutDtype) -> Result<Plan> {
    let mut table = tensor_table(cfg);
    if runtime_source {
        for e in table.iter_mut() {
            e.hf_name = e.rt_name.clone();
            e.hf_shape = e.rt_shape.clone();
            e.transform = Transform::Identity;
        }
    }
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    for (i, m) in src.iter().enumerate() {
        // Non-persistent rotary buffers that some exports include: derived data, not weights.
        if !m.name.ends_with(".rotary_emb.inv_freq") {
            by_name.insert(&m.name, i);
        }
    }
    let tied_head = if cfg.tie_word_embeddings { tied_head(src, &mut by_name)? } else { None };
    let mut tensors = Vec::with_capacity(table.len());
    for entry in table {
        let source = by_name.remove(entry.hf_name.as_str()).ok_or_else(|| missing(&entry))?;
        if src[source].shape != entry.hf_shape {
            return Err(Error::InvalidCheckpoint(format!(
                "tensor `{}` has shape {:?}, but config.json implies {:?}",
                entry.hf_name, src[source].shape, entry.hf_shape
            )));
        }
        let target = target(&entry, dtype);
        tensors.push(Planned { entry, source, target });
    }
    if let Some(extra) = by_name.keys().min() {
        return Err(Error::InvalidCheckpoint(format!(
            "unexpected tensor `{extra}` that config.json does not account for (wrong config, or an unsupported variant)"
        )));
    }
    Ok(Plan { tensors, tied_head })
}

fn tied_mismatch() -> Error {
    Error::InvalidCheckpoint(
        "config says tie_word_embeddings=true but lm_head.weight differs from model.embed_tokens.weight".into(),
    )
}

/// Takes a stored `lm_head.weight` out of the match (tied models have none) and checks that it
/// can equal the embedding.
fn tied_head(src: &[TensorMeta], by_name: &mut HashMap<&str, usize>) -> Result<Option<(usize, usize)>> {
    let Some(head) = by_name.remove(HEAD) else { return Ok(None) };
    match by_name.get(EMBED) {
        Some(&embed) if src[embed].shape == src[head].shape => Ok(Some((embed, head))),
        _ => Err(tied_mismatch()),
    }
}

/// Errors unless the two tensors' bytes are equal (the [`Plan::tied_head`] check).
pub(super) fn check_tied(embed: &super::raw::RawTensor, head: &super::raw::RawTensor) -> Result<()> {
    if embed.data == head.data && embed.shape == head.shape {
        Ok(())
    } else {
        Err(tied_mismatch())
    }
}

fn missing(e: &TensorEntry) -> Error {
    let hint = if e.hf_name == HEAD { " (or set tie_word_embeddings=true)" } else { "" };
    Error::InvalidCheckpoint(format!(
        "missing tensor `{}` (shape {:?}) required by config.json{hint}",
        e.hf_name, e.hf_shape
    ))
}

/// q8 for every matrix whose rows are a whole number of blocks; norms and routers stay f32.
fn target(e: &TensorEntry, dtype: OutDtype) -> Target {
    let cols = e.rt_shape.last().copied().unwrap_or(1);
    if dtype == OutDtype::Q8 && !e.keep_f32 && e.rt_shape.len() >= 2 && cols.is_multiple_of(Q8_BLOCK) {
        return Target::Q8;
    }
    Target::Plain(match (e.keep_f32, dtype) {
        (true, _) | (false, OutDtype::F32) | (false, OutDtype::Q8) => Dtype::F32,
        (false, OutDtype::F16) => Dtype::F16,
        (false, OutDtype::BF16) => Dtype::BF16,
    })
}
