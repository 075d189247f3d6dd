//! Tensor names and shapes, in the released Hugging Face layout and in our runtime layout.
//!
//! One table drives both the converter (what to expect, how to re-lay it out) and the loader
//! (what the runtime file must contain), so the two can never disagree.

use crate::config::{Attention, Ffn, FfnType, ModelConfig, Router, RouterNorm};

/// How a source tensor becomes its runtime form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transform {
    /// Same element order (a reshape at most).
    Identity,
    /// `block_linear` down projection `[H, Ne·de]` → expert-major `[Ne·de, H]` (a transpose), so the
    /// sparse down projection reads one contiguous block per active expert.
    TransposeDown,
    /// `block` down projection `[Ne, H, de]` → expert-major `[Ne·de, H]`.
    TransposeDownBlocks { experts: usize },
}

/// What a tensor is in the decoder, so the model picks its weights by role and names are spelled
/// only in this file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part {
    Embed,
    InputNorm,
    /// MLA low-rank query: `q_a_proj`, `q_a_layernorm`, `q_b_proj`.
    QA,
    QANorm,
    QB,
    /// The direct query projection (MLA without low rank, and GQA).
    Q,
    KvA,
    KvANorm,
    KvB,
    K,
    V,
    O,
    PostNorm,
    Router,
    RouterNorm,
    /// BlockFFN experts: up `[Ne·de, H]`, transposed down `[Ne·de, H]`.
    Up,
    DownT,
    /// Dense FFN of the baselines.
    Gate,
    DenseUp,
    DenseDown,
    FinalNorm,
    LmHead,
}

/// A tensor's role: its part and, for layer tensors, the layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Role {
    pub layer: Option<usize>,
    pub part: Part,
}

#[derive(Debug, Clone)]
pub struct TensorEntry {
    pub role: Role,
    pub hf_name: String,
    pub hf_shape: Vec<usize>,
    pub rt_name: String,
    pub rt_shape: Vec<usize>,
    pub transform: Transform,
    /// Norm weights and routers stay f32 whatever the chosen dtype: they are tiny, and keeping the
    /// router exact keeps the active expert sets identical across dtypes.
    pub keep_f32: bool,
}

fn same(role: Role, name: String, shape: Vec<usize>, keep_f32: bool) -> TensorEntry {
    TensorEntry {
        role,
        hf_name: name.clone(),
        hf_shape: shape.clone(),
        rt_name: name,
        rt_shape: shape,
        transform: Transform::Identity,
        keep_f32,
    }
}

/// `a · b` for a shape. The config's limits (`config::LIMITS`, `MAX_FFN_WIDTH`, `MAX_HEAD_DIM`)
/// keep every such product below 2^32; saturating instead of wrapping means that even a config
/// built around those checks yields a shape no real tensor matches (an error, never a wrap to 0).
fn mul(a: usize, b: usize) -> usize {
    a.saturating_mul(b)
}

/// Every tensor of a checkpoint with this config, in forward order.
pub fn tensor_table(cfg: &ModelConfig) -> Vec<TensorEntry> {
    let h = cfg.hidden_size;
    let heads = cfg.num_attention_heads;
    #[allow(non_snake_case)]
    let G = |part| Role { layer: None, part };
    let mut t = vec![same(G(Part::Embed), "model.embed_tokens.weight".into(), vec![cfg.vocab_size, h], false)];
    for i in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{i}");
        #[allow(non_snake_case)]
        let L = |part| Role { layer: Some(i), part };
        t.push(same(L(Part::InputNorm), format!("{p}.input_layernorm.weight"), vec![h], true));
        match &cfg.attention {
            Attention::Mla(d) => {
                let qhd = d.q_head_dim();
                match d.q_lora_rank {
                    Some(r) => {
                        t.push(same(L(Part::QA), format!("{p}.self_attn.q_a_proj.weight"), vec![r, h], false));
                        t.push(same(L(Part::QANorm), format!("{p}.self_attn.q_a_layernorm.weight"), vec![r], true));
                        t.push(same(L(Part::QB), format!("{p}.self_attn.q_b_proj.weight"), vec![mul(heads, qhd), r], false));
                    }
                    None => t.push(same(L(Part::Q), format!("{p}.self_attn.q_proj.weight"), vec![mul(heads, qhd), h], false)),
                }
                t.push(same(
                    L(Part::KvA),
                    format!("{p}.self_attn.kv_a_proj_with_mqa.weight"),
                    vec![d.kv_lora_rank.saturating_add(d.qk_rope_head_dim), h],
                    false,
                ));
                t.push(same(L(Part::KvANorm), format!("{p}.self_attn.kv_a_layernorm.weight"), vec![d.kv_lora_rank], true));
                t.push(same(
                    L(Part::KvB),
                    format!("{p}.self_attn.kv_b_proj.weight"),
                    vec![mul(heads, d.qk_nope_head_dim.saturating_add(d.v_head_dim)), d.kv_lora_rank],
                    false,
                ));
                t.push(same(L(Part::O), format!("{p}.self_attn.o_proj.weight"), vec![h, mul(heads, d.v_head_dim)], false));
            }
            Attention::Vanilla { num_key_value_heads: kvh, head_dim: hd } => {
                t.push(same(L(Part::Q), format!("{p}.self_attn.q_proj.weight"), vec![mul(heads, *hd), h], false));
                t.push(same(L(Part::K), format!("{p}.self_attn.k_proj.weight"), vec![mul(*kvh, *hd), h], false));
                t.push(same(L(Part::V), format!("{p}.self_attn.v_proj.weight"), vec![mul(*kvh, *hd), h], false));
                t.push(same(L(Part::O), format!("{p}.self_attn.o_proj.weight"), vec![h, mul(heads, *hd)], false));
            }
        }
        t.push(same(L(Part::PostNorm), format!("{p}.post_attention_layernorm.weight"), vec![h], true));
        match cfg.ffn {
            Ffn::Block { layout, num_experts: ne, expert_size: de, router, .. } => {
                t.push(same(L(Part::Router), format!("{p}.mlp.router_proj.weight"), vec![ne, h], true));
                if router == Router::Relu(RouterNorm::Rms) {
                    t.push(same(L(Part::RouterNorm), format!("{p}.mlp.router_norm.weight"), vec![ne], true));
                }
                let (up_shape, down_shape, down_tf) = match layout {
                    FfnType::Block => {
                        (vec![ne, de, h], vec![ne, h, de], Transform::TransposeDownBlocks { experts: ne })
                    }
                    _ => (vec![mul(ne, de), h], vec![h, mul(ne, de)], Transform::TransposeDown),
                };
                t.push(TensorEntry {
                    role: L(Part::Up),
                    hf_name: format!("{p}.mlp.up_proj"),
                    hf_shape: up_shape,
                    rt_name: format!("{p}.mlp.up_proj"),
                    rt_shape: vec![mul(ne, de), h],
                    transform: Transform::Identity,
                    keep_f32: false,
                });
                t.push(TensorEntry {
                    role: L(Part::DownT),
                    hf_name: format!("{p}.mlp.down_proj"),
                    hf_shape: down_shape,
                    rt_name: format!("{p}.mlp.down_proj_t"),
                    rt_shape: vec![mul(ne, de), h],
                    transform: down_tf,
                    keep_f32: false,
                });
            }
            Ffn::Dense { intermediate_size: n, gated } => {
                if gated {
                    t.push(same(L(Part::Gate), format!("{p}.mlp.gate_proj.weight"), vec![n, h], false));
                }
                t.push(same(L(Part::DenseUp), format!("{p}.mlp.up_proj.weight"), vec![n, h], false));
                t.push(same(L(Part::DenseDown), format!("{p}.mlp.down_proj.weight"), vec![h, n], false));
            }
        }
    }
    t.push(same(G(Part::FinalNorm), "model.norm.weight".into(), vec![h], true));
    if !cfg.tie_word_embeddings {
        t.push(same(G(Part::LmHead), "lm_head.weight".into(), vec![cfg.vocab_size, h], false));
    }
    t
}

/// Every tensor of a store by its role, checked against the config: each tensor the table implies
/// is present with its exact shape (f32 where it is kept f32) and there is nothing else. The one
/// validation every backend builds its weights from.
pub struct RoleMap(std::collections::HashMap<Role, crate::weights::TensorInfo>);

impl RoleMap {
    pub fn new(cfg: &ModelConfig, store: &crate::weights::WeightStore) -> crate::Result<RoleMap> {
        let mut by_role = std::collections::HashMap::new();
        let mut names = std::collections::HashSet::new();
        for e in tensor_table(cfg) {
            let dtype = if e.keep_f32 { Some(crate::tensor::DType::F32) } else { None };
            by_role.insert(e.role, store.expect(&e.rt_name, &e.rt_shape, dtype)?);
            names.insert(e.rt_name);
        }
        if let Some(extra) = store.names().find(|n| !names.contains(*n)) {
            return Err(crate::Error::InvalidCheckpoint(format!(
                "model.safetensors has tensor `{extra}` that the config does not use"
            )));
        }
        Ok(RoleMap(by_role))
    }

    /// The tensor of `part` (of `layer`, or global for `None`). Every role a backend asks for is
    /// one the table has for its config; a miss would be a bug, reported as an error, not a panic.
    pub fn get(&self, layer: Option<usize>, part: Part) -> crate::Result<crate::weights::TensorInfo> {
        self.0.get(&Role { layer, part }).cloned().ok_or_else(|| {
            crate::Error::InvalidCheckpoint(format!("no {part:?} tensor for layer {layer:?} in the layout table"))
        })
    }
}
