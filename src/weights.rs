//! The runtime weight file: one safetensors file held in a single 8-byte-aligned buffer.
//!
//! Loading is one copy of the file's bytes into that buffer; tensors are typed views into it
//! (the converter wrote them already in runtime layout and sorted by alignment), so weights are
//! never held twice and never re-laid-out at load time.

use std::collections::HashMap;

use half::{bf16, f16};
use serde::Deserialize;

use crate::{Error, Result};

/// Element type of a stored tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    F16,
    BF16,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        match s {
            "F32" => Some(DType::F32),
            "F16" => Some(DType::F16),
            "BF16" => Some(DType::BF16),
            _ => None,
        }
    }
}

/// A byte buffer whose start is 8-byte aligned, so any f32/f16 tensor at an aligned offset can be
/// viewed in place.
pub struct AlignedBuf {
    words: Vec<u64>,
    len: usize,
}

impl AlignedBuf {
    /// Allocates `len` zeroed bytes, failing cleanly instead of aborting when memory is short.
    pub fn zeroed(len: usize) -> Result<Self> {
        let n = len.div_ceil(8);
        let mut words = Vec::new();
        words.try_reserve_exact(n).map_err(|_| {
            Error::OutOfMemory(format!("cannot allocate {len} bytes for the weights; use a smaller model or dtype"))
        })?;
        words.resize(n, 0);
        Ok(AlignedBuf { words, len })
    }
    pub fn as_bytes(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.words)[..self.len]
    }
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut(&mut self.words)[..self.len]
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// Byte range in the whole file buffer.
    pub start: usize,
    pub end: usize,
}

impl TensorInfo {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A row-major matrix view `[rows, cols]` over stored weights of any supported dtype.
#[derive(Clone, Copy)]
pub enum Mat<'a> {
    F32 { data: &'a [f32], rows: usize, cols: usize },
    F16 { data: &'a [f16], rows: usize, cols: usize },
    BF16 { data: &'a [bf16], rows: usize, cols: usize },
}

impl<'a> Mat<'a> {
    pub fn rows(&self) -> usize {
        match *self {
            Mat::F32 { rows, .. } | Mat::F16 { rows, .. } | Mat::BF16 { rows, .. } => rows,
        }
    }
    pub fn cols(&self) -> usize {
        match *self {
            Mat::F32 { cols, .. } | Mat::F16 { cols, .. } | Mat::BF16 { cols, .. } => cols,
        }
    }
    /// Rows `r0..r1` as a matrix (contiguous, no copy).
    pub fn row_range(&self, r0: usize, r1: usize) -> Mat<'a> {
        match *self {
            Mat::F32 { data, cols, .. } => Mat::F32 { data: &data[r0 * cols..r1 * cols], rows: r1 - r0, cols },
            Mat::F16 { data, cols, .. } => Mat::F16 { data: &data[r0 * cols..r1 * cols], rows: r1 - r0, cols },
            Mat::BF16 { data, cols, .. } => Mat::BF16 { data: &data[r0 * cols..r1 * cols], rows: r1 - r0, cols },
        }
    }
}

#[derive(Deserialize)]
struct HeaderEntry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: (usize, usize),
}

/// Weights of one model: the file buffer and the index of its tensors.
pub struct WeightStore {
    buf: AlignedBuf,
    tensors: HashMap<String, TensorInfo>,
    /// safetensors `__metadata__` (string map), e.g. the runtime format version.
    pub metadata: HashMap<String, String>,
}

impl WeightStore {
    /// Indexes a safetensors file already copied into `buf`. Checks the header, every tensor's
    /// bounds and size, and alignment; nothing is copied.
    pub fn from_buf(buf: AlignedBuf) -> Result<Self> {
        let bytes = buf.as_bytes();
        let bad = |m: String| Error::InvalidCheckpoint(format!("model.safetensors: {m}"));
        if bytes.len() < 8 {
            return Err(bad(format!("file is {} bytes, too short to hold a header (truncated?)", bytes.len())));
        }
        let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
        if n > bytes.len() - 8 {
            return Err(bad(format!(
                "header of {n} bytes runs past the end of the {}-byte file (truncated?)",
                bytes.len()
            )));
        }
        let header: HashMap<String, serde_json::Value> =
            serde_json::from_slice(&bytes[8..8 + n]).map_err(|e| bad(format!("header is not valid JSON: {e}")))?;
        let data_start = 8 + n;
        let data_len = bytes.len() - data_start;
        let mut tensors = HashMap::new();
        let mut metadata = HashMap::new();
        let mut covered = 0usize;
        for (name, value) in header {
            if name == "__metadata__" {
                metadata = serde_json::from_value(value).map_err(|e| bad(format!("bad __metadata__: {e}")))?;
                continue;
            }
            let e: HeaderEntry =
                serde_json::from_value(value).map_err(|e| bad(format!("bad header entry for `{name}`: {e}")))?;
            let dtype = DType::parse(&e.dtype).ok_or_else(|| {
                bad(format!("tensor `{name}` has dtype {} (runtime files hold F32, F16 or BF16)", e.dtype))
            })?;
            let (a, b) = e.data_offsets;
            if a > b || b > data_len {
                return Err(bad(format!(
                    "tensor `{name}` spans bytes {a}..{b} but the data section has {data_len} bytes (truncated?)"
                )));
            }
            let numel = e.shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
            if numel.and_then(|n| n.checked_mul(dtype.size())) != Some(b - a) {
                return Err(bad(format!("tensor `{name}` has shape {:?} but {} bytes", e.shape, b - a)));
            }
            let start = data_start + a;
            if !start.is_multiple_of(dtype.size()) {
                return Err(bad(format!("tensor `{name}` is not aligned for {}; re-convert it", dtype.name())));
            }
            covered += b - a;
            tensors.insert(name, TensorInfo { dtype, shape: e.shape, start, end: data_start + b });
        }
        if covered != data_len {
            return Err(bad(format!("tensors cover {covered} of {data_len} data bytes (corrupt file)")));
        }
        Ok(WeightStore { buf, tensors, metadata })
    }

    pub fn info(&self, name: &str) -> Result<&TensorInfo> {
        self.tensors
            .get(name)
            .ok_or_else(|| Error::InvalidCheckpoint(format!("model.safetensors has no tensor `{name}`")))
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.tensors.keys()
    }

    pub fn total_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Checks that `name` exists with exactly `shape` (and, if given, `dtype`).
    pub fn expect(&self, name: &str, shape: &[usize], dtype: Option<DType>) -> Result<TensorInfo> {
        let t = self.info(name)?;
        if t.shape != shape {
            return Err(Error::InvalidCheckpoint(format!(
                "tensor `{name}` has shape {:?}, the config implies {:?}",
                t.shape, shape
            )));
        }
        if let Some(d) = dtype {
            if t.dtype != d {
                return Err(Error::InvalidCheckpoint(format!(
                    "tensor `{name}` is {}, expected {}",
                    t.dtype.name(),
                    d.name()
                )));
            }
        }
        Ok(t.clone())
    }

    /// A 2-D (or higher, flattened to `[shape[0] * …, last]`) view of a tensor.
    pub fn mat(&self, t: &TensorInfo) -> Mat<'_> {
        let cols = *t.shape.last().unwrap_or(&1);
        let rows = t.numel().checked_div(cols).unwrap_or(0);
        let bytes = &self.buf.as_bytes()[t.start..t.end];
        match t.dtype {
            DType::F32 => Mat::F32 { data: bytemuck::cast_slice(bytes), rows, cols },
            DType::F16 => Mat::F16 { data: bytemuck::cast_slice(bytes), rows, cols },
            DType::BF16 => Mat::BF16 { data: bytemuck::cast_slice(bytes), rows, cols },
        }
    }

    /// An f32 vector view (norm weights and routers are always stored in f32).
    pub fn f32s(&self, t: &TensorInfo) -> &[f32] {
        debug_assert_eq!(t.dtype, DType::F32);
        bytemuck::cast_slice(&self.buf.as_bytes()[t.start..t.end])
    }
}
