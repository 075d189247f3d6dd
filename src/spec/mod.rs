//! Speculative decoding (SPEC §9): a drafter proposes the next few tokens, the model verifies them
//! all in one span ([`crate::model::Model::forward_chunk`]: every expert of the draft's union is
//! read once, each token keeping only the experts its own router picked — exact), and the longest
//! prefix the model agrees with is kept. Greedy output is token for token the plain greedy output;
//! sampled output has the plain distribution ([`crate::sampling::Sampler::verify`]). The draft
//! length adapts to the measured acceptance and cost ([`DraftLength`]).
//!
//! This module knows neither the host nor the backend: [`crate::generate::Stepper`] drives it.

pub mod adaptive;
pub mod clock;
pub mod eagle;
pub mod ngram;

use std::sync::Arc;

pub use adaptive::DraftLength;
pub use eagle::{DraftTarget, Eagle, EagleHead};
pub use ngram::PromptLookup;

use crate::{Error, Result};

/// Proposes draft tokens after a context.
pub trait Drafter {
    /// Up to `k` tokens that may follow `context` (prompt and every generated id); fewer, or
    /// none, when it has no guess. `target` lends the model's embedding and LM head where the
    /// backend holds them on the host.
    fn draft(&mut self, context: &[u32], k: usize, target: Option<&dyn DraftTarget>) -> Vec<u32>;
    /// True when the drafter reads the target's features: the stepper then asks the model for
    /// the final-normed hidden state of every position it runs and hands them to `observe`.
    fn wants_features(&self) -> bool {
        false
    }
    /// The target's features of positions `pos0..` (`[n, hidden]`), once those positions are
    /// kept in the cache; they replace anything seen from `pos0` on.
    fn observe(&mut self, _pos0: usize, _features: &[f32]) {}
    /// A draft tree of depth up to `depth` with up to `width` alternatives beside each chain
    /// token (at most [`MAX_TREE_NODES`] nodes). This default is the chain of [`Drafter::draft`].
    fn draft_tree(&mut self, context: &[u32], depth: usize, _width: usize, target: Option<&dyn DraftTarget>) -> DraftTree {
        DraftTree::chain(&self.draft(context, depth, target))
    }
}

/// Draft nodes of one tree verification (with the step's own token, the root, a span of 32).
pub const MAX_TREE_NODES: usize = 31;

/// Draft tokens after the step's token, the root (node 0): node `i + 1` is `tokens[i]`, a child of
/// node `parents[i]`; parents come before their children. A chain is the tree whose every node is
/// the child of the one before.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DraftTree {
    pub tokens: Vec<u32>,
    pub parents: Vec<usize>,
}

impl DraftTree {
    pub fn chain(tokens: &[u32]) -> DraftTree {
        DraftTree { tokens: tokens.to_vec(), parents: (0..tokens.len()).collect() }
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Adds `token` under `parent` (0: the root) unless that child exists; its node either way,
    /// or `None` once the tree is full.
    pub fn child(&mut self, parent: usize, token: u32) -> Option<usize> {
        if let Some(i) = (0..self.len()).find(|&i| self.parents[i] == parent && self.tokens[i] == token) {
            return Some(i + 1);
        }
        if self.len() >= MAX_TREE_NODES {
            return None;
        }
        self.tokens.push(token);
        self.parents.push(parent);
        Some(self.len())
    }

    /// Keeps the first `n` nodes (their parents come before them, so it stays a tree).
    pub fn truncate(&mut self, n: usize) {
        self.tokens.truncate(n);
        self.parents.truncate(n);
    }

    /// The span's ancestor masks, root included: bit j of mask i is set when node j is node i or
    /// one of its ancestors.
    pub fn masks(&self) -> Vec<u32> {
        let mut m = vec![1u32];
        for (i, &p) in self.parents.iter().enumerate() {
            m.push(m[p] | 1 << (i + 1));
        }
        m
    }

    /// The children of `node`, in node order.
    pub fn children(&self, node: usize) -> impl Iterator<Item = usize> + '_ {
        self.parents.iter().enumerate().filter(move |(_, &p)| p == node).map(|(i, _)| i + 1)
    }

    /// True when every node is the child of the node before it.
    pub fn is_chain(&self) -> bool {
        self.parents.iter().enumerate().all(|(i, &p)| p == i)
    }
}

/// Which drafter, and how many tokens it may propose per step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Speculative {
    /// Plain decoding: one token per forward.
    #[default]
    Off,
    /// Prompt lookup ([`PromptLookup`]).
    Ngram(DraftLen),
    /// The model package's draft head ([`Eagle`]).
    Eagle(DraftLen),
    /// The draft head where the package has one and the backend runs it, else prompt lookup.
    Auto(DraftLen),
}

/// Draft tokens per verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DraftLen {
    /// Chosen per step from the live acceptance rate and the measured verification cost.
    Auto,
    /// Always up to this many (1..=[`MAX_DRAFT`]).
    Fixed(usize),
}

/// The most draft tokens one verification takes (the span is these plus the token before them,
/// within the GPU's 32-token spans).
pub const MAX_DRAFT: usize = 15;

/// What one speculative step did (telemetry).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SpecStep {
    /// Draft tokens verified (0: a plain step).
    pub drafted: usize,
    /// Of those, accepted.
    pub accepted: usize,
    /// Per layer, experts active for at least one token of the verified span (what it read).
    pub union: Vec<u16>,
    /// That union as a bitmask, `words` u32 per layer (the layout of a token's mask): rejected
    /// drafts' experts included.
    pub union_mask: Vec<u32>,
}

/// Totals over a generation.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SpecTotals {
    /// Forwards that verified a draft, and plain ones.
    pub verifies: usize,
    pub plain: usize,
    pub drafted: usize,
    pub accepted: usize,
    /// Mean over verifications of the union size, averaged over layers.
    pub mean_union: f64,
}

impl SpecTotals {
    pub fn add(&mut self, s: &SpecStep) {
        if s.drafted == 0 {
            self.plain += 1;
            return;
        }
        let u = if s.union.is_empty() { 0.0 } else { s.union.iter().map(|&x| x as f64).sum::<f64>() / s.union.len() as f64 };
        self.mean_union = (self.mean_union * self.verifies as f64 + u) / (self.verifies + 1) as f64;
        self.verifies += 1;
        self.drafted += s.drafted;
        self.accepted += s.accepted;
    }

    /// Tokens per forward: what speculation buys before its verification cost.
    pub fn tokens_per_forward(&self) -> f64 {
        let forwards = self.verifies + self.plain;
        if forwards == 0 {
            return 0.0;
        }
        (forwards + self.accepted) as f64 / forwards as f64
    }
}

/// The drafter and draft-length controller of one generation.
pub struct Speculator {
    pub drafter: Box<dyn Drafter>,
    /// Alternatives beside each draft token (0: chains only); trees need greedy decoding.
    pub tree_width: usize,
    pub len: DraftLength,
    pub last: Option<SpecStep>,
    pub totals: SpecTotals,
}

impl Speculator {
    /// `None` for [`Speculative::Off`]. `head` is the model's draft head, if its package has
    /// one; `host_target` says whether the backend lends its embedding and LM head (the CPU).
    pub fn new(s: Speculative, head: Option<&Arc<EagleHead>>, host_target: bool) -> Result<Option<Speculator>> {
        let eagle = |len| Speculator::with(Box::new(Eagle::new(Arc::clone(head.expect("checked")))), len);
        Ok(match s {
            Speculative::Off => None,
            Speculative::Ngram(len) => Some(Speculator::with(Box::new(PromptLookup::default()), len)),
            Speculative::Eagle(len) => {
                if head.is_none() {
                    return Err(Error::Unsupported(
                        "this model package has no draft head (eagle.json and eagle.safetensors in its manifest); \
                         use speculative 'ngram' or 'auto'"
                            .into(),
                    ));
                }
                if !host_target {
                    return Err(Error::Unsupported(
                        "the EAGLE draft head runs on the CPU backend only; on the GPU use speculative 'ngram' or 'auto'".into(),
                    ));
                }
                Some(eagle(len))
            }
            Speculative::Auto(len) if head.is_some() && host_target => Some(eagle(len)),
            Speculative::Auto(len) => Some(Speculator::with(Box::new(PromptLookup::default()), len)),
        })
    }

    fn with(drafter: Box<dyn Drafter>, len: DraftLen) -> Speculator {
        Speculator { drafter, tree_width: 0, len: DraftLength::new(len), last: None, totals: SpecTotals::default() }
    }
}
