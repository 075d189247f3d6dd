//! A tensor as read from a source checkpoint: dtype, shape and contiguous little-endian bytes.

pub use safetensors::Dtype;

#[derive(Debug, Clone)]
pub struct RawTensor {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Row-major, contiguous, little-endian element bytes (`numel * dtype.size()` long).
    pub data: Vec<u8>,
}

impl RawTensor {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// What a checkpoint's index knows about a tensor before any of its bytes are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorMeta {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
}

impl TensorMeta {
    /// Bytes of the tensor's contiguous data (`None` on overflow).
    pub fn byte_len(&self) -> Option<u64> {
        self.shape.iter().try_fold((self.dtype.bitsize() / 8) as u64, |a, &d| a.checked_mul(d as u64))
    }
}
