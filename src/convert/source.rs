//! Reading the tensors of a Hugging Face checkpoint directory.

use std::path::{Path, PathBuf};

use super::raw::{Dtype, RawTensor};
use super::torch_bin::read_pytorch_bin;
use crate::{Error, Result};

fn list(dir: &Path, pred: impl Fn(&str) -> bool) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.file_name().and_then(|n| n.to_str()).is_some_and(&pred))
        .collect();
    v.sort();
    Ok(v)
}

type Reader = fn(&Path) -> Result<Vec<(String, RawTensor)>>;

fn read_safetensors(path: &Path) -> Result<Vec<(String, RawTensor)>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| {
        Error::InvalidCheckpoint(format!("{} is not a valid safetensors file (truncated?): {e}", path.display()))
    })?;
    let mut out = Vec::new();
    for (name, view) in st.iter() {
        out.push((
            name.to_string(),
            RawTensor { dtype: view.dtype(), shape: view.shape().to_vec(), data: view.data().to_vec() },
        ));
    }
    // Keep a stable order (safetensors stores by offset; names are what we match on).
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Reads every tensor of the checkpoint in `dir`: `pytorch_model*.bin` if present, else
/// `*.safetensors`. Returns the source description and the tensors; duplicate names are refused.
pub fn read_source(dir: &Path) -> Result<(String, Vec<(String, RawTensor)>)> {
    let bins = list(dir, |n| n.starts_with("pytorch_model") && n.ends_with(".bin"))?;
    let (files, reader): (Vec<PathBuf>, Reader) = if !bins.is_empty() {
        (bins, read_pytorch_bin)
    } else {
        let st = list(dir, |n| n.ends_with(".safetensors"))?;
        if st.is_empty() {
            return Err(Error::InvalidCheckpoint(format!(
                "{} has neither pytorch_model.bin nor *.safetensors weights",
                dir.display()
            )));
        }
        (st, read_safetensors)
    };
    let mut all: Vec<(String, RawTensor)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for f in &files {
        for (name, t) in reader(f)? {
            if !seen.insert(name.clone()) {
                return Err(Error::InvalidCheckpoint(format!("tensor `{name}` appears twice (in {})", f.display())));
            }
            match t.dtype {
                Dtype::F32 | Dtype::F16 | Dtype::BF16 => {}
                other => {
                    return Err(Error::InvalidCheckpoint(format!(
                        "tensor `{name}` has dtype {other:?}; only F32, F16 and BF16 weights are supported"
                    )))
                }
            }
            if t.data.len() != t.numel() * t.dtype.bitsize() / 8 {
                return Err(Error::InvalidCheckpoint(format!(
                    "tensor `{name}` has {} bytes for shape {:?}",
                    t.data.len(),
                    t.shape
                )));
            }
            all.push((name, t));
        }
    }
    let names: Vec<String> =
        files.iter().filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned())).collect();
    Ok((names.join(", "), all))
}
