//! blockffn: exact BlockFFN Mixture-of-Experts inference, natively and in WebAssembly.
//!
//! Start at [`package::load_dir`] (native) or [`package::model_from_parts`] (any target), then
//! [`generate::generate`] or [`model::Model::forward`].

pub mod backend;
#[cfg(all(feature = "bench", target_arch = "wasm32", target_feature = "simd128"))]
pub mod bench;
pub mod config;
#[cfg(feature = "convert")]
pub mod convert;
pub mod cpu;
pub mod error;
pub mod experts;
pub mod generate;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod kernels;
pub mod layout;
pub mod metrics;
pub mod model;
pub mod package;
pub mod ready;
pub mod sampling;
pub mod sink;
pub mod spec;
pub mod tensor;
pub mod tokenizer;
#[cfg(target_arch = "wasm32")]
pub mod wasm;
pub mod weights;

pub use error::{Error, Result};
