//! Active expert sets as packed bitmasks, the form they travel in from the router to the metrics,
//! the stepper and the JS API: per token and layer, `words` u32 words with bit `e % 32` of word
//! `e / 32` set iff expert `e` is active (the layout of `Generation.experts` in JS).

/// `[tokens][layers][words]` bits of a span of tokens.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExpertMasks {
    tokens: usize,
    layers: usize,
    words: usize,
    bits: Vec<u32>,
}

/// Words per layer for `experts` experts.
pub fn words_for(experts: usize) -> usize {
    experts.div_ceil(32)
}

/// The ids set in one layer's mask, ascending.
pub fn ids(mask: &[u32]) -> impl Iterator<Item = u16> + '_ {
    mask.iter().enumerate().flat_map(|(w, &word)| {
        let mut rest = word;
        std::iter::from_fn(move || {
            (rest != 0).then(|| {
                let b = rest.trailing_zeros();
                rest &= rest - 1;
                (w as u32 * 32 + b) as u16
            })
        })
    })
}

/// Number of bits set.
pub fn count(mask: &[u32]) -> usize {
    mask.iter().map(|w| w.count_ones() as usize).sum()
}

impl ExpertMasks {
    /// `tokens` tokens with nothing active.
    pub fn new(tokens: usize, layers: usize, experts: usize) -> Self {
        let words = words_for(experts);
        ExpertMasks { tokens, layers, words, bits: vec![0; tokens * layers * words] }
    }

    /// From sorted id lists, `sets[token][layer]`.
    pub fn from_sets(sets: &[Vec<Vec<u16>>], layers: usize, experts: usize) -> Self {
        let mut m = ExpertMasks::new(sets.len(), layers, experts);
        for (t, tok) in sets.iter().enumerate() {
            for (l, set) in tok.iter().enumerate().take(layers) {
                for &e in set {
                    m.set(t, l, e as usize);
                }
            }
        }
        m
    }

    pub fn tokens(&self) -> usize {
        self.tokens
    }

    pub fn layers(&self) -> usize {
        self.layers
    }

    pub fn words(&self) -> usize {
        self.words
    }

    pub fn set(&mut self, t: usize, l: usize, e: usize) {
        self.bits[(t * self.layers + l) * self.words + e / 32] |= 1 << (e % 32);
    }

    /// One token's masks, all layers: `layers × words` words.
    pub fn token(&self, t: usize) -> &[u32] {
        let n = self.layers * self.words;
        &self.bits[t * n..(t + 1) * n]
    }

    /// One token's mask in one layer.
    pub fn layer(&self, t: usize, l: usize) -> &[u32] {
        let i = (t * self.layers + l) * self.words;
        &self.bits[i..i + self.words]
    }

    pub fn layer_mut(&mut self, t: usize, l: usize) -> &mut [u32] {
        let i = (t * self.layers + l) * self.words;
        &mut self.bits[i..i + self.words]
    }

    /// All bits, `[tokens][layers][words]`: where a device's readback of the masks goes.
    pub fn bits_mut(&mut self) -> &mut [u32] {
        &mut self.bits
    }

    /// The OR of layer `l` over all tokens: the experts a span reads.
    pub fn union(&self, l: usize) -> Vec<u32> {
        let mut u = vec![0u32; self.words];
        for t in 0..self.tokens() {
            u.iter_mut().zip(self.layer(t, l)).for_each(|(a, b)| *a |= b);
        }
        u
    }

    /// Appends another span's tokens (same layer and word counts).
    pub fn extend(&mut self, other: &ExpertMasks) {
        debug_assert!(self.bits.is_empty() || (self.layers, self.words) == (other.layers, other.words));
        self.layers = other.layers;
        self.words = other.words;
        self.tokens += other.tokens;
        self.bits.extend_from_slice(&other.bits);
    }

    /// Keeps the first `tokens` tokens.
    pub fn truncate(&mut self, tokens: usize) {
        self.tokens = self.tokens.min(tokens);
        self.bits.truncate(tokens * self.layers * self.words);
    }

    /// Sorted id lists, `[token][layer]` (dense-FFN models: empty lists).
    pub fn to_sets(&self) -> Vec<Vec<Vec<u16>>> {
        (0..self.tokens)
            .map(|t| {
                (0..self.layers)
                    .map(|l| if self.words == 0 { Vec::new() } else { ids(self.layer(t, l)).collect() })
                    .collect()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_round_trip_through_bits() {
        let sets = vec![vec![vec![0u16, 31, 32, 69], vec![]], vec![vec![5], vec![1, 2, 3, 68]]];
        let m = ExpertMasks::from_sets(&sets, 2, 70);
        assert_eq!(m.words(), 3);
        assert_eq!(m.tokens(), 2);
        assert_eq!(m.to_sets(), sets);
        assert_eq!(m.layer(0, 0), &[1 | 1 << 31, 1, 1 << 5]);
        assert_eq!(ids(&m.union(1)).collect::<Vec<_>>(), vec![1, 2, 3, 68]);
        assert_eq!(count(m.token(1)), 5);
    }
}
