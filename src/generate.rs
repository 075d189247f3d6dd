//! Autoregressive generation and perplexity/sparsity evaluation on top of [`Model`].

use crate::metrics::{self, ActiveSets, Sparsity};
use crate::model::{FfnMode, Logits, Model};
use crate::sampling::Sampler;
use crate::{Error, Result};

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// `max_new_tokens` were produced.
    Length,
    /// The model produced its end-of-sequence token (not included in the output).
    Eos,
    /// The model's context window is full.
    Context,
    /// The caller's callback asked to stop.
    Stopped,
}

pub struct GenerateOptions {
    pub max_new_tokens: usize,
    pub mode: FfnMode,
    /// Stop at the model's `eos_token_id`.
    pub stop_at_eos: bool,
}

/// One generated token with the experts it used in each layer.
pub struct TokenEvent<'a> {
    pub id: u32,
    pub active: &'a [Vec<u16>],
}

/// Generates up to `max_new_tokens` ids after `prompt`. `on_token` sees each new token as it is
/// produced and returns `false` to stop early.
pub fn generate(
    model: &Model,
    prompt: &[u32],
    sampler: &mut Sampler,
    opts: &GenerateOptions,
    mut on_token: impl FnMut(TokenEvent) -> bool,
) -> Result<(Vec<u32>, FinishReason)> {
    let mut cache = model.new_cache();
    let mut out = model.forward(&mut cache, prompt, opts.mode, Logits::Last)?;
    let mut context = prompt.to_vec();
    let mut new_ids = Vec::new();
    let max_ctx = model.config().max_position_embeddings;
    let eos = if opts.stop_at_eos { model.config().eos_token_id } else { None };
    loop {
        if new_ids.len() >= opts.max_new_tokens {
            return Ok((new_ids, FinishReason::Length));
        }
        let mut logits = out.logits.pop().expect("forward returned the last logits");
        let id = sampler.sample(&mut logits, &context);
        if Some(id) == eos {
            return Ok((new_ids, FinishReason::Eos));
        }
        new_ids.push(id);
        context.push(id);
        if cache.len() >= max_ctx {
            // The token is emitted, but there is no room to run it.
            on_token(TokenEvent { id, active: &[] });
            return Ok((new_ids, FinishReason::Context));
        }
        out = model.forward(&mut cache, &[id], opts.mode, Logits::Last)?;
        if !on_token(TokenEvent { id, active: &out.active[0] }) {
            return Ok((new_ids, FinishReason::Stopped));
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct EvalReport {
    pub ppl: f64,
    pub tokens: usize,
    #[serde(flatten)]
    pub sparsity: Sparsity,
}

/// Perplexity and sparsity of `ids` (one document; BOS already first). Ids are split into segments
/// of at most the model's context, each run from an empty cache.
pub fn evaluate(model: &Model, ids: &[u32], mode: FfnMode) -> Result<EvalReport> {
    evaluate_with_progress(model, ids, mode, |_| {})
}

/// [`evaluate`], calling `progress(tokens_done)` as segments finish (from any thread).
pub fn evaluate_with_progress(
    model: &Model,
    ids: &[u32],
    mode: FfnMode,
    progress: impl Fn(usize) + Sync,
) -> Result<EvalReport> {
    if ids.len() < 2 {
        return Err(Error::InvalidInput("evaluation needs a text of at least one token after BOS".into()));
    }
    let max = model.config().max_position_embeddings;
    for seg in ids.chunks(max) {
        model.check_ids(&model.new_cache(), seg)?;
    }
    let segs: Vec<&[u32]> = ids.chunks(max).collect();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let results = map_segments(&segs, |seg| {
        let r = eval_segment(model, seg, mode);
        progress(done.fetch_add(seg.len(), std::sync::atomic::Ordering::Relaxed) + seg.len());
        r
    });
    let mut nll = 0.0f64;
    let mut tokens = 0usize;
    let mut segments: Vec<ActiveSets> = Vec::with_capacity(results.len());
    for r in results {
        let (n, t, active) = r?;
        nll += n;
        tokens += t;
        segments.push(active);
    }
    if tokens == 0 {
        return Err(Error::InvalidInput("evaluation text produced no predicted tokens".into()));
    }
    let sparsity = metrics::sparsity(&segments, model.config().num_experts(), &metrics::CLS_WINDOWS);
    Ok(EvalReport { ppl: (nll / tokens as f64).exp(), tokens, sparsity })
}

/// Negative log-likelihood sum, predicted-token count and active sets of one segment.
fn eval_segment(model: &Model, seg: &[u32], mode: FfnMode) -> Result<(f64, usize, ActiveSets)> {
    let mut cache = model.new_cache();
    let out = model.forward(&mut cache, seg, mode, Logits::All)?;
    let mut nll = 0.0;
    for (logits, &next) in out.logits.iter().zip(&seg[1..]) {
        nll -= log_softmax_at(logits, next as usize);
    }
    Ok((nll, seg.len() - 1, out.active))
}

/// Applies `f` to every segment, in order; natively the segments are spread over all cores.
fn map_segments<T: Send>(segs: &[&[u32]], f: impl Fn(&[u32]) -> T + Sync) -> Vec<T> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(segs.len().max(1));
        if threads > 1 {
            let per = segs.len().div_ceil(threads);
            return std::thread::scope(|s| {
                let handles: Vec<_> = segs
                    .chunks(per)
                    .map(|part| s.spawn(|| part.iter().map(|seg| f(seg)).collect::<Vec<T>>()))
                    .collect();
                handles.into_iter().flat_map(|h| h.join().expect("evaluation thread")).collect()
            });
        }
    }
    segs.iter().map(|seg| f(seg)).collect()
}

fn log_softmax_at(logits: &[f32], i: usize) -> f64 {
    let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let s: f64 = logits.iter().map(|&v| (v as f64 - m).exp()).sum();
    logits[i] as f64 - m - s.ln()
}
