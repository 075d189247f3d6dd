//! The runtime weight file: one safetensors file held in a single 8-byte-aligned buffer.
//!
//! Loading is one copy of the file's bytes into that buffer; tensors are typed views into it
//! (the converter wrote them already in runtime layout and sorted by alignment), so weights are
//! never held twice and never re-laid-out at load time.
//!
//! ## The q8 format
//!
//! The number format itself (and [`Mat::Q8`]) is in `crate::tensor`. A q8 package stores each
//! eligible weight matrix `NAME` (shape `[.., cols]` with `cols` a multiple of [`Q8_BLOCK`] = 32)
//! as two tensors:
//! - `NAME`: `I8`, the runtime shape, `q = round(w / scale)` clamped to −127..=127;
//! - `NAME.q8_scales`: `F32`, the same shape with the last dimension divided by 32: one scale per
//!   block of 32 consecutive weights of a row, `scale = max|w| / 127` over the block (0 for an
//!   all-zero block).
//!
//! A weight is `scale · q` (symmetric, no offset). [`WeightStore::from_buf`] pairs the two tensors
//! (each must have the other, with matching shapes) and shows them as one [`Mat::Q8`]; the scales
//! tensor does not appear in [`WeightStore::names`].

use std::collections::HashMap;
use std::num::NonZeroUsize;

use serde::Deserialize;

use crate::tensor::{DType, Mat, Q8_BLOCK};
use crate::{Error, Result};

/// Suffix of the tensor holding the block scales of the q8 tensor `NAME`: `NAME.q8_scales`.
pub const Q8_SCALES_SUFFIX: &str = ".q8_scales";

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
    /// For an `I8` (q8) tensor: where its `numel / 32` F32 block scales (`NAME.q8_scales`) start
    /// in the file buffer (never 0: the header comes first).
    pub q8_scales: Option<NonZeroUsize>,
}

impl TensorInfo {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
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
        let mut len8 = [0u8; 8];
        len8.copy_from_slice(&bytes[..8]);
        let claimed = u64::from_le_bytes(len8);
        // Compared as u64: on wasm32 a cast to usize would drop the high bits of 2^32 + n.
        let n = match usize::try_from(claimed) {
            Ok(n) if n <= bytes.len() - 8 => n,
            _ => {
                return Err(bad(format!(
                    "header of {claimed} bytes runs past the end of the {}-byte file (truncated?)",
                    bytes.len()
                )))
            }
        };
        let header: HashMap<String, serde_json::Value> =
            serde_json::from_slice(&bytes[8..8 + n]).map_err(|e| bad(format!("header is not valid JSON: {e}")))?;
        let data_start = 8 + n;
        let data_len = bytes.len() - data_start;
        let mut tensors = HashMap::new();
        let mut metadata = HashMap::new();
        let mut ranges: Vec<(usize, usize, String)> = Vec::new();
        for (name, value) in header {
            if name == "__metadata__" {
                metadata = serde_json::from_value(value).map_err(|e| bad(format!("bad __metadata__: {e}")))?;
                continue;
            }
            let e: HeaderEntry =
                serde_json::from_value(value).map_err(|e| bad(format!("bad header entry for `{name}`: {e}")))?;
            let dtype = DType::parse(&e.dtype).ok_or_else(|| {
                bad(format!("tensor `{name}` has dtype {} (runtime files hold F32, F16, BF16 or I8)", e.dtype))
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
            ranges.push((a, b, name.clone()));
            tensors.insert(name, TensorInfo { dtype, shape: e.shape, start, end: data_start + b, q8_scales: None });
        }
        check_tiling(&mut ranges, data_len).map_err(bad)?;
        pair_q8_scales(&mut tensors).map_err(bad)?;
        Ok(WeightStore { buf, tensors, metadata })
    }

    /// The q8 blocks scales of an `I8` tensor (empty for any other tensor).
    fn scales_of(&self, t: &TensorInfo) -> &[f32] {
        match t.q8_scales {
            Some(a) => bytemuck::cast_slice(&self.buf.as_bytes()[a.get()..a.get() + t.numel() / Q8_BLOCK * 4]),
            None => &[],
        }
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
            DType::I8 => Mat::Q8 { data: bytemuck::cast_slice(bytes), scales: self.scales_of(t), rows, cols },
        }
    }

    /// An f32 vector view (norm weights and routers are always stored in f32).
    pub fn f32s(&self, t: &TensorInfo) -> &[f32] {
        debug_assert_eq!(t.dtype, DType::F32);
        bytemuck::cast_slice(&self.buf.as_bytes()[t.start..t.end])
    }
}

/// The tensors' byte ranges must tile the data section exactly: sorted by start, each begins where
/// the previous ends and the last ends at `data_len`. A sum-of-lengths check alone would accept two
/// tensors sharing bytes (the converter's reader refuses such files too).
fn check_tiling(ranges: &mut [(usize, usize, String)], data_len: usize) -> std::result::Result<(), String> {
    ranges.sort_unstable();
    let mut at = 0usize;
    for (a, b, name) in ranges.iter() {
        if *a < at {
            return Err(format!("tensor `{name}` (bytes {a}..{b}) overlaps the tensor before it (corrupt file)"));
        }
        if *a > at {
            return Err(format!("bytes {at}..{a} of the data section belong to no tensor (corrupt file)"));
        }
        at = *b;
    }
    if at != data_len {
        return Err(format!("tensors cover {at} of {data_len} data bytes (corrupt file)"));
    }
    Ok(())
}

/// Attaches every `NAME.q8_scales` tensor to its `I8` tensor `NAME` and removes it from the index.
/// Every I8 tensor must have its scales and every scales tensor its I8 tensor, with the scales
/// `F32` and shaped like `NAME` with the last dimension divided by [`Q8_BLOCK`] (which must divide
/// it). Names are visited in sorted order so the first problem reported does not vary.
fn pair_q8_scales(tensors: &mut HashMap<String, TensorInfo>) -> std::result::Result<(), String> {
    let mut names: Vec<String> = tensors.keys().cloned().collect();
    names.sort();
    for name in &names {
        if let Some(base) = name.strip_suffix(Q8_SCALES_SUFFIX) {
            match tensors.get(base) {
                Some(t) if t.dtype == DType::I8 => {}
                Some(t) => {
                    return Err(format!(
                        "tensor `{name}` holds q8 scales for `{base}`, but `{base}` is {}, not I8",
                        t.dtype.name()
                    ))
                }
                None => return Err(format!("tensor `{name}` holds q8 scales for `{base}`, which is missing")),
            }
        }
    }
    for name in &names {
        // Scales already attached to their tensor were removed from the index.
        let Some(t) = tensors.get(name) else { continue };
        if t.dtype != DType::I8 {
            continue;
        }
        if name.ends_with(Q8_SCALES_SUFFIX) {
            return Err(format!("tensor `{name}` is I8, but q8 scales must be F32"));
        }
        let cols = t.shape.last().copied();
        let want: Option<Vec<usize>> = match cols {
            Some(c) if c.is_multiple_of(Q8_BLOCK) => {
                let mut s = t.shape.clone();
                *s.last_mut().expect("non-empty") = c / Q8_BLOCK;
                Some(s)
            }
            _ => None,
        };
        let Some(want) = want else {
            return Err(format!(
                "q8 tensor `{name}` has shape {:?}: its rows must be a whole number of {Q8_BLOCK}-weight blocks",
                t.shape
            ));
        };
        let sname = format!("{name}{Q8_SCALES_SUFFIX}");
        let s = tensors
            .get(&sname)
            .ok_or_else(|| format!("q8 tensor `{name}` has no block scales (`{sname}` is missing)"))?;
        if s.dtype != DType::F32 {
            return Err(format!("q8 scales `{sname}` are {}, expected F32", s.dtype.name()));
        }
        if s.shape != want {
            return Err(format!(
                "q8 scales `{sname}` have shape {:?}, but `{name}` of shape {:?} needs {want:?} (one per {Q8_BLOCK} weights)",
                s.shape, t.shape
            ));
        }
        // Same element count checked above: numel/32 F32 values from `start`.
        let start = NonZeroUsize::new(s.start).ok_or_else(|| format!("q8 scales `{sname}` start at byte 0"))?;
        tensors.remove(&sname);
        tensors.get_mut(name).expect("present").q8_scales = Some(start);
    }
    Ok(())
}
