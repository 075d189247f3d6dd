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

#[derive(Debug, Clone)]
pub struct TensorEntry {
    pub hf_name: String,
    pub hf_shape: Vec<usize>,
    pub rt_name: String,
    pub rt_shape: Vec<usize>,
    pub transform: Transform,
    /// Norm weights and routers stay f32 whatever the chosen dtype: they are tiny, and keeping the
    /// router exact keeps the active expert sets identical across dtypes.
    pub keep_f32: bool,
}

fn same(name: String, shape: Vec<usize>, keep_f32: bool) -> TensorEntry {
    TensorEntry {
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
    let mut t = vec![same("model.embed_tokens.weight".into(), vec![cfg.vocab_size, h], false)];
    for i in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{i}");
        t.push(same(format!("{p}.input_layernorm.weight"), vec![h], true));
        match &cfg.attention {
            Attention::Mla(d) => {
                let qhd = d.q_head_dim();
                match d.q_lora_rank {
                    Some(r) => {
                        t.push(same(format!("{p}.self_attn.q_a_proj.weight"), vec![r, h], false));
                        t.push(same(format!("{p}.self_attn.q_a_layernorm.weight"), vec![r], true));
                        t.push(same(format!("{p}.self_attn.q_b_proj.weight"), vec![mul(heads, qhd), r], false));
                    }
                    None => t.push(same(format!("{p}.self_attn.q_proj.weight"), vec![mul(heads, qhd), h], false)),
                }
                t.push(same(
                    format!("{p}.self_attn.kv_a_proj_with_mqa.weight"),
                    vec![d.kv_lora_rank.saturating_add(d.qk_rope_head_dim), h],
                    false,
                ));
                t.push(same(format!("{p}.self_attn.kv_a_layernorm.weight"), vec![d.kv_lora_rank], true));
                t.push(same(
                    format!("{p}.self_attn.kv_b_proj.weight"),
                    vec![mul(heads, d.qk_nope_head_dim.saturating_add(d.v_head_dim)), d.kv_lora_rank],
                    false,
                ));
                t.push(same(format!("{p}.self_attn.o_proj.weight"), vec![h, mul(heads, d.v_head_dim)], false));
            }
            Attention::Vanilla { num_key_value_heads: kvh, head_dim: hd } => {
                t.push(same(format!("{p}.self_attn.q_proj.weight"), vec![mul(heads, *hd), h], false));
                t.push(same(format!("{p}.self_attn.k_proj.weight"), vec![mul(*kvh, *hd), h], false));
                t.push(same(format!("{p}.self_attn.v_proj.weight"), vec![mul(*kvh, *hd), h], false));
                t.push(same(format!("{p}.self_attn.o_proj.weight"), vec![h, mul(heads, *hd)], false));
            }
        }
        t.push(same(format!("{p}.post_attention_layernorm.weight"), vec![h], true));
        match cfg.ffn {
            Ffn::Block { layout, num_experts: ne, expert_size: de, router, .. } => {
                t.push(same(format!("{p}.mlp.router_proj.weight"), vec![ne, h], true));
                if router == Router::Relu(RouterNorm::Rms) {
                    t.push(same(format!("{p}.mlp.router_norm.weight"), vec![ne], true));
                }
                let (up_shape, down_shape, down_tf) = match layout {
                    FfnType::Block => {
                        (vec![ne, de, h], vec![ne, h, de], Transform::TransposeDownBlocks { experts: ne })
                    }
                    _ => (vec![mul(ne, de), h], vec![h, mul(ne, de)], Transform::TransposeDown),
                };
                t.push(TensorEntry {
                    hf_name: format!("{p}.mlp.up_proj"),
                    hf_shape: up_shape,
                    rt_name: format!("{p}.mlp.up_proj"),
                    rt_shape: vec![mul(ne, de), h],
                    transform: Transform::Identity,
                    keep_f32: false,
                });
                t.push(TensorEntry {
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
                    t.push(same(format!("{p}.mlp.gate_proj.weight"), vec![n, h], false));
                }
                t.push(same(format!("{p}.mlp.up_proj.weight"), vec![n, h], false));
                t.push(same(format!("{p}.mlp.down_proj.weight"), vec![h, n], false));
            }
        }
    }
    t.push(same("model.norm.weight".into(), vec![h], true));
    if !cfg.tie_word_embeddings {
        t.push(same("lm_head.weight".into(), vec![cfg.vocab_size, h], false));
    }
    t
}
