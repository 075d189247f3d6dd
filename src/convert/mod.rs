//! Conversion of released Hugging Face checkpoints into the runtime package (native only).
//!
//! `pytorch_model.bin` (zip + pickle, read as data) or `*.safetensors` → indexed without reading
//! weights → validated against the config name by name and shape by shape → each tensor read,
//! re-laid-out once (see [`crate::layout`]) and written into one `model.safetensors` in the chosen
//! dtype → plus config, tokenizer and a manifest of sha256 sums. Input files must be regular files
//! (never links), and every output file is written to a temporary file and renamed into place.

mod encode;
mod files;
pub mod pickle;
mod plan;
pub mod raw;
mod source;
pub mod torch_bin;
mod weights_out;
mod write;

pub use raw::TensorMeta;
pub use source::{read_source, Checkpoint};
pub use write::{convert_dir, ConvertReport, OutDtype, Progress};
