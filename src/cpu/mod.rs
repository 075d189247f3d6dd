//! The CPU backend: the decoder steps over weights held in one host buffer ([`WeightStore`]),
//! computed by the crate's kernels (SIMD128 on wasm32, AVX2 on x86-64, scalar elsewhere).

mod block_ffn;
mod cache;
pub(crate) mod dense_ffn;
pub(crate) mod gqa;
mod mla;

pub use cache::KvCache;

use cache::LayerCache;

use crate::backend::Backend;
use crate::config::{Attention, Ffn, ModelConfig, Router, RouterNorm};
use crate::experts::{self, ExpertMasks};
use crate::kernels::{matmul, rmsnorm, rope_inv_freq, row_to_f32, softmax};
use crate::layout::{tensor_table, Part, RoleMap};
use crate::model::FfnMode;
use crate::tensor::DType;
use crate::weights::{TensorInfo, WeightStore};
use crate::spec::DraftTarget;
use crate::Result;

use block_ffn::{BlockFfnParams, BlockFfnWeights};
use dense_ffn::DenseFfnWeights;
use gqa::GqaWeights;
use mla::MlaWeights;

enum AttnWeights {
    Mla(MlaWeights),
    Gqa(GqaWeights),
}

enum FfnWeights {
    Block(BlockFfnWeights, BlockFfnParams),
    Dense(DenseFfnWeights),
}

struct Layer {
    input_norm: TensorInfo,
    post_norm: TensorInfo,
    attn: AttnWeights,
    ffn: FfnWeights,
}

pub struct Cpu {
    config: ModelConfig,
    store: WeightStore,
    embed: TensorInfo,
    lm_head: TensorInfo,
    final_norm: TensorInfo,
    layers: Vec<Layer>,
    inv_freq: Vec<f32>,
}

/// A span's hidden states `h` (`[k, hidden]`) and the two scratch rows the steps reuse.
pub struct CpuActs {
    h: Vec<f32>,
    x: Vec<f32>,
    y: Vec<f32>,
}

impl Cpu {
    /// Checks that every tensor the config implies is present with its exact shape and that
    /// there is nothing else, then picks each layer's weights by role.
    pub fn new(config: ModelConfig, store: WeightStore) -> Result<Self> {
        let roles = RoleMap::new(&config, &store)?;
        let t = |layer: Option<usize>, part: Part| roles.get(layer, part);
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let l = Some(i);
            let attn = match &config.attention {
                Attention::Mla(d) => AttnWeights::Mla(MlaWeights {
                    q_a: match d.q_lora_rank {
                        Some(_) => Some((t(l, Part::QA)?, t(l, Part::QANorm)?)),
                        None => None,
                    },
                    q_b: if d.q_lora_rank.is_some() { t(l, Part::QB)? } else { t(l, Part::Q)? },
                    kv_a: t(l, Part::KvA)?,
                    kv_a_norm: t(l, Part::KvANorm)?,
                    kv_b: t(l, Part::KvB)?,
                    o: t(l, Part::O)?,
                }),
                Attention::Vanilla { .. } => AttnWeights::Gqa(GqaWeights {
                    q: t(l, Part::Q)?,
                    k: t(l, Part::K)?,
                    v: t(l, Part::V)?,
                    o: t(l, Part::O)?,
                }),
            };
            let ffn = match config.ffn {
                Ffn::Block { num_experts, expert_size, router, norm_scale, .. } => FfnWeights::Block(
                    BlockFfnWeights {
                        router: t(l, Part::Router)?,
                        router_norm: if router == Router::Relu(RouterNorm::Rms) {
                            Some(t(l, Part::RouterNorm)?)
                        } else {
                            None
                        },
                        up: t(l, Part::Up)?,
                        down_t: t(l, Part::DownT)?,
                    },
                    BlockFfnParams { experts: num_experts, expert_size, router, norm_scale, eps: config.rms_norm_eps },
                ),
                Ffn::Dense { gated, .. } => FfnWeights::Dense(DenseFfnWeights {
                    gate: if gated { Some(t(l, Part::Gate)?) } else { None },
                    up: t(l, Part::DenseUp)?,
                    down: t(l, Part::DenseDown)?,
                }),
            };
            layers.push(Layer { input_norm: t(l, Part::InputNorm)?, post_norm: t(l, Part::PostNorm)?, attn, ffn });
        }
        let rope_dim = match &config.attention {
            Attention::Mla(d) => d.qk_rope_head_dim,
            Attention::Vanilla { head_dim, .. } => *head_dim,
        };
        Ok(Cpu {
            inv_freq: rope_inv_freq(rope_dim, config.rope_theta),
            embed: t(None, Part::Embed)?,
            lm_head: if config.tie_word_embeddings { t(None, Part::Embed)? } else { t(None, Part::LmHead)? },
            final_norm: t(None, Part::FinalNorm)?,
            layers,
            config,
            store,
        })
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

    /// The config and the weights, checked, for another backend to take over (no copy).
    pub fn into_parts(self) -> (ModelConfig, WeightStore) {
        (self.config, self.store)
    }

    fn attention_over(&self, l: usize, cache: &mut KvCache, a: &mut CpuActs, tree: Option<&[u32]>) -> Result<()> {
        let (cfg, hsz) = (&self.config, self.hidden());
        let layer = &self.layers[l];
        for (h, x) in a.h.chunks_exact(hsz).zip(a.x.chunks_exact_mut(hsz)) {
            rmsnorm(h, self.store.f32s(&layer.input_norm), cfg.rms_norm_eps, x);
        }
        let pos0 = cache.len;
        match (&layer.attn, &mut cache.layers[l], &cfg.attention) {
            (AttnWeights::Mla(w), LayerCache::Mla { latent, k_pe }, Attention::Mla(d)) => mla::forward_span(
                w,
                &self.store,
                d,
                cfg.num_attention_heads,
                &self.inv_freq,
                pos0,
                &a.x,
                latent,
                k_pe,
                tree,
                &mut a.y,
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
                    &a.x,
                    k,
                    v,
                    tree,
                    &mut a.y,
                )
            }
            _ => unreachable!("cache and weights are built from the same config"),
        }
        let s = cfg.residual_scale();
        a.h.iter_mut().zip(&a.y).for_each(|(h, y)| *h += y * s);
        Ok(())
    }

    fn hidden(&self) -> usize {
        self.config.hidden_size
    }
}

impl Backend for Cpu {
    type Acts = CpuActs;
    type Cache = KvCache;

    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn new_cache(&self) -> Result<KvCache> {
        let layers = self
            .layers
            .iter()
            .map(|l| match l.attn {
                AttnWeights::Mla(_) => LayerCache::Mla { latent: Vec::new(), k_pe: Vec::new() },
                AttnWeights::Gqa(_) => LayerCache::Gqa { k: Vec::new(), v: Vec::new() },
            })
            .collect();
        Ok(KvCache { layers, len: 0 })
    }

    fn embed(&self, ids: &[u32]) -> Result<CpuActs> {
        let hsz = self.hidden();
        let mut h = vec![0.0; ids.len() * hsz];
        for (row, &id) in h.chunks_exact_mut(hsz).zip(ids) {
            row_to_f32(self.store.mat(&self.embed), id as usize, row);
            row.iter_mut().for_each(|v| *v *= self.config.scale_emb);
        }
        Ok(CpuActs { x: vec![0.0; h.len()], y: vec![0.0; h.len()], h })
    }

    /// Attention projections are matrix products over the span (`matmul`, bit-identical per token
    /// to `matvec`); attention over the cache goes token by token, in order.
    fn attention(&self, l: usize, cache: &mut KvCache, a: &mut CpuActs) -> Result<()> {
        self.attention_over(l, cache, a, None)
    }

    fn attention_tree(&self, l: usize, cache: &mut KvCache, a: &mut CpuActs, tree: &[u32]) -> Result<()> {
        self.attention_over(l, cache, a, Some(tree))
    }

    /// Sparse block FFNs run one token alone over its active experts and several with the chunk
    /// kernels over the union of theirs (each expert read once); dense mode computes every expert.
    fn ffn(&self, l: usize, mode: FfnMode, a: &mut CpuActs, masks: &mut ExpertMasks) -> Result<()> {
        let (cfg, hsz) = (&self.config, self.hidden());
        let layer = &self.layers[l];
        for (h, x) in a.h.chunks_exact(hsz).zip(a.x.chunks_exact_mut(hsz)) {
            rmsnorm(h, self.store.f32s(&layer.post_norm), cfg.rms_norm_eps, x);
        }
        match &layer.ffn {
            FfnWeights::Block(w, p) => {
                let k = a.h.len() / hsz;
                let mut scores = Vec::with_capacity(k * p.experts);
                for (t, x) in a.x.chunks_exact(hsz).enumerate() {
                    scores.extend(block_ffn::route(w, &self.store, p, x, masks.layer_mut(t, l)));
                }
                match mode {
                    FfnMode::Sparse => {
                        let set: Vec<u16> =
                            if k == 1 { experts::ids(masks.layer(0, l)).collect() } else { experts::ids(&masks.union(l)).collect() };
                        if k == 1 {
                            block_ffn::forward_sparse(w, &self.store, p, &a.x, &scores, &set, &mut a.y)
                        } else {
                            block_ffn::forward_chunk(w, &self.store, p, &a.x, &scores, &set, &mut a.y)
                        }
                    }
                    FfnMode::Dense => block_ffn::forward_dense(w, &self.store, p, &a.x, &scores, &mut a.y),
                }
            }
            FfnWeights::Dense(w) => dense_ffn::forward_span(w, &self.store, &a.x, &mut a.y),
        }
        let s = cfg.residual_scale();
        a.h.iter_mut().zip(&a.y).for_each(|(h, y)| *h += y * s);
        Ok(())
    }

    /// One product for all requested positions.
    fn features(&self, a: &CpuActs) -> Result<Vec<f32>> {
        let hsz = self.hidden();
        let mut out = vec![0.0; a.h.len()];
        for (h, y) in a.h.chunks_exact(hsz).zip(out.chunks_exact_mut(hsz)) {
            rmsnorm(h, self.store.f32s(&self.final_norm), self.config.rms_norm_eps, y);
        }
        Ok(out)
    }

    fn draft_target(&self) -> Option<&dyn DraftTarget> {
        Some(self)
    }

    fn verifies_trees(&self) -> bool {
        true
    }

    async fn head(&self, a: &mut CpuActs, from: usize, _experts: &mut ExpertMasks) -> Result<Vec<Vec<f32>>> {
        let k = a.h.len() / self.hidden();
        self.head_rows(a, from, k).await
    }

    fn head_on_demand(&self) -> bool {
        true
    }

    async fn head_rows(&self, a: &mut CpuActs, from: usize, to: usize) -> Result<Vec<Vec<f32>>> {
        let cfg = &self.config;
        let (hsz, vocab) = (cfg.hidden_size, cfg.vocab_size);
        let to = (to * hsz).min(a.h.len());
        let hs = &a.h[(from * hsz).min(to)..to];
        let n = hs.len() / hsz;
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut xs = vec![0.0; n * hsz];
        let div = cfg.logit_divisor();
        for (h, x) in hs.chunks_exact(hsz).zip(xs.chunks_exact_mut(hsz)) {
            rmsnorm(h, self.store.f32s(&self.final_norm), cfg.rms_norm_eps, x);
            x.iter_mut().for_each(|v| *v /= div);
        }
        let mut logits = vec![0.0; n * vocab];
        matmul(self.store.mat(&self.lm_head), &xs, &mut logits);
        Ok(logits.chunks_exact(vocab).map(<[f32]>::to_vec).collect())
    }
}

/// The draft head's view of the model: the same embedding rows and LM head as the decoder's.
impl DraftTarget for Cpu {
    fn embed_scaled(&self, id: u32, out: &mut [f32]) {
        row_to_f32(self.store.mat(&self.embed), id as usize, out);
        out.iter_mut().for_each(|v| *v *= self.config.scale_emb);
    }

    fn lm_head(&self, features: &[f32], out: &mut [f32]) {
        let div = self.config.logit_divisor();
        let xs: Vec<f32> = features.iter().map(|v| v / div).collect();
        matmul(self.store.mat(&self.lm_head), &xs, out);
    }

    fn vocab(&self) -> usize {
        self.config.vocab_size
    }
}

/// Depth of node `i` of a draft tree given as ancestor masks (`tree[i]` has bit j set for every
/// ancestor j of node i and for i itself; node 0 is the root).
pub(crate) fn tree_depth(tree: &[u32], i: usize) -> usize {
    tree[i].count_ones() as usize - 1
}

/// Softmax over the scores token `i` of a span at `pos0` may see: every position before the span,
/// and, with a `tree`, only its ancestors within the span. Hidden positions get probability 0;
/// the visible ones are normalised in position order, as if the token's path ran alone.
pub(crate) fn softmax_visible(scores: &mut [f32], pos0: usize, i: usize, tree: Option<&[u32]>, visible: &mut Vec<f32>) {
    let Some(tree) = tree else { return softmax(scores) };
    let mask = tree[i];
    visible.clear();
    visible.extend_from_slice(&scores[..pos0]);
    visible.extend((0..=i).filter(|&j| mask >> j & 1 == 1).map(|j| scores[pos0 + j]));
    softmax(visible);
    scores[..pos0].copy_from_slice(&visible[..pos0]);
    let mut next = pos0;
    for j in 0..=i {
        scores[pos0 + j] = if mask >> j & 1 == 1 {
            next += 1;
            visible[next - 1]
        } else {
            0.0
        };
    }
}
