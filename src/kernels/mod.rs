//! Numeric kernels with no model knowledge. `scalar` is the plain reference every faster kernel
//! (SIMD128, WGSL) is tested against; it is always compiled.
//!
//! The crate's default kernels (`crate::kernels::matvec` etc.) are the SIMD128 ones on wasm32 built
//! with `+simd128` (.cargo/config.toml sets it) and the scalar ones elsewhere. Anything `simd128`
//! does not provide (RoPE, the scalar `silu`, `Elem`) comes from `scalar` on every target.
//!
//! On x86-64 the matrix kernels are the `avx2` ones: AVX2 + FMA + F16C bodies chosen at run time
//! (detected once), the scalar twins on CPUs without them or when the environment has
//! `BLOCKFFN_KERNELS=scalar` (to compare both end to end).
//!
//! Each ISA is a directory with the same files: `rows.rs` (one row at a time: dot, matvec,
//! axpy_rows, row_to_f32), `activations.rs` (normalisation and activations), `multi_token.rs`
//! (matmul and the chunk kernels: k tokens per weight load), `mod.rs` (re-exports and shared
//! helpers). A file is missing only where that ISA has no kernel of its kind. Kernels import
//! nothing from the crate but `crate::tensor` (and each other).

#[cfg(target_arch = "x86_64")]
pub mod avx2;
pub mod scalar;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub mod simd128;

pub use scalar::*;
// Named imports shadow the glob above: these are the fast versions.
#[cfg(target_arch = "x86_64")]
pub use avx2::{axpy_rows, axpy_rows_dense, chunk_down, chunk_up, dot, matmul, matvec};
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub use simd128::{
    axpy_rows, axpy_rows_dense, chunk_down, chunk_up, dot, matmul, matvec, rmsnorm, row_to_f32, silu_scaled, softmax,
};
