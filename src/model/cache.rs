//! Per-sequence state: the KV cache. MLA layers cache the normalised latent `c_kv` and the rotated
//! shared `k_pe` (kv_lora + rope floats per token, ~6x smaller than expanded K/V); GQA layers cache
//! rotated K and V per KV head.

#[derive(Debug, Clone)]
pub(crate) enum LayerCache {
    Mla { latent: Vec<f32>, k_pe: Vec<f32> },
    Gqa { k: Vec<f32>, v: Vec<f32> },
}

/// The KV cache of one sequence. `len()` is the position of the next token.
#[derive(Debug, Clone)]
pub struct KvCache {
    pub(crate) layers: Vec<LayerCache>,
    pub(crate) len: usize,
}

impl KvCache {
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Forgets everything; keeps the allocations for the next sequence.
    pub fn clear(&mut self) {
        for l in &mut self.layers {
            match l {
                LayerCache::Mla { latent, k_pe } => {
                    latent.clear();
                    k_pe.clear();
                }
                LayerCache::Gqa { k, v } => {
                    k.clear();
                    v.clear();
                }
            }
        }
        self.len = 0;
    }
}
