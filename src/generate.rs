//! The one generation loop ([`Stepper`]) and perplexity/sparsity evaluation on top of [`Model`].

use crate::backend::{Backend, SeqCache};
use crate::experts::ExpertMasks;
use crate::metrics::{self, ActiveSets, RunningSparsity, Sparsity, SparsityReport};
use crate::model::{FfnMode, Logits, Model, Pending};
use crate::sampling::Sampler;
use crate::spec::{clock, DraftTree, SpecStep, SpecTotals, Speculative, Speculator, MAX_DRAFT, MAX_TREE_NODES};
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// `max_new_tokens` were produced.
    Length,
    /// The model produced its end-of-sequence token (not included in the output).
    Eos,
    /// A stop token id (not included) or a stop string (the text is cut before it).
    Stop,
    /// The model's context window is full.
    Context,
    /// The caller asked to stop.
    Stopped,
}

impl FinishReason {
    /// The name the JS API uses (`finishReason`).
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Length => "length",
            FinishReason::Eos => "eos",
            FinishReason::Stop => "stop",
            FinishReason::Context => "context",
            FinishReason::Stopped => "stopped",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    pub mode: FfnMode,
    /// Stop at the model's `eos_token_id`.
    pub stop_at_eos: bool,
    /// Ids that end generation (not emitted).
    pub stop_ids: Vec<u32>,
    /// Texts that end generation: the text is cut before the first one, and text that could be
    /// the start of one is held back until it is known not to be.
    pub stop_strings: Vec<String>,
    /// Speculative decoding (same output, fewer forwards when drafts are accepted).
    pub speculative: Speculative,
    /// Draft trees: alternatives beside each draft token, verified in the same forward (0: chains).
    /// Used with greedy decoding on a backend that verifies trees (the CPU); chains otherwise.
    pub draft_tree_width: usize,
}

/// One generation, a token per [`Stepper::step`]: prompt, sampling, stop ids and strings,
/// incremental detokenization and running sparsity. The CLI, the wasm bindings and the
/// benchmarks all drive this one loop. The model (and tokenizer) are passed to each call, so a
/// stepper can live beside a shared model (the wasm `Generation` holds both).
///
/// Speculative decoding advances it by a verified span instead ([`Stepper::advance_verified`]):
/// it runs the draft through the model itself on [`Stepper::cache_mut`], keeps the accepted
/// prefix (`KvCache::truncate`), and hands the accepted ids over.
pub struct Stepper<C> {
    cache: C,
    sampler: Sampler,
    mode: FfnMode,
    prompt_len: usize,
    /// Prompt and every new id (the repetition penalty's context).
    context: Vec<u32>,
    /// Logits for the next token; `None` before the prompt is run.
    logits: Option<Vec<f32>>,
    /// The next token when the backend picked it on the device (greedy decoding on a GPU).
    next: Option<u32>,
    max_new: usize,
    eos: Option<u32>,
    stop_ids: Vec<u32>,
    new_ids: Vec<u32>,
    finish: Option<FinishReason>,
    /// Active experts of the last step's tokens (`layers × words` words each; empty when unknown).
    mask: Vec<u32>,
    /// Ids the last step emitted (several when a draft was accepted).
    step_ids: Vec<u32>,
    spec: Option<Speculator>,
    stats: RunningSparsity,
    text: TextStream,
}

impl<C: SeqCache> Stepper<C> {
    /// Checks the prompt; nothing runs until the first `step`.
    pub fn new<B: Backend<Cache = C>>(
        model: &Model<B>,
        prompt: &[u32],
        sampler: Sampler,
        opts: &GenerateOptions,
    ) -> Result<Self> {
        let cache = model.new_cache()?;
        model.check_ids(&cache, prompt)?;
        let cfg = model.config();
        let mut stop_ids = opts.stop_ids.clone();
        let eos = if opts.stop_at_eos { cfg.eos_token_id } else { None };
        stop_ids.retain(|&id| Some(id) != eos);
        Ok(Stepper {
            cache,
            sampler,
            mode: opts.mode,
            prompt_len: prompt.len(),
            context: prompt.to_vec(),
            logits: None,
            next: None,
            max_new: opts.max_new_tokens,
            eos,
            stop_ids,
            new_ids: Vec::new(),
            finish: None,
            mask: Vec::new(),
            step_ids: Vec::new(),
            spec: Speculator::new(opts.speculative, model.draft_head(), model.backend().draft_target().is_some())?.map(
                |mut s| {
                    s.tree_width = opts.draft_tree_width.min(MAX_TREE_NODES / 2);
                    s
                },
            ),
            stats: RunningSparsity::new(cfg.num_hidden_layers, cfg.num_experts()),
            text: TextStream::new(&opts.stop_strings),
        })
    }

    /// Produces the next token: `Ok(Some(id))` with its experts ([`Stepper::experts`]) and new
    /// text ([`Stepper::text`]), or `Ok(None)` once finished ([`Stepper::finish_reason`]; `text`
    /// then holds any tail). A token can come with a finish reason too (it filled the context, or
    /// completed a stop string).
    pub fn step<B: Backend<Cache = C>>(&mut self, model: &Model<B>, tok: Option<&Tokenizer>) -> Result<Option<u32>> {
        crate::ready::ready(self.step_async(model, tok))
    }

    /// [`Stepper::step`] for every backend, a browser GPU's included (see [`crate::ready`]).
    pub async fn step_async<B: Backend<Cache = C>>(
        &mut self,
        model: &Model<B>,
        tok: Option<&Tokenizer>,
    ) -> Result<Option<u32>> {
        self.text.delta.clear();
        self.mask.clear();
        self.step_ids.clear();
        if self.finish.is_some() {
            return Ok(None);
        }
        if self.spec.is_some() {
            return self.step_speculative(model, tok).await;
        }
        if self.sampler.params().is_greedy() && model.greedy_on_device() {
            return self.step_on_device(model, tok).await;
        }
        let mut logits = self.pending_logits(model).await?;
        if self.new_ids.len() >= self.max_new {
            return self.end(FinishReason::Length, tok);
        }
        let id = self.sampler.sample(&mut logits, &self.context);
        if let Some(done) = self.admit(id, model.config().max_position_embeddings, tok)? {
            return Ok(done);
        }
        let mut out = model.forward_async(&mut self.cache, &[id], self.mode, Logits::Last).await?;
        self.record(&out.experts, 0);
        self.logits = Some(out.logits.pop().expect("forward returned the last logits"));
        if self.text.update(tok, &self.new_ids, false)? {
            self.finish = Some(FinishReason::Stop);
        }
        Ok(Some(id))
    }

    /// [`Stepper::step`] for greedy decoding on a device: the model picks each next token where
    /// it computed it, and only the id and the experts come back. Same tokens as the host path.
    async fn step_on_device<B: Backend<Cache = C>>(
        &mut self,
        model: &Model<B>,
        tok: Option<&Tokenizer>,
    ) -> Result<Option<u32>> {
        let penalty = self.sampler.params().penalty();
        let id = match self.next.take() {
            Some(id) => id,
            None => model.forward_greedy_async(&mut self.cache, &self.context, self.mode, penalty, &self.context).await?.0,
        };
        if self.new_ids.len() >= self.max_new {
            return self.end(FinishReason::Length, tok);
        }
        if let Some(done) = self.admit(id, model.config().max_position_embeddings, tok)? {
            return Ok(done);
        }
        let (next, experts) = model.forward_greedy_async(&mut self.cache, &[id], self.mode, penalty, &self.context).await?;
        self.record(&experts, 0);
        self.next = Some(next);
        if self.text.update(tok, &self.new_ids, false)? {
            self.finish = Some(FinishReason::Stop);
        }
        Ok(Some(id))
    }

    /// The logits for the next token: those left by the last step, or (first step) the prompt's.
    async fn pending_logits<B: Backend<Cache = C>>(&mut self, model: &Model<B>) -> Result<Vec<f32>> {
        match self.logits.take() {
            Some(l) => Ok(l),
            None => {
                let mut out = if self.wants_features() {
                    let out = model.forward_features_async(&mut self.cache, &self.context, self.mode, Logits::Last).await?;
                    self.observe_features(0, &out.features);
                    out
                } else {
                    model.forward_async(&mut self.cache, &self.context, self.mode, Logits::Last).await?
                };
                Ok(out.logits.pop().expect("forward returned the last logits"))
            }
        }
    }

    /// True when the drafter reads the model's features (the EAGLE head).
    fn wants_features(&self) -> bool {
        self.spec.as_ref().is_some_and(|s| s.drafter.wants_features())
    }

    fn observe_features(&mut self, pos0: usize, features: &[f32]) {
        if let Some(s) = self.spec.as_mut() {
            s.drafter.observe(pos0, features);
        }
    }

    /// One speculative step: the next token `t0` (already determined: sampled from the pending
    /// logits, or the correction of the last verification), then up to k drafted tokens after
    /// it, verified in one span with `forward_chunk` (each expert of the span's union read once).
    /// Each draft is judged by [`Sampler::verify`] against the model's distribution at its
    /// position; the accepted prefix is kept, the cache truncated to it, and the model's token
    /// after it becomes the next `t0` (the bonus token when every draft was accepted). Greedy
    /// output equals plain greedy output token for token.
    async fn step_speculative<B: Backend<Cache = C>>(
        &mut self,
        model: &Model<B>,
        tok: Option<&Tokenizer>,
    ) -> Result<Option<u32>> {
        let max_pos = model.config().max_position_embeddings;
        let t0 = match self.next.take() {
            Some(id) => id,
            None => {
                let mut logits = self.pending_logits(model).await?;
                if self.new_ids.len() >= self.max_new {
                    return self.end(FinishReason::Length, tok);
                }
                self.sampler.sample(&mut logits, &self.context)
            }
        };
        if self.new_ids.len() >= self.max_new {
            return self.end(FinishReason::Length, tok);
        }
        if let Some(done) = self.admit(t0, max_pos, tok)? {
            return Ok(done);
        }
        let spec = self.spec.as_mut().expect("step_speculative runs with a speculator");
        // Room: the context, the token budget (t0 is taken), the span limit.
        let room = max_pos
            .saturating_sub(self.cache.len() + 1)
            .min(self.max_new.saturating_sub(self.new_ids.len()))
            .min(MAX_DRAFT);
        let want = spec.len.choose().min(room);
        // The step's cost includes drafting (a draft head's forwards are not free).
        let t_start = clock::now_ms();
        let target = model.backend().draft_target();
        let drafts = if want == 0 {
            Vec::new()
        } else if spec.tree_width > 0 && self.sampler.params().is_greedy() && model.backend().verifies_trees() {
            let mut tree = spec.drafter.draft_tree(&self.context, want, spec.tree_width, target);
            tree.truncate(room.min(MAX_TREE_NODES));
            if !tree.is_chain() {
                return self.step_tree(model, tok, t0, tree, t_start).await;
            }
            tree.tokens
        } else {
            spec.drafter.draft(&self.context, want, target)
        };
        let drafts = &drafts[..drafts.len().min(want)];
        let pos0 = self.cache.len();
        let mut span = Vec::with_capacity(1 + drafts.len());
        span.push(t0);
        span.extend_from_slice(drafts);
        if drafts.is_empty() && self.sampler.params().is_greedy() && model.greedy_on_device() {
            // Nothing to verify: a plain step, the token picked on the device.
            let penalty = self.sampler.params().penalty();
            let (next, experts) = model.forward_greedy_async(&mut self.cache, &span, self.mode, penalty, &self.context).await?;
            self.record(&experts, 0);
            self.next = Some(next);
            self.observe_step(0, 0, clock::now_ms() - t_start, &experts, model.config().num_hidden_layers);
            if self.text.update(tok, &self.new_ids, false)? {
                self.finish = Some(FinishReason::Stop);
            }
            return Ok(Some(t0));
        }
        let feats = self.wants_features();
        let mut rows = SpanRows::run(model, &mut self.cache, &span, self.mode, None, feats).await?;
        self.record(&rows.experts, 0);
        if self.text.update(tok, &self.new_ids, false)? {
            self.finish = Some(FinishReason::Stop);
        }
        // Judge the drafts in order; the first rejection draws the model's own token instead.
        let mut accepted = 0;
        let mut correction = None;
        for (i, &d) in drafts.iter().enumerate() {
            match self.sampler.verify(rows.row(model, i).await?, &self.context, d) {
                // The accepted draft joins the context of the next judgement (repetition penalty).
                Ok(()) => {
                    accepted += 1;
                    self.context.push(d);
                }
                Err(id) => {
                    correction = Some(id);
                    break;
                }
            }
        }
        // Every draft accepted: the logits after the last one are the next step's.
        let bonus = match correction {
            None => Some(std::mem::take(rows.row(model, accepted).await?)),
            Some(_) => None,
        };
        let ms = clock::now_ms() - t_start;
        // Taken again below, with the stop checks.
        self.context.truncate(self.context.len() - accepted);
        self.observe_step(drafts.len(), accepted, ms, &rows.experts, model.config().num_hidden_layers);
        // Keep t0 and the accepted drafts in the cache (and their features for the drafter).
        self.cache.truncate(pos0 + 1 + accepted);
        if feats {
            let h = model.config().hidden_size;
            self.observe_features(pos0, &rows.features[..(1 + accepted) * h]);
        }
        for (j, &d) in drafts[..accepted].iter().enumerate() {
            if !self.take_verified(d, &rows.experts, 1 + j, tok)? {
                break;
            }
        }
        if self.finish.is_none() {
            match correction {
                Some(id) => self.next = Some(id),
                None => self.logits = bonus,
            }
        }
        Ok(Some(t0))
    }

    /// A speculative step over a draft tree (greedy decoding): `t0` and the tree in one forward,
    /// each node attending to its ancestors only; from the root, the child whose token is the
    /// model's own greedy pick is taken, as long as there is one; the cache keeps that path.
    /// Output equals plain greedy output.
    async fn step_tree<B: Backend<Cache = C>>(
        &mut self,
        model: &Model<B>,
        tok: Option<&Tokenizer>,
        t0: u32,
        tree: DraftTree,
        t_start: f64,
    ) -> Result<Option<u32>> {
        let pos0 = self.cache.len();
        let span: Vec<u32> = std::iter::once(t0).chain(tree.tokens.iter().copied()).collect();
        let feats = self.wants_features();
        let masks = tree.masks();
        let mut rows = SpanRows::run(model, &mut self.cache, &span, self.mode, Some(&masks), feats).await?;
        self.record(&rows.experts, 0);
        if self.text.update(tok, &self.new_ids, false)? {
            self.finish = Some(FinishReason::Stop);
        }
        let mut path = vec![0];
        let next = loop {
            let node = *path.last().expect("the root");
            let pick = self.sampler.sample(rows.row(model, node).await?, &self.context);
            match tree.children(node).find(|&c| span[c] == pick) {
                Some(c) => {
                    path.push(c);
                    self.context.push(pick);
                }
                None => break pick,
            }
        };
        let ms = clock::now_ms() - t_start;
        let accepted = path.len() - 1;
        self.context.truncate(self.context.len() - accepted);
        self.observe_step(tree.len(), accepted, ms, &rows.experts, model.config().num_hidden_layers);
        if !self.cache.keep_path(pos0, &path) {
            return Err(crate::Error::Unsupported("this backend's cache cannot keep a draft tree's path; use chains (draft tree width 0)".into()));
        }
        if feats {
            let h = model.config().hidden_size;
            let kept: Vec<f32> = path.iter().flat_map(|&n| rows.features[n * h..(n + 1) * h].iter().copied()).collect();
            self.observe_features(pos0, &kept);
        }
        for &node in &path[1..] {
            if !self.take_verified(span[node], &rows.experts, node, tok)? {
                break;
            }
        }
        if self.finish.is_none() {
            self.next = Some(next);
        }
        Ok(Some(t0))
    }

    /// Takes `ids`, tokens the caller has already run through the model on this stepper's cache
    /// (`experts` their active sets, `next_logits` the logits after the last one): the accepted
    /// prefix of a verified draft. They pass the same stop checks as sampled tokens; returns how
    /// many were taken (fewer when one of them ends the generation; the caller truncates the
    /// cache to [`Stepper::position`] then).
    pub fn advance_verified(
        &mut self,
        ids: &[u32],
        experts: &ExpertMasks,
        next_logits: Vec<f32>,
        tok: Option<&Tokenizer>,
    ) -> Result<usize> {
        self.text.delta.clear();
        self.mask.clear();
        self.step_ids.clear();
        for (t, &id) in ids.iter().enumerate() {
            if !self.take_verified(id, experts, t, tok)? {
                return Ok(t);
            }
        }
        self.logits = Some(next_logits);
        self.next = None;
        Ok(ids.len())
    }

    /// Emits `id`, a token already run (token `t` of `experts`), after the stop checks; `false`
    /// when the generation had ended or ends here instead (then it is not taken).
    fn take_verified(&mut self, id: u32, experts: &ExpertMasks, t: usize, tok: Option<&Tokenizer>) -> Result<bool> {
        if self.finish.is_some() {
            return Ok(false);
        }
        if self.new_ids.len() >= self.max_new {
            self.end(FinishReason::Length, tok)?;
            return Ok(false);
        }
        if Some(id) == self.eos || self.stop_ids.contains(&id) {
            let r = if Some(id) == self.eos { FinishReason::Eos } else { FinishReason::Stop };
            self.end(r, tok)?;
            return Ok(false);
        }
        self.new_ids.push(id);
        self.context.push(id);
        self.step_ids.push(id);
        self.record(experts, t);
        if self.text.update(tok, &self.new_ids, false)? {
            self.finish = Some(FinishReason::Stop);
        }
        Ok(true)
    }

    /// Feeds a speculative step's outcome to the draft-length controller and the telemetry.
    fn observe_step(&mut self, drafted: usize, accepted: usize, ms: f64, experts: &ExpertMasks, layers: usize) {
        let (union, union_mask) = span_union(experts, layers);
        let spec = self.spec.as_mut().expect("only speculative steps are observed");
        spec.len.observe(drafted, accepted, ms);
        let step = SpecStep { drafted, accepted, union, union_mask };
        spec.totals.add(&step);
        spec.last = Some(step);
    }

    /// Stop checks for a picked token, then emits it; `Some` when the step ends here (a stop, or
    /// the token emitted with no room left to run it: its experts are unknown).
    fn admit(&mut self, id: u32, max_positions: usize, tok: Option<&Tokenizer>) -> Result<Option<Option<u32>>> {
        if Some(id) == self.eos {
            return self.end(FinishReason::Eos, tok).map(Some);
        }
        if self.stop_ids.contains(&id) {
            return self.end(FinishReason::Stop, tok).map(Some);
        }
        self.new_ids.push(id);
        self.context.push(id);
        self.step_ids.push(id);
        if self.cache.len() >= max_positions {
            self.mask.clear();
            self.finish = Some(FinishReason::Context);
            self.text.update(tok, &self.new_ids, true)?;
            return Ok(Some(Some(id)));
        }
        Ok(None)
    }

    fn record(&mut self, experts: &ExpertMasks, t: usize) {
        if t < experts.tokens() {
            self.mask.extend_from_slice(experts.token(t));
            self.stats.push(experts.token(t));
        }
    }

    fn end(&mut self, reason: FinishReason, tok: Option<&Tokenizer>) -> Result<Option<u32>> {
        self.finish = Some(reason);
        self.text.update(tok, &self.new_ids, true)?;
        Ok(None)
    }

    /// Ends the generation at the caller's request (no more tokens; flushes held-back text).
    pub fn stop(&mut self, tok: Option<&Tokenizer>) -> Result<()> {
        if self.finish.is_none() {
            self.end(FinishReason::Stopped, tok)?;
        }
        Ok(())
    }

    /// Active experts of the last token: `words` u32 per layer (see [`crate::experts`]). Empty when
    /// unknown (the token that filled the context) or for dense-FFN models.
    pub fn experts(&self) -> &[u32] {
        &self.mask
    }
    /// Ids the last step emitted, in order: one, or more when a draft was accepted.
    pub fn step_ids(&self) -> &[u32] {
        &self.step_ids
    }
    /// What the last speculative step did (`None` without speculation).
    pub fn spec_step(&self) -> Option<&SpecStep> {
        self.spec.as_ref().and_then(|s| s.last.as_ref())
    }
    /// Speculation totals so far (`None` without speculation).
    pub fn spec_totals(&self) -> Option<&SpecTotals> {
        self.spec.as_ref().map(|s| &s.totals)
    }
    /// Text since the previous call (may be empty).
    pub fn text(&self) -> &str {
        &self.text.delta
    }
    pub fn finish_reason(&self) -> Option<FinishReason> {
        self.finish
    }
    /// Every id generated so far.
    pub fn ids(&self) -> &[u32] {
        &self.new_ids
    }
    pub fn prompt_len(&self) -> usize {
        self.prompt_len
    }
    /// Prompt and generated ids: what the next token follows.
    pub fn context(&self) -> &[u32] {
        &self.context
    }
    /// Positions the cache should hold: every token of the context except the newest, whose
    /// logits are pending (before the first step: none).
    pub fn position(&self) -> usize {
        if self.logits.is_none() && self.next.is_none() && self.new_ids.is_empty() {
            0
        } else {
            self.context.len()
        }
    }
    /// The logits for the next token, once the prompt has run.
    pub fn next_logits(&self) -> Option<&[f32]> {
        self.logits.as_deref()
    }
    pub fn cache_mut(&mut self) -> &mut C {
        &mut self.cache
    }
    pub fn sampler_mut(&mut self) -> &mut Sampler {
        &mut self.sampler
    }
    pub fn mode(&self) -> FfnMode {
        self.mode
    }
    /// Running sparsity over the generated tokens (one segment).
    pub fn sparsity(&self) -> SparsityReport {
        self.stats.report()
    }
}

/// The union of a verified span's experts: per layer its size, and its bitmask (`words` u32 a layer).
/// The logits of a verified span. Where the backend runs its head on demand (the CPU) they are
/// computed as the judgement reaches them — for a chain one row, then batches doubling (at most
/// twice the rows judged, the LM head read about log2 k times), for a tree only the nodes on the
/// path walked — so the rows after a rejection cost nothing; elsewhere the span's forward
/// returns them all.
struct SpanRows<A> {
    pending: Option<Pending<A>>,
    rows: Vec<Option<Vec<f32>>>,
    experts: ExpertMasks,
    features: Vec<f32>,
    /// Rows computed by the next fetch (chains); 1 for trees.
    batch: usize,
    tree: bool,
}

impl<A> SpanRows<A> {
    async fn run<B: Backend<Acts = A>>(
        model: &Model<B>,
        cache: &mut B::Cache,
        span: &[u32],
        mode: FfnMode,
        tree: Option<&[u32]>,
        features: bool,
    ) -> Result<Self> {
        let k = span.len();
        if model.backend().head_on_demand() {
            let mut p = model.forward_pending_async(cache, span, mode, tree, features).await?;
            let (experts, features) = (std::mem::take(&mut p.experts), std::mem::take(&mut p.features));
            return Ok(SpanRows { pending: Some(p), rows: vec![None; k], experts, features, batch: 1, tree: tree.is_some() });
        }
        let out = match (tree, mode) {
            (Some(t), _) => model.forward_tree_async(cache, span, t, mode, features).await?,
            (None, _) if features => model.forward_features_async(cache, span, mode, Logits::All).await?,
            (None, FfnMode::Sparse) => model.forward_chunk_async(cache, span, Logits::All).await?,
            (None, FfnMode::Dense) => model.forward_async(cache, span, FfnMode::Dense, Logits::All).await?,
        };
        let rows = out.logits.into_iter().map(Some).collect();
        Ok(SpanRows { pending: None, rows, experts: out.experts, features: out.features, batch: 0, tree: tree.is_some() })
    }

    /// Row `i`'s logits (the sampler may change them in place: each row is judged once).
    async fn row<B: Backend<Acts = A>>(&mut self, model: &Model<B>, i: usize) -> Result<&mut Vec<f32>> {
        if self.rows[i].is_none() {
            let p = self.pending.as_mut().expect("rows not returned by the forward are pending");
            let to = if self.tree { i + 1 } else { (i + self.batch).min(self.rows.len()) };
            self.batch *= 2;
            for (j, r) in model.pending_logits(p, i, to).await?.into_iter().enumerate() {
                self.rows[i + j] = Some(r);
            }
        }
        Ok(self.rows[i].as_mut().expect("computed above"))
    }
}

fn span_union(experts: &ExpertMasks, layers: usize) -> (Vec<u16>, Vec<u32>) {
    if experts.tokens() == 0 {
        return (Vec::new(), Vec::new());
    }
    let mut mask = vec![0u32; experts.token(0).len()];
    for t in 0..experts.tokens() {
        for (m, w) in mask.iter_mut().zip(experts.token(t)) {
            *m |= w;
        }
    }
    let words = mask.len() / layers.max(1);
    let sizes = (0..layers).map(|l| mask[l * words..(l + 1) * words].iter().map(|w| w.count_ones() as u16).sum()).collect();
    (sizes, mask)
}

/// Incremental detokenization with stop strings. Like the CLI always did, text is held back
/// while it ends in an incomplete character; text that could start a stop string is held back
/// until it cannot; the text is cut before the first stop string.
struct TextStream {
    stops: Vec<String>,
    /// Decoded text of every id so far that has passed into `held` or out.
    printed: String,
    held: String,
    delta: String,
    stopped: bool,
}

impl TextStream {
    fn new(stops: &[String]) -> Self {
        TextStream {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            printed: String::new(),
            held: String::new(),
            delta: String::new(),
            stopped: false,
        }
    }

    /// Appends to `delta` what `ids` decode to beyond what was shown; true when a stop string
    /// completed (the text then ends before it).
    fn update(&mut self, tok: Option<&Tokenizer>, ids: &[u32], last: bool) -> Result<bool> {
        let Some(t) = tok else { return Ok(false) };
        if self.stopped {
            return Ok(true);
        }
        let text = t.decode(ids)?;
        if text.starts_with(&self.printed) && (last || !text.ends_with('\u{fffd}')) {
            self.held.push_str(&text[self.printed.len()..]);
            self.printed = text;
        }
        if let Some(cut) = self.stops.iter().filter_map(|s| self.held.find(s.as_str())).min() {
            self.delta.push_str(&self.held[..cut]);
            self.held.clear();
            self.stopped = true;
            return Ok(true);
        }
        // Hold back the longest tail that is a proper prefix of some stop string.
        let mut keep = 0;
        if !last {
            for s in &self.stops {
                for (k, _) in s.char_indices().skip(1) {
                    if k > keep && self.held.ends_with(&s[..k]) {
                        keep = k;
                    }
                }
            }
        }
        let split = self.held.len() - keep;
        self.delta.push_str(&self.held[..split]);
        self.held.drain(..split);
        Ok(false)
    }
}

/// One step's tokens (one, or several when a speculative draft was accepted) with the experts
/// they used in each layer.
pub struct TokenEvent<'a> {
    /// The step's first id.
    pub id: u32,
    pub ids: &'a [u32],
    /// `words` u32 per layer per token (empty when unknown).
    pub experts: &'a [u32],
    /// New text (empty without a tokenizer).
    pub text: &'a str,
}

/// Generates up to `max_new_tokens` ids after `prompt` with a [`Stepper`]. `on_token` sees each
/// step's new tokens as they are produced and returns `false` to stop early. Returns the ids, why
/// it stopped, the text, and the speculation totals when speculation was on.
pub fn generate<B: Backend>(
    model: &Model<B>,
    tok: Option<&Tokenizer>,
    prompt: &[u32],
    sampler: Sampler,
    opts: &GenerateOptions,
    mut on_token: impl FnMut(TokenEvent) -> bool,
) -> Result<(Vec<u32>, FinishReason, String, Option<SpecTotals>)> {
    let mut st = Stepper::new(model, prompt, sampler, opts)?;
    let mut text = String::new();
    loop {
        let got = st.step(model, tok)?;
        text.push_str(st.text());
        let Some(id) = got else { break };
        if !on_token(TokenEvent { id, ids: st.step_ids(), experts: st.experts(), text: st.text() }) {
            st.stop(tok)?;
            text.push_str(st.text());
            break;
        }
    }
    let spec = st.spec_totals().cloned();
    Ok((st.ids().to_vec(), st.finish_reason().unwrap_or(FinishReason::Stopped), text, spec))
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
pub fn evaluate<B: Backend + Sync>(model: &Model<B>, ids: &[u32], mode: FfnMode) -> Result<EvalReport> {
    evaluate_with_progress(model, ids, mode, |_| {})
}

/// [`evaluate`], calling `progress(tokens_done)` as segments finish (from any thread).
pub fn evaluate_with_progress<B: Backend + Sync>(
    model: &Model<B>,
    ids: &[u32],
    mode: FfnMode,
    progress: impl Fn(usize) + Sync,
) -> Result<EvalReport> {
    if ids.len() < 2 {
        return Err(Error::InvalidInput("evaluation needs a text of at least one token after BOS".into()));
    }
    let max = model.config().max_position_embeddings;
    for seg in ids.chunks(max) {
        model.check_ids(&model.new_cache()?, seg)?;
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
fn eval_segment<B: Backend>(model: &Model<B>, seg: &[u32], mode: FfnMode) -> Result<(f64, usize, ActiveSets)> {
    let mut cache = model.new_cache()?;
    let out = model.forward(&mut cache, seg, mode, Logits::All)?;
    let mut nll = 0.0;
    for (logits, &next) in out.logits.iter().zip(&seg[1..]) {
        nll -= log_softmax_at(logits, next as usize);
    }
    Ok((nll, seg.len() - 1, out.active()))
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
