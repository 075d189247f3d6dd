//! The wasm-bindgen surface: a weight buffer the host streams bytes into, an engine over it, and a
//! step-wise [`Generation`] that produces one token (with the experts it used) per call.
//! Errors reach JS as `Error` objects with a stable `code` property (see [`crate::Error::code`]).
//!
//! The hand-written JS layer (`js/`) builds the public npm API on top of these types.

use std::cell::RefCell;
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;

use crate::config::{Attention, Ffn, FfnType};
use crate::generate::{generate, GenerateOptions, Stepper};
use crate::model::{FfnMode, KvCache, Logits, Model};
use crate::package::{model_from_parts, Manifest};
use crate::spec::EagleHead;
use crate::sampling::{Sampler, SamplingParams};
use crate::tokenizer::{Segment, Tokenizer};
use crate::sink::{HostSink, WeightSink};
use crate::spec::{DraftLen, Speculative, MAX_DRAFT};
use crate::Error;
#[cfg(feature = "gpu")]
use crate::gpu::{Gpu, GpuBackend, GpuCache};

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
/// memory (a [`HostSink`]), so loading never holds the weights twice. Chunks written in order are
/// hashed as they arrive, so the SHA-256 check costs no second pass.
#[wasm_bindgen]
pub struct WeightBuffer {
    sink: Option<HostSink>,
}

// The Rust-facing methods take `usize`; the JS-facing ones below take numbers and check them
// (a `usize` parameter of an export would silently wrap a JS number modulo 2^32).
impl WeightBuffer {
    /// Allocates `len` bytes; fails with code `OutOfMemory` (never a trap) when wasm memory cannot grow.
    pub fn new(len: usize) -> Result<WeightBuffer, JsValue> {
        Ok(WeightBuffer { sink: Some(HostSink::new(len).map_err(js_err)?) })
    }

    fn sink(&self) -> Result<&HostSink, JsValue> {
        self.sink
            .as_ref()
            .ok_or_else(|| js_err(Error::InvalidInput("this WeightBuffer was already given to an Engine".into())))
    }

    pub fn write(&mut self, offset: usize, chunk: &[u8]) -> Result<(), JsValue> {
        let sink = self
            .sink
            .as_mut()
            .ok_or_else(|| js_err(Error::InvalidInput("this WeightBuffer was already given to an Engine".into())))?;
        sink.write(offset, chunk).map_err(js_err)
    }

    /// Copies `len` bytes from `offset` out (for writing the verified file to a cache in pieces).
    pub fn read(&self, offset: usize, len: usize) -> Result<Vec<u8>, JsValue> {
        let b = self.sink()?.bytes();
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

    #[wasm_bindgen(getter)]
    pub fn length(&self) -> usize {
        self.sink.as_ref().map_or(0, |s| s.len())
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
        Ok(self.sink()?.sha256())
    }
}

/// The model an engine runs: on the CPU (the wasm kernels) or on the GPU (WebGPU build).
#[derive(Clone)]
enum Loaded {
    Cpu(Rc<Model>),
    #[cfg(feature = "gpu")]
    Gpu(Rc<Model<GpuBackend>>),
}

/// `$body` with `$m` bound to the loaded model, whichever backend it runs on.
macro_rules! on_model {
    ($loaded:expr, $m:ident => $body:expr) => {
        match $loaded {
            Loaded::Cpu($m) => $body,
            #[cfg(feature = "gpu")]
            Loaded::Gpu($m) => $body,
        }
    };
}

#[wasm_bindgen]
pub struct Engine {
    loaded: Loaded,
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
    /// Parameters of the attached draft head (`None`: none attached).
    draft_head_params: Option<usize>,
}

/// The generation options' `speculative` and `draftLen`.
fn speculative(mode: Option<&str>, len: Option<f64>) -> Result<Speculative, JsValue> {
    let len = match len {
        None => DraftLen::Auto,
        Some(n) if n.fract() == 0.0 && (1.0..=MAX_DRAFT as f64).contains(&n) => DraftLen::Fixed(n as usize),
        Some(n) => {
            return Err(js_err(Error::InvalidInput(format!("draftLen must be an integer from 1 to {MAX_DRAFT}, got {n}"))));
        }
    };
    match mode {
        None | Some("off") => Ok(Speculative::Off),
        Some("ngram") => Ok(Speculative::Ngram(len)),
        Some("eagle") => Ok(Speculative::Eagle(len)),
        Some("auto") => Ok(Speculative::Auto(len)),
        Some(m) => Err(js_err(Error::InvalidInput(format!(
            "speculative must be 'auto', 'ngram', 'eagle' or false (off), got {m:?}"
        )))),
    }
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
    /// Texts that end generation (the text is cut before the first one).
    stop: Vec<String>,
    /// `"off"` (default), `"ngram"`, `"eagle"` or `"auto"`: speculative decoding (same output).
    speculative: Option<String>,
    /// Draft tokens per verification, 1..=15; absent: chosen per step.
    draft_len: Option<f64>,
    /// Alternatives beside each draft token (0-3; 0: chains).
    draft_tree: Option<f64>,
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
        let sampler = Sampler::new(params).map_err(js_err)?;
        let opts = GenerateOptions { max_new_tokens, mode: mode(dense), stop_at_eos: true, ..Default::default() };
        let (ids, ..) =
            on_model!(&self.loaded, m => generate(m, None, prompt, sampler, &opts, |_| true)).map_err(js_err)?;
        Ok(ids)
    }

    /// The CPU model (the benchmarks run the wasm kernels only).
    #[cfg_attr(not(feature = "bench"), allow(dead_code))]
    pub(crate) fn cpu_model(&self) -> Result<&Rc<Model>, JsValue> {
        match &self.loaded {
            Loaded::Cpu(m) => Ok(m),
            #[cfg(feature = "gpu")]
            Loaded::Gpu(_) => Err(js_err(Error::Unsupported("the benchmarks run on the wasm backend".into()))),
        }
    }

    fn config(&self) -> &crate::config::ModelConfig {
        on_model!(&self.loaded, m => m.config())
    }

    fn weight_bytes(&self) -> usize {
        match &self.loaded {
            Loaded::Cpu(m) => m.weight_bytes(),
            #[cfg(feature = "gpu")]
            Loaded::Gpu(m) => m.backend().weight_bytes() as usize,
        }
    }

    /// Weights and tokenizer as the constructors take them from JS.
    fn parts(
        config_json: &str,
        weights: &mut WeightBuffer,
        tokenizer_json: Option<Vec<u8>>,
        dtype: Option<String>,
    ) -> Result<(Model, Option<Rc<Tokenizer>>, u64), JsValue> {
        let buf = weights
            .sink
            .take()
            .ok_or_else(|| js_err(Error::InvalidInput("this WeightBuffer was already used".into())))?
            .into_buf();
        let params = count_params(buf.as_bytes());
        let model = model_from_parts(config_json, buf).map_err(js_err)?;
        if let Some(d) = &dtype {
            crate::package::check_dtype(&model, d).map_err(js_err)?;
        }
        let tokenizer = match tokenizer_json {
            Some(j) => Some(Rc::new(Tokenizer::from_bytes(&j, model.config().bos_token_id).map_err(js_err)?)),
            None => None,
        };
        Ok((model, tokenizer, params))
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
        let (model, tokenizer, params) = Engine::parts(config_json, weights, tokenizer_json, dtype)?;
        Ok(Engine { loaded: Loaded::Cpu(Rc::new(model)), tokenizer, params })
    }

    /// [`Engine::new`] on the GPU of `device` (taken: one engine per device). The weights are
    /// checked against the adapter's limits first; when they do not fit (`OutOfMemory`,
    /// `Unsupported`) and `fallback` is set, the engine runs on the CPU instead and
    /// `gpuFallback` says why — the weights are not read twice. The host copy is freed once
    /// they are on the GPU.
    #[cfg(feature = "gpu")]
    #[wasm_bindgen(js_name = onGpu)]
    pub fn on_gpu(
        config_json: &str,
        weights: &mut WeightBuffer,
        tokenizer_json: Option<Vec<u8>>,
        dtype: Option<String>,
        device: &mut GpuDevice,
        fallback: bool,
    ) -> Result<Engine, JsValue> {
        let (model, tokenizer, params) = Engine::parts(config_json, weights, tokenizer_json, dtype)?;
        let gpu = device
            .gpu
            .take()
            .ok_or_else(|| js_err(Error::InvalidInput("this GpuDevice already runs a model; request a new one".into())))?;
        let (config, store) = model.into_parts();
        if let Err(e) = GpuBackend::check_fits(&gpu, &config, &store) {
            if !fallback {
                return Err(js_err(e));
            }
            device.fallback = Some(e.to_string());
            let model = Model::new(config, store).map_err(js_err)?;
            return Ok(Engine { loaded: Loaded::Cpu(Rc::new(model)), tokenizer, params });
        }
        let backend = GpuBackend::new(gpu, config, store).map_err(js_err)?;
        Ok(Engine { loaded: Loaded::Gpu(Rc::new(Model::with_backend(backend))), tokenizer, params })
    }

    /// Attaches the package's draft head (`eagle.json` and the weights of `eagle.safetensors`,
    /// taken from `weights`), checked against this model; before any generation starts.
    #[wasm_bindgen(js_name = setDraftHead)]
    pub fn set_draft_head(&mut self, config_json: &str, weights: &mut WeightBuffer) -> Result<(), JsValue> {
        let buf = weights
            .sink
            .take()
            .ok_or_else(|| js_err(Error::InvalidInput("this WeightBuffer was already used".into())))?
            .into_buf();
        let head = EagleHead::new(config_json, buf, self.config()).map_err(js_err)?;
        let busy = || js_err(Error::InvalidInput("a draft head is attached before the first generation".into()));
        match &mut self.loaded {
            Loaded::Cpu(m) => Rc::get_mut(m).ok_or_else(busy)?.set_draft_head(Some(head)),
            #[cfg(feature = "gpu")]
            Loaded::Gpu(m) => Rc::get_mut(m).ok_or_else(busy)?.set_draft_head(Some(head)),
        }
        Ok(())
    }

    /// `"webgpu"` or `"wasm"`: where this engine's model runs.
    #[wasm_bindgen(getter)]
    pub fn backend(&self) -> String {
        match &self.loaded {
            Loaded::Cpu(_) => "wasm",
            #[cfg(feature = "gpu")]
            Loaded::Gpu(_) => "webgpu",
        }
        .into()
    }

    #[wasm_bindgen(js_name = vocabSize)]
    pub fn vocab_size(&self) -> usize {
        self.config().vocab_size
    }

    /// A summary of the config (camelCase object): sizes, attention/FFN kind, experts, params.
    pub fn summary(&self) -> Result<JsValue, JsValue> {
        let c = self.config();
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
            weight_bytes: self.weight_bytes(),
            bos_token_id: c.bos_token_id,
            eos_token_id: c.eos_token_id,
            has_tokenizer: self.tokenizer.is_some(),
            draft_head_params: on_model!(&self.loaded, m => m.draft_head().map(|h| h.params())),
        })
    }

    /// Logits of every position of `ids`, flattened `[positions × vocab]`.
    pub fn logits(&self, ids: &[u32], dense: bool) -> Result<Vec<f32>, JsValue> {
        let out = on_model!(&self.loaded, m => {
            let mut cache = m.new_cache().map_err(js_err)?;
            m.forward(&mut cache, ids, mode(dense), Logits::All).map_err(js_err)?
        });
        Ok(out.logits.concat())
    }

    /// [`Engine::logits`] as a promise of a `Float32Array`, on either backend.
    #[wasm_bindgen(js_name = logitsAsync)]
    pub fn logits_async(&self, ids: Vec<u32>, dense: bool) -> js_sys::Promise {
        let loaded = self.loaded.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let out = on_model!(&loaded, m => {
                let mut cache = m.new_cache().map_err(js_err)?;
                m.forward_async(&mut cache, &ids, mode(dense), Logits::All).await.map_err(js_err)?
            });
            Ok(js_sys::Float32Array::from(&out.logits.concat()[..]).into())
        })
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
    /// `stopTokenIds`, `stop` (strings). The generation holds its own KV cache and sampler and
    /// shares the model, so it stays valid after the engine is freed.
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
        let opts = GenerateOptions {
            max_new_tokens: o.max_tokens.map_or(Ok(usize::MAX), |n| js_count(n, "maxTokens"))?,
            mode: mode(o.dense),
            stop_at_eos: !o.ignore_eos,
            stop_ids: o.stop_token_ids,
            stop_strings: o.stop,
            speculative: speculative(o.speculative.as_deref(), o.draft_len)?,
            draft_tree_width: match o.draft_tree {
                None => 0,
                Some(n) if n.fract() == 0.0 && (0.0..=3.0).contains(&n) => n as usize,
                Some(n) => return Err(js_err(Error::InvalidInput(format!("draftTree must be 0, 1, 2 or 3, got {n}")))),
            },
        };
        let run = match &self.loaded {
            Loaded::Cpu(m) => Run::Cpu(m.clone(), Stepper::new(m, prompt, sampler, &opts).map_err(js_err)?),
            #[cfg(feature = "gpu")]
            Loaded::Gpu(m) => Run::Gpu(m.clone(), Stepper::new(m, prompt, sampler, &opts).map_err(js_err)?),
        };
        let state = GenState { run, tokenizer: self.tokenizer.clone(), token: 0 };
        Ok(Generation { state: Rc::new(RefCell::new(state)) })
    }
}

/// A generation's stepper with the model it steps (the generation keeps the model alive).
enum Run {
    Cpu(Rc<Model>, Stepper<KvCache>),
    #[cfg(feature = "gpu")]
    Gpu(Rc<Model<GpuBackend>>, Stepper<GpuCache>),
}

/// `$body` with `$m`, `$s` bound to the run's model and stepper.
macro_rules! on_run {
    ($run:expr, $m:ident, $s:ident => $body:expr) => {
        match $run {
            Run::Cpu($m, $s) => $body,
            #[cfg(feature = "gpu")]
            Run::Gpu($m, $s) => $body,
        }
    };
}

struct GenState {
    run: Run,
    tokenizer: Option<Rc<Tokenizer>>,
    token: u32,
}

fn busy_err() -> JsValue {
    js_err(Error::InvalidInput("a step of this generation is still running; await it first".into()))
}

/// One streaming generation: each step advances the crate's one generation loop ([`Stepper`])
/// by a token; this type only binds it. `step` runs on the wasm backend; `stepAsync` on either
/// (a GPU step awaits its readback).
#[wasm_bindgen]
pub struct Generation {
    state: Rc<RefCell<GenState>>,
}

impl Generation {
    /// Reads the state; while a `stepAsync` runs, `f` of a default view instead.
    fn view<T: Default>(&self, f: impl FnOnce(&GenState) -> T) -> T {
        self.state.try_borrow().map(|g| f(&g)).unwrap_or_default()
    }
}

#[wasm_bindgen]
impl Generation {
    /// Produces the next token. Returns `true` with a token ready (`token`, `experts`, `text`), or
    /// `false` when generation has finished (`finishReason` says why; `text` holds any tail). A
    /// token that completes a stop string or fills the context comes with `finishReason` set.
    pub fn step(&mut self) -> Result<bool, JsValue> {
        let mut guard = self.state.try_borrow_mut().map_err(|_| busy_err())?;
        let g = &mut *guard;
        let tok = g.tokenizer.clone();
        let got = match &mut g.run {
            Run::Cpu(m, s) => s.step(m, tok.as_deref()).map_err(js_err)?,
            #[cfg(feature = "gpu")]
            Run::Gpu(..) => {
                return Err(js_err(Error::Unsupported("a WebGPU generation steps with stepAsync()".into())));
            }
        };
        if let Some(id) = got {
            g.token = id;
        }
        Ok(got.is_some())
    }

    /// [`Generation::step`] as a promise of the same boolean, on either backend.
    #[wasm_bindgen(js_name = stepAsync)]
    pub fn step_async(&self) -> js_sys::Promise {
        let state = self.state.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let mut guard = state.try_borrow_mut().map_err(|_| busy_err())?;
            let g = &mut *guard;
            let tok = g.tokenizer.clone();
            let got = on_run!(&mut g.run, m, s => s.step_async(m, tok.as_deref()).await).map_err(js_err)?;
            if let Some(id) = got {
                g.token = id;
            }
            Ok(JsValue::from_bool(got.is_some()))
        })
    }

    /// Ends the generation early: no more tokens; `text` then holds any held-back tail.
    pub fn stop(&mut self) -> Result<(), JsValue> {
        let mut guard = self.state.try_borrow_mut().map_err(|_| busy_err())?;
        let g = &mut *guard;
        let tok = g.tokenizer.clone();
        on_run!(&mut g.run, _m, s => s.stop(tok.as_deref())).map_err(js_err)
    }

    /// The token produced by the last `step` (its first, when a draft was accepted).
    #[wasm_bindgen(getter)]
    pub fn token(&self) -> u32 {
        self.view(|g| g.token)
    }

    /// Every token the last `step` produced: one, or more when a speculative draft was accepted.
    /// `experts` then holds their masks one after another.
    #[wasm_bindgen(getter)]
    pub fn tokens(&self) -> Vec<u32> {
        self.view(|g| on_run!(&g.run, _m, s => s.step_ids().to_vec()))
    }

    /// What the last speculative step did, `{ drafted, accepted, union: [per layer] }`, or
    /// `undefined` without speculation.
    #[wasm_bindgen(getter)]
    pub fn speculation(&self) -> Result<JsValue, JsValue> {
        let g = self.state.try_borrow().map_err(|_| busy_err())?;
        match on_run!(&g.run, _m, s => s.spec_step().cloned()) {
            Some(step) => to_js(&step),
            None => Ok(JsValue::UNDEFINED),
        }
    }

    /// Speculation totals so far, `{ verifies, plain, drafted, accepted, meanUnion }`, or `undefined`.
    #[wasm_bindgen(getter, js_name = speculationTotals)]
    pub fn speculation_totals(&self) -> Result<JsValue, JsValue> {
        let g = self.state.try_borrow().map_err(|_| busy_err())?;
        match on_run!(&g.run, _m, s => s.spec_totals().cloned()) {
            Some(t) => to_js(&t),
            None => Ok(JsValue::UNDEFINED),
        }
    }

    /// Active experts of the last token: `wordsPerLayer` u32 words per layer, bit `e % 32` of word
    /// `layer * wordsPerLayer + e / 32` set iff expert `e` was active. Empty when unknown (the
    /// token that filled the context) or for dense-FFN models.
    #[wasm_bindgen(getter)]
    pub fn experts(&self) -> Vec<u32> {
        self.view(|g| on_run!(&g.run, _m, s => s.experts()).to_vec())
    }

    /// New text since the previous `step` (may be empty).
    #[wasm_bindgen(getter)]
    pub fn text(&self) -> String {
        self.view(|g| on_run!(&g.run, _m, s => s.text()).to_string())
    }

    /// `"length"`, `"eos"`, `"stop"` (a stop token id or string) or `"context"`; `undefined`
    /// while running.
    #[wasm_bindgen(getter, js_name = finishReason)]
    pub fn finish_reason(&self) -> Option<String> {
        self.view(|g| on_run!(&g.run, _m, s => s.finish_reason()).map(|r| r.as_str().to_string()))
    }

    /// Every id generated so far.
    #[wasm_bindgen(getter)]
    pub fn ids(&self) -> Vec<u32> {
        self.view(|g| on_run!(&g.run, _m, s => s.ids()).to_vec())
    }

    #[wasm_bindgen(getter, js_name = promptTokens)]
    pub fn prompt_tokens(&self) -> usize {
        self.view(|g| on_run!(&g.run, _m, s => s.prompt_len()))
    }

    /// Running sparsity over the generated tokens (one segment; definitions of `metrics.rs`):
    /// `{ tokens, tls, cls: { "1": …, …, "64": … }, reuse }`, `null` where undefined.
    pub fn stats(&self) -> Result<JsValue, JsValue> {
        let g = self.state.try_borrow().map_err(|_| busy_err())?;
        let report = on_run!(&g.run, _m, s => s.sparsity());
        to_js(&report)
    }
}

/// A WebGPU adapter and device (WebGPU build), requested once per engine load: its facts tell
/// `backend: 'auto'` whether to use it, and [`Engine::on_gpu`] takes it.
#[cfg(feature = "gpu")]
#[wasm_bindgen]
pub struct GpuDevice {
    gpu: Option<Gpu>,
    info: GpuInfo,
    fallback: Option<String>,
}

#[cfg(feature = "gpu")]
#[derive(Serialize, Clone)]
#[serde(rename_all = "camelCase")]
struct GpuInfo {
    name: String,
    /// A software renderer (SwiftShader, lavapipe): correct, but slower than the wasm kernels.
    software: bool,
    backend: String,
    max_binding_bytes: f64,
    max_buffer_bytes: f64,
}

/// Requests the browser's WebGPU adapter and a device with its full limits; rejects with
/// `Unsupported` when there is none (no `navigator.gpu`, or no adapter).
#[cfg(feature = "gpu")]
#[wasm_bindgen(js_name = requestGpu)]
pub async fn request_gpu() -> Result<GpuDevice, JsValue> {
    let has_gpu = js_sys::Reflect::get(&js_sys::global(), &"navigator".into())
        .ok()
        .filter(|n| n.is_object())
        .and_then(|n| js_sys::Reflect::get(&n, &"gpu".into()).ok())
        .is_some_and(|g| g.is_object());
    if !has_gpu {
        return Err(js_err(Error::Unsupported("WebGPU is not available here (no navigator.gpu)".into())));
    }
    let gpu = Gpu::new().await.map_err(js_err)?;
    let i = &gpu.info;
    let info = GpuInfo {
        name: i.name.clone(),
        software: i.device_type == wgpu::DeviceType::Cpu,
        backend: format!("{:?}", i.backend),
        max_binding_bytes: gpu.max_binding() as f64,
        max_buffer_bytes: gpu.limits.max_buffer_size as f64,
    };
    Ok(GpuDevice { gpu: Some(gpu), info, fallback: None })
}

#[cfg(feature = "gpu")]
#[wasm_bindgen]
impl GpuDevice {
    /// `{ name, software, backend, maxBindingBytes, maxBufferBytes }` of the adapter.
    #[wasm_bindgen(getter)]
    pub fn info(&self) -> Result<JsValue, JsValue> {
        to_js(&self.info)
    }

    /// Why [`Engine::on_gpu`] fell back to the CPU, if it did.
    #[wasm_bindgen(getter)]
    pub fn fallback(&self) -> Option<String> {
        self.fallback.clone()
    }
}
