//! The draft length per step: the k that maximises expected tokens per millisecond,
//! E(k) / cost(k), where E(k) = 1 + a + … + a^k is the expected number of tokens a verification of
//! k drafts yields when each draft token is accepted with probability a, and cost(k) is the
//! measured time of a forward over 1 + k tokens. Both are measured live (a: a decaying count of
//! accepted / rejected draft tokens; cost: a moving average per k, interpolated between measured
//! k), so the choice follows the prompt, the drafter and the backend: on a CPU cost(k) grows with k
//! and with the union of experts, on a GPU it is nearly flat. k = 0 is plain decoding: speculation
//! switches itself off when it does not pay, and is probed again now and then.

use super::{DraftLen, MAX_DRAFT};

/// Weight of the newest cost measurement.
const COST_EWMA: f64 = 0.25;
/// Per-observation decay of the acceptance counts (a memory of about 20 draft tokens).
const ACCEPT_DECAY: f64 = 0.95;
/// Plain steps before a short draft is tried again; doubled after each probe that did not pay
/// (fewer tokens per millisecond than a plain step; up to `PROBE_MAX`), so a prompt that never
/// repeats, or a drafter too slow for its acceptance, pays for fewer and fewer probes.
const PROBE_EVERY: usize = 16;
const PROBE_MAX: usize = 256;
/// Draft length of a probe, and of the first steps before anything is measured.
const PROBE_K: usize = 3;

#[derive(Debug, Clone)]
pub struct DraftLength {
    mode: DraftLen,
    /// Decayed counts of accepted and of all judged draft tokens.
    hits: f64,
    judged: f64,
    /// Moving average of the forward's milliseconds per k (index k), once measured.
    cost: [Option<f64>; MAX_DRAFT + 1],
    plain_run: usize,
    probe_every: usize,
    /// The last choice was a probe (speculation was otherwise off).
    probing: bool,
}

impl DraftLength {
    pub fn new(mode: DraftLen) -> DraftLength {
        let mode = match mode {
            DraftLen::Fixed(n) => DraftLen::Fixed(n.clamp(1, MAX_DRAFT)),
            a => a,
        };
        DraftLength {
            mode,
            hits: 0.0,
            judged: 0.0,
            cost: [None; MAX_DRAFT + 1],
            plain_run: 0,
            probe_every: PROBE_EVERY,
            probing: false,
        }
    }

    /// Probability that one draft token is accepted (a Laplace estimate over the recent counts).
    pub fn acceptance(&self) -> f64 {
        (self.hits + 1.0) / (self.judged + 2.0)
    }

    /// Expected tokens of a verification of `k` drafts: 1 + a + … + a^k.
    pub fn expected_tokens(&self, k: usize) -> f64 {
        let a = self.acceptance();
        (0..=k).map(|i| a.powi(i as i32)).sum()
    }

    /// The estimated cost of a forward over 1 + k tokens: measured, else interpolated between
    /// the nearest measured k on each side (extrapolated along the last two), else `None`.
    pub fn cost(&self, k: usize) -> Option<f64> {
        if let Some(c) = self.cost[k] {
            return Some(c);
        }
        let known: Vec<(usize, f64)> = self.cost.iter().enumerate().filter_map(|(i, c)| c.map(|c| (i, c))).collect();
        let below = known.iter().rev().find(|(i, _)| *i < k).copied();
        let above = known.iter().find(|(i, _)| *i > k).copied();
        let line = |(i0, c0): (usize, f64), (i1, c1): (usize, f64)| c0 + (c1 - c0) * (k as f64 - i0 as f64) / (i1 as f64 - i0 as f64);
        match (below, above) {
            (Some(b), Some(a)) => Some(line(b, a)),
            _ if known.len() >= 2 => {
                let n = known.len();
                let (p, q) = if below.is_some() { (known[n - 2], known[n - 1]) } else { (known[0], known[1]) };
                // Never cheaper than the cheapest measured forward.
                Some(line(p, q).max(known.iter().map(|x| x.1).fold(f64::INFINITY, f64::min)))
            }
            _ => None,
        }
    }

    /// Draft tokens to ask for in the next step.
    pub fn choose(&mut self) -> usize {
        let DraftLen::Fixed(n) = self.mode else {
            let (k, probe) = self.choose_auto();
            self.probing = probe;
            return k;
        };
        n
    }

    /// The best k, and whether it is a probe (k > 0 only to measure the acceptance again).
    fn choose_auto(&self) -> (usize, bool) {
        // Until two lengths are measured, alternate plain steps and short drafts to measure both.
        let measured = self.cost.iter().filter(|c| c.is_some()).count();
        if measured < 2 {
            return (if self.cost[0].is_none() { 0 } else { PROBE_K }, false);
        }
        let mut best = (0, 0.0);
        for k in 0..=MAX_DRAFT {
            if let Some(c) = self.cost(k) {
                let rate = self.expected_tokens(k) / c.max(1e-6);
                if rate > best.1 * (1.0 + 1e-9) {
                    best = (k, rate);
                }
            }
        }
        if best.0 == 0 && self.plain_run >= self.probe_every {
            return (PROBE_K.min(MAX_DRAFT), true);
        }
        (best.0, false)
    }

    /// Records a step: `drafted` tokens verified (0: plain), `accepted` of them, in `ms`.
    pub fn observe(&mut self, drafted: usize, accepted: usize, ms: f64) {
        let k = drafted.min(MAX_DRAFT);
        let plain = self.cost[0];
        if ms.is_finite() && ms >= 0.0 {
            self.cost[k] = Some(match self.cost[k] {
                Some(c) => c + COST_EWMA * (ms - c),
                None => ms,
            });
        }
        if drafted == 0 {
            self.plain_run += 1;
            return;
        }
        self.plain_run = 0;
        if std::mem::take(&mut self.probing) {
            let paid = accepted > 0 && plain.is_some_and(|c0| (1 + accepted) as f64 / ms.max(1e-9) > 1.0 / c0.max(1e-9));
            self.probe_every = if paid { PROBE_EVERY } else { (self.probe_every * 2).min(PROBE_MAX) };
        }
        // Drafts are judged in order until the first rejection.
        let judged = (accepted + usize::from(accepted < drafted)) as f64;
        self.hits = self.hits * ACCEPT_DECAY.powf(judged) + accepted as f64;
        self.judged = self.judged * ACCEPT_DECAY.powf(judged) + judged;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(cost: impl Fn(usize) -> f64, accept: f64, steps: usize) -> DraftLength {
        let mut d = DraftLength::new(DraftLen::Auto);
        let mut seed = 7u64;
        for _ in 0..steps {
            let k = d.choose();
            let mut m = 0;
            while m < k {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                if ((seed >> 33) as f64 / (1u64 << 31) as f64) < accept {
                    m += 1;
                } else {
                    break;
                }
            }
            d.observe(k, m, cost(k));
        }
        d
    }

    #[test]
    fn flat_cost_and_high_acceptance_draft_long() {
        let mut d = run(|_| 10.0, 0.9, 200);
        let k = d.choose();
        assert!(k >= 8, "chose {k}");
    }

    #[test]
    fn steep_cost_or_low_acceptance_switch_speculation_off() {
        // Each draft token costs as much as a plain step: never worth it.
        let d = run(|k| 10.0 * (1 + k) as f64, 0.6, 200);
        assert_eq!(d.choose_auto().0, 0);
        // Cheap drafts that are always wrong: off, and probed ever more rarely.
        let d = run(|k| 10.0 + k as f64, 0.0, 400);
        assert_eq!(d.choose_auto().0, 0);
        assert!(d.probe_every > PROBE_EVERY, "probe interval {}", d.probe_every);
        // Often accepted, but each draft token costs two plain steps: the probes do not pay either.
        let d = run(|k| 10.0 * (1 + 2 * k) as f64, 0.6, 600);
        assert_eq!(d.choose_auto().0, 0);
        assert!(d.probe_every > PROBE_EVERY, "probe interval {}", d.probe_every);
    }

    #[test]
    fn moderate_cost_picks_an_interior_length() {
        // cost 10 + 2k, a = 0.7: E(k)/cost(k) peaks at k = 3.
        let mut d = run(|k| 10.0 + 2.0 * k as f64, 0.7, 400);
        let k = d.choose();
        assert!((2..=5).contains(&k), "chose {k}, acceptance {}", d.acceptance());
    }

    #[test]
    fn fixed_lengths_are_clamped() {
        assert_eq!(DraftLength::new(DraftLen::Fixed(100)).choose(), MAX_DRAFT);
        assert_eq!(DraftLength::new(DraftLen::Fixed(0)).choose(), 1);
    }
}
