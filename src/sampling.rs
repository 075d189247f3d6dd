//! Choosing the next token: greedy, temperature, top-k, top-p, repetition penalty, seeded.

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq, Default)]
pub struct SamplingParams {
    /// `None` or 0 → greedy (argmax).
    pub temperature: Option<f32>,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
    /// > 1 discourages tokens already in the context (CTRL-style: positive logits divided, negative multiplied).
    pub repetition_penalty: Option<f32>,
    pub seed: u64,
}

impl SamplingParams {
    pub fn validate(&self) -> Result<()> {
        if let Some(t) = self.temperature {
            if !t.is_finite() || t < 0.0 {
                return Err(Error::InvalidInput(format!("temperature must be a finite number >= 0, got {t}")));
            }
        }
        if self.top_k == Some(0) {
            return Err(Error::InvalidInput("top-k must be at least 1".into()));
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(Error::InvalidInput(format!("top-p must be in (0, 1], got {p}")));
            }
        }
        if let Some(r) = self.repetition_penalty {
            if !r.is_finite() || r <= 0.0 {
                return Err(Error::InvalidInput(format!("repetition penalty must be > 0, got {r}")));
            }
        }
        Ok(())
    }

    /// The repetition penalty as a factor (1: none).
    pub fn penalty(&self) -> f32 {
        self.repetition_penalty.unwrap_or(1.0)
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature.is_none_or(|t| t == 0.0)
    }
}

pub struct Sampler {
    params: SamplingParams,
    rng: ChaCha8Rng,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Result<Self> {
        params.validate()?;
        let rng = ChaCha8Rng::seed_from_u64(params.seed);
        Ok(Sampler { params, rng })
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Picks the next id from `logits` (modified in place); `context` is every id seen so far.
    pub fn sample(&mut self, logits: &mut [f32], context: &[u32]) -> u32 {
        match self.distribution(logits, context) {
            Next::Greedy(id) => id,
            Next::Sample(c) => c.draw(self.rng.next_u32(), None),
        }
    }

    /// The speculative-sampling rule for a draft token `draft` proposed with certainty (a
    /// deterministic drafter, q = 1 on `draft`): accept it with probability p(draft), else draw
    /// from the residual max(0, p − q) normalised — p without `draft`. The token that follows is
    /// then distributed exactly as [`Sampler::sample`]'s (Leviathan et al. 2023; SPEC §9). Greedy:
    /// accepted iff it is the argmax, else the argmax. Returns `Ok(())` for an accepted draft, or
    /// `Err(id)`, the token to take instead.
    pub fn verify(&mut self, logits: &mut [f32], context: &[u32], draft: u32) -> std::result::Result<(), u32> {
        match self.distribution(logits, context) {
            Next::Greedy(id) if id == draft => Ok(()),
            Next::Greedy(id) => Err(id),
            Next::Sample(c) => {
                let p = c.prob(draft);
                if p > 0.0 && unit(self.rng.next_u32()) * c.total < p {
                    return Ok(());
                }
                Err(c.draw(self.rng.next_u32(), Some(draft)))
            }
        }
    }

    /// What the next token is drawn from: the penalty, then greedy, or temperature, top-k, top-p.
    fn distribution(&self, logits: &mut [f32], context: &[u32]) -> Next {
        if let Some(r) = self.params.repetition_penalty {
            apply_repetition_penalty(logits, context, r);
        }
        if self.params.is_greedy() {
            return Next::Greedy(argmax(logits) as u32);
        }
        let t = self.params.temperature.unwrap_or(1.0);
        // Candidates sorted by logit, descending (ties by id for determinism).
        let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
        idx.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]).then(a.cmp(&b)));
        if let Some(k) = self.params.top_k {
            idx.truncate(k.min(idx.len()));
        }
        let m = logits[idx[0] as usize];
        let mut probs: Vec<f32> = idx.iter().map(|&i| ((logits[i as usize] - m) / t).exp()).collect();
        let sum: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= sum);
        if let Some(p) = self.params.top_p {
            let mut cum = 0.0;
            let mut keep = probs.len();
            for (i, q) in probs.iter().enumerate() {
                cum += q;
                if cum >= p {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep);
            idx.truncate(keep);
        }
        let total = probs.iter().sum();
        Next::Sample(Candidates { idx, probs, total })
    }
}

enum Next {
    Greedy(u32),
    Sample(Candidates),
}

/// The ids a sample may pick, with their weights (summing to `total`).
struct Candidates {
    idx: Vec<u32>,
    probs: Vec<f32>,
    total: f32,
}

/// Uniform in [0, 1) from 24 random bits.
fn unit(bits: u32) -> f32 {
    (bits >> 8) as f32 / (1u32 << 24) as f32
}

impl Candidates {
    fn prob(&self, id: u32) -> f32 {
        self.idx.iter().position(|&i| i == id).map_or(0.0, |k| self.probs[k])
    }

    /// One id by weight from `bits`, leaving out `except` (the residual of a rejected draft).
    fn draw(&self, bits: u32, except: Option<u32>) -> u32 {
        let skip = |i: u32| Some(i) == except;
        let total = self.total - except.map_or(0.0, |e| self.prob(e));
        let u = unit(bits) * total;
        let mut acc = 0.0;
        let mut last = None;
        for (q, &i) in self.probs.iter().zip(&self.idx) {
            if skip(i) {
                continue;
            }
            acc += q;
            last = Some(i);
            if u < acc {
                return i;
            }
        }
        // Rounding left u at the end: the last candidate; a rejected draft that was the only
        // candidate (p = 1 can still be rejected by no draw, so this is unreachable) keeps it.
        last.or(except).unwrap_or(self.idx[0])
    }
}

/// The CTRL-style repetition penalty `r` on every id of `context` once: positive logits divided by
/// `r`, negative ones multiplied. `r = 1` changes nothing.
pub fn apply_repetition_penalty(logits: &mut [f32], context: &[u32], r: f32) {
    if r == 1.0 {
        return;
    }
    let mut seen = vec![false; logits.len()];
    for &id in context {
        let i = id as usize;
        if i < logits.len() && !seen[i] {
            seen[i] = true;
            let l = &mut logits[i];
            *l = if *l > 0.0 { *l / r } else { *l * r };
        }
    }
}

/// Index of the largest value (first one on ties).
pub fn argmax(x: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_and_penalty() {
        let mut s = Sampler::new(SamplingParams::default()).unwrap();
        assert_eq!(s.sample(&mut [0.1, 2.0, 1.9], &[]), 1);
        let p = SamplingParams { repetition_penalty: Some(2.0), ..Default::default() };
        let mut s = Sampler::new(p).unwrap();
        // 2.0 / 2 = 1.0 < 1.9
        assert_eq!(s.sample(&mut [0.1, 2.0, 1.9], &[1]), 2);
    }

    #[test]
    fn seeded_sampling_is_reproducible_and_respects_top_k() {
        let p = SamplingParams { temperature: Some(1.0), top_k: Some(2), seed: 7, ..Default::default() };
        let draw = |p: &SamplingParams| {
            let mut s = Sampler::new(p.clone()).unwrap();
            (0..200).map(|_| s.sample(&mut [1.0, 0.9, 0.8, 5.0, -1.0], &[])).collect::<Vec<_>>()
        };
        let a = draw(&p);
        assert_eq!(a, draw(&p));
        assert!(a.iter().all(|&i| i == 3 || i == 0));
        assert!(a.contains(&0) && a.contains(&3));
        let q = SamplingParams { top_p: Some(0.5), top_k: None, ..p };
        assert!(draw(&q).iter().all(|&i| i == 3));
    }

    #[test]
    fn bad_params_are_rejected() {
        for p in [
            SamplingParams { temperature: Some(-1.0), ..Default::default() },
            SamplingParams { top_p: Some(0.0), ..Default::default() },
            SamplingParams { top_k: Some(0), ..Default::default() },
            SamplingParams { repetition_penalty: Some(f32::NAN), ..Default::default() },
        ] {
            assert!(matches!(Sampler::new(p), Err(Error::InvalidInput(_))));
        }
    }
}
