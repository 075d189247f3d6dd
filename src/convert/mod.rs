//! Conversion of released Hugging Face checkpoints into the runtime package (native only).

pub mod pickle;
pub mod raw;
pub mod torch_bin;
