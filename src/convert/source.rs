//! Reading the tensors of a Hugging Face checkpoint directory, in two steps: [`Checkpoint::open`]
//! indexes every tensor (name, dtype, shape) from the zip directories, pickles and safetensors
//! headers, without reading any weight; [`Checkpoint::read_each`] then reads the tensors asked
//! for, one at a time, so the caller can check the index against the config first and never
//! holds more than one tensor (plus a shared storage) in memory.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use safetensors::tensor::Metadata;
use safetensors::SafeTensorError;

use super::files::open_regular;
use super::raw::{Dtype, RawTensor, TensorMeta};
use super::torch_bin::TorchArchive;
use crate::{Error, Result};

/// The safetensors crate's own limit on a header.
const MAX_SAFETENSORS_HEADER: u64 = 100_000_000;

/// The weight files in `dir` whose names satisfy `pred`, sorted. Directories are skipped; a
/// symbolic link is refused (see [`super::files`]).
fn list(dir: &Path, pred: impl Fn(&str) -> bool) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut v = Vec::new();
    for entry in rd.filter_map(|e| e.ok()) {
        if !entry.file_name().to_str().is_some_and(&pred) {
            continue;
        }
        let path = entry.path();
        let ft = entry.file_type().map_err(|e| Error::io(&path, e))?;
        if ft.is_symlink() {
            let why = open_regular(&path)?.err().unwrap_or_default();
            return Err(Error::InvalidInput(format!("{}: {why}", path.display())));
        }
        if ft.is_file() {
            v.push(path);
        }
    }
    v.sort();
    Ok(v)
}

/// A `*.safetensors` file: its header, and the open file to read tensors from.
struct SafetensorsFile {
    path: PathBuf,
    file: File,
    data_start: u64,
    /// Sorted by name, with each tensor's byte range in the data section.
    tensors: Vec<(TensorMeta, (usize, usize))>,
}

impl SafetensorsFile {
    fn open(path: &Path) -> Result<Self> {
        let invalid = |e: SafeTensorError| {
            Error::InvalidCheckpoint(format!("{} is not a valid safetensors file (truncated?): {e}", path.display()))
        };
        let (mut file, meta) =
            open_regular(path)?.map_err(|why| Error::InvalidInput(format!("{}: {why}", path.display())))?;
        let len = meta.len();
        let mut n8 = [0u8; 8];
        if len < 8 {
            return Err(invalid(SafeTensorError::HeaderTooSmall));
        }
        file.read_exact(&mut n8).map_err(|e| Error::io(path, e))?;
        let n = u64::from_le_bytes(n8);
        if n > MAX_SAFETENSORS_HEADER {
            return Err(invalid(SafeTensorError::HeaderTooLarge));
        }
        if 8 + n > len {
            return Err(invalid(SafeTensorError::InvalidHeaderLength));
        }
        let mut header = vec![0u8; n as usize];
        file.read_exact(&mut header).map_err(|e| Error::io(path, e))?;
        let text = std::str::from_utf8(&header).map_err(|e| invalid(SafeTensorError::InvalidHeader(e)))?;
        // Metadata's Deserialize validates the offsets (contiguous, sizes matching the shapes).
        let md: Metadata =
            serde_json::from_str(text).map_err(|e| invalid(SafeTensorError::InvalidHeaderDeserialization(e)))?;
        if (md.data_len() as u64).checked_add(8 + n) != Some(len) {
            return Err(invalid(SafeTensorError::MetadataIncompleteBuffer));
        }
        let mut tensors: Vec<(TensorMeta, (usize, usize))> = md
            .tensors()
            .into_iter()
            .map(|(name, info)| (TensorMeta { name, dtype: info.dtype, shape: info.shape.clone() }, info.data_offsets))
            .collect();
        tensors.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        Ok(SafetensorsFile { path: path.to_path_buf(), file, data_start: 8 + n, tensors })
    }

    fn read(&mut self, i: usize) -> Result<RawTensor> {
        let (meta, (begin, end)) = &self.tensors[i];
        let len = end - begin;
        let mut data = Vec::new();
        data.try_reserve_exact(len)
            .map_err(|_| Error::OutOfMemory(format!("cannot allocate {len} bytes for tensor `{}`", meta.name)))?;
        let path = &self.path;
        self.file.seek(SeekFrom::Start(self.data_start + *begin as u64)).map_err(|e| Error::io(path, e))?;
        (&mut self.file).take(len as u64).read_to_end(&mut data).map_err(|e| Error::io(path, e))?;
        if data.len() != len {
            return Err(Error::InvalidCheckpoint(format!(
                "{}: tensor `{}` is cut short (the file changed while being read?)",
                path.display(),
                meta.name
            )));
        }
        Ok(RawTensor { dtype: meta.dtype, shape: meta.shape.clone(), data })
    }
}

enum SourceFile {
    Torch(TorchArchive<BufReader<File>>),
    Safetensors(SafetensorsFile),
}

/// The weight files of a checkpoint directory, indexed.
pub struct Checkpoint {
    description: String,
    index: Vec<TensorMeta>,
    files: Vec<SourceFile>,
    /// Index of each file's first tensor in `index` (a file's tensors are contiguous there).
    file_start: Vec<usize>,
}

impl Checkpoint {
    /// Indexes the checkpoint in `dir`: `pytorch_model*.bin` if present, else `*.safetensors`.
    /// Duplicate names and dtypes other than F32/F16/BF16 are refused here, before any weight is
    /// read.
    pub fn open(dir: &Path) -> Result<Self> {
        let bins = list(dir, |n| n.starts_with("pytorch_model") && n.ends_with(".bin"))?;
        let paths = if !bins.is_empty() {
            bins
        } else {
            let st = list(dir, |n| n.ends_with(".safetensors") && n != crate::spec::eagle::EAGLE_WEIGHTS)?;
            if st.is_empty() {
                return Err(Error::InvalidCheckpoint(format!(
                    "{} has neither pytorch_model.bin nor *.safetensors weights",
                    dir.display()
                )));
            }
            st
        };
        let mut ck =
            Checkpoint { description: String::new(), index: Vec::new(), files: Vec::new(), file_start: Vec::new() };
        let mut seen = HashSet::new();
        for path in &paths {
            let (file, metas) = open_source_file(path)?;
            ck.file_start.push(ck.index.len());
            for m in metas {
                check_indexed(&m, path, &mut seen)?;
                ck.index.push(m);
            }
            ck.files.push(file);
        }
        let names: Vec<String> =
            paths.iter().filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned())).collect();
        ck.description = names.join(", ");
        Ok(ck)
    }

    /// The weight files' names, comma-separated.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Every tensor: per file in the file's order (a `.bin`'s dict order, a `.safetensors`'s
    /// name order), files in name order.
    pub fn tensors(&self) -> &[TensorMeta] {
        &self.index
    }

    /// Reads the tensors at `order` (indices into [`Checkpoint::tensors`]) one at a time and hands
    /// each to `f`: file by file, and within a file in `order`'s order.
    pub fn read_each(&mut self, order: &[usize], mut f: impl FnMut(usize, RawTensor) -> Result<()>) -> Result<()> {
        if let Some(&bad) = order.iter().find(|&&i| i >= self.index.len()) {
            return Err(Error::InvalidInput(format!(
                "tensor index {bad} is out of range ({} tensors)",
                self.index.len()
            )));
        }
        for (fi, file) in self.files.iter_mut().enumerate() {
            let start = self.file_start[fi];
            let end = self.file_start.get(fi + 1).copied().unwrap_or(self.index.len());
            let local: Vec<usize> = order.iter().filter(|&&i| (start..end).contains(&i)).map(|&i| i - start).collect();
            let index = &self.index;
            let mut hand_over = |li: usize, t: RawTensor| {
                let g = start + li;
                check_length(&index[g].name, &t)?;
                f(g, t)
            };
            match file {
                SourceFile::Torch(a) => a.read_each(&local, &mut hand_over)?,
                SourceFile::Safetensors(s) => {
                    for li in local {
                        let t = s.read(li)?;
                        hand_over(li, t)?;
                    }
                }
            }
        }
        Ok(())
    }
}

fn open_source_file(path: &Path) -> Result<(SourceFile, Vec<TensorMeta>)> {
    if path.extension().is_some_and(|e| e == "bin") {
        let a = TorchArchive::open_file(path)?;
        let metas = a.tensors().collect();
        Ok((SourceFile::Torch(a), metas))
    } else {
        let s = SafetensorsFile::open(path)?;
        let metas = s.tensors.iter().map(|(m, _)| m.clone()).collect();
        Ok((SourceFile::Safetensors(s), metas))
    }
}

fn check_indexed(m: &TensorMeta, path: &Path, seen: &mut HashSet<String>) -> Result<()> {
    if !seen.insert(m.name.clone()) {
        return Err(Error::InvalidCheckpoint(format!("tensor `{}` appears twice (in {})", m.name, path.display())));
    }
    match m.dtype {
        Dtype::F32 | Dtype::F16 | Dtype::BF16 => Ok(()),
        other => Err(Error::InvalidCheckpoint(format!(
            "tensor `{}` has dtype {other:?}; only F32, F16 and BF16 weights are supported",
            m.name
        ))),
    }
}

fn check_length(name: &str, t: &RawTensor) -> Result<()> {
    if t.data.len() != t.numel() * t.dtype.bitsize() / 8 {
        return Err(Error::InvalidCheckpoint(format!(
            "tensor `{name}` has {} bytes for shape {:?}",
            t.data.len(),
            t.shape
        )));
    }
    Ok(())
}

/// Reads every tensor of the checkpoint in `dir` (see [`Checkpoint`]), in index order. Returns the
/// source description and the tensors; duplicate names are refused.
pub fn read_source(dir: &Path) -> Result<(String, Vec<(String, RawTensor)>)> {
    let mut ck = Checkpoint::open(dir)?;
    let order: Vec<usize> = (0..ck.index.len()).collect();
    let mut tensors = Vec::with_capacity(order.len());
    ck.read_each(&order, |_, t| {
        tensors.push(t);
        Ok(())
    })?;
    let names = std::mem::take(&mut ck.index).into_iter().map(|m| m.name);
    Ok((ck.description, names.zip(tensors).collect()))
}
