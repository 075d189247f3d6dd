//! Conversion of released Hugging Face checkpoints into the runtime package (native only).
//!
//! `pytorch_model.bin` (zip + pickle, read as data) or `*.safetensors` → validated against the
//! config name by name and shape by shape → re-laid-out once (see [`crate::layout`]) → one
//! `model.safetensors` in the chosen dtype, plus config, tokenizer and a manifest of sha256 sums.

pub mod pickle;
pub mod raw;
mod source;
pub mod torch_bin;
mod write;

pub use source::read_source;
pub use write::{convert_dir, ConvertReport, OutDtype, Progress};
