//! The EAGLE-style draft head: one small decoder layer that reads the target model's own final
//! hidden state (its "feature") next to the embedding of the token that followed it, and predicts
//! the next feature, which the target's LM head turns into the next draft token. Drafting runs the
//! head autoregressively on its own predicted features; the target's real features replace them
//! for every position the target has verified. It shares the target's embedding and LM head
//! ([`DraftTarget`]), so the head file holds only its one layer (~0.8M parameters for the demo).
//!
//! ```text
//! head position j (token t_{j+1}, feature f_j):
//!   x   = fc([Embed[t_{j+1}] · scale_emb ; f_j])
//!   x  += Attn(RMSNorm(x))          (multi-head, RoPE at position j, causal over the head's cache)
//!   x  += MLP(RMSNorm(x))           (gated SiLU)
//!   g_j = RMSNorm(x)                ≈ f_{j+1};   LMHead(g_j) predicts t_{j+2}
//! ```
//!
//! Files (listed in the package manifest, optional): [`EAGLE_CONFIG`] and [`EAGLE_WEIGHTS`];
//! `train/train_eagle.py` writes them.

use std::sync::Arc;

use serde::Deserialize;

use super::{DraftTree, Drafter};
use crate::config::ModelConfig;
use crate::cpu::dense_ffn::{self, DenseFfnWeights};
use crate::cpu::gqa::{self, GqaWeights};
use crate::kernels::{matmul, rmsnorm, rope_inv_freq};
use crate::sampling::argmax;
use crate::tensor::DType;
use crate::weights::{AlignedBuf, TensorInfo, WeightStore};
use crate::{Error, Result};

/// The head's config file in a model package.
pub const EAGLE_CONFIG: &str = "eagle.json";
/// The head's weights in a model package (f16 matrices, f32 norms).
pub const EAGLE_WEIGHTS: &str = "eagle.safetensors";
const FORMAT: &str = "blockffn-eagle";
const FORMAT_VERSION: u32 = 1;
/// Largest `eagle.json` accepted.
pub const MAX_EAGLE_CONFIG_BYTES: u64 = 1 << 20;

/// What the target model lends the head: its embedding rows and its LM head.
pub trait DraftTarget {
    /// `Embed[id] · scale_emb` into `out` (`hidden` floats); `id` already range-checked.
    fn embed_scaled(&self, id: u32, out: &mut [f32]);
    /// The LM head over final-normed feature rows (`[n, hidden]` → `[n, vocab]`).
    fn lm_head(&self, features: &[f32], out: &mut [f32]);
    fn vocab(&self) -> usize;
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EagleConfig {
    pub format: String,
    pub format_version: u32,
    pub hidden_size: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub intermediate_size: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
    /// Free-form record of how the head was trained.
    #[serde(default)]
    pub training: serde_json::Value,
}

/// The head's weights, checked against the target it drafts for.
pub struct EagleHead {
    cfg: EagleConfig,
    store: WeightStore,
    fc: TensorInfo,
    input_norm: TensorInfo,
    attn: GqaWeights,
    post_norm: TensorInfo,
    mlp: DenseFfnWeights,
    norm: TensorInfo,
    inv_freq: Vec<f32>,
}

impl EagleHead {
    /// Reads `eagle.json` and the weights file already in `weights`, checking every shape against
    /// the config and the config against `target` (same hidden size; heads that divide evenly).
    pub fn new(config_json: &str, weights: AlignedBuf, target: &ModelConfig) -> Result<Self> {
        let bad = |m: String| Error::InvalidCheckpoint(format!("{EAGLE_CONFIG}: {m}"));
        let cfg: EagleConfig =
            serde_json::from_str(config_json).map_err(|e| bad(format!("not a valid draft-head config: {e}")))?;
        if cfg.format != FORMAT || cfg.format_version != FORMAT_VERSION {
            return Err(bad(format!(
                "format \"{}\" version {}, this engine reads \"{FORMAT}\" version {FORMAT_VERSION}",
                cfg.format.escape_debug(),
                cfg.format_version
            )));
        }
        let h = cfg.hidden_size;
        if h != target.hidden_size {
            return Err(bad(format!(
                "hidden_size {h} but the model's is {}: this head was trained for another model",
                target.hidden_size
            )));
        }
        let (heads, kvh, hd, inter) = (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, cfg.intermediate_size);
        if heads == 0 || kvh == 0 || hd == 0 || inter == 0 || heads % kvh != 0 || hd % 2 != 0 || hd > 1024 || heads > 1024 || inter > 1 << 20 {
            return Err(bad(format!(
                "{heads} heads, {kvh} key/value heads of dimension {hd}, intermediate size {inter}: not a usable attention layer"
            )));
        }
        if !(cfg.rms_norm_eps > 0.0 && cfg.rope_theta > 0.0) {
            return Err(bad("rms_norm_eps and rope_theta must be positive".into()));
        }
        let store = WeightStore::from_buf(weights).map_err(|e| match e {
            Error::InvalidCheckpoint(m) => Error::InvalidCheckpoint(m.replacen("model.safetensors", EAGLE_WEIGHTS, 1)),
            e => e,
        })?;
        let mut used = Vec::new();
        let mut t = |name: &str, shape: &[usize], norm: bool| -> Result<TensorInfo> {
            used.push(name.to_string());
            let info = store
                .expect(name, shape, norm.then_some(DType::F32))
                .map_err(|e| Error::InvalidCheckpoint(format!("{EAGLE_WEIGHTS}: {e}")))?;
            if !norm && info.dtype == DType::I8 {
                return Err(Error::InvalidCheckpoint(format!("{EAGLE_WEIGHTS}: `{name}` is q8; draft heads hold f32, f16 or bf16")));
            }
            Ok(info)
        };
        let head = EagleHead {
            fc: t("fc.weight", &[h, 2 * h], false)?,
            input_norm: t("input_layernorm.weight", &[h], true)?,
            attn: GqaWeights {
                q: t("self_attn.q_proj.weight", &[heads * hd, h], false)?,
                k: t("self_attn.k_proj.weight", &[kvh * hd, h], false)?,
                v: t("self_attn.v_proj.weight", &[kvh * hd, h], false)?,
                o: t("self_attn.o_proj.weight", &[h, heads * hd], false)?,
            },
            post_norm: t("post_attention_layernorm.weight", &[h], true)?,
            mlp: DenseFfnWeights {
                gate: Some(t("mlp.gate_proj.weight", &[inter, h], false)?),
                up: t("mlp.up_proj.weight", &[inter, h], false)?,
                down: t("mlp.down_proj.weight", &[h, inter], false)?,
            },
            norm: t("norm.weight", &[h], true)?,
            inv_freq: rope_inv_freq(hd, cfg.rope_theta),
            cfg,
            store,
        };
        if let Some(extra) = head.store.names().find(|n| !used.contains(n)) {
            return Err(Error::InvalidCheckpoint(format!("{EAGLE_WEIGHTS} has tensor `{extra}` that a draft head does not use")));
        }
        Ok(head)
    }

    pub fn config(&self) -> &EagleConfig {
        &self.cfg
    }

    /// Parameters held (the shared embedding and LM head not counted).
    pub fn params(&self) -> usize {
        [&self.fc, &self.input_norm, &self.attn.q, &self.attn.k, &self.attn.v, &self.attn.o, &self.post_norm]
            .into_iter()
            .chain(self.mlp.gate.iter())
            .chain([&self.mlp.up, &self.mlp.down, &self.norm])
            .map(TensorInfo::numel)
            .sum()
    }

    /// Runs head positions `cache.len()..` with inputs `tokens[i]` and `features[i]` (`[n, hidden]`),
    /// appending to `cache`; returns the predicted features `g` (`[n, hidden]`).
    pub fn forward(&self, target: &dyn DraftTarget, cache: &mut HeadCache, tokens: &[u32], features: &[f32]) -> Vec<f32> {
        let (h, c) = (self.cfg.hidden_size, &self.cfg);
        let n = tokens.len();
        debug_assert_eq!(features.len(), n * h);
        let mut cat = vec![0.0; n * 2 * h];
        for ((row, &id), f) in cat.chunks_exact_mut(2 * h).zip(tokens).zip(features.chunks_exact(h)) {
            target.embed_scaled(id, &mut row[..h]);
            row[h..].copy_from_slice(f);
        }
        let mut x = vec![0.0; n * h];
        matmul(self.store.mat(&self.fc), &cat, &mut x);
        let mut normed = vec![0.0; n * h];
        let mut delta = vec![0.0; n * h];
        let rows = |src: &[f32], w: &[f32], dst: &mut [f32]| {
            for (s, d) in src.chunks_exact(h).zip(dst.chunks_exact_mut(h)) {
                rmsnorm(s, w, c.rms_norm_eps, d);
            }
        };
        rows(&x, self.store.f32s(&self.input_norm), &mut normed);
        let pos0 = cache.len;
        gqa::forward_span(
            &self.attn,
            &self.store,
            c.num_attention_heads,
            c.num_key_value_heads,
            c.head_dim,
            &self.inv_freq,
            pos0,
            &normed,
            &mut cache.k,
            &mut cache.v,
            None,
            &mut delta,
        );
        cache.len += n;
        x.iter_mut().zip(&delta).for_each(|(a, d)| *a += d);
        rows(&x, self.store.f32s(&self.post_norm), &mut normed);
        dense_ffn::forward_span(&self.mlp, &self.store, &normed, &mut delta);
        x.iter_mut().zip(&delta).for_each(|(a, d)| *a += d);
        let mut g = vec![0.0; n * h];
        rows(&x, self.store.f32s(&self.norm), &mut g);
        g
    }
}

/// The head's keys and values per position.
#[derive(Debug, Default, Clone)]
pub struct HeadCache {
    k: Vec<f32>,
    v: Vec<f32>,
    len: usize,
}

impl HeadCache {
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    fn truncate(&mut self, len: usize, kv_width: usize) {
        if len < self.len {
            self.len = len;
            self.k.truncate(len * kv_width);
            self.v.truncate(len * kv_width);
        }
    }
}

/// The EAGLE drafter of one generation: the target's features seen so far and the head's cache
/// over the positions fed with them.
pub struct Eagle {
    head: Arc<EagleHead>,
    /// The target's features, position by position (`[n, hidden]`).
    features: Vec<f32>,
    cache: HeadCache,
    /// The target position of the head cache's first position.
    base: usize,
    max_catch_up: usize,
}

/// The most positions the head catches up on before a draft: after a long run without drafting
/// (speculation switched off), it restarts from the latest ones instead of paying for them all.
/// RoPE keeps relative offsets, so only the draft's context shortens; its exactness is the
/// verification's.
const MAX_CATCH_UP: usize = 8;

impl Eagle {
    pub fn new(head: Arc<EagleHead>) -> Eagle {
        Eagle::with_catch_up(head, MAX_CATCH_UP)
    }

    /// A drafter that catches up on at most `max` positions before a draft (`usize::MAX`: all).
    pub fn with_catch_up(head: Arc<EagleHead>, max: usize) -> Eagle {
        Eagle { head, features: Vec::new(), cache: HeadCache::default(), base: 0, max_catch_up: max }
    }

    fn seen(&self) -> usize {
        self.features.len() / self.head.cfg.hidden_size
    }
}

impl Drafter for Eagle {
    fn wants_features(&self) -> bool {
        true
    }

    fn observe(&mut self, pos0: usize, features: &[f32]) {
        let h = self.head.cfg.hidden_size;
        if pos0 > self.seen() {
            // A gap (positions run without features): start over from what is known.
            self.features.clear();
            self.cache.truncate(0, 1);
            self.base = 0;
            return;
        }
        self.features.truncate(pos0 * h);
        self.features.extend_from_slice(&features[..features.len() / h * h]);
        // Head position j reads f_j: positions from pos0 on are stale.
        let kvw = self.head.cfg.num_key_value_heads * self.head.cfg.head_dim;
        self.cache.truncate(pos0.saturating_sub(self.base), kvw);
    }

    /// `context` = t_0..t_n with the target's features f_0..f_{n-1} seen: head positions up to n-1
    /// take the real (t_{j+1}, f_j); each draft then feeds the head its own predicted feature.
    fn draft(&mut self, context: &[u32], k: usize, target: Option<&dyn DraftTarget>) -> Vec<u32> {
        self.draft_tree(context, k, 0, target).tokens
    }

    /// The head's greedy chain, with the next `width` most likely tokens at each depth as leaves
    /// beside it (the head's distribution is at hand there; no extra forwards).
    fn draft_tree(&mut self, context: &[u32], k: usize, width: usize, target: Option<&dyn DraftTarget>) -> DraftTree {
        let mut tree = DraftTree::default();
        let Some(target) = target else { return tree };
        let (h, n) = (self.head.cfg.hidden_size, self.seen());
        if k == 0 || n == 0 || context.len() != n + 1 {
            return tree;
        }
        let kvw = self.head.cfg.num_key_value_heads * self.head.cfg.head_dim;
        let head = Arc::clone(&self.head);
        // Catch up on the verified positions in one span, keeping their keys and values; position
        // n-1 is always rerun, since only its predicted feature g_{n-1} starts the draft.
        self.cache.truncate((n - 1).saturating_sub(self.base), kvw);
        if self.base > n - 1 || n - 1 - (self.base + self.cache.len) > self.max_catch_up {
            self.cache.truncate(0, kvw);
            self.base = n.saturating_sub(self.max_catch_up);
        }
        let from = self.base + self.cache.len;
        let g = head.forward(target, &mut self.cache, &context[from + 1..=n], &self.features[from * h..n * h]);
        let mut g = g[(n - from - 1) * h..].to_vec();
        let mut logits = vec![0.0; target.vocab()];
        let mut parent = 0;
        for depth in 0..k {
            target.lm_head(&g, &mut logits);
            let best = top(&logits, 1 + width);
            let Some(node) = tree.child(parent, best[0]) else { break };
            for &alt in &best[1..] {
                tree.child(parent, alt);
            }
            parent = node;
            if depth + 1 < k {
                g = head.forward(target, &mut self.cache, &[best[0]], &g);
            }
        }
        // Drafted positions hold the head's own features: the next call starts from the real ones.
        self.cache.truncate(n - self.base, kvw);
        tree
    }
}

/// The `n` largest entries' indices, largest first (ties: the lower index, as [`argmax`]).
fn top(x: &[f32], n: usize) -> Vec<u32> {
    if n == 1 {
        return vec![argmax(x) as u32];
    }
    let mut best: Vec<usize> = Vec::with_capacity(n + 1);
    for (i, &v) in x.iter().enumerate() {
        let at = best.iter().position(|&j| v > x[j]).unwrap_or(best.len());
        if at < n {
            best.insert(at, i);
            best.truncate(n);
        }
    }
    best.into_iter().map(|i| i as u32).collect()
}
