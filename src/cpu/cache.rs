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
    /// Keeps the first `len` positions: the rollback after rejected draft tokens. No-op past
    /// `len()`.
    pub fn truncate(&mut self, len: usize) {
        if len >= self.len {
            return;
        }
        let n = self.len;
        // Every vector holds `n` equal-sized rows, one per position.
        self.each_vec(|v| v.truncate(v.len() / n * len));
        self.len = len;
    }
    /// Forgets everything; keeps the allocations for the next sequence.
    pub fn clear(&mut self) {
        self.truncate(0);
    }

    /// `f` on every per-position vector of every layer.
    fn each_vec(&mut self, mut f: impl FnMut(&mut Vec<f32>)) {
        for l in &mut self.layers {
            let (a, b) = match l {
                LayerCache::Mla { latent, k_pe } => (latent, k_pe),
                LayerCache::Gqa { k, v } => (k, v),
            };
            f(a);
            f(b);
        }
    }
}

impl crate::backend::SeqCache for KvCache {
    fn len(&self) -> usize {
        self.len
    }
    fn truncate(&mut self, len: usize) {
        KvCache::truncate(self, len)
    }
    fn advance(&mut self, k: usize) {
        self.len += k;
    }
    fn keep_path(&mut self, from: usize, keep: &[usize]) -> bool {
        let n = self.len;
        if keep.windows(2).any(|w| w[0] >= w[1]) || keep.last().is_some_and(|&j| from + j >= n) {
            return false;
        }
        self.each_vec(|v| {
            let row = v.len() / n.max(1);
            for (j, &src) in keep.iter().enumerate() {
                v.copy_within((from + src) * row..(from + src + 1) * row, (from + j) * row);
            }
        });
        self.truncate(from + keep.len());
        true
    }
}
