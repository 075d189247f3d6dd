//! Prompt lookup: the draft is what followed the latest earlier occurrence of the context's last
//! n tokens (n = 3, backing off to 2 and 1). No weights; it pays on text that repeats its prompt
//! (summaries, rewrites, code edits, copying) and costs nothing when it finds no match. As a tree,
//! the continuations of the latest few occurrences are merged (shared prefixes once).

use super::{DraftTree, Drafter};

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

    /// The latest occurrence's continuation as the chain, then up to `width` other occurrences'
    /// (latest first), merged where they share a prefix; the longest n-gram that matches at all.
    fn draft_tree(&mut self, context: &[u32], depth: usize, width: usize, _target: Option<&dyn super::DraftTarget>) -> DraftTree {
        let mut tree = DraftTree::default();
        let len = context.len();
        if depth == 0 {
            return tree;
        }
        for n in (self.min_n.max(1)..=self.max_n).rev() {
            if len <= n {
                continue;
            }
            let tail = &context[len - n..];
            let starts = (0..len - n).rev().filter(|&s| &context[s..s + n] == tail);
            let mut branches = 0;
            for start in starts {
                let from = start + n;
                let cont = &context[from..(from + depth).min(len)];
                let before = tree.len();
                let mut parent = 0;
                for &t in cont {
                    match tree.child(parent, t) {
                        Some(node) => parent = node,
                        None => return tree,
                    }
                }
                if tree.len() > before {
                    branches += 1;
                    if branches > width {
                        break;
                    }
                }
            }
            if !tree.is_empty() {
                return tree;
            }
        }
        tree
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

    #[test]
    fn a_tree_merges_the_latest_occurrences() {
        let mut d = PromptLookup::default();
        // "1 2" was followed by 3 4, by 3 5 and by 6 (latest first: 6, then 3 5, then 3 4).
        let ctx = [1, 2, 3, 4, 7, 1, 2, 3, 5, 8, 1, 2, 6, 9, 0, 1, 2];
        let t = d.draft_tree(&ctx, 2, 0, None);
        assert_eq!(t, DraftTree::chain(&[6, 9]));
        assert_eq!(t, DraftTree::chain(&d.draft(&ctx, 2, None)), "width 0 is the chain");
        let t = d.draft_tree(&ctx, 2, 2, None);
        assert_eq!(t.tokens, vec![6, 9, 3, 5, 4]);
        assert_eq!(t.parents, vec![0, 1, 0, 3, 3]);
        assert_eq!(t.masks(), vec![0b1, 0b11, 0b111, 0b1001, 0b11001, 0b101001]);
    }
}
