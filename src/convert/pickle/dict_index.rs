//! Index of the scalar keys of every dict being built, so that `SETITEM` with an existing key
//! replaces the value in place (as Python does) without a linear search.
//!
//! Keys are never copied: the index maps (dict, hash of the key's content) to the key's position
//! in the dict, and equal hashes are confirmed by comparing the key objects in the arena. Each key
//! object is hashed once (a 16 MiB string used as the key of 10,000 dicts is hashed once, not
//! 10,000 times), with a per-parse random hasher so crafted collisions cannot make it quadratic.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};

use super::{ObjId, Object};

/// Where a key goes in its dict.
pub(super) enum Slot {
    /// An equal key is already at this position: replace its value.
    Existing(usize),
    /// A new key: append it (and it is now indexed at the dict's current length).
    New,
}

#[derive(Default)]
pub(super) struct DictIndex {
    state: RandomState,
    /// Content hash of each key object seen so far.
    hashes: HashMap<ObjId, u64>,
    /// (dict, key hash) -> position of the first key with that hash.
    first: HashMap<(ObjId, u64), usize>,
    /// Further positions for (dict, hash) pairs whose keys differ but collide.
    collisions: HashMap<(ObjId, u64), Vec<usize>>,
}

/// Python's dict-key equality for the scalar kinds indexed here (`True == 1`).
fn same_key(a: &Object, b: &Object) -> bool {
    match (a, b) {
        (Object::None, Object::None) => true,
        (Object::Str(x), Object::Str(y)) => x == y,
        (Object::Bytes(x), Object::Bytes(y)) => x == y,
        _ => matches!((as_int(a), as_int(b)), (Some(x), Some(y)) if x == y),
    }
}

fn as_int(o: &Object) -> Option<i64> {
    match o {
        Object::Int(i) => Some(*i),
        Object::Bool(b) => Some(*b as i64),
        _ => None,
    }
}

impl DictIndex {
    fn content_hash(&self, key: &Object) -> Option<u64> {
        let mut h = self.state.build_hasher();
        match key {
            Object::None => 0u8.hash(&mut h),
            Object::Str(s) => (1u8, s).hash(&mut h),
            Object::Bytes(b) => (2u8, b).hash(&mut h),
            o => (3u8, as_int(o)?).hash(&mut h),
        }
        Some(h.finish())
    }

    fn hash_of(&mut self, objects: &[Object], key: ObjId) -> Option<u64> {
        if let Some(&h) = self.hashes.get(&key) {
            return Some(h);
        }
        let h = self.content_hash(&objects[key])?;
        self.hashes.insert(key, h);
        Some(h)
    }

    /// Where `key` goes in `dict`, whose items are `items`; a new key is recorded at position
    /// `items.len()`. `None` for keys that are not indexed (not a scalar): append them.
    pub fn slot(&mut self, objects: &[Object], dict: ObjId, items: &[(ObjId, ObjId)], key: ObjId) -> Option<Slot> {
        let h = self.hash_of(objects, key)?;
        let is_same = |pos: usize| {
            let k = items[pos].0;
            k == key || same_key(&objects[k], &objects[key])
        };
        let at = items.len();
        match self.first.get(&(dict, h)) {
            None => {
                self.first.insert((dict, h), at);
                return Some(Slot::New);
            }
            Some(&pos) if is_same(pos) => return Some(Slot::Existing(pos)),
            Some(_) => {}
        }
        let more = self.collisions.entry((dict, h)).or_default();
        if let Some(&pos) = more.iter().find(|&&p| is_same(p)) {
            return Some(Slot::Existing(pos));
        }
        more.push(at);
        Some(Slot::New)
    }
}
