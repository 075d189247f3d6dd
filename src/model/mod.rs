//! The BlockFFN / MiniCPM decoder: one readable path from token id to logits.
//!
//! ```text
//! h = Embed[id] · scale_emb
//! for each layer:  h += Attn(RMSNorm(h)) · scale_depth/√L
//!                  h += FFN(RMSNorm(h))  · scale_depth/√L
//! logits = LMHead(RMSNorm(h) / (hidden_size / dim_model_base))
//! ```

use crate::backend::{Backend, SeqCache};
use crate::config::ModelConfig;
use crate::cpu::Cpu;
use crate::experts::ExpertMasks;
use crate::tensor::DType;
use crate::ready::ready;
use crate::spec::EagleHead;
use std::sync::Arc;
use crate::weights::WeightStore;
use crate::{Error, Result};

pub use crate::cpu::KvCache;

/// Tokens per block when a prompt (or any multi-token span) is run: each weight is read once per
/// block. 32 tokens of activations (32 × hidden f32) stay in L1/L2 for the demo and Small sizes.
pub const PREFILL_BLOCK: usize = 32;

/// How the FFN is executed. Both give the same result to float rounding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FfnMode {
    /// Only the experts active for the token are computed (exact).
    #[default]
    Sparse,
    /// Every expert is computed, for comparison.
    Dense,
}

/// Which logits a forward call returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    None,
    Last,
    All,
}

/// Result of running a span of tokens.
#[derive(Debug, Clone, Default)]
pub struct ForwardOut {
    /// One vocab-sized vector per requested position.
    pub logits: Vec<Vec<f32>>,
    /// Every position's active experts, per layer (nothing set for dense-FFN models).
    pub experts: ExpertMasks,
    /// Every position's final-normed hidden state (`[k, hidden]`), when asked for (draft heads).
    pub features: Vec<f32>,
}

impl ForwardOut {
    /// `active[position][layer]` = sorted ids of active experts (empty for dense-FFN models).
    pub fn active(&self) -> Vec<Vec<Vec<u16>>> {
        self.experts.to_sets()
    }
}

/// A span that ran through every layer with its head still to run ([`Model::forward_pending_async`]).
pub struct Pending<A> {
    acts: A,
    /// Every position's active experts.
    pub experts: ExpertMasks,
    /// Every position's features, when asked for.
    pub features: Vec<f32>,
    k: usize,
}

/// The decoder over a [`Backend`]: the one path from token ids to logits, the same for every
/// backend. `Model` alone is the CPU one.
pub struct Model<B: Backend = Cpu> {
    backend: B,
    /// The package's optional draft head (speculative decoding, [`crate::spec::Eagle`]).
    draft_head: Option<Arc<EagleHead>>,
}

impl Model<Cpu> {
    /// Builds a model over runtime weights, checking that every tensor the config implies is
    /// present with its exact shape and that there is nothing else.
    pub fn new(config: ModelConfig, store: WeightStore) -> Result<Self> {
        Ok(Model { backend: Cpu::new(config, store)?, draft_head: None })
    }

    /// Element types of the weight matrices (every tensor not kept in f32), in table order.
    pub fn matrix_dtypes(&self) -> Vec<DType> {
        self.backend.matrix_dtypes()
    }

    /// Bytes of weights held (the runtime file size).
    pub fn weight_bytes(&self) -> usize {
        self.backend.weight_bytes()
    }

    /// The checked config and weights, for a device backend to upload (no copy).
    pub fn into_parts(self) -> (ModelConfig, WeightStore) {
        self.backend.into_parts()
    }
}

impl<B: Backend> Model<B> {
    pub fn with_backend(backend: B) -> Self {
        Model { backend, draft_head: None }
    }

    /// Attaches the package's draft head (already checked against this model's config).
    pub fn set_draft_head(&mut self, head: Option<EagleHead>) {
        self.draft_head = head.map(Arc::new);
    }

    pub fn draft_head(&self) -> Option<&Arc<EagleHead>> {
        self.draft_head.as_ref()
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    pub fn config(&self) -> &ModelConfig {
        self.backend.config()
    }

    /// True when the FFN is a BlockFFN (expert telemetry is meaningful).
    pub fn has_experts(&self) -> bool {
        self.config().num_experts() > 0
    }

    pub fn new_cache(&self) -> Result<B::Cache> {
        self.backend.new_cache()
    }

    /// Checks a span of ids before anything is computed, so a bad request never half-fills a cache.
    pub fn check_ids(&self, cache: &B::Cache, ids: &[u32]) -> Result<()> {
        if ids.is_empty() {
            return Err(Error::InvalidInput("no tokens to run: the prompt is empty".into()));
        }
        let v = self.config().vocab_size;
        if let Some((i, id)) = ids.iter().enumerate().find(|(_, &id)| id as usize >= v) {
            return Err(Error::InvalidInput(format!(
                "token id {id} at position {i} is out of range: this model's vocabulary has {v} ids (0..{})",
                v - 1
            )));
        }
        let max = self.config().max_position_embeddings;
        if cache.len() + ids.len() > max {
            return Err(Error::InvalidInput(format!(
                "{} tokens (+{} already in context) exceed the model's context of {max} tokens \
                 (max_position_embeddings); shorten the prompt or reduce max tokens",
                ids.len(),
                cache.len()
            )));
        }
        Ok(())
    }

    /// Runs `ids` after what the cache holds, appending them to the cache. Prompts go through in
    /// blocks of [`PREFILL_BLOCK`] tokens ([`Model::forward_span`]): every weight is read once per
    /// block, not once per token, with the same result as running the tokens one by one.
    pub fn forward(&self, cache: &mut B::Cache, ids: &[u32], mode: FfnMode, logits: Logits) -> Result<ForwardOut> {
        ready(self.forward_async(cache, ids, mode, logits))
    }

    /// [`Model::forward`] for every backend, a browser GPU's included (see [`crate::ready`]).
    pub async fn forward_async(
        &self,
        cache: &mut B::Cache,
        ids: &[u32],
        mode: FfnMode,
        logits: Logits,
    ) -> Result<ForwardOut> {
        self.forward_blocks(cache, ids, mode, logits, false).await
    }

    /// [`Model::forward_async`] that also returns every position's features
    /// ([`ForwardOut::features`]); a span of up to [`PREFILL_BLOCK`] tokens in sparse mode is
    /// [`Model::forward_chunk`].
    pub async fn forward_features_async(
        &self,
        cache: &mut B::Cache,
        ids: &[u32],
        mode: FfnMode,
        logits: Logits,
    ) -> Result<ForwardOut> {
        self.forward_blocks(cache, ids, mode, logits, true).await
    }

    async fn forward_blocks(
        &self,
        cache: &mut B::Cache,
        ids: &[u32],
        mode: FfnMode,
        logits: Logits,
        features: bool,
    ) -> Result<ForwardOut> {
        self.check_ids(cache, ids)?;
        let mut out = ForwardOut::default();
        let blocks = ids.len().div_ceil(PREFILL_BLOCK);
        for (b, block) in ids.chunks(PREFILL_BLOCK).enumerate() {
            let want = match logits {
                Logits::Last if b + 1 < blocks => Logits::None,
                l => l,
            };
            let o = self.forward_span(cache, block, mode, want, features).await?;
            out.logits.extend(o.logits);
            out.experts.extend(&o.experts);
            out.features.extend(o.features);
        }
        check_finite(&out.logits)?;
        Ok(out)
    }

    /// Runs `ids` as one span: the verification of a draft chunk (SPEC §9.3). Each block-FFN layer
    /// runs the span's tokens together over the union of their active experts, reading every
    /// expert of the union once. Same results as [`Model::forward`] with [`FfnMode::Sparse`]
    /// (bit-identical with the same kernels), same active sets.
    pub fn forward_chunk(&self, cache: &mut B::Cache, ids: &[u32], logits: Logits) -> Result<ForwardOut> {
        ready(self.forward_chunk_async(cache, ids, logits))
    }

    /// [`Model::forward_chunk`] for every backend.
    pub async fn forward_chunk_async(&self, cache: &mut B::Cache, ids: &[u32], logits: Logits) -> Result<ForwardOut> {
        self.check_ids(cache, ids)?;
        let out = self.forward_span(cache, ids, FfnMode::Sparse, logits, false).await?;
        check_finite(&out.logits)?;
        Ok(out)
    }

    /// Runs a draft tree as one span after the cache (SPEC §9.3): node `i` is `ids[i]`, `tree[i]`
    /// its ancestor mask (bit j set for each ancestor j and for i; node 0 is the root; parents
    /// come before children; at most 32 nodes). Each node attends to the cache and its ancestors
    /// at the position of its depth, the FFN runs over the union of the nodes' experts (each node
    /// keeping its own; every expert in dense mode), and every node's logits come back — each
    /// equal to running its path alone. The cache then holds every node in span order;
    /// [`SeqCache::keep_path`] keeps the accepted path.
    pub async fn forward_tree_async(
        &self,
        cache: &mut B::Cache,
        ids: &[u32],
        tree: &[u32],
        mode: FfnMode,
        features: bool,
    ) -> Result<ForwardOut> {
        let mut p = self.forward_pending_async(cache, ids, mode, Some(tree), features).await?;
        let logits = self.pending_logits(&mut p, 0, ids.len()).await?;
        Ok(ForwardOut { logits, experts: p.experts, features: p.features })
    }

    /// Runs a span of up to [`PREFILL_BLOCK`] tokens (a chain, or a tree as in
    /// [`Model::forward_tree_async`]) through every layer and leaves its head for later:
    /// [`Model::pending_logits`] computes the rows a verification reaches, so the rows after a
    /// rejected draft are never computed. Only for backends with [`Backend::head_on_demand`]
    /// (else the experts come back with the head: use `forward_chunk`).
    pub async fn forward_pending_async(
        &self,
        cache: &mut B::Cache,
        ids: &[u32],
        mode: FfnMode,
        tree: Option<&[u32]>,
        features: bool,
    ) -> Result<Pending<B::Acts>> {
        self.check_ids(cache, ids)?;
        if ids.len() > PREFILL_BLOCK {
            return Err(Error::InvalidInput(format!("a verified span holds at most {PREFILL_BLOCK} tokens, got {}", ids.len())));
        }
        if let Some(t) = tree {
            check_tree(t, ids.len())?;
        }
        let (h, experts) = self.run_layers(cache, ids, mode, tree)?;
        let features = if features { self.backend.features(&h)? } else { Vec::new() };
        Ok(Pending { acts: h, experts, features, k: ids.len() })
    }

    /// Logits of rows `from..to` of a pending span (checked finite).
    pub async fn pending_logits(&self, p: &mut Pending<B::Acts>, from: usize, to: usize) -> Result<Vec<Vec<f32>>> {
        let rows = self.backend.head_rows(&mut p.acts, from.min(p.k), to.min(p.k)).await?;
        check_finite(&rows)?;
        Ok(rows)
    }

    /// Runs `ids` and picks the next token greedily (after the repetition `penalty` over
    /// `context`, 1 for none) — on the device when the backend does that (only the id and the
    /// experts come back), else from the logits on the host. Same token as greedy sampling of
    /// [`Model::forward`]'s last logits.
    pub fn forward_greedy(
        &self,
        cache: &mut B::Cache,
        ids: &[u32],
        mode: FfnMode,
        penalty: f32,
        context: &[u32],
    ) -> Result<(u32, ExpertMasks)> {
        ready(self.forward_greedy_async(cache, ids, mode, penalty, context))
    }

    /// [`Model::forward_greedy`] for every backend.
    pub async fn forward_greedy_async(
        &self,
        cache: &mut B::Cache,
        ids: &[u32],
        mode: FfnMode,
        penalty: f32,
        context: &[u32],
    ) -> Result<(u32, ExpertMasks)> {
        self.check_ids(cache, ids)?;
        let mut experts = ExpertMasks::default();
        let blocks = ids.len().div_ceil(PREFILL_BLOCK);
        for (b, block) in ids.chunks(PREFILL_BLOCK).enumerate() {
            let (mut h, mut ex) = self.run_layers(cache, block, mode, None)?;
            if b + 1 < blocks {
                self.backend.head(&mut h, block.len(), &mut ex).await?;
                experts.extend(&ex);
            } else {
                let id = self.backend.head_greedy(&mut h, penalty, context, &mut ex).await?;
                experts.extend(&ex);
                return Ok((id, experts));
            }
        }
        unreachable!("check_ids rejects an empty span")
    }

    /// True when greedy decoding runs on the device ([`Model::forward_greedy`] reads back only ids).
    pub fn greedy_on_device(&self) -> bool {
        self.backend.greedy_on_device()
    }

    /// The k tokens of `ids` (already checked) through every layer: all of them go through layer
    /// l before layer l+1 (see [`Backend`] for what each step does); the cache then holds them.
    /// With a draft `tree` (checked), each token attends to its ancestors only.
    fn run_layers(
        &self,
        cache: &mut B::Cache,
        ids: &[u32],
        mode: FfnMode,
        tree: Option<&[u32]>,
    ) -> Result<(B::Acts, ExpertMasks)> {
        let b = &self.backend;
        let cfg = b.config();
        let k = ids.len();
        let mut experts = ExpertMasks::new(k, cfg.num_hidden_layers, cfg.num_experts());
        let mut h = b.embed(ids)?;
        for l in 0..cfg.num_hidden_layers {
            match tree {
                Some(t) => b.attention_tree(l, cache, &mut h, t)?,
                None => b.attention(l, cache, &mut h)?,
            }
            b.ffn(l, mode, &mut h, &mut experts)?;
        }
        cache.advance(k);
        Ok((h, experts))
    }

    async fn forward_span(
        &self,
        cache: &mut B::Cache,
        ids: &[u32],
        mode: FfnMode,
        logits: Logits,
        features: bool,
    ) -> Result<ForwardOut> {
        let k = ids.len();
        let (mut h, mut experts) = self.run_layers(cache, ids, mode, None)?;
        let features = if features { self.backend.features(&h)? } else { Vec::new() };
        let first = match logits {
            Logits::All => 0,
            Logits::Last => k.saturating_sub(1),
            Logits::None => k,
        };
        let logits = self.backend.head(&mut h, first, &mut experts).await?;
        Ok(ForwardOut { logits, experts, features })
    }
}

/// A draft tree's ancestor masks: the root first, each node's mask its parent's plus itself.
fn check_tree(tree: &[u32], k: usize) -> Result<()> {
    let bad = |m: String| Err(Error::InvalidInput(format!("draft tree: {m}")));
    if tree.len() != k || k > 32 {
        return bad(format!("{} masks for {k} tokens (at most 32 nodes)", tree.len()));
    }
    for (i, &m) in tree.iter().enumerate() {
        let below = m & !(1u32 << i);
        let parent_ok = match i {
            0 => below == 0,
            _ => below != 0 && tree[31 - below.leading_zeros() as usize] == below,
        };
        if m >> i != 1 || !parent_ok {
            return bad(format!("node {i} has mask {m:#b}, not its parent's mask plus itself"));
        }
    }
    Ok(())
}

/// Logits must be numbers: NaN or infinity means weights or config values that overflow f32 (a
/// damaged or forged package), and sampling from them would silently pick id 0.
pub(crate) fn check_finite(logits: &[Vec<f32>]) -> Result<()> {
    for (i, row) in logits.iter().enumerate() {
        if let Some(v) = row.iter().find(|v| !v.is_finite()) {
            return Err(Error::InvalidCheckpoint(format!(
                "the model computed a non-finite logit ({v}) at requested position {i}: its weights or config \
                 values overflow 32-bit floats; the package is damaged — convert or download it again"
            )));
        }
    }
    Ok(())
}
