//! The wasm-bindgen surface: a weight buffer the host streams bytes into, an engine over it, and a
//! step-wise [`Generation`] that produces one token (with the experts it used) per call.
//! Errors reach JS as `Error` objects with a stable `code` property (see [`crate::Error::code`]).
//!
//! The hand-written JS layer (`js/`) builds the public npm API on top of these types.

use std::rc::Rc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use wasm_bindgen::prelude::*;

use crate::config::{Attention, Ffn, FfnType};
use crate::generate::{generate, GenerateOptions};
use crate::metrics::CLS_WINDOWS;
use crate::model::{FfnMode, KvCache, Logits, Model};
use crate::package::{model_from_parts, Manifest};
use crate::sampling::{Sampler, SamplingParams};
use crate::tokenizer::{Segment, Tokenizer};
use crate::weights::AlignedBuf;
use crate::Error;

#[wasm_bindgen(start)]
fn start() {
    console_error_panic_hook::set_once();
}

fn js_err(e: Error) -> JsValue {
    let err = js_sys::Error::new(&e.to_string());
    let _ = js_sys::Reflect::set(&err, &"code".into(), &e.code().into());
    err.into()
}

/// A byte offset or length passed from JS as a number: wasm-bindgen would wrap a `usize` parameter
/// modulo 2^32, so anything outside `0..=max` (or not an integer) is refused instead.
fn js_size(v: f64, what: &str, max: usize) -> Result<usize, JsValue> {
    if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v <= max as f64 {
        Ok(v as usize)
    } else {
        Err(js_err(Error::InvalidInput(format!("{what} must be an integer from 0 to {max}, got {v}"))))
    }
}

/// A count passed from JS as a number: past `usize::MAX` it saturates (more than can ever be
/// reached means no limit), negative or fractional values are refused.
fn js_count(v: f64, what: &str) -> Result<usize, JsValue> {
    if v.is_nan() || v < 0.0 || v.fract() != 0.0 && v.is_finite() {
        return Err(js_err(Error::InvalidInput(format!("{what} must be a non-negative integer, got {v}"))));
    }
    Ok(if v >= usize::MAX as f64 { usize::MAX } else { v as usize })
}

fn to_js<T: Serialize>(v: &T) -> Result<JsValue, JsValue> {
    v.serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(|e| js_err(Error::InvalidInput(format!("cannot convert a result for JS: {e}"))))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of `bytes` as lowercase hex (the manifest's format).
#[wasm_bindgen(js_name = sha256Hex)]
pub fn sha256_hex(bytes: &[u8]) -> String {
    crate::package::sha256_hex(bytes)
}

/// Bytes of this instance's linear memory (a number: 4 GiB does not fit a wasm32 `usize`).
#[wasm_bindgen(js_name = wasmMemoryBytes)]
pub fn wasm_memory_bytes() -> f64 {
    #[cfg(target_arch = "wasm32")]
    let pages = core::arch::wasm32::memory_size(0);
    #[cfg(not(target_arch = "wasm32"))]
    let pages = 0usize;
    pages as f64 * 65536.0
}

/// Makes the next call into the module start a fresh instance (new, small memory). For the JS
/// layer after a trap: a trapped instance keeps its stack pointer where the trap left it, the
/// borrow flags of the objects it was using, and whatever it had allocated.
#[wasm_bindgen(js_name = scheduleReinit)]
pub fn schedule_reinit() {
    wasm_bindgen::handler::schedule_reinit();
}

/// The instruction set this module was built for: `"relaxed-simd"` (SIMD128 plus relaxed SIMD:
/// fused multiply-add in the kernels) or `"simd128"` (the baseline every SIMD browser runs).
#[wasm_bindgen(js_name = simdVariant)]
pub fn simd_variant() -> String {
    if cfg!(target_feature = "relaxed-simd") { "relaxed-simd" } else { "simd128" }.into()
}

/// Parses and validates `manifest.json` (format, version, required files); returns it as an object
/// `{ format, format_version, dtype, files: { name: { size, sha256 } }, source, converter }`.
#[wasm_bindgen(js_name = parseManifest)]
pub fn parse_manifest(text: &str) -> Result<JsValue, JsValue> {
    let m = Manifest::parse(text).map_err(js_err)?;
    if let Some((name, e)) = m.files.iter().find(|(_, e)| e.size > (1u64 << 53)) {
        return Err(js_err(Error::OutOfMemory(format!(
            "manifest.json records {} bytes for {name}, far more than WebAssembly (wasm32) can hold",
            e.size
        ))));
    }
    to_js(&m)
}

/// The weights file, written chunk by chunk straight into its final aligned buffer in wasm
/// memory, so loading never holds the weights twice. Chunks written in order are hashed as they
/// arrive, so the SHA-256 check costs no second pass.
#[wasm_bindgen]
pub struct WeightBuffer {
    buf: Option<AlignedBuf>,
    hasher: Sha256,
    /// Bytes hashed so far (a prefix of the buffer); hashing stops at the first out-of-order write.
    hashed: usize,
    in_order: bool,
}

// The Rust-facing methods take `usize`; the JS-facing ones below take numbers and check them
// (a `usize` parameter of an export would silently wrap a JS number modulo 2^32).
impl WeightBuffer {
    /// Allocates `len` bytes; fails with code `OutOfMemory` (never a trap) when wasm memory cannot grow.
    pub fn new(len: usize) -> Result<WeightBuffer, JsValue> {
        Ok(WeightBuffer {
            buf: Some(AlignedBuf::zeroed(len).map_err(js_err)?),
            hasher: Sha256::new(),
            hashed: 0,
            in_order: true,
        })
    }

    pub fn write(&mut self, offset: usize, chunk: &[u8]) -> Result<(), JsValue> {
        let buf = self
            .buf
            .as_mut()
            .ok_or_else(|| js_err(Error::InvalidInput("this WeightBuffer was already given to an Engine".into())))?;
        let end = offset.checked_add(chunk.len()).filter(|&e| e <= buf.len()).ok_or_else(|| {
            js_err(Error::InvalidInput(format!(
                "chunk of {} bytes at offset {offset} does not fit the {}-byte weight buffer",
                chunk.len(),
                buf.len()
            )))
        })?;
        buf.as_bytes_mut()[offset..end].copy_from_slice(chunk);
        if self.in_order && offset == self.hashed {
            self.hasher.update(chunk);
            self.hashed = end;
        } else {
            self.in_order = false;
        }
        Ok(())
    }

    /// Copies `len` bytes from `offset` out (for writing the verified file to a cache in pieces).
    pub fn read(&self, offset: usize, len: usize) -> Result<Vec<u8>, JsValue> {
        let b = self.bytes()?.as_bytes();
        let end = offset.checked_add(len).filter(|&e| e <= b.len()).ok_or_else(|| {
            js_err(Error::InvalidInput(format!("range {offset}+{len} is outside the {}-byte weight buffer", b.len())))
        })?;
        Ok(b[offset..end].to_vec())
    }
}

#[wasm_bindgen]
impl WeightBuffer {
    /// Allocates `len` bytes; fails with code `OutOfMemory` (never a trap) when wasm memory cannot grow.
    #[wasm_bindgen(constructor)]
    pub fn new_js(len: f64) -> Result<WeightBuffer, JsValue> {
        // One allocation is at most isize::MAX bytes.
        Self::new(js_size(len, "the weight buffer's length", isize::MAX as usize)?)
    }

    fn bytes(&self) -> Result<&AlignedBuf, JsValue> {
        self.buf
            .as_ref()
            .ok_or_else(|| js_err(Error::InvalidInput("this WeightBuffer was already given to an Engine".into())))
    }

    #[wasm_bindgen(getter)]
    pub fn length(&self) -> usize {
        self.buf.as_ref().map_or(0, AlignedBuf::len)
    }

    /// Writes `chunk` at byte `offset`.
    #[wasm_bindgen(js_name = write)]
    pub fn write_js(&mut self, offset: f64, chunk: &[u8]) -> Result<(), JsValue> {
        self.write(js_size(offset, "offset", usize::MAX)?, chunk)
    }

    /// Copies `len` bytes from `offset` out (for writing the verified file to a cache in pieces).
    #[wasm_bindgen(js_name = read)]
    pub fn read_js(&self, offset: f64, len: f64) -> Result<Vec<u8>, JsValue> {
        self.read(js_size(offset, "offset", usize::MAX)?, js_size(len, "length", usize::MAX)?)
    }

    /// SHA-256 of the whole buffer as lowercase hex; free when the chunks were written in order.
    pub fn sha256(&self) -> Result<String, JsValue> {
        let buf = self.bytes()?;
        if self.in_order && self.hashed == buf.len() {
            Ok(hex(&self.hasher.clone().finalize()))
        } else {
            Ok(crate::package::sha256_hex(buf.as_bytes()))
        }
    }
}

#[wasm_bindgen]
pub struct Engine {
    model: Rc<Model>,
    tokenizer: Option<Rc<Tokenizer>>,
    params: u64,
}

fn mode(dense: bool) -> FfnMode {
    if dense {
        FfnMode::Dense
    } else {
        FfnMode::Sparse
    }
}

/// Number of parameters in a safetensors file (sum of every tensor's element count; the block
/// scales of quantized matrices are not parameters).
fn count_params(bytes: &[u8]) -> u64 {
    safetensors::SafeTensors::read_metadata(bytes)
        .map(|(_, meta)| {
            meta.tensors()
                .iter()
                .filter(|(name, _)| !name.ends_with(".q8_scales"))
                .map(|(_, t)| t.shape.iter().try_fold(1u64, |n, &d| n.checked_mul(d as u64)).unwrap_or(u64::MAX))
                .fold(0u64, u64::saturating_add)
        })
        .unwrap_or(0)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ModelSummary {
    vocab_size: usize,
    hidden_size: usize,
    num_layers: usize,
    num_attention_heads: usize,
    context_length: usize,
    attention: &'static str,
    ffn: &'static str,
    num_experts: usize,
    expert_size: usize,
    /// u32 words of one layer's expert bitmask: ceil(num_experts / 32).
    words_per_layer: usize,
    params: u64,
    weight_bytes: usize,
    bos_token_id: Option<u32>,
    eos_token_id: Option<u32>,
    has_tokenizer: bool,
}

/// One piece of a segmented prompt (see [`Engine::tokenize_segments`]).
#[derive(Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
enum JsSegment {
    Text(String),
    Control(String),
}

/// Options of [`Engine::generation`], passed from JS as a plain object.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
struct GenOptions {
    /// Numbers, not `usize`: a JS count past 2^32 saturates instead of wrapping (see [`js_count`]).
    max_tokens: Option<f64>,
    temperature: Option<f32>,
    top_k: Option<f64>,
    top_p: Option<f32>,
    repetition_penalty: Option<f32>,
    seed: Option<u64>,
    dense: bool,
    ignore_eos: bool,
    /// Extra ids that end generation like EOS (not included in the output).
    stop_token_ids: Vec<u32>,
}

impl Engine {
    /// Generates new ids after `prompt` in one call (see [`Generation`] for streaming).
    #[allow(clippy::too_many_arguments)]
    pub fn generate_ids(
        &self,
        prompt: &[u32],
        max_new_tokens: usize,
        temperature: Option<f32>,
        top_k: Option<usize>,
        top_p: Option<f32>,
        repetition_penalty: Option<f32>,
        seed: u64,
        dense: bool,
    ) -> Result<Vec<u32>, JsValue> {
        let params = SamplingParams { temperature, top_k, top_p, repetition_penalty, seed };
        let mut sampler = Sampler::new(params).map_err(js_err)?;
        let opts = GenerateOptions { max_new_tokens, mode: mode(dense), stop_at_eos: true };
        let (ids, _) = generate(&self.model, prompt, &mut sampler, &opts, |_| true).map_err(js_err)?;
        Ok(ids)
    }

    /// The model, for the end-to-end benchmark (`bench::bench_spans`).
    #[cfg(target_feature = "simd128")]
    pub(crate) fn model(&self) -> &Model {
        &self.model
    }
}

#[wasm_bindgen]
impl Engine {
    /// Takes ownership of the weights in `weights` (the buffer is empty afterwards). `dtype`, the
    /// manifest's, is checked against the stored weight matrices when given.
    #[wasm_bindgen(constructor)]
    pub fn new(
        config_json: &str,
        weights: &mut WeightBuffer,
        tokenizer_json: Option<Vec<u8>>,
        dtype: Option<String>,
    ) -> Result<Engine, JsValue> {
        let buf = weights
            .buf
            .take()
            .ok_or_else(|| js_err(Error::InvalidInput("this WeightBuffer was already used".into())))?;
        let params = count_params(buf.as_bytes());
        let model = model_from_parts(config_json, buf).map_err(js_err)?;
        if let Some(d) = &dtype {
            crate::package::check_dtype(&model, d).map_err(js_err)?;
        }
        let tokenizer = match tokenizer_json {
            Some(j) => Some(Rc::new(Tokenizer::from_bytes(&j, model.config().bos_token_id).map_err(js_err)?)),
            None => None,
        };
        Ok(Engine { model: Rc::new(model), tokenizer, params })
    }

    #[wasm_bindgen(js_name = vocabSize)]
    pub fn vocab_size(&self) -> usize {
        self.model.config().vocab_size
    }

    /// A summary of the config (camelCase object): sizes, attention/FFN kind, experts, params.
    pub fn summary(&self) -> Result<JsValue, JsValue> {
        let c = self.model.config();
        let (ffn, expert_size) = match &c.ffn {
            Ffn::Block { layout: FfnType::Block, expert_size, .. } => ("block", *expert_size),
            Ffn::Block { expert_size, .. } => ("block_linear", *expert_size),
            Ffn::Dense { .. } => ("dense", 0),
        };
        let ne = c.num_experts();
        to_js(&ModelSummary {
            vocab_size: c.vocab_size,
            hidden_size: c.hidden_size,
            num_layers: c.num_hidden_layers,
            num_attention_heads: c.num_attention_heads,
            context_length: c.max_position_embeddings,
            attention: match c.attention {
                Attention::Mla(_) => "mla",
                Attention::Vanilla { .. } => "gqa",
            },
            ffn,
            num_experts: ne,
            expert_size,
            words_per_layer: ne.div_ceil(32),
            params: self.params,
            weight_bytes: self.model.weight_bytes(),
            bos_token_id: c.bos_token_id,
            eos_token_id: c.eos_token_id,
            has_tokenizer: self.tokenizer.is_some(),
        })
    }

    /// Logits of every position of `ids`, flattened `[positions × vocab]`.
    pub fn logits(&self, ids: &[u32], dense: bool) -> Result<Vec<f32>, JsValue> {
        let mut cache = self.model.new_cache();
        let out = self.model.forward(&mut cache, ids, mode(dense), Logits::All).map_err(js_err)?;
        Ok(out.logits.concat())
    }

    fn tok(&self) -> Result<&Tokenizer, JsValue> {
        self.tokenizer.as_deref().ok_or_else(|| {
            js_err(Error::Tokenizer("this model has no tokenizer.json; pass token ids instead of text".into()))
        })
    }

    /// Ids of `text`, BOS first (as the CLI's `--prompt`).
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>, JsValue> {
        self.tok()?.encode(text).map_err(js_err)
    }

    /// Ids of `text` without BOS or other added special tokens.
    #[wasm_bindgen(js_name = tokenizePlain)]
    pub fn tokenize_plain(&self, text: &str) -> Result<Vec<u32>, JsValue> {
        self.tok()?.encode_plain(text).map_err(js_err)
    }

    /// Ids of a prompt given as segments, `[{ text: "…" } | { control: "<|im_start|>" }, …]`: text is
    /// always text (special tokens written in it are not parsed), a control is its token id. With
    /// `addSpecial`, BOS first as in `tokenize`. Benign text gives the ids of `tokenize(joined)`.
    #[wasm_bindgen(js_name = tokenizeSegments)]
    pub fn tokenize_segments(&self, segments: JsValue, add_special: bool) -> Result<Vec<u32>, JsValue> {
        let segs: Vec<JsSegment> = serde_wasm_bindgen::from_value(segments).map_err(|e| {
            js_err(Error::InvalidInput(format!(
                "a segmented prompt is an array of {{ text: string }} or {{ control: string }}: {e}"
            )))
        })?;
        let segs: Vec<Segment> = segs
            .iter()
            .map(|s| match s {
                JsSegment::Text(t) => Segment::Text(t),
                JsSegment::Control(c) => Segment::Control(c),
            })
            .collect();
        self.tok()?.encode_segments(&segs, add_special).map_err(js_err)
    }

    /// Text of `ids`, special tokens skipped.
    pub fn detokenize(&self, ids: &[u32]) -> Result<String, JsValue> {
        self.tok()?.decode(ids).map_err(js_err)
    }

    /// The id of `text` when the tokenizer encodes it as exactly one token (e.g. `<|im_end|>`).
    #[wasm_bindgen(js_name = singleTokenId)]
    pub fn single_token_id(&self, text: &str) -> Option<u32> {
        let t = self.tokenizer.as_deref()?;
        match t.encode_plain(text).ok()?.as_slice() {
            [id] => Some(*id),
            _ => None,
        }
    }

    /// Generates new ids after `prompt` in one call (see [`Generation`] for streaming). Counts are
    /// numbers: past 2^32 they mean "no limit" instead of wrapping.
    #[allow(clippy::too_many_arguments)]
    #[wasm_bindgen(js_name = generateIds)]
    pub fn generate_ids_js(
        &self,
        prompt: &[u32],
        max_new_tokens: f64,
        temperature: Option<f32>,
        top_k: Option<f64>,
        top_p: Option<f32>,
        repetition_penalty: Option<f32>,
        seed: u64,
        dense: bool,
    ) -> Result<Vec<u32>, JsValue> {
        let max_new_tokens = js_count(max_new_tokens, "max_new_tokens")?;
        let top_k = top_k.map(|k| js_count(k, "top_k")).transpose()?;
        self.generate_ids(prompt, max_new_tokens, temperature, top_k, top_p, repetition_penalty, seed, dense)
    }

    /// Starts a streaming generation after `prompt` (ids). `options` (all optional): `maxTokens`,
    /// `temperature`, `topK`, `topP`, `repetitionPenalty`, `seed`, `dense`, `ignoreEos`,
    /// `stopTokenIds`. The generation holds its own KV cache and sampler and shares the model, so
    /// it stays valid after the engine is freed.
    pub fn generation(&self, prompt: &[u32], options: JsValue) -> Result<Generation, JsValue> {
        let o: GenOptions = if options.is_undefined() || options.is_null() {
            GenOptions::default()
        } else {
            serde_wasm_bindgen::from_value(options)
                .map_err(|e| js_err(Error::InvalidInput(format!("bad generation options: {e}"))))?
        };
        let params = SamplingParams {
            temperature: o.temperature,
            top_k: o.top_k.map(|k| js_count(k, "topK")).transpose()?,
            top_p: o.top_p,
            repetition_penalty: o.repetition_penalty,
            seed: o.seed.unwrap_or(0),
        };
        let sampler = Sampler::new(params).map_err(js_err)?;
        let cache = self.model.new_cache();
        self.model.check_ids(&cache, prompt).map_err(js_err)?;
        let cfg = self.model.config();
        let ne = cfg.num_experts();
        let layers = cfg.num_hidden_layers;
        let mut stop_ids = o.stop_token_ids;
        if !o.ignore_eos {
            stop_ids.extend(cfg.eos_token_id);
        }
        Ok(Generation {
            model: self.model.clone(),
            tokenizer: self.tokenizer.clone(),
            cache,
            sampler,
            mode: mode(o.dense),
            prompt_len: prompt.len(),
            context: prompt.to_vec(),
            logits: None,
            max_new: o.max_tokens.map_or(Ok(usize::MAX), |n| js_count(n, "maxTokens"))?,
            eos: cfg.eos_token_id.filter(|_| !o.ignore_eos),
            stop_ids,
            new_ids: Vec::new(),
            finish: None,
            token: 0,
            mask: Vec::new(),
            words: ne.div_ceil(32),
            stats: RunningSparsity::new(layers, ne),
            printed: String::new(),
            delta: String::new(),
        })
    }
}

/// One streaming generation: each [`Generation::step`] samples one token with the same code as the
/// native CLI (`generate::generate`), runs it through the model, and records its active experts.
#[wasm_bindgen]
pub struct Generation {
    model: Rc<Model>,
    tokenizer: Option<Rc<Tokenizer>>,
    cache: KvCache,
    sampler: Sampler,
    mode: FfnMode,
    prompt_len: usize,
    /// Prompt and every new id (the repetition penalty's context).
    context: Vec<u32>,
    /// Logits for the next token; `None` before the prompt is run.
    logits: Option<Vec<f32>>,
    max_new: usize,
    eos: Option<u32>,
    stop_ids: Vec<u32>,
    new_ids: Vec<u32>,
    finish: Option<&'static str>,
    token: u32,
    /// Bitmask of the last token's active experts: `words` u32 per layer.
    mask: Vec<u32>,
    words: usize,
    stats: RunningSparsity,
    printed: String,
    delta: String,
}

#[wasm_bindgen]
impl Generation {
    /// Produces the next token. Returns `true` with a token ready (`token`, `experts`, `text`), or
    /// `false` when generation has finished (`finishReason` says why; `text` holds any tail).
    pub fn step(&mut self) -> Result<bool, JsValue> {
        self.delta.clear();
        if self.finish.is_some() {
            return Ok(false);
        }
        let logits = match self.logits.take() {
            Some(l) => l,
            None => {
                let prompt = self.context.clone();
                let mut out = self.model.forward(&mut self.cache, &prompt, self.mode, Logits::Last).map_err(js_err)?;
                out.logits.pop().expect("forward returned the last logits")
            }
        };
        // The loop of `generate::generate`, one iteration per call.
        if self.new_ids.len() >= self.max_new {
            return self.end("length");
        }
        let mut logits = logits;
        let id = self.sampler.sample(&mut logits, &self.context);
        if Some(id) == self.eos {
            return self.end("eos");
        }
        if self.stop_ids.contains(&id) {
            return self.end("stop");
        }
        self.new_ids.push(id);
        self.context.push(id);
        self.token = id;
        if self.cache.len() >= self.model.config().max_position_embeddings {
            // The token is emitted, but there is no room to run it: its experts are unknown.
            self.mask.clear();
            self.finish = Some("context");
            self.update_text(true)?;
            return Ok(true);
        }
        let out = self.model.forward(&mut self.cache, &[id], self.mode, Logits::Last).map_err(js_err)?;
        let active = &out.active[0];
        self.mask.clear();
        self.mask.resize(active.len() * self.words, 0);
        for (l, set) in active.iter().enumerate() {
            for &e in set {
                self.mask[l * self.words + e as usize / 32] |= 1 << (e % 32);
            }
        }
        self.stats.push(active);
        self.logits = Some(out.logits.into_iter().next().expect("forward returned the last logits"));
        self.update_text(false)?;
        Ok(true)
    }

    fn end(&mut self, reason: &'static str) -> Result<bool, JsValue> {
        self.finish = Some(reason);
        self.update_text(true)?;
        Ok(false)
    }

    /// Appends to `delta` the decoded text that extends what was already emitted. Like the CLI,
    /// text is held back while it ends in an incomplete character; `last` flushes the rest.
    fn update_text(&mut self, last: bool) -> Result<(), JsValue> {
        let Some(t) = &self.tokenizer else { return Ok(()) };
        let text = t.decode(&self.new_ids).map_err(js_err)?;
        if text.starts_with(&self.printed) && (last || !text.ends_with('\u{fffd}')) {
            self.delta.push_str(&text[self.printed.len()..]);
            self.printed = text;
        }
        Ok(())
    }

    /// The token produced by the last `step`.
    #[wasm_bindgen(getter)]
    pub fn token(&self) -> u32 {
        self.token
    }

    /// Active experts of the last token: `wordsPerLayer` u32 words per layer, bit `e % 32` of word
    /// `layer * wordsPerLayer + e / 32` set iff expert `e` was active. Empty when unknown (the
    /// token that filled the context) or for dense-FFN models.
    #[wasm_bindgen(getter)]
    pub fn experts(&self) -> Vec<u32> {
        self.mask.clone()
    }

    /// New text since the previous `step` (may be empty).
    #[wasm_bindgen(getter)]
    pub fn text(&self) -> String {
        self.delta.clone()
    }

    /// `"length"`, `"eos"`, `"stop"` (a stop token id) or `"context"`; `undefined` while running.
    #[wasm_bindgen(getter, js_name = finishReason)]
    pub fn finish_reason(&self) -> Option<String> {
        self.finish.map(str::to_string)
    }

    /// Every id generated so far.
    #[wasm_bindgen(getter)]
    pub fn ids(&self) -> Vec<u32> {
        self.new_ids.clone()
    }

    #[wasm_bindgen(getter, js_name = promptTokens)]
    pub fn prompt_tokens(&self) -> usize {
        self.prompt_len
    }

    /// Running sparsity over the generated tokens (one segment; definitions of `metrics.rs`):
    /// `{ tokens, tls, cls: { "1": …, …, "64": … }, reuse }`, `null` where undefined.
    pub fn stats(&self) -> Result<JsValue, JsValue> {
        to_js(&self.stats.report())
    }
}

/// TLS, CLS_L and reuse over a growing segment, updated per token in O(layers · experts), equal to
/// `metrics::sparsity` over the same segment.
struct RunningSparsity {
    layers: usize,
    experts: usize,
    tokens: usize,
    active: usize,
    /// Per window size: (OR of the open window per layer, tokens in it, used, total).
    windows: Vec<(usize, Vec<bool>, usize, usize, usize)>,
    prev: Option<Vec<Vec<u16>>>,
    reuse_sum: f64,
    reuse_n: usize,
}

#[derive(Serialize)]
struct SparsityReport {
    tokens: usize,
    tls: Option<f64>,
    cls: std::collections::BTreeMap<String, Option<f64>>,
    reuse: Option<f64>,
}

impl RunningSparsity {
    fn new(layers: usize, experts: usize) -> Self {
        RunningSparsity {
            layers,
            experts,
            tokens: 0,
            active: 0,
            windows: CLS_WINDOWS.iter().map(|&w| (w, vec![false; layers * experts], 0, 0, 0)).collect(),
            prev: None,
            reuse_sum: 0.0,
            reuse_n: 0,
        }
    }

    fn push(&mut self, sets: &[Vec<u16>]) {
        if self.experts == 0 || sets.len() != self.layers {
            return;
        }
        self.tokens += 1;
        self.active += sets.iter().map(Vec::len).sum::<usize>();
        // CLS drops the segment's first token (it has no predecessor).
        if self.tokens > 1 {
            let (layers, experts) = (self.layers, self.experts);
            for (w, mark, n, used, total) in &mut self.windows {
                for (l, set) in sets.iter().enumerate() {
                    for &e in set {
                        mark[l * experts + e as usize] = true;
                    }
                }
                *n += 1;
                if *n == *w {
                    *used += mark.iter().filter(|&&m| m).count();
                    *total += layers * experts;
                    mark.iter_mut().for_each(|m| *m = false);
                    *n = 0;
                }
            }
        }
        if let Some(prev) = &self.prev {
            for (a, b) in prev.iter().zip(sets) {
                if !a.is_empty() {
                    let common = a.iter().filter(|e| b.binary_search(e).is_ok()).count();
                    self.reuse_sum += common as f64 / a.len() as f64;
                    self.reuse_n += 1;
                }
            }
        }
        self.prev = Some(sets.to_vec());
    }

    fn report(&self) -> SparsityReport {
        let tls =
            (self.tokens > 0).then(|| 1.0 - self.active as f64 / (self.layers * self.tokens * self.experts) as f64);
        let cls = self
            .windows
            .iter()
            .map(|(w, _, _, used, total)| (w.to_string(), (*total > 0).then(|| 1.0 - *used as f64 / *total as f64)))
            .collect();
        SparsityReport {
            tokens: self.tokens,
            tls,
            cls,
            reuse: (self.reuse_n > 0).then(|| self.reuse_sum / self.reuse_n as f64),
        }
    }
}
