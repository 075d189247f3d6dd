//! The memory budget of one parse.
//!
//! Without one, the parser's memory is not bounded by the input: `data.pkl` may be deflated
//! ~1000:1 inside the zip, a 1-byte opcode such as `EMPTY_LIST` costs an arena slot and a stack
//! slot (~40 bytes), and `OrderedDict(seq)` copies its argument on every call. So every growth of
//! the parser's state (arena objects, container items, string bytes, index, memo and stack
//! entries) is charged here, in estimated bytes, against a limit that grows with the pickle's
//! length up to an absolute cap. A real state dict needs a few bytes per pickle byte.

use super::{ObjId, Object};

/// Budget per byte of pickle: ~6 times what real state-dict pickles need (measured on the
/// fixtures' `data.pkl` files: ~10 bytes per byte, mostly arena slots for names and tuples).
/// Linear floods (1-byte opcodes cost ~40 bytes each) are stopped by [`CAP`]; what this catches
/// early are the superlinear paths (copies made by `OrderedDict(seq)`), whatever the size.
pub const PER_INPUT_BYTE: usize = 64;
/// Budget every pickle gets on top of [`PER_INPUT_BYTE`], so tiny pickles are never refused.
pub const BASE: usize = 1 << 20;
/// Absolute cap (a state dict of 100k tensors has a ~10 MB pickle and needs ~100 MiB).
pub const CAP: usize = 256 << 20;

/// Estimated heap cost of each kind of growth, in bytes.
pub mod cost {
    use super::*;
    pub const OBJECT: usize = std::mem::size_of::<Object>();
    pub const ITEM: usize = std::mem::size_of::<ObjId>();
    pub const PAIR: usize = 2 * ITEM;
    /// A hash-map entry (key, value and control byte, rounded up for the load factor).
    pub const MAP_ENTRY: usize = 32;
    pub const STACK_SLOT: usize = std::mem::size_of::<usize>();
}

/// The budget for a pickle of `len` bytes.
pub fn for_len(len: usize) -> usize {
    len.saturating_mul(PER_INPUT_BYTE).saturating_add(BASE).min(CAP)
}

#[derive(Debug)]
pub(super) struct Budget {
    limit: usize,
    used: usize,
}

/// The charge that would have gone over the limit.
#[derive(Debug)]
pub(super) struct Exceeded {
    pub limit: usize,
}

impl Budget {
    pub fn new(limit: usize) -> Self {
        Budget { limit, used: 0 }
    }

    pub fn charge(&mut self, bytes: usize) -> Result<(), Exceeded> {
        match self.used.checked_add(bytes) {
            Some(u) if u <= self.limit => {
                self.used = u;
                Ok(())
            }
            _ => Err(Exceeded { limit: self.limit }),
        }
    }

    /// `n` items of `each` bytes (saturating, so a huge count is simply refused).
    pub fn charge_n(&mut self, n: usize, each: usize) -> Result<(), Exceeded> {
        self.charge(n.saturating_mul(each))
    }

    #[cfg(test)]
    pub fn used(&self) -> usize {
        self.used
    }
}
