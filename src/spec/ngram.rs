//! Prompt lookup: the draft is what followed the latest earlier occurrence of the context's last
//! n tokens (n = 3, backing off to 2 and 1). No weights; it pays on text that repeats its prompt
//! (summaries, rewrites, code edits, copying) and costs nothing when it finds no match.

use super::Drafter;

#[derive(Debug, Clone)]
pub struct PromptLookup {
    /// Longest n-gram tried first.
    pub max_n: usize,
    /// Shortest n-gram still trusted.
    pub min_n: usize,
}

impl Default for PromptLookup {
    fn default() -> Self {
        PromptLookup { max_n: 3, min_n: 1 }
    }
}

impl Drafter for PromptLookup {
    fn draft(&mut self, context: &[u32], k: usize, _target: Option<&dyn super::DraftTarget>) -> Vec<u32> {
        let len = context.len();
        if k == 0 {
            return Vec::new();
        }
        for n in (self.min_n.max(1)..=self.max_n).rev() {
            if len <= n {
                continue;
            }
            let tail = &context[len - n..];
            // The latest match that has at least one token after it (and is not the tail itself).
            if let Some(start) = (0..len - n).rev().find(|&s| &context[s..s + n] == tail) {
                let from = start + n;
                let to = (from + k).min(len);
                return context[from..to].to_vec();
            }
        }
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drafts_what_followed_the_latest_match_with_backoff() {
        let mut d = PromptLookup::default();
        // "5 6 7" occurred followed by 8 9; the latest occurrence wins.
        assert_eq!(d.draft(&[5, 6, 7, 8, 9, 1, 5, 6, 7, 4, 2, 5, 6, 7], 2, None), vec![4, 2]);
        // No trigram match: bigram "6 7" → 8.
        assert_eq!(d.draft(&[1, 6, 7, 8, 3, 6, 7], 3, None), vec![8, 3, 6]);
        // Unigram only.
        assert_eq!(d.draft(&[4, 9, 1, 4], 2, None), vec![9, 1]);
        // Nothing repeats.
        assert!(d.draft(&[1, 2, 3, 4], 4, None).is_empty());
        assert!(d.draft(&[1, 2, 1], 0, None).is_empty());
        // The draft stops at the end of the context.
        assert_eq!(d.draft(&[7, 7], 5, None), vec![7]);
    }
}
