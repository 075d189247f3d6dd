//! Sparsity metrics of the paper, over recorded active expert sets.
//!
//! * TLS: share of (layer, token, expert) triples that are inactive, pooled over layers and tokens.
//! * CLS_L: within each segment drop the first token (it has no predecessor), truncate to a
//!   multiple of L, cut into non-overlapping windows of L tokens, OR the activity of each window;
//!   CLS_L = 1 − (#active (layer, window, expert)) / (#(layer, window, expert)). `None` when no full window.
//! * Reuse: mean of |S_t ∩ S_{t+1}| / |S_t| over (layer, t) with S_t non-empty and t+1 in the same segment.

use std::collections::BTreeMap;

/// The window sizes reported by `eval`.
pub const CLS_WINDOWS: [usize; 7] = [1, 2, 4, 8, 16, 32, 64];

/// `active[token][layer]` = sorted active expert ids.
pub type ActiveSets = Vec<Vec<Vec<u16>>>;

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Sparsity {
    pub tls: Option<f64>,
    pub cls: BTreeMap<usize, Option<f64>>,
    pub reuse: Option<f64>,
}

pub fn sparsity(segments: &[ActiveSets], num_experts: usize, windows: &[usize]) -> Sparsity {
    let layers = segments.iter().flat_map(|s| s.first()).map(|t| t.len()).next().unwrap_or(0);
    if num_experts == 0 || layers == 0 {
        return Sparsity { tls: None, cls: windows.iter().map(|&l| (l, None)).collect(), reuse: None };
    }
    let tokens: usize = segments.iter().map(Vec::len).sum();
    let active: usize = segments.iter().flatten().flatten().map(Vec::len).sum();
    let tls = (tokens > 0).then(|| 1.0 - active as f64 / (layers * tokens * num_experts) as f64);

    let mut cls = BTreeMap::new();
    let mut mark = vec![false; num_experts];
    for &w in windows {
        let (mut used, mut total) = (0usize, 0usize);
        for seg in segments {
            let rest = if seg.is_empty() { &seg[..] } else { &seg[1..] };
            for win in rest.chunks_exact(w) {
                for l in 0..layers {
                    mark.iter_mut().for_each(|m| *m = false);
                    for tok in win {
                        for &e in &tok[l] {
                            mark[e as usize] = true;
                        }
                    }
                    used += mark.iter().filter(|&&m| m).count();
                    total += num_experts;
                }
            }
        }
        cls.insert(w, (total > 0).then(|| 1.0 - used as f64 / total as f64));
    }

    let (mut sum, mut n) = (0.0f64, 0usize);
    for seg in segments {
        for pair in seg.windows(2) {
            for (a, b) in pair[0].iter().zip(&pair[1]) {
                if a.is_empty() {
                    continue;
                }
                let common = a.iter().filter(|e| b.binary_search(e).is_ok()).count();
                sum += common as f64 / a.len() as f64;
                n += 1;
            }
        }
    }
    Sparsity { tls, cls, reuse: (n > 0).then(|| sum / n as f64) }
}

/// The report of [`RunningSparsity`] (the JS API's `stats()`): `cls` keyed by window size.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SparsityReport {
    pub tokens: usize,
    pub tls: Option<f64>,
    pub cls: BTreeMap<String, Option<f64>>,
    pub reuse: Option<f64>,
}

/// TLS, CLS_L ([`CLS_WINDOWS`]) and reuse over a growing segment, one token's bitmasks
/// (`layers × words` words, [`crate::experts`]) at a time, in O(layers · words) per token; equal
/// to [`sparsity`] over the same segment.
#[derive(Debug, Clone)]
pub struct RunningSparsity {
    layers: usize,
    experts: usize,
    words: usize,
    tokens: usize,
    active: usize,
    /// Per window size: (size, OR of the open window, tokens in it, used, total).
    windows: Vec<(usize, Vec<u32>, usize, usize, usize)>,
    prev: Vec<u32>,
    reuse_sum: f64,
    reuse_n: usize,
}

impl RunningSparsity {
    pub fn new(layers: usize, experts: usize) -> Self {
        let words = experts.div_ceil(32);
        RunningSparsity {
            layers,
            experts,
            words,
            tokens: 0,
            active: 0,
            windows: CLS_WINDOWS.iter().map(|&w| (w, vec![0; layers * words], 0, 0, 0)).collect(),
            prev: Vec::new(),
            reuse_sum: 0.0,
            reuse_n: 0,
        }
    }

    /// Adds the next token; a mask of the wrong length (unknown experts, dense FFN) is ignored.
    pub fn push(&mut self, mask: &[u32]) {
        if self.experts == 0 || mask.len() != self.layers * self.words {
            return;
        }
        self.tokens += 1;
        self.active += crate::experts::count(mask);
        // CLS drops the segment's first token (it has no predecessor).
        if self.tokens > 1 {
            let (layers, experts) = (self.layers, self.experts);
            for (w, open, n, used, total) in &mut self.windows {
                open.iter_mut().zip(mask).for_each(|(a, b)| *a |= b);
                *n += 1;
                if *n == *w {
                    *used += crate::experts::count(open);
                    *total += layers * experts;
                    open.iter_mut().for_each(|a| *a = 0);
                    *n = 0;
                }
            }
        }
        if !self.prev.is_empty() {
            for (a, b) in self.prev.chunks_exact(self.words).zip(mask.chunks_exact(self.words)) {
                let na = crate::experts::count(a);
                if na > 0 {
                    let common: usize = a.iter().zip(b).map(|(x, y)| (x & y).count_ones() as usize).sum();
                    self.reuse_sum += common as f64 / na as f64;
                    self.reuse_n += 1;
                }
            }
        }
        self.prev.clear();
        self.prev.extend_from_slice(mask);
    }

    pub fn report(&self) -> SparsityReport {
        let tls =
            (self.tokens > 0).then(|| 1.0 - self.active as f64 / (self.layers * self.tokens * self.experts) as f64);
        let cls = self
            .windows
            .iter()
            .map(|(w, _, _, used, total)| (w.to_string(), (*total > 0).then(|| 1.0 - *used as f64 / *total as f64)))
            .collect();
        SparsityReport { tokens: self.tokens, tls, cls, reuse: (self.reuse_n > 0).then(|| self.reuse_sum / self.reuse_n as f64) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_case() {
        // One layer, 4 experts, 5 tokens.
        let seg: ActiveSets = vec![vec![vec![0]], vec![vec![0, 1]], vec![vec![1]], vec![vec![]], vec![vec![2]]];
        let s = sparsity(&[seg], 4, &[1, 2, 4, 8]);
        // active triples: 1+2+1+0+1 = 5 of 20
        assert!((s.tls.unwrap() - 0.75).abs() < 1e-12);
        // drop token 0; L=1 over 4 tokens: 2+1+0+1 = 4 of 16
        assert!((s.cls[&1].unwrap() - 0.75).abs() < 1e-12);
        // L=2: windows {t1,t2} -> {0,1}, {t3,t4} -> {2}: 3 of 8
        assert!((s.cls[&2].unwrap() - 0.625).abs() < 1e-12);
        // L=4: one window {0,1,2}: 3 of 4
        assert!((s.cls[&4].unwrap() - 0.25).abs() < 1e-12);
        assert_eq!(s.cls[&8], None);
        // reuse: t0 {0}->{0,1}: 1; t1 {0,1}->{1}: 1/2; t2 {1}->{}: 0; t3 empty skipped -> (1+0.5+0)/3
        assert!((s.reuse.unwrap() - 0.5).abs() < 1e-12);
    }

    #[test]
    fn running_equals_batch_on_random_segments() {
        use crate::experts::ExpertMasks;
        let mut seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20 {
            let (layers, experts, tokens) = (1 + rnd() as usize % 4, 1 + rnd() as usize % 70, rnd() as usize % 80);
            let seg: ActiveSets = (0..tokens)
                .map(|_| {
                    (0..layers)
                        .map(|_| (0..experts as u16).filter(|_| rnd() % 5 == 0).collect())
                        .collect()
                })
                .collect();
            let batch = sparsity(std::slice::from_ref(&seg), experts, &CLS_WINDOWS);
            let masks = ExpertMasks::from_sets(&seg, layers, experts);
            let mut run = RunningSparsity::new(layers, experts);
            (0..tokens).for_each(|t| run.push(masks.token(t)));
            let r = run.report();
            let close = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(x), Some(y)) => (x - y).abs() < 1e-12,
                (x, y) => x == y,
            };
            assert!(close(r.tls, batch.tls), "tls {:?} vs {:?}", r.tls, batch.tls);
            assert!(close(r.reuse, batch.reuse), "reuse {:?} vs {:?}", r.reuse, batch.reuse);
            for (w, v) in &batch.cls {
                assert!(close(r.cls[&w.to_string()], *v), "CLS_{w}");
            }
        }
    }
}
