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
}
