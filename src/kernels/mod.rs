//! Numeric kernels with no model knowledge. `scalar` is the plain reference every faster kernel
//! (SIMD128, WGSL) is tested against.

pub mod scalar;

pub use scalar::*;
