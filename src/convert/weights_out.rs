//! Writing `model.safetensors` one tensor at a time.
//!
//! The header depends only on names, dtypes and shapes, so it is laid out first, exactly as
//! `safetensors::serialize` would (tensors sorted by descending dtype, then name; JSON padded with
//! spaces to a multiple of 8), and each tensor's bytes are written at its offset as soon as they
//! are converted. Peak memory is one tensor, not the whole output (plus an in-memory copy of it).
//! The sha256 for the manifest is computed by reading the finished file back.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom, Write};

use safetensors::tensor::{Metadata, TensorInfo};
use sha2::{Digest, Sha256};

use super::files::{OutputDir, TempFile};
use super::raw::Dtype;
use crate::package::{self, FileEntry};
use crate::{Error, Result};

/// The safetensors crate's limit on a header.
const MAX_HEADER_BYTES: usize = 100_000_000;

/// A tensor of the output file.
#[derive(Debug, Clone)]
pub(super) struct OutTensor {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
}

/// The output file's header and where each tensor's bytes go.
pub(super) struct WeightsLayout {
    /// The 8-byte header length followed by the padded JSON header.
    header: Vec<u8>,
    /// Name -> (absolute file offset, byte length).
    ranges: HashMap<String, (u64, u64)>,
    /// Length of the whole file.
    total: u64,
}

fn too_large(what: impl std::fmt::Display) -> Error {
    Error::InvalidCheckpoint(format!("cannot lay out the weights file: {what}"))
}

impl WeightsLayout {
    pub fn new(mut tensors: Vec<OutTensor>, meta: HashMap<String, String>) -> Result<Self> {
        tensors.sort_by(|a, b| b.dtype.cmp(&a.dtype).then(a.name.cmp(&b.name)));
        let mut infos = Vec::with_capacity(tensors.len());
        let mut offset = 0usize;
        for t in tensors {
            let len =
                t.shape.iter().try_fold(t.dtype.bitsize() / 8, |a, &d| a.checked_mul(d)).ok_or_else(|| {
                    too_large(format_args!("tensor `{}` of shape {:?} is too large", t.name, t.shape))
                })?;
            let end = offset.checked_add(len).ok_or_else(|| too_large("the total size overflows"))?;
            infos.push((t.name, TensorInfo { dtype: t.dtype, shape: t.shape, data_offsets: (offset, end) }));
            offset = end;
        }
        let spans: Vec<(String, (usize, usize))> = infos.iter().map(|(n, i)| (n.clone(), i.data_offsets)).collect();
        let md = Metadata::new(Some(meta), infos).map_err(too_large)?;
        let mut json = serde_json::to_string(&md).map_err(too_large)?.into_bytes();
        json.resize(json.len().next_multiple_of(8), b' ');
        if json.len() > MAX_HEADER_BYTES {
            return Err(too_large(format_args!("its header of {} bytes exceeds the format's limit", json.len())));
        }
        let mut header = (json.len() as u64).to_le_bytes().to_vec();
        header.extend_from_slice(&json);
        let data_start = header.len() as u64;
        let ranges = spans.into_iter().map(|(n, (s, e))| (n, (data_start + s as u64, (e - s) as u64))).collect();
        Ok(WeightsLayout { header, ranges, total: data_start + offset as u64 })
    }

    pub fn total_bytes(&self) -> u64 {
        self.total
    }
}

/// The weights file being written (a temporary file until [`TempFile::persist`]).
pub(super) struct WeightsWriter {
    tmp: TempFile,
    layout: WeightsLayout,
    /// Names written so far.
    written: HashSet<String>,
}

impl WeightsWriter {
    pub fn create(out: &OutputDir, layout: WeightsLayout) -> Result<Self> {
        let mut tmp = out.temp(package::WEIGHTS_FILE)?;
        let target = tmp.target.clone();
        let werr = |e| Error::io_write(&target, e);
        tmp.file.set_len(layout.total).map_err(werr)?;
        tmp.file.write_all(&layout.header).map_err(werr)?;
        Ok(WeightsWriter { tmp, layout, written: HashSet::new() })
    }

    /// Writes tensor `name`'s bytes at its place in the file.
    pub fn put(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        let &(at, len) = self
            .layout
            .ranges
            .get(name)
            .ok_or_else(|| Error::InvalidInput(format!("tensor `{name}` is not part of the weights layout")))?;
        if bytes.len() as u64 != len || !self.written.insert(name.to_owned()) {
            return Err(Error::InvalidInput(format!(
                "tensor `{name}`: {} bytes for a {len}-byte slot (or written twice)",
                bytes.len()
            )));
        }
        let target = &self.tmp.target;
        self.tmp.file.seek(SeekFrom::Start(at)).map_err(|e| Error::io_write(target, e))?;
        self.tmp.file.write_all(bytes).map_err(|e| Error::io_write(target, e))
    }

    /// Checks that every tensor was written and hashes the file; returns it (not yet renamed into
    /// place) and its manifest entry.
    pub fn finish(mut self) -> Result<(TempFile, FileEntry)> {
        if let Some(missing) = self.layout.ranges.keys().find(|n| !self.written.contains(*n)) {
            return Err(Error::InvalidInput(format!("tensor `{missing}` was never written")));
        }
        let target = self.tmp.target.clone();
        self.tmp.file.flush().map_err(|e| Error::io_write(&target, e))?;
        self.tmp.file.seek(SeekFrom::Start(0)).map_err(|e| Error::io(&target, e))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let n = self.tmp.file.read(&mut buf).map_err(|e| Error::io(&target, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            size += n as u64;
        }
        if size != self.layout.total {
            return Err(Error::io_write(
                &target,
                std::io::Error::other(format!("wrote {size} bytes, expected {}", self.layout.total)),
            ));
        }
        let sha256 = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
        Ok((self.tmp, FileEntry { size, sha256 }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::tensor::TensorView;
    use std::path::Path;

    /// Tensors of every output dtype, names out of order, one empty: the streamed file must be
    /// byte-identical to `safetensors::serialize` of the same tensors.
    #[test]
    fn streamed_file_equals_safetensors_serialize() {
        let specs: Vec<(&str, Dtype, Vec<usize>)> = vec![
            ("z.weight", Dtype::F32, vec![3, 4]),
            ("a.weight", Dtype::I8, vec![2, 32]),
            ("a.weight.q8_scales", Dtype::F32, vec![2, 1]),
            ("m.bias", Dtype::F16, vec![5]),
            ("b.norm", Dtype::BF16, vec![7]),
            ("empty", Dtype::F32, vec![0, 3]),
        ];
        let data: Vec<Vec<u8>> = specs
            .iter()
            .enumerate()
            .map(|(k, (_, d, s))| {
                let n = s.iter().product::<usize>() * d.bitsize() / 8;
                (0..n).map(|i| (i * 7 + k * 13) as u8).collect()
            })
            .collect();
        let mut meta = HashMap::new();
        meta.insert("format".to_string(), "blockffn-runtime/1".to_string());
        let views: Vec<(String, TensorView)> = specs
            .iter()
            .zip(&data)
            .map(|((n, d, s), b)| (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        let want = safetensors::serialize(views, Some(meta.clone())).unwrap();

        let dir = std::env::temp_dir().join(format!("blockffn_wout_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let out = OutputDir::prepare(&dir, Path::new("/nonexistent-input")).unwrap();
        let outs =
            specs.iter().map(|(n, d, s)| OutTensor { name: n.to_string(), dtype: *d, shape: s.clone() }).collect();
        let layout = WeightsLayout::new(outs, meta).unwrap();
        assert_eq!(layout.total_bytes(), want.len() as u64);
        let mut w = WeightsWriter::create(&out, layout).unwrap();
        // Written in reverse, and a wrong size or unknown name is refused.
        assert!(w.put("z.weight", &[0; 3]).is_err());
        assert!(w.put("nope", &[]).is_err());
        for ((n, _, _), b) in specs.iter().zip(&data).rev() {
            w.put(n, b).unwrap();
        }
        assert!(w.put("m.bias", &data[3]).is_err(), "written twice");
        let (tmp, entry) = w.finish().unwrap();
        tmp.persist().unwrap();
        let got = std::fs::read(dir.join(package::WEIGHTS_FILE)).unwrap();
        assert!(got == want, "streamed file differs from safetensors::serialize");
        assert_eq!(entry, FileEntry { size: want.len() as u64, sha256: package::sha256_hex(&want) });
        // Only the final file is left (the temporary one was renamed).
        let names: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(names, vec![package::WEIGHTS_FILE.to_string()]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_tensor_left_unwritten_is_an_error_and_leaves_no_file() {
        let dir = std::env::temp_dir().join(format!("blockffn_wout2_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let out = OutputDir::prepare(&dir, Path::new("/nonexistent-input")).unwrap();
        let outs = vec![OutTensor { name: "a".into(), dtype: Dtype::F32, shape: vec![2] }];
        let w = WeightsWriter::create(&out, WeightsLayout::new(outs, HashMap::new()).unwrap()).unwrap();
        assert!(matches!(w.finish(), Err(Error::InvalidInput(m)) if m.contains("never written")));
        out.abandon();
        assert!(!dir.exists(), "the folder this conversion created is removed again when empty");
    }
}
