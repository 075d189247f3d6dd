//! The BlockFFN / MiniCPM decoder: one readable path from token id to logits.
//!
//! ```text
//! h = Embed[id] · scale_emb
//! for each layer:  h += Attn(RMSNorm(h)) · scale_depth/√L
//!                  h += FFN(RMSNorm(h))  · scale_depth/√L
//! logits = LMHead(RMSNorm(h) / (hidden_size / dim_model_base))
//! ```

mod block_ffn;
mod cache;
mod dense_ffn;
mod gqa;
mod mla;

pub use cache::KvCache;

use cache::LayerCache;

use crate::config::{Attention, Ffn, ModelConfig, Router, RouterNorm};
use crate::kernels::{matmul, rmsnorm, rope_inv_freq, row_to_f32};
use crate::layout::tensor_table;
use crate::weights::{DType, TensorInfo, WeightStore};
use crate::{Error, Result};

use block_ffn::{BlockFfnParams, BlockFfnWeights};
use dense_ffn::DenseFfnWeights;
use gqa::GqaWeights;
use mla::MlaWeights;

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
    /// `active[position][layer]` = sorted ids of active experts (empty for dense-FFN models).
    pub active: Vec<Vec<Vec<u16>>>,
}

enum AttnWeights {
    Mla(MlaWeights),
    Gqa(GqaWeights),
}

enum FfnWeights {
    Block(BlockFfnWeights),
    Dense(DenseFfnWeights),
}

struct Layer {
    input_norm: TensorInfo,
    post_norm: TensorInfo,
    attn: AttnWeights,
    ffn: FfnWeights,
}

pub struct Model {
    config: ModelConfig,
    store: WeightStore,
    embed: TensorInfo,
    lm_head: TensorInfo,
    final_norm: TensorInfo,
    layers: Vec<Layer>,
    inv_freq: Vec<f32>,
    ffn_params: Option<BlockFfnParams>,
}

impl Model {
    /// Builds a model over runtime weights, checking that every tensor the config implies is
    /// present with its exact shape and that there is nothing else.
    pub fn new(config: ModelConfig, store: WeightStore) -> Result<Self> {
        let table = tensor_table(&config);
        let mut get = std::collections::HashMap::new();
        for e in &table {
            let dtype = if e.keep_f32 { Some(DType::F32) } else { None };
            get.insert(e.rt_name.clone(), store.expect(&e.rt_name, &e.rt_shape, dtype)?);
        }
        if let Some(extra) = store.names().find(|n| !get.contains_key(*n)) {
            return Err(Error::InvalidCheckpoint(format!(
                "model.safetensors has tensor `{extra}` that the config does not use"
            )));
        }
        // Every name below comes from the same table as `get`; a miss would be a bug here, reported
        // as an error rather than a panic.
        let t = |name: String| {
            get.get(&name)
                .cloned()
                .ok_or_else(|| Error::InvalidCheckpoint(format!("tensor `{name}` is not in the layout table")))
        };
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let attn = match &config.attention {
                Attention::Mla(d) => AttnWeights::Mla(MlaWeights {
                    q_a: match d.q_lora_rank {
                        Some(_) => Some((
                            t(format!("{p}.self_attn.q_a_proj.weight"))?,
                            t(format!("{p}.self_attn.q_a_layernorm.weight"))?,
                        )),
                        None => None,
                    },
                    q_b: if d.q_lora_rank.is_some() {
                        t(format!("{p}.self_attn.q_b_proj.weight"))?
                    } else {
                        t(format!("{p}.self_attn.q_proj.weight"))?
                    },
                    kv_a: t(format!("{p}.self_attn.kv_a_proj_with_mqa.weight"))?,
                    kv_a_norm: t(format!("{p}.self_attn.kv_a_layernorm.weight"))?,
                    kv_b: t(format!("{p}.self_attn.kv_b_proj.weight"))?,
                    o: t(format!("{p}.self_attn.o_proj.weight"))?,
                }),
                Attention::Vanilla { .. } => AttnWeights::Gqa(GqaWeights {
                    q: t(format!("{p}.self_attn.q_proj.weight"))?,
                    k: t(format!("{p}.self_attn.k_proj.weight"))?,
                    v: t(format!("{p}.self_attn.v_proj.weight"))?,
                    o: t(format!("{p}.self_attn.o_proj.weight"))?,
                }),
            };
            let ffn = match config.ffn {
                Ffn::Block { router, .. } => FfnWeights::Block(BlockFfnWeights {
                    router: t(format!("{p}.mlp.router_proj.weight"))?,
                    router_norm: if router == Router::Relu(RouterNorm::Rms) {
                        Some(t(format!("{p}.mlp.router_norm.weight"))?)
                    } else {
                        None
                    },
                    up: t(format!("{p}.mlp.up_proj"))?,
                    down_t: t(format!("{p}.mlp.down_proj_t"))?,
                }),
                Ffn::Dense { gated, .. } => FfnWeights::Dense(DenseFfnWeights {
                    gate: if gated { Some(t(format!("{p}.mlp.gate_proj.weight"))?) } else { None },
                    up: t(format!("{p}.mlp.up_proj.weight"))?,
                    down: t(format!("{p}.mlp.down_proj.weight"))?,
                }),
            };
            layers.push(Layer {
                input_norm: t(format!("{p}.input_layernorm.weight"))?,
                post_norm: t(format!("{p}.post_attention_layernorm.weight"))?,
                attn,
                ffn,
            });
        }
        let rope_dim = match &config.attention {
            Attention::Mla(d) => d.qk_rope_head_dim,
            Attention::Vanilla { head_dim, .. } => *head_dim,
        };
        let ffn_params = match config.ffn {
            Ffn::Block { num_experts, expert_size, router, norm_scale, .. } => {
                Some(BlockFfnParams { experts: num_experts, expert_size, router, norm_scale, eps: config.rms_norm_eps })
            }
            Ffn::Dense { .. } => None,
        };
        Ok(Model {
            inv_freq: rope_inv_freq(rope_dim, config.rope_theta),
            embed: t("model.embed_tokens.weight".into())?,
            lm_head: if config.tie_word_embeddings {
                t("model.embed_tokens.weight".into())?
            } else {
                t("lm_head.weight".into())?
            },
            final_norm: t("model.norm.weight".into())?,
            layers,
            ffn_params,
            config,
            store,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Element types of the weight matrices (every tensor not kept in f32), in table order.
    pub fn matrix_dtypes(&self) -> Vec<DType> {
        tensor_table(&self.config)
            .iter()
            .filter(|e| !e.keep_f32)
            .filter_map(|e| self.store.info(&e.rt_name).ok().map(|t| t.dtype))
            .collect()
    }

    /// Bytes of weights held (the runtime file size).
    pub fn weight_bytes(&self) -> usize {
        self.store.total_bytes()
    }

    /// True when the FFN is a BlockFFN (expert telemetry is meaningful).
    pub fn has_experts(&self) -> bool {
        self.ffn_params.is_some()
    }

    pub fn new_cache(&self) -> KvCache {
        let layers = self
            .layers
            .iter()
            .map(|l| match l.attn {
                AttnWeights::Mla(_) => LayerCache::Mla { latent: Vec::new(), k_pe: Vec::new() },
                AttnWeights::Gqa(_) => LayerCache::Gqa { k: Vec::new(), v: Vec::new() },
            })
            .collect();
        KvCache { layers, len: 0 }
    }

    /// Checks a span of ids before anything is computed, so a bad request never half-fills a cache.
    pub fn check_ids(&self, cache: &KvCache, ids: &[u32]) -> Result<()> {
        if ids.is_empty() {
            return Err(Error::InvalidInput("no tokens to run: the prompt is empty".into()));
        }
        let v = self.config.vocab_size;
        if let Some((i, id)) = ids.iter().enumerate().find(|(_, &id)| id as usize >= v) {
            return Err(Error::InvalidInput(format!(
                "token id {id} at position {i} is out of range: this model's vocabulary has {v} ids (0..{})",
                v - 1
            )));
        }
        let max = self.config.max_position_embeddings;
        if cache.len + ids.len() > max {
            return Err(Error::InvalidInput(format!(
                "{} tokens (+{} already in context) exceed the model's context of {max} tokens \
                 (max_position_embeddings); shorten the prompt or reduce max tokens",
                ids.len(),
                cache.len
            )));
        }
        Ok(())
    }

    /// Runs `ids` after what the cache holds, appending them to the cache. Prompts go through in
    /// blocks of [`PREFILL_BLOCK`] tokens ([`Model::forward_span`]): every weight is read once per
    /// block, not once per token, with the same result as running the tokens one by one.
    pub fn forward(&self, cache: &mut KvCache, ids: &[u32], mode: FfnMode, logits: Logits) -> Result<ForwardOut> {
        self.check_ids(cache, ids)?;
        let mut out = ForwardOut::default();
        let blocks = ids.len().div_ceil(PREFILL_BLOCK);
        for (b, block) in ids.chunks(PREFILL_BLOCK).enumerate() {
            let want = match logits {
                Logits::Last if b + 1 < blocks => Logits::None,
                l => l,
            };
            let o = self.forward_span(cache, block, mode, want);
            out.logits.extend(o.logits);
            out.active.extend(o.active);
        }
        check_finite(&out.logits)?;
        Ok(out)
    }

    /// Runs `ids` as one span: the verification of a draft chunk (SPEC §9.3). Each block-FFN layer
    /// runs the span's tokens together over the union of their active experts, reading every
    /// expert of the union once. Same results as [`Model::forward`] with [`FfnMode::Sparse`]
    /// (bit-identical with the same kernels), same `active` sets.
    pub fn forward_chunk(&self, cache: &mut KvCache, ids: &[u32], logits: Logits) -> Result<ForwardOut> {
        self.check_ids(cache, ids)?;
        let out = self.forward_span(cache, ids, FfnMode::Sparse, logits);
        check_finite(&out.logits)?;
        Ok(out)
    }

    /// The k tokens of `ids` (already checked) layer by layer: all of them go through layer l before
    /// layer l+1. Attention projections, dense FFNs and the LM head are matrix products over the k
    /// tokens (`matmul`, bit-identical per token to `matvec`); attention over the cache stays per
    /// token, in order. Sparse block FFNs run one token alone with `forward_sparse` and several with
    /// the chunk kernels (union of experts); dense mode computes every expert for each token.
    fn forward_span(&self, cache: &mut KvCache, ids: &[u32], mode: FfnMode, logits: Logits) -> ForwardOut {
        let cfg = &self.config;
        let (hsz, k, pos0) = (cfg.hidden_size, ids.len(), cache.len);
        let res_scale = cfg.residual_scale();
        let mut hs = vec![0.0; k * hsz];
        for (h, &id) in hs.chunks_exact_mut(hsz).zip(ids) {
            row_to_f32(self.store.mat(&self.embed), id as usize, h);
            h.iter_mut().for_each(|v| *v *= cfg.scale_emb);
        }
        let mut xs = vec![0.0; k * hsz];
        let mut ys = vec![0.0; k * hsz];
        let mut active: Vec<Vec<Vec<u16>>> = vec![Vec::with_capacity(self.layers.len()); k];
        for (layer, lc) in self.layers.iter().zip(cache.layers.iter_mut()) {
            for (h, x) in hs.chunks_exact(hsz).zip(xs.chunks_exact_mut(hsz)) {
                rmsnorm(h, self.store.f32s(&layer.input_norm), cfg.rms_norm_eps, x);
            }
            self.attend(layer, lc, pos0, &xs, &mut ys);
            hs.iter_mut().zip(&ys).for_each(|(a, b)| *a += b * res_scale);
            for (h, x) in hs.chunks_exact(hsz).zip(xs.chunks_exact_mut(hsz)) {
                rmsnorm(h, self.store.f32s(&layer.post_norm), cfg.rms_norm_eps, x);
            }
            match &layer.ffn {
                FfnWeights::Block(w) => {
                    let p = self.ffn_params.as_ref().expect("block FFN has params");
                    let mut scores = Vec::with_capacity(k * p.experts);
                    for (x, act) in xs.chunks_exact(hsz).zip(active.iter_mut()) {
                        let mut a = Vec::new();
                        scores.extend(block_ffn::route(w, &self.store, p, x, &mut a));
                        act.push(a);
                    }
                    let sets: Vec<&[u16]> = active.iter().map(|a| a.last().expect("pushed above").as_slice()).collect();
                    match mode {
                        FfnMode::Sparse if k == 1 => {
                            block_ffn::forward_sparse(w, &self.store, p, &xs, &scores, sets[0], &mut ys)
                        }
                        FfnMode::Sparse => {
                            let union = crate::kernels::union_sorted(&sets);
                            block_ffn::forward_chunk(w, &self.store, p, &xs, &scores, &union, &mut ys);
                        }
                        FfnMode::Dense => block_ffn::forward_dense(w, &self.store, p, &xs, &scores, &mut ys),
                    }
                }
                FfnWeights::Dense(w) => {
                    dense_ffn::forward_span(w, &self.store, &xs, &mut ys);
                    active.iter_mut().for_each(|a| a.push(Vec::new()));
                }
            }
            hs.iter_mut().zip(&ys).for_each(|(a, b)| *a += b * res_scale);
        }
        cache.len += k;

        let first = match logits {
            Logits::All => 0,
            Logits::Last => k.saturating_sub(1),
            Logits::None => k,
        };
        ForwardOut { logits: self.head(&hs[first * hsz..]), active }
    }

    /// Attention of one layer for the tokens of `xs` at `pos0..` (their K/V appended to the cache).
    fn attend(&self, layer: &Layer, lc: &mut LayerCache, pos0: usize, xs: &[f32], ys: &mut [f32]) {
        let cfg = &self.config;
        match (&layer.attn, lc, &cfg.attention) {
            (AttnWeights::Mla(w), LayerCache::Mla { latent, k_pe }, Attention::Mla(d)) => mla::forward_span(
                w,
                &self.store,
                d,
                cfg.num_attention_heads,
                &self.inv_freq,
                pos0,
                xs,
                latent,
                k_pe,
                ys,
            ),
            (AttnWeights::Gqa(w), LayerCache::Gqa { k, v }, Attention::Vanilla { num_key_value_heads, head_dim }) => {
                gqa::forward_span(
                    w,
                    &self.store,
                    cfg.num_attention_heads,
                    *num_key_value_heads,
                    *head_dim,
                    &self.inv_freq,
                    pos0,
                    xs,
                    k,
                    v,
                    ys,
                )
            }
            _ => unreachable!("cache and weights are built from the same config"),
        }
    }

    /// Final norm and LM head for the hidden states `hs` (`[n, hidden]`), one product for all.
    fn head(&self, hs: &[f32]) -> Vec<Vec<f32>> {
        let cfg = &self.config;
        let (hsz, vocab) = (cfg.hidden_size, cfg.vocab_size);
        let n = hs.len() / hsz;
        if n == 0 {
            return Vec::new();
        }
        let mut xs = vec![0.0; n * hsz];
        let div = cfg.logit_divisor();
        for (h, x) in hs.chunks_exact(hsz).zip(xs.chunks_exact_mut(hsz)) {
            rmsnorm(h, self.store.f32s(&self.final_norm), cfg.rms_norm_eps, x);
            x.iter_mut().for_each(|v| *v /= div);
        }
        let mut logits = vec![0.0; n * vocab];
        matmul(self.store.mat(&self.lm_head), &xs, &mut logits);
        logits.chunks_exact(vocab).map(<[f32]>::to_vec).collect()
    }
}

/// Logits must be numbers: NaN or infinity means weights or config values that overflow f32 (a
/// damaged or forged package), and sampling from them would silently pick id 0.
fn check_finite(logits: &[Vec<f32>]) -> Result<()> {
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
