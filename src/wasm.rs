//! The wasm-bindgen surface: a weight buffer the host streams bytes into, and an engine over it.
//! Errors reach JS as `Error` objects with a stable `code` property (see [`crate::Error::code`]).

use wasm_bindgen::prelude::*;

use crate::generate::{generate, GenerateOptions};
use crate::model::{FfnMode, Logits, Model};
use crate::package::model_from_parts;
use crate::sampling::{Sampler, SamplingParams};
use crate::tokenizer::Tokenizer;
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

/// The weights file, written chunk by chunk straight into its final aligned buffer in wasm
/// memory, so loading never holds the weights twice.
#[wasm_bindgen]
pub struct WeightBuffer {
    buf: Option<AlignedBuf>,
}

#[wasm_bindgen]
impl WeightBuffer {
    #[wasm_bindgen(constructor)]
    pub fn new(len: usize) -> Result<WeightBuffer, JsValue> {
        Ok(WeightBuffer { buf: Some(AlignedBuf::zeroed(len).map_err(js_err)?) })
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
        Ok(())
    }
}

#[wasm_bindgen]
pub struct Engine {
    model: Model,
    tokenizer: Option<Tokenizer>,
}

fn mode(dense: bool) -> FfnMode {
    if dense {
        FfnMode::Dense
    } else {
        FfnMode::Sparse
    }
}

#[wasm_bindgen]
impl Engine {
    /// Takes ownership of the weights in `weights` (the buffer is empty afterwards).
    #[wasm_bindgen(constructor)]
    pub fn new(
        config_json: &str,
        weights: &mut WeightBuffer,
        tokenizer_json: Option<Vec<u8>>,
    ) -> Result<Engine, JsValue> {
        let buf = weights
            .buf
            .take()
            .ok_or_else(|| js_err(Error::InvalidInput("this WeightBuffer was already used".into())))?;
        let model = model_from_parts(config_json, buf).map_err(js_err)?;
        let tokenizer = match tokenizer_json {
            Some(j) => Some(Tokenizer::from_bytes(&j, model.config().bos_token_id).map_err(js_err)?),
            None => None,
        };
        Ok(Engine { model, tokenizer })
    }

    #[wasm_bindgen(js_name = vocabSize)]
    pub fn vocab_size(&self) -> usize {
        self.model.config().vocab_size
    }

    /// Logits of every position of `ids`, flattened `[positions × vocab]`.
    pub fn logits(&self, ids: &[u32], dense: bool) -> Result<Vec<f32>, JsValue> {
        let mut cache = self.model.new_cache();
        let out = self.model.forward(&mut cache, ids, mode(dense), Logits::All).map_err(js_err)?;
        Ok(out.logits.concat())
    }

    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>, JsValue> {
        let t =
            self.tokenizer.as_ref().ok_or_else(|| js_err(Error::Tokenizer("this model has no tokenizer".into())))?;
        t.encode(text).map_err(js_err)
    }

    pub fn detokenize(&self, ids: &[u32]) -> Result<String, JsValue> {
        let t =
            self.tokenizer.as_ref().ok_or_else(|| js_err(Error::Tokenizer("this model has no tokenizer".into())))?;
        t.decode(ids).map_err(js_err)
    }

    /// Generates new ids after `prompt` (no streaming yet; see the JS layer).
    #[allow(clippy::too_many_arguments)]
    #[wasm_bindgen(js_name = generateIds)]
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
}
