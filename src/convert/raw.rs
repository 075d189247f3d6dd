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
