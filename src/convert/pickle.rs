//! A pickle reader that treats the stream as data and never executes it.
//!
//! `torch.save` writes a Python pickle (`data.pkl`) describing the checkpoint's object graph. A
//! real unpickler *executes* that description: every `GLOBAL` imports an arbitrary callable and
//! every `REDUCE` calls it, which is how a malicious checkpoint runs code. This module instead
//! parses the opcode stream into a passive object graph ([`Pickle`]):
//!
//! * `GLOBAL` / `STACK_GLOBAL` / `INST` only *name* a callable, and that name must be in a closed
//!   whitelist ([`Global`]) of what torch checkpoints need. Anything else (`os.system`,
//!   `builtins.eval`, `subprocess.Popen`, ...) is refused with [`Error::UnsafePickle`].
//! * `REDUCE` / `NEWOBJ` / `OBJ` record an unevaluated call ([`Object::Call`]) of a whitelisted
//!   global; the caller (e.g. `torch_bin`) interprets the few shapes it understands. The one
//!   exception is `collections.OrderedDict(...)`, which becomes a plain [`Object::Dict`] so that
//!   `SETITEMS` can fill it.
//! * `BINPERSID` records the persistent id ([`Object::PersistentId`]) without resolving it.
//!
//! Malformed input (unknown opcode, stack underflow, bad memo index, a length prefix that runs
//! past the end, a stream without `STOP`) gives [`Error::InvalidCheckpoint`] naming the opcode and
//! byte offset. Parsing is iterative (no recursion) and nothing panics on any input.
//!
//! Memory is bounded by a budget ([`budget`]): every arena object, container item, string byte,
//! dict-index, memo and stack entry is charged against `64 × pickle length + 1 MiB`, capped at
//! 256 MiB, and a pickle that needs more is refused as implausibly large. Dict keys are indexed
//! without copying them, and `OrderedDict(seq)` charges each copy of `seq` it makes.
//!
//! Objects live in an arena and refer to each other by [`ObjId`], so shared references (the pickle
//! memo) and even cyclic graphs are represented without reference counting or copying.

pub mod budget;
mod dict_index;
mod op;
mod parser;
#[cfg(test)]
mod tests;
mod text;

use crate::{Error, Result};
pub use safetensors::Dtype;

/// Index of an object in a [`Pickle`]'s arena.
pub type ObjId = usize;

/// The closed set of globals a checkpoint pickle may reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Global {
    /// `collections.OrderedDict`
    OrderedDict,
    /// `torch._utils._rebuild_tensor_v2`
    RebuildTensorV2,
    /// `torch._utils._rebuild_parameter`
    RebuildParameter,
    /// `torch._utils._rebuild_parameter_with_state`
    RebuildParameterWithState,
    /// A typed storage class such as `torch.BFloat16Storage`, with its element dtype.
    Storage(Dtype),
    /// A dtype object such as `torch.bfloat16`.
    Dtype(Dtype),
}

const STORAGE_TYPES: &[(&str, Dtype)] = &[
    ("BFloat16Storage", Dtype::BF16),
    ("HalfStorage", Dtype::F16),
    ("FloatStorage", Dtype::F32),
    ("DoubleStorage", Dtype::F64),
    ("LongStorage", Dtype::I64),
    ("IntStorage", Dtype::I32),
    ("ShortStorage", Dtype::I16),
    ("CharStorage", Dtype::I8),
    ("ByteStorage", Dtype::U8),
    ("BoolStorage", Dtype::BOOL),
];

const DTYPES: &[(&str, Dtype)] = &[
    ("bfloat16", Dtype::BF16),
    ("float16", Dtype::F16),
    ("float32", Dtype::F32),
    ("float64", Dtype::F64),
    ("int64", Dtype::I64),
    ("int32", Dtype::I32),
    ("int16", Dtype::I16),
    ("int8", Dtype::I8),
    ("uint8", Dtype::U8),
    ("bool", Dtype::BOOL),
];

impl Global {
    /// Resolve `module.name` against the whitelist; anything else is [`Error::UnsafePickle`].
    pub fn resolve(module: &str, name: &str) -> Result<Global> {
        let found = match (module, name) {
            ("collections", "OrderedDict") => Some(Global::OrderedDict),
            ("torch._utils", "_rebuild_tensor_v2") => Some(Global::RebuildTensorV2),
            ("torch._utils", "_rebuild_parameter") => Some(Global::RebuildParameter),
            ("torch._utils", "_rebuild_parameter_with_state") => Some(Global::RebuildParameterWithState),
            ("torch", n) => STORAGE_TYPES
                .iter()
                .find(|(s, _)| *s == n)
                .map(|&(_, d)| Global::Storage(d))
                .or_else(|| DTYPES.iter().find(|(s, _)| *s == n).map(|&(_, d)| Global::Dtype(d))),
            _ => None,
        };
        found.ok_or_else(|| {
            let what = format!("`{}.{}`", printable(module), printable(name));
            Error::UnsafePickle(if module == "torch" || module.starts_with("torch.") {
                format!(
                    "pickle references global {what}, which is not on this reader's whitelist \
                     (only dense tensors in torch.XStorage storages are supported; sparse, \
                     quantized and other torch objects are refused)"
                )
            } else {
                format!(
                    "pickle references forbidden global {what}; a checkpoint may only reference \
                     collections.OrderedDict, torch._utils._rebuild_tensor_v2 / \
                     _rebuild_parameter / _rebuild_parameter_with_state and torch storage/dtype \
                     types, so this file was refused without running anything (it may be \
                     malicious: do not torch.load it)"
                )
            })
        })
    }

    /// The dotted Python name, for messages.
    pub fn qualified_name(&self) -> String {
        match self {
            Global::OrderedDict => "collections.OrderedDict".into(),
            Global::RebuildTensorV2 => "torch._utils._rebuild_tensor_v2".into(),
            Global::RebuildParameter => "torch._utils._rebuild_parameter".into(),
            Global::RebuildParameterWithState => "torch._utils._rebuild_parameter_with_state".into(),
            Global::Storage(d) => {
                let n = STORAGE_TYPES.iter().find(|(_, x)| x == d).map_or("?Storage", |(n, _)| n);
                format!("torch.{n}")
            }
            Global::Dtype(d) => {
                let n = DTYPES.iter().find(|(_, x)| x == d).map_or("?", |(n, _)| n);
                format!("torch.{n}")
            }
        }
    }
}

/// Attacker-controlled text made safe and short for an error message.
fn printable(s: &str) -> String {
    let mut out: String = s.chars().take(80).flat_map(char::escape_debug).collect();
    if s.chars().count() > 80 {
        out.push('…');
    }
    out
}

/// One node of the parsed object graph.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    None,
    Bool(bool),
    Int(i64),
    /// An integer that does not fit in `i64`: little-endian two's complement bytes.
    BigInt(Vec<u8>),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<ObjId>),
    List(Vec<ObjId>),
    /// A `set` or `frozenset` (insertion order kept, duplicates not removed).
    Set(Vec<ObjId>),
    /// A `dict` or `collections.OrderedDict`, in insertion order with unique scalar keys.
    /// (State applied by `BUILD`, such as a state dict's `_metadata`, is not kept.)
    Dict(Vec<(ObjId, ObjId)>),
    /// A reference to a whitelisted global.
    Global(Global),
    /// The result of `BINPERSID` / `PERSID`: the persistent id object, unresolved.
    PersistentId(ObjId),
    /// An unevaluated call `func(*args)` (from `REDUCE`, `NEWOBJ`, `OBJ`, `INST`); `args` is a
    /// tuple, `state` what a later `BUILD` supplied.
    Call {
        func: Global,
        args: ObjId,
        state: Option<ObjId>,
    },
}

impl Object {
    /// A short name of the object's kind, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Object::None => "None",
            Object::Bool(_) => "bool",
            Object::Int(_) | Object::BigInt(_) => "int",
            Object::Float(_) => "float",
            Object::Str(_) => "str",
            Object::Bytes(_) => "bytes",
            Object::Tuple(_) => "tuple",
            Object::List(_) => "list",
            Object::Set(_) => "set",
            Object::Dict(_) => "dict",
            Object::Global(_) => "global",
            Object::PersistentId(_) => "persistent id",
            Object::Call { .. } => "call",
        }
    }
}

/// A parsed pickle: an arena of objects and the root returned by `STOP`.
#[derive(Debug, Clone)]
pub struct Pickle {
    objects: Vec<Object>,
    root: ObjId,
}

impl Pickle {
    /// Parse a complete pickle stream (protocols 0–5) as data. Bytes after `STOP` are ignored.
    ///
    /// Refused with [`Error::InvalidCheckpoint`] when building the object graph would need more
    /// than [`budget::for_len`]`(data.len())` bytes of memory.
    pub fn parse(data: &[u8]) -> Result<Pickle> {
        Self::parse_with_budget(data, budget::for_len(data.len()))
    }

    /// [`Pickle::parse`] with an explicit memory budget in (estimated) bytes.
    pub fn parse_with_budget(data: &[u8], budget: usize) -> Result<Pickle> {
        parser::Parser::new(data, budget).run()
    }

    /// The object the stream's `STOP` returned.
    pub fn root(&self) -> ObjId {
        self.root
    }

    /// The object with id `id`. Ids come from this pickle, so they are always in range.
    pub fn get(&self, id: ObjId) -> &Object {
        &self.objects[id]
    }

    /// Number of objects in the arena.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    pub fn as_str(&self, id: ObjId) -> Option<&str> {
        match self.get(id) {
            Object::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_int(&self, id: ObjId) -> Option<i64> {
        match self.get(id) {
            Object::Int(i) => Some(*i),
            Object::Bool(b) => Some(*b as i64),
            _ => None,
        }
    }

    /// The items of a tuple or list.
    pub fn as_seq(&self, id: ObjId) -> Option<&[ObjId]> {
        match self.get(id) {
            Object::Tuple(v) | Object::List(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_dict(&self, id: ObjId) -> Option<&[(ObjId, ObjId)]> {
        match self.get(id) {
            Object::Dict(v) => Some(v),
            _ => None,
        }
    }

    /// A one-line description of an object for error messages (shallow; never recurses).
    pub fn describe(&self, id: ObjId) -> String {
        match self.get(id) {
            Object::None => "None".into(),
            Object::Bool(b) => if *b { "True" } else { "False" }.into(),
            Object::Int(i) => format!("int {i}"),
            Object::BigInt(b) => format!("int of {} bytes", b.len()),
            Object::Float(f) => format!("float {f}"),
            Object::Str(s) => format!("str \"{}\"", printable(s)),
            Object::Bytes(b) => format!("bytes of length {}", b.len()),
            Object::Tuple(v) => format!("tuple of {} items", v.len()),
            Object::List(v) => format!("list of {} items", v.len()),
            Object::Set(v) => format!("set of {} items", v.len()),
            Object::Dict(v) => format!("dict of {} items", v.len()),
            Object::Global(g) => format!("global {}", g.qualified_name()),
            Object::PersistentId(_) => "persistent id".into(),
            Object::Call { func, .. } => format!("result of {}(...)", func.qualified_name()),
        }
    }
}
