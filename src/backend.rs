//! The seam between the decoder's one path (`model`) and what executes it: the CPU kernels today
//! (`cpu`), a GPU later. Its operations are whole decoder steps (embed, an attention block, an FFN
//! block, the head), never single tensor ops, so a device backend records a layer's work without
//! handing anything back to the host in between: activations stay in [`Backend::Acts`], the KV
//! cache in [`Backend::Cache`], and only logits and the experts' bitmasks come back.

use crate::config::ModelConfig;
use crate::experts::ExpertMasks;
use crate::model::FfnMode;

/// One sequence's attention state. `len()` is the position of the next token.
pub trait SeqCache {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Keeps the first `len` positions (rollback of rejected draft tokens); no-op past `len()`.
    fn truncate(&mut self, len: usize);
    /// Forgets everything; keeps the allocations for the next sequence.
    fn clear(&mut self) {
        self.truncate(0);
    }
    /// Marks `k` more positions as filled once every layer has appended them.
    fn advance(&mut self, k: usize);
}

/// A model's weights on some device and the decoder steps over them. A span of `k` tokens runs
/// `embed`, then per layer `attention` and `ffn`, then `advance` on the cache and `head`.
pub trait Backend {
    /// Hidden states of a span of tokens (`[k, hidden]`), with whatever scratch the steps reuse.
    type Acts;
    type Cache: SeqCache;

    fn config(&self) -> &ModelConfig;
    fn new_cache(&self) -> Self::Cache;
    /// Scaled embeddings of `ids` (already range-checked).
    fn embed(&self, ids: &[u32]) -> Self::Acts;
    /// `h += Attn_l(RMSNorm(h)) · residual_scale` for the span at positions `cache.len()..`,
    /// appending its keys/values to layer `l` of the cache.
    fn attention(&self, l: usize, cache: &mut Self::Cache, h: &mut Self::Acts);
    /// `h += FFN_l(RMSNorm(h)) · residual_scale`; block FFNs set each token's active experts of
    /// layer `l` in `experts` (token `t` of the span is token `t` of `experts`).
    fn ffn(&self, l: usize, mode: FfnMode, h: &mut Self::Acts, experts: &mut ExpertMasks);
    /// Final norm and LM head of the span's positions `from..`, one vocab-sized row each.
    fn head(&self, h: &Self::Acts, from: usize) -> Vec<Vec<f32>>;
}
