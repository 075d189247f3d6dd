//! `config.json` of a BlockFFN / MiniCPM checkpoint, read strictly.
//!
//! The Python class defaults of the released code differ from the released values (scale_emb 1 vs 12,
//! norm_after_router "sum" vs "rms", …), so every value that changes the maths is *required* here:
//! a missing key is an error naming the key, never a silent default.

use serde_json::{Map, Value};

use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionType {
    /// Multi-head latent attention (DeepSeek-V2 style), used by BlockFFN Small–XLarge.
    Mla,
    /// Standard multi-head / grouped-query attention, used by the 2.8B model.
    Vanilla,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FfnType {
    /// BlockFFN with 2-D expert tensors: up [Ne*de, H], down [H, Ne*de].
    BlockLinear,
    /// BlockFFN with 3-D expert tensors: up [Ne, de, H], down [Ne, H, de].
    Block,
    /// Dense FFN of the dense baselines (gated or not).
    Vanilla,
}

impl FfnType {
    pub fn is_block(self) -> bool {
        matches!(self, FfnType::BlockLinear | FfnType::Block)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouterNorm {
    /// RMSNorm over all Ne ReLU scores (zeros included) with a learnable weight — BlockFFN.
    Rms,
    /// s / (Σs · norm_scale + 1e-5).
    Sum,
    /// Raw ReLU scores.
    None,
}

/// How the router turns its logits into expert scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Router {
    /// BlockFFN: ReLU, then the given normalisation; an expert is active iff its ReLU output is > 0.
    Relu(RouterNorm),
    /// The TopK baseline: softmax over all logits, keep the `k` largest probabilities (not renormalised).
    TopK { k: usize },
}

#[derive(Debug, Clone, PartialEq)]
pub struct MlaDims {
    /// `None` means a plain `q_proj` (no low-rank query path).
    pub q_lora_rank: Option<usize>,
    pub kv_lora_rank: usize,
    pub qk_nope_head_dim: usize,
    pub qk_rope_head_dim: usize,
    pub v_head_dim: usize,
}

impl MlaDims {
    /// Cannot overflow: each part is at most [`MAX_HEAD_DIM`] (checked when the config is read).
    pub fn q_head_dim(&self) -> usize {
        self.qk_nope_head_dim + self.qk_rope_head_dim
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Attention {
    Mla(MlaDims),
    /// head_dim = hidden_size / num_attention_heads.
    Vanilla {
        num_key_value_heads: usize,
        head_dim: usize,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Ffn {
    Block { layout: FfnType, num_experts: usize, expert_size: usize, router: Router, norm_scale: f32 },
    Dense { intermediate_size: usize, gated: bool },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
    pub scale_emb: f32,
    pub dim_model_base: f32,
    pub scale_depth: f32,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    pub attention: Attention,
    pub ffn: Ffn,
}

/// Largest vocabulary we accept (the released Small–XLarge models use 122,753).
pub const MAX_VOCAB: usize = 1 << 20;
/// Largest FFN width: `num_experts · expert_size` (BlockFFN) or `intermediate_size` (dense).
pub const MAX_FFN_WIDTH: u64 = 1 << 20;
/// Largest attention head dimension (each of qk_nope / qk_rope / v, and a GQA head).
pub const MAX_HEAD_DIM: usize = 1 << 11;

/// Upper bound of every integer config key. A browser tab holds at most a few GiB, so these sit
/// far above the largest released size (XLarge: 24 layers, hidden 1,280, Ne·de 7,168; 2.8B:
/// hidden 2,048, Ne·de 16,384) yet keep every derived table small and every shape product far
/// from overflow, natively and on wasm32 (`layout::tensor_table` still multiplies with checks).
pub const LIMITS: &[(&str, u64)] = &[
    ("vocab_size", MAX_VOCAB as u64),
    ("hidden_size", 1 << 15),
    ("num_hidden_layers", 1024),
    ("num_attention_heads", 1024),
    ("num_key_value_heads", 1024),
    ("max_position_embeddings", 1 << 20),
    ("q_lora_rank", 1 << 15),
    ("kv_lora_rank", 1 << 15),
    ("qk_nope_head_dim", MAX_HEAD_DIM as u64),
    ("qk_rope_head_dim", MAX_HEAD_DIM as u64),
    ("v_head_dim", MAX_HEAD_DIM as u64),
    ("num_experts", u16::MAX as u64),
    ("expert_size", 1 << 20),
    ("moe_top_k", u16::MAX as u64),
    ("intermediate_size", MAX_FFN_WIDTH),
];

/// The bound of `key` in [`LIMITS`] (keys without one are not integers the engine sizes by).
fn limit(key: &str) -> u64 {
    LIMITS.iter().find(|(k, _)| *k == key).map_or(u64::MAX, |&(_, v)| v)
}

struct Keys<'a>(&'a Map<String, Value>);

impl Keys<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }
    fn req(&self, key: &str) -> Result<&Value> {
        self.get(key).ok_or_else(|| Error::InvalidConfig(format!("missing key `{key}`")))
    }
    /// A non-negative integer no larger than the key's entry in [`LIMITS`] (compared as u64, so a
    /// 64-bit value can never be truncated to fit a 32-bit `usize`).
    fn usize(&self, key: &str) -> Result<usize> {
        let v = self.req(key)?;
        let n = v
            .as_u64()
            .ok_or_else(|| Error::InvalidConfig(format!("`{key}` must be a non-negative integer, got {v}")))?;
        let max = limit(key);
        if n > max {
            return Err(Error::InvalidConfig(format!(
                "`{key}` {n} exceeds the supported maximum {max} (well above every released BlockFFN size); \
                 the config is damaged or not a BlockFFN model"
            )));
        }
        usize::try_from(n).map_err(|_| Error::InvalidConfig(format!("`{key}` {n} does not fit this platform")))
    }
    fn pos_usize(&self, key: &str) -> Result<usize> {
        match self.usize(key)? {
            0 => Err(Error::InvalidConfig(format!("`{key}` must be > 0"))),
            n => Ok(n),
        }
    }
    /// A number that stays finite as an f32 (1e39 is a finite f64 but an infinite f32).
    fn f32(&self, key: &str) -> Result<f32> {
        let v = self.req(key)?;
        let x = v.as_f64().ok_or_else(|| Error::InvalidConfig(format!("`{key}` must be a number, got {v}")))?;
        let y = x as f32;
        if !y.is_finite() {
            return Err(Error::InvalidConfig(format!("`{key}` {x} is not a finite 32-bit float (|x| < 3.4e38)")));
        }
        Ok(y)
    }
    fn pos_f32(&self, key: &str) -> Result<f32> {
        let x = self.f32(key)?;
        if x <= 0.0 {
            return Err(Error::InvalidConfig(format!("`{key}` must be > 0, got {x}")));
        }
        Ok(x)
    }
    fn bool(&self, key: &str) -> Result<bool> {
        let v = self.req(key)?;
        v.as_bool().ok_or_else(|| Error::InvalidConfig(format!("`{key}` must be true or false, got {v}")))
    }
    fn str(&self, key: &str) -> Result<&str> {
        let v = self.req(key)?;
        v.as_str().ok_or_else(|| Error::InvalidConfig(format!("`{key}` must be a string, got {v}")))
    }
    fn opt_token(&self, key: &str) -> Result<Option<u32>> {
        let id = |v: &Value| {
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| Error::InvalidConfig(format!("`{key}` must be a token id (an integer below 2^32), got {v}")))
        };
        match self.get(key) {
            None => Ok(None),
            // Some configs list several EOS ids; the first is the one we stop on. Every entry must
            // still be an id, so `["2"]` is an error rather than a silent "no EOS".
            Some(Value::Array(a)) => {
                let ids = a.iter().map(id).collect::<Result<Vec<u32>>>()?;
                Ok(ids.first().copied())
            }
            Some(v) => id(v).map(Some),
        }
    }
}

impl ModelConfig {
    pub fn from_json_str(text: &str) -> Result<Self> {
        // Editors on Windows save JSON with a UTF-8 byte-order mark; it is not part of the document.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let value: Value = serde_json::from_str(text)
            .map_err(|e| Error::InvalidConfig(format!("config.json is not valid JSON: {e}")))?;
        let map = value.as_object().ok_or_else(|| Error::InvalidConfig("config.json must be a JSON object".into()))?;
        Self::from_map(map)
    }

    pub fn from_map(map: &Map<String, Value>) -> Result<Self> {
        let k = Keys(map);
        let hidden_size = k.pos_usize("hidden_size")?;
        let num_attention_heads = k.pos_usize("num_attention_heads")?;
        let vocab_size = k.pos_usize("vocab_size")?;

        if let Some(v) = k.get("rope_scaling") {
            return Err(Error::InvalidConfig(format!(
                "`rope_scaling` {v} is not supported (BlockFFN checkpoints use none); set it to null"
            )));
        }
        if let Some(v) = k.get("hidden_act") {
            if v.as_str() != Some("silu") {
                return Err(Error::InvalidConfig(format!("`hidden_act` must be \"silu\", got {v}")));
            }
        }

        let attention = match k.str("attention_type")? {
            "mla" => {
                let q_lora_rank = match k.get("q_lora_rank") {
                    None => None,
                    Some(_) => match k.usize("q_lora_rank")? {
                        0 => None,
                        n => Some(n),
                    },
                };
                let dims = MlaDims {
                    q_lora_rank,
                    kv_lora_rank: k.pos_usize("kv_lora_rank")?,
                    qk_nope_head_dim: k.pos_usize("qk_nope_head_dim")?,
                    qk_rope_head_dim: k.pos_usize("qk_rope_head_dim")?,
                    v_head_dim: k.pos_usize("v_head_dim")?,
                };
                if !dims.qk_rope_head_dim.is_multiple_of(2) {
                    return Err(Error::InvalidConfig("`qk_rope_head_dim` must be even".into()));
                }
                Attention::Mla(dims)
            }
            "vanilla" => {
                if hidden_size % num_attention_heads != 0 {
                    return Err(Error::InvalidConfig(format!(
                        "`hidden_size` {hidden_size} is not divisible by `num_attention_heads` {num_attention_heads}"
                    )));
                }
                let head_dim = hidden_size / num_attention_heads;
                if head_dim > MAX_HEAD_DIM {
                    return Err(Error::InvalidConfig(format!(
                        "head dim {head_dim} (`hidden_size` / `num_attention_heads`) exceeds the supported {MAX_HEAD_DIM}"
                    )));
                }
                let num_key_value_heads = match k.get("num_key_value_heads") {
                    None => num_attention_heads,
                    Some(_) => k.pos_usize("num_key_value_heads")?,
                };
                if num_attention_heads % num_key_value_heads != 0 {
                    return Err(Error::InvalidConfig(format!(
                        "`num_attention_heads` {num_attention_heads} is not a multiple of `num_key_value_heads` {num_key_value_heads}"
                    )));
                }
                if head_dim % 2 != 0 {
                    return Err(Error::InvalidConfig("head dim must be even for RoPE".into()));
                }
                Attention::Vanilla { num_key_value_heads, head_dim }
            }
            other => {
                return Err(Error::InvalidConfig(format!(
                    "unknown `attention_type` \"{other}\" (supported: \"mla\", \"vanilla\")"
                )))
            }
        };

        let ffn = match k.str("ffn_type")? {
            t @ ("block_linear" | "block") => {
                let layout = if t == "block" { FfnType::Block } else { FfnType::BlockLinear };
                let softmax_router = match k.get("router_act").map(|v| (v, v.as_str())) {
                    None | Some((_, Some("relu"))) => false,
                    Some((_, Some("softmax"))) => true,
                    Some((v, _)) => {
                        return Err(Error::InvalidConfig(format!(
                            "unknown `router_act` {v} (supported: \"relu\" for BlockFFN, \"softmax\" for TopK)"
                        )))
                    }
                };
                let num_experts = k.pos_usize("num_experts")?;
                let router_norm = match k.str("norm_after_router")? {
                    "rms" => RouterNorm::Rms,
                    "sum" => RouterNorm::Sum,
                    "none" => RouterNorm::None,
                    other => {
                        return Err(Error::InvalidConfig(format!(
                            "unknown `norm_after_router` \"{other}\" (supported: \"rms\", \"sum\", \"none\")"
                        )))
                    }
                };
                let norm_scale = match k.get("norm_scale") {
                    None => 1.0,
                    Some(_) => k.pos_f32("norm_scale")?,
                };
                let router = if softmax_router {
                    let top_k = k.pos_usize("moe_top_k")?;
                    if top_k > num_experts {
                        return Err(Error::InvalidConfig(format!(
                            "`moe_top_k` {top_k} exceeds `num_experts` {num_experts}"
                        )));
                    }
                    Router::TopK { k: top_k }
                } else {
                    Router::Relu(router_norm)
                };
                let expert_size = k.pos_usize("expert_size")?;
                // Ne·de is the width of every expert tensor; bounding it keeps each shape product
                // below 2^32 (wasm32's usize) with the other limits.
                match num_experts.checked_mul(expert_size) {
                    Some(w) if w as u64 <= MAX_FFN_WIDTH => {}
                    _ => {
                        return Err(Error::InvalidConfig(format!(
                            "`num_experts` × `expert_size` = {num_experts} × {expert_size} exceeds the supported FFN width {MAX_FFN_WIDTH}"
                        )))
                    }
                }
                Ffn::Block { layout, num_experts, expert_size, router, norm_scale }
            }
            "vanilla" => Ffn::Dense {
                intermediate_size: k.pos_usize("intermediate_size")?,
                gated: match k.get("ffn_gated") {
                    None => true,
                    Some(_) => k.bool("ffn_gated")?,
                },
            },
            other => {
                return Err(Error::InvalidConfig(format!(
                    "unknown `ffn_type` \"{other}\" (supported: \"block_linear\", \"block\", \"vanilla\")"
                )))
            }
        };

        let cfg = ModelConfig {
            vocab_size,
            hidden_size,
            num_hidden_layers: k.pos_usize("num_hidden_layers")?,
            num_attention_heads,
            max_position_embeddings: k.pos_usize("max_position_embeddings")?,
            rms_norm_eps: k.pos_f32("rms_norm_eps")?,
            rope_theta: match k.get("rope_theta") {
                None => 10000.0,
                Some(_) => k.pos_f32("rope_theta")?,
            },
            scale_emb: k.pos_f32("scale_emb")?,
            dim_model_base: k.pos_f32("dim_model_base")?,
            scale_depth: k.pos_f32("scale_depth")?,
            tie_word_embeddings: k.bool("tie_word_embeddings")?,
            bos_token_id: k.opt_token("bos_token_id")?,
            eos_token_id: k.opt_token("eos_token_id")?,
            attention,
            ffn,
        };
        for (name, id) in [("bos_token_id", cfg.bos_token_id), ("eos_token_id", cfg.eos_token_id)] {
            if let Some(id) = id {
                if id as usize >= vocab_size {
                    return Err(Error::InvalidConfig(format!("`{name}` {id} is not below `vocab_size` {vocab_size}")));
                }
            }
        }
        Ok(cfg)
    }

    /// Multiplier of each residual branch: scale_depth / sqrt(L).
    pub fn residual_scale(&self) -> f32 {
        self.scale_depth / (self.num_hidden_layers as f32).sqrt()
    }

    /// Divisor applied to the final hidden state before the LM head: hidden_size / dim_model_base.
    pub fn logit_divisor(&self) -> f32 {
        self.hidden_size as f32 / self.dim_model_base
    }

    pub fn num_experts(&self) -> usize {
        match self.ffn {
            Ffn::Block { num_experts, .. } => num_experts,
            Ffn::Dense { .. } => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Value {
        serde_json::json!({
            "vocab_size": 122753, "hidden_size": 768, "num_hidden_layers": 16, "num_attention_heads": 6,
            "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "scale_emb": 12, "dim_model_base": 256,
            "scale_depth": 1.4, "tie_word_embeddings": false, "bos_token_id": 1, "eos_token_id": 2,
            "attention_type": "mla", "q_lora_rank": 768, "kv_lora_rank": 256, "qk_nope_head_dim": 128,
            "qk_rope_head_dim": 64, "v_head_dim": 128, "ffn_type": "block_linear", "num_experts": 48,
            "expert_size": 64, "norm_after_router": "rms", "rope_scaling": null
        })
    }

    #[test]
    fn small_config_reads_and_derives_scales() {
        let c = ModelConfig::from_json_str(&small().to_string()).unwrap();
        assert!((c.residual_scale() - 0.35).abs() < 1e-6);
        assert_eq!(c.logit_divisor(), 3.0);
        assert_eq!(c.rope_theta, 10000.0);
        assert_eq!(c.num_experts(), 48);
        assert!(matches!(c.attention, Attention::Mla(ref d) if d.q_head_dim() == 192));
    }

    #[test]
    fn missing_and_wrong_keys_are_named() {
        for key in ["scale_emb", "norm_after_router", "tie_word_embeddings", "attention_type"] {
            let mut v = small();
            v.as_object_mut().unwrap().remove(key);
            let e = ModelConfig::from_json_str(&v.to_string()).unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        }
        let mut v = small();
        v["ffn_type"] = "moe".into();
        let e = ModelConfig::from_json_str(&v.to_string()).unwrap_err().to_string();
        assert!(e.contains("unknown `ffn_type` \"moe\""), "{e}");
        let mut v = small();
        v["hidden_size"] = "768".into();
        assert!(ModelConfig::from_json_str(&v.to_string()).unwrap_err().to_string().contains("hidden_size"));
        assert!(ModelConfig::from_json_str("{not json").is_err());
    }

    #[test]
    fn softmax_router_means_top_k() {
        let mut v = small();
        v["router_act"] = "softmax".into();
        let e = ModelConfig::from_json_str(&v.to_string()).unwrap_err().to_string();
        assert!(e.contains("missing key `moe_top_k`"), "{e}");
        v["moe_top_k"] = 10.into();
        let c = ModelConfig::from_json_str(&v.to_string()).unwrap();
        assert!(matches!(c.ffn, Ffn::Block { router: Router::TopK { k: 10 }, .. }));
        v["moe_top_k"] = 49.into();
        assert!(ModelConfig::from_json_str(&v.to_string()).is_err());
        v["router_act"] = "gelu".into();
        let e = ModelConfig::from_json_str(&v.to_string()).unwrap_err().to_string();
        assert!(e.contains("unknown `router_act`"), "{e}");
    }
}
