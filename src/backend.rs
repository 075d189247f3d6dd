//! The seam between the decoder's one path (`model`) and what executes it: the CPU kernels today
//! (`cpu`), a GPU later. Its operations are whole decoder steps (embed, an attention block, an FFN
//! block, the head), never single tensor ops, so a device backend records a layer's work without
//! handing anything back to the host in between: activations stay in [`Backend::Acts`], the KV
//! cache in [`Backend::Cache`], and only logits (or a token id picked on the device) and the
//! experts' bitmasks come back. Every step returns a `Result`: a device can be lost mid-forward.

use crate::config::ModelConfig;
use crate::experts::ExpertMasks;
use crate::model::FfnMode;
use crate::Result;

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
    /// Keeps positions `from + keep[j]` at `from + j` (`keep` ascending) and drops the rest after
    /// `from`: the accepted path of a verified draft tree. `false` where the cache cannot.
    fn keep_path(&mut self, _from: usize, _keep: &[usize]) -> bool {
        false
    }
}

/// Device time of one span's steps, in nanoseconds.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StepTimes {
    pub embed_ns: f64,
    /// Per layer.
    pub attention_ns: Vec<f64>,
    pub ffn_ns: Vec<f64>,
    pub head_ns: f64,
}

/// A model's weights on some device and the decoder steps over them. A span of `k` tokens runs
/// `embed`, then per layer `attention` and `ffn`, then `advance` on the cache and `head` (or
/// `head_greedy`). The steps before the head only record work on a device; the head is where its
/// results come back, so it is `async` (a browser GPU maps its readback on the event loop; every
/// other backend is ready at once, see [`crate::ready`]).
#[allow(async_fn_in_trait)] // the decoder polls these inline; no executor needs them `Send`
pub trait Backend {
    /// Hidden states of a span of tokens (`[k, hidden]`), with whatever scratch the steps reuse.
    type Acts;
    type Cache: SeqCache;

    fn config(&self) -> &ModelConfig;
    fn new_cache(&self) -> Result<Self::Cache>;
    /// Scaled embeddings of `ids` (already range-checked).
    fn embed(&self, ids: &[u32]) -> Result<Self::Acts>;
    /// `h += Attn_l(RMSNorm(h)) · residual_scale` for the span at positions `cache.len()..`,
    /// appending its keys/values to layer `l` of the cache.
    fn attention(&self, l: usize, cache: &mut Self::Cache, h: &mut Self::Acts) -> Result<()>;
    /// [`Backend::attention`] for a draft tree: token `i` of the span sees the cache before the
    /// span and the span tokens whose bits are set in `tree[i]` (its ancestors and itself), at
    /// position `cache.len()` + its depth. Every span token's keys are appended in span order.
    fn attention_tree(&self, _l: usize, _cache: &mut Self::Cache, _h: &mut Self::Acts, _tree: &[u32]) -> Result<()> {
        Err(crate::Error::Unsupported("this backend verifies draft chains, not trees".into()))
    }
    /// `h += FFN_l(RMSNorm(h)) · residual_scale`; block FFNs set each token's active experts of
    /// layer `l` in `experts` (token `t` of the span is token `t` of `experts`) — here or, on a
    /// device, in `head` from the span's one readback.
    fn ffn(&self, l: usize, mode: FfnMode, h: &mut Self::Acts, experts: &mut ExpertMasks) -> Result<()>;
    /// Final norm and LM head of the span's positions `from..`, one vocab-sized row each.
    async fn head(&self, h: &mut Self::Acts, from: usize, experts: &mut ExpertMasks) -> Result<Vec<Vec<f32>>>;
    /// The final-normed hidden state of every position of the span (`[k, hidden]`): the features
    /// a draft head reads. Backends that keep activations on a device do not hand them back.
    fn features(&self, _h: &Self::Acts) -> Result<Vec<f32>> {
        Err(crate::Error::Unsupported("this backend does not hand back hidden states (the EAGLE draft head runs on the CPU)".into()))
    }
    /// The embedding and LM head for a draft head, where the backend holds them on the host.
    fn draft_target(&self) -> Option<&dyn crate::spec::DraftTarget> {
        None
    }
    /// Kernel dispatches of the last span (device backends; `None` where that means nothing).
    fn last_dispatches(&self) -> Option<usize> {
        None
    }
    /// Device time of the last span's steps, where the device measures it (GPU timestamps).
    fn last_timings(&self) -> Option<StepTimes> {
        None
    }
    /// True when [`Backend::head_rows`] works: a span's head can run on chosen rows after its
    /// layers, so speculative verification computes logits only for the positions it judges.
    fn head_on_demand(&self) -> bool {
        false
    }
    /// Final norm and LM head of rows `from..to` of a span whose layers ran (`head_on_demand`
    /// backends; the activations are kept for more rows).
    async fn head_rows(&self, _h: &mut Self::Acts, _from: usize, _to: usize) -> Result<Vec<Vec<f32>>> {
        Err(crate::Error::Unsupported("this backend runs the head over a whole span at once".into()))
    }
    /// True when [`Backend::attention_tree`] and the cache's `keep_path` work (draft trees).
    fn verifies_trees(&self) -> bool {
        false
    }
    /// True when [`Backend::head_greedy`] runs on the device (no logits come back); the decoder
    /// then uses it for greedy decoding.
    fn greedy_on_device(&self) -> bool {
        false
    }
    /// The last position's greedy token after the repetition `penalty` (1: none) over the ids of
    /// `context` — [`crate::sampling::Sampler`]'s greedy rule. This default reads the logits back.
    async fn head_greedy(
        &self,
        h: &mut Self::Acts,
        penalty: f32,
        context: &[u32],
        experts: &mut ExpertMasks,
    ) -> Result<u32> {
        let k = experts.tokens();
        let mut rows = self.head(h, k.saturating_sub(1), experts).await?;
        let mut logits = rows.pop().unwrap_or_default();
        crate::model::check_finite(std::slice::from_ref(&logits))?;
        crate::sampling::apply_repetition_penalty(&mut logits, context, penalty);
        Ok(crate::sampling::argmax(&logits) as u32)
    }
}
