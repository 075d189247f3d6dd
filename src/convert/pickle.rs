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
//! byte offset. Parsing is iterative (no recursion), every allocation is bounded by the input
//! length, and nothing panics on any input.
//!
//! Objects live in an arena and refer to each other by [`ObjId`], so shared references (the pickle
//! memo) and even cyclic graphs are represented without reference counting or copying.

use std::collections::HashMap;

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
    pub fn parse(data: &[u8]) -> Result<Pickle> {
        Parser::new(data).run()
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

// ---------------------------------------------------------------------------------------------
// Opcodes

mod op {
    pub const MARK: u8 = b'(';
    pub const STOP: u8 = b'.';
    pub const POP: u8 = b'0';
    pub const POP_MARK: u8 = b'1';
    pub const DUP: u8 = b'2';
    pub const FLOAT: u8 = b'F';
    pub const INT: u8 = b'I';
    pub const BININT: u8 = b'J';
    pub const BININT1: u8 = b'K';
    pub const LONG: u8 = b'L';
    pub const BININT2: u8 = b'M';
    pub const NONE: u8 = b'N';
    pub const PERSID: u8 = b'P';
    pub const BINPERSID: u8 = b'Q';
    pub const REDUCE: u8 = b'R';
    pub const STRING: u8 = b'S';
    pub const BINSTRING: u8 = b'T';
    pub const SHORT_BINSTRING: u8 = b'U';
    pub const UNICODE: u8 = b'V';
    pub const BINUNICODE: u8 = b'X';
    pub const APPEND: u8 = b'a';
    pub const BUILD: u8 = b'b';
    pub const GLOBAL: u8 = b'c';
    pub const DICT: u8 = b'd';
    pub const EMPTY_DICT: u8 = b'}';
    pub const APPENDS: u8 = b'e';
    pub const GET: u8 = b'g';
    pub const BINGET: u8 = b'h';
    pub const INST: u8 = b'i';
    pub const LONG_BINGET: u8 = b'j';
    pub const LIST: u8 = b'l';
    pub const EMPTY_LIST: u8 = b']';
    pub const OBJ: u8 = b'o';
    pub const PUT: u8 = b'p';
    pub const BINPUT: u8 = b'q';
    pub const LONG_BINPUT: u8 = b'r';
    pub const SETITEM: u8 = b's';
    pub const TUPLE: u8 = b't';
    pub const EMPTY_TUPLE: u8 = b')';
    pub const SETITEMS: u8 = b'u';
    pub const BINFLOAT: u8 = b'G';
    // protocol 2
    pub const PROTO: u8 = 0x80;
    pub const NEWOBJ: u8 = 0x81;
    pub const EXT1: u8 = 0x82;
    pub const EXT2: u8 = 0x83;
    pub const EXT4: u8 = 0x84;
    pub const TUPLE1: u8 = 0x85;
    pub const TUPLE2: u8 = 0x86;
    pub const TUPLE3: u8 = 0x87;
    pub const NEWTRUE: u8 = 0x88;
    pub const NEWFALSE: u8 = 0x89;
    pub const LONG1: u8 = 0x8a;
    pub const LONG4: u8 = 0x8b;
    // protocol 3
    pub const BINBYTES: u8 = b'B';
    pub const SHORT_BINBYTES: u8 = b'C';
    // protocol 4
    pub const SHORT_BINUNICODE: u8 = 0x8c;
    pub const BINUNICODE8: u8 = 0x8d;
    pub const BINBYTES8: u8 = 0x8e;
    pub const EMPTY_SET: u8 = 0x8f;
    pub const ADDITEMS: u8 = 0x90;
    pub const FROZENSET: u8 = 0x91;
    pub const NEWOBJ_EX: u8 = 0x92;
    pub const STACK_GLOBAL: u8 = 0x93;
    pub const MEMOIZE: u8 = 0x94;
    pub const FRAME: u8 = 0x95;
    // protocol 5
    pub const BYTEARRAY8: u8 = 0x96;
    pub const NEXT_BUFFER: u8 = 0x97;
    pub const READONLY_BUFFER: u8 = 0x98;
}

fn op_name(code: u8) -> &'static str {
    use op::*;
    match code {
        MARK => "MARK",
        STOP => "STOP",
        POP => "POP",
        POP_MARK => "POP_MARK",
        DUP => "DUP",
        FLOAT => "FLOAT",
        INT => "INT",
        BININT => "BININT",
        BININT1 => "BININT1",
        LONG => "LONG",
        BININT2 => "BININT2",
        NONE => "NONE",
        PERSID => "PERSID",
        BINPERSID => "BINPERSID",
        REDUCE => "REDUCE",
        STRING => "STRING",
        BINSTRING => "BINSTRING",
        SHORT_BINSTRING => "SHORT_BINSTRING",
        UNICODE => "UNICODE",
        BINUNICODE => "BINUNICODE",
        APPEND => "APPEND",
        BUILD => "BUILD",
        GLOBAL => "GLOBAL",
        DICT => "DICT",
        EMPTY_DICT => "EMPTY_DICT",
        APPENDS => "APPENDS",
        GET => "GET",
        BINGET => "BINGET",
        INST => "INST",
        LONG_BINGET => "LONG_BINGET",
        LIST => "LIST",
        EMPTY_LIST => "EMPTY_LIST",
        OBJ => "OBJ",
        PUT => "PUT",
        BINPUT => "BINPUT",
        LONG_BINPUT => "LONG_BINPUT",
        SETITEM => "SETITEM",
        TUPLE => "TUPLE",
        EMPTY_TUPLE => "EMPTY_TUPLE",
        SETITEMS => "SETITEMS",
        BINFLOAT => "BINFLOAT",
        PROTO => "PROTO",
        NEWOBJ => "NEWOBJ",
        EXT1 => "EXT1",
        EXT2 => "EXT2",
        EXT4 => "EXT4",
        TUPLE1 => "TUPLE1",
        TUPLE2 => "TUPLE2",
        TUPLE3 => "TUPLE3",
        NEWTRUE => "NEWTRUE",
        NEWFALSE => "NEWFALSE",
        LONG1 => "LONG1",
        LONG4 => "LONG4",
        BINBYTES => "BINBYTES",
        SHORT_BINBYTES => "SHORT_BINBYTES",
        SHORT_BINUNICODE => "SHORT_BINUNICODE",
        BINUNICODE8 => "BINUNICODE8",
        BINBYTES8 => "BINBYTES8",
        EMPTY_SET => "EMPTY_SET",
        ADDITEMS => "ADDITEMS",
        FROZENSET => "FROZENSET",
        NEWOBJ_EX => "NEWOBJ_EX",
        STACK_GLOBAL => "STACK_GLOBAL",
        MEMOIZE => "MEMOIZE",
        FRAME => "FRAME",
        BYTEARRAY8 => "BYTEARRAY8",
        NEXT_BUFFER => "NEXT_BUFFER",
        READONLY_BUFFER => "READONLY_BUFFER",
        _ => "?",
    }
}

/// Hashable form of a scalar dict key, so that `SETITEM` with an existing key replaces the value
/// in place (as Python does) without a linear search.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    None,
    Int(i64),
    Str(String),
    Bytes(Vec<u8>),
}

struct Parser<'a> {
    data: &'a [u8],
    pos: usize,
    /// Position and code of the opcode being executed, for messages.
    op_pos: usize,
    op: u8,
    objects: Vec<Object>,
    stack: Vec<ObjId>,
    /// Stack lengths at each open MARK.
    marks: Vec<usize>,
    memo: HashMap<u64, ObjId>,
    /// Per-dict index of scalar keys -> position in the dict's item list.
    dict_index: HashMap<ObjId, HashMap<Key, usize>>,
}

impl<'a> Parser<'a> {
    fn new(data: &'a [u8]) -> Self {
        Parser {
            data,
            pos: 0,
            op_pos: 0,
            op: 0,
            objects: Vec::new(),
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            dict_index: HashMap::new(),
        }
    }

    fn err(&self, msg: impl std::fmt::Display) -> Error {
        Error::InvalidCheckpoint(format!("pickle: {} (opcode {} at byte {})", msg, op_name(self.op), self.op_pos))
    }

    // ---- input ------------------------------------------------------------------------------

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let left = self.data.len() - self.pos;
        if n > left {
            return Err(self.err(format_args!("truncated stream: needs {n} more bytes but only {left} remain")));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn take_array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take_array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take_array()?))
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take_array()?))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take_array()?))
    }

    /// Bytes whose length was read from the stream; the length is checked against what is left
    /// before anything is allocated.
    fn take_len(&mut self, len: u64) -> Result<&'a [u8]> {
        let left = (self.data.len() - self.pos) as u64;
        if len > left {
            return Err(self.err(format_args!("length prefix {len} exceeds the {left} bytes left in the stream")));
        }
        self.take(len as usize)
    }

    /// A text line (protocol 0 arguments), without the trailing newline.
    fn line(&mut self) -> Result<&'a [u8]> {
        let rest = &self.data[self.pos..];
        match rest.iter().position(|&b| b == b'\n') {
            Some(i) => {
                self.pos += i + 1;
                Ok(&rest[..i])
            }
            None => Err(self.err("truncated stream: text argument has no terminating newline")),
        }
    }

    fn line_str(&mut self) -> Result<&'a str> {
        let l = self.line()?;
        std::str::from_utf8(l).map_err(|_| self.err("text argument is not valid UTF-8"))
    }

    fn utf8(&self, bytes: &[u8]) -> Result<String> {
        String::from_utf8(bytes.to_vec()).map_err(|_| self.err("string is not valid UTF-8"))
    }

    // ---- stack ------------------------------------------------------------------------------

    fn new_obj(&mut self, o: Object) -> ObjId {
        self.objects.push(o);
        self.objects.len() - 1
    }

    fn push(&mut self, o: Object) {
        let id = self.new_obj(o);
        self.stack.push(id);
    }

    /// Start of the current frame (items above the innermost MARK).
    fn frame_start(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self) -> Result<ObjId> {
        if self.stack.len() <= self.frame_start() {
            return Err(self.err("stack underflow"));
        }
        Ok(self.stack.pop().expect("checked non-empty"))
    }

    fn top(&self) -> Result<ObjId> {
        if self.stack.len() <= self.frame_start() {
            return Err(self.err("stack underflow"));
        }
        Ok(*self.stack.last().expect("checked non-empty"))
    }

    /// Pop everything above the innermost MARK, and the MARK.
    fn pop_mark(&mut self) -> Result<Vec<ObjId>> {
        let m = self.marks.pop().ok_or_else(|| self.err("no MARK on the stack"))?;
        Ok(self.stack.split_off(m))
    }

    fn memo_get(&self, idx: u64) -> Result<ObjId> {
        self.memo.get(&idx).copied().ok_or_else(|| self.err(format_args!("memo index {idx} was never stored")))
    }

    fn memo_put(&mut self, idx: u64) -> Result<()> {
        let top = self.top()?;
        self.memo.insert(idx, top);
        Ok(())
    }

    fn key_of(&self, id: ObjId) -> Option<Key> {
        match &self.objects[id] {
            Object::None => Some(Key::None),
            Object::Bool(b) => Some(Key::Int(*b as i64)),
            Object::Int(i) => Some(Key::Int(*i)),
            Object::Str(s) => Some(Key::Str(s.clone())),
            Object::Bytes(b) => Some(Key::Bytes(b.clone())),
            _ => None,
        }
    }

    fn set_items(&mut self, dict: ObjId, pairs: &[ObjId]) -> Result<()> {
        if !pairs.len().is_multiple_of(2) {
            return Err(self.err("odd number of items for a dict"));
        }
        if !matches!(self.objects[dict], Object::Dict(_)) {
            return Err(self.err(format_args!("cannot set items on a {}", self.objects[dict].kind())));
        }
        for kv in pairs.chunks_exact(2) {
            let (k, v) = (kv[0], kv[1]);
            let key = self.key_of(k);
            let index = self.dict_index.entry(dict).or_default();
            let Object::Dict(items) = &mut self.objects[dict] else { unreachable!() };
            match key {
                Some(key) => match index.get(&key) {
                    Some(&i) => items[i].1 = v,
                    None => {
                        index.insert(key, items.len());
                        items.push((k, v));
                    }
                },
                None => items.push((k, v)),
            }
        }
        Ok(())
    }

    fn new_dict(&mut self, pairs: &[ObjId]) -> Result<ObjId> {
        let d = self.new_obj(Object::Dict(Vec::new()));
        self.set_items(d, pairs)?;
        Ok(d)
    }

    fn extend_seq(&mut self, target: ObjId, items: Vec<ObjId>, want_set: bool) -> Result<()> {
        match &mut self.objects[target] {
            Object::List(v) if !want_set => v.extend(items),
            Object::Set(v) if want_set => v.extend(items),
            other => {
                let kind = other.kind();
                return Err(self.err(format_args!("cannot add items to a {kind}")));
            }
        }
        Ok(())
    }

    /// `func(*args)` where `func` must be a (whitelisted) global and `args` a tuple.
    fn call(&mut self, func: ObjId, args: ObjId) -> Result<ObjId> {
        let Object::Global(g) = self.objects[func] else {
            return Err(self.err(format_args!("callable is a {}, not a whitelisted global", self.objects[func].kind())));
        };
        let arg_items = match &self.objects[args] {
            Object::Tuple(v) => v.clone(),
            other => {
                let kind = other.kind();
                return Err(self.err(format_args!("call arguments are a {kind}, not a tuple")));
            }
        };
        if g == Global::OrderedDict {
            // OrderedDict() or OrderedDict(iterable_of_pairs): build the dict directly.
            return match arg_items.as_slice() {
                [] => self.new_dict(&[]),
                [seq] => {
                    let pairs_src = match &self.objects[*seq] {
                        Object::List(v) | Object::Tuple(v) => v.clone(),
                        Object::Dict(v) => v.iter().flat_map(|&(k, v)| [k, v]).collect(),
                        other => {
                            let kind = other.kind();
                            return Err(self.err(format_args!("OrderedDict() argument is a {kind}")));
                        }
                    };
                    let mut pairs = Vec::new();
                    if matches!(self.objects[*seq], Object::Dict(_)) {
                        pairs = pairs_src;
                    } else {
                        for p in pairs_src {
                            match &self.objects[p] {
                                Object::Tuple(kv) | Object::List(kv) if kv.len() == 2 => pairs.extend_from_slice(kv),
                                _ => return Err(self.err("OrderedDict() item is not a pair")),
                            }
                        }
                    }
                    self.new_dict(&pairs)
                }
                _ => Err(self.err("OrderedDict() takes at most one argument")),
            };
        }
        Ok(self.new_obj(Object::Call { func: g, args, state: None }))
    }

    fn build(&mut self, target: ObjId, state: ObjId) -> Result<()> {
        match &mut self.objects[target] {
            Object::Call { state: s, .. } => {
                *s = Some(state);
                Ok(())
            }
            // e.g. a state dict's `_metadata` attribute: instance attributes are not kept.
            Object::Dict(_) => Ok(()),
            other => {
                let kind = other.kind();
                Err(self.err(format_args!("BUILD on a {kind}")))
            }
        }
    }

    fn global(&mut self, module: &str, name: &str) -> Result<ObjId> {
        let g = Global::resolve(module, name)?;
        Ok(self.new_obj(Object::Global(g)))
    }

    // ---- text-argument helpers (protocol 0) ---------------------------------------------------

    fn parse_int_text(&self, s: &str) -> Result<Object> {
        let s = s.trim();
        let s = s.strip_suffix('L').unwrap_or(s);
        match s {
            "00" => return Ok(Object::Bool(false)),
            "01" => return Ok(Object::Bool(true)),
            _ => {}
        }
        if let Ok(v) = s.parse::<i64>() {
            return Ok(Object::Int(v));
        }
        let bad = || self.err(format_args!("bad integer literal \"{}\"", printable(s)));
        let (neg, digits) = match s.as_bytes() {
            [b'-', d @ ..] => (true, d),
            [b'+', d @ ..] => (false, d),
            d => (false, d),
        };
        // Python itself refuses longer decimal literals (sys.int_info.default_max_str_digits);
        // the limit also keeps this quadratic conversion cheap.
        if digits.is_empty() || digits.len() > 4300 || !digits.iter().all(u8::is_ascii_digit) {
            return Err(bad());
        }
        // Magnitude as little-endian base-256 digits.
        let mut mag: Vec<u8> = vec![0];
        for &d in digits {
            let mut carry = (d - b'0') as u32;
            for byte in mag.iter_mut() {
                let v = *byte as u32 * 10 + carry;
                *byte = v as u8;
                carry = v >> 8;
            }
            if carry > 0 {
                mag.push(carry as u8);
            }
        }
        // Two's complement with room for the sign bit.
        mag.push(0);
        if neg {
            let mut carry = 1u16;
            for byte in mag.iter_mut() {
                let v = (!*byte) as u16 + carry;
                *byte = v as u8;
                carry = v >> 8;
            }
        }
        // Drop redundant sign-extension bytes, as pickle's LONG1 encoding does.
        while mag.len() > 1 {
            let n = mag.len();
            let (last, prev) = (mag[n - 1], mag[n - 2]);
            if (last == 0 && prev & 0x80 == 0) || (last == 0xff && prev & 0x80 != 0) {
                mag.pop();
            } else {
                break;
            }
        }
        Ok(self.long_from_le(&mag))
    }

    /// Decode a protocol-0 `STRING` argument: a quoted Python bytes repr.
    fn parse_string_text(&self, line: &[u8]) -> Result<Vec<u8>> {
        let inner = match line {
            [q @ (b'\'' | b'"'), mid @ .., q2] if q == q2 => mid,
            _ => return Err(self.err("STRING argument is not quoted")),
        };
        let mut out = Vec::with_capacity(inner.len());
        let mut i = 0;
        while i < inner.len() {
            let c = inner[i];
            i += 1;
            if c != b'\\' {
                out.push(c);
                continue;
            }
            let Some(&e) = inner.get(i) else {
                return Err(self.err("STRING argument ends in a backslash"));
            };
            i += 1;
            match e {
                b'\\' | b'\'' | b'"' => out.push(e),
                b'n' => out.push(b'\n'),
                b'r' => out.push(b'\r'),
                b't' => out.push(b'\t'),
                b'a' => out.push(7),
                b'b' => out.push(8),
                b'f' => out.push(12),
                b'v' => out.push(11),
                b'x' => {
                    let hex = inner.get(i..i + 2).ok_or_else(|| self.err("bad \\x escape"))?;
                    let v = std::str::from_utf8(hex)
                        .ok()
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                        .ok_or_else(|| self.err("bad \\x escape"))?;
                    out.push(v);
                    i += 2;
                }
                b'0'..=b'7' => {
                    let mut v: u32 = (e - b'0') as u32;
                    let mut n = 1;
                    while n < 3 && i < inner.len() && (b'0'..=b'7').contains(&inner[i]) {
                        v = v * 8 + (inner[i] - b'0') as u32;
                        i += 1;
                        n += 1;
                    }
                    out.push((v & 0xff) as u8);
                }
                _ => {
                    out.push(b'\\');
                    out.push(e);
                }
            }
        }
        Ok(out)
    }

    /// Decode a protocol-0 `UNICODE` argument (raw-unicode-escape).
    fn parse_unicode_text(&self, line: &[u8]) -> Result<String> {
        let mut out = String::with_capacity(line.len());
        let mut i = 0;
        while i < line.len() {
            let c = line[i];
            if c == b'\\' && matches!(line.get(i + 1), Some(b'u' | b'U')) {
                let n = if line[i + 1] == b'u' { 4 } else { 8 };
                let hex = line.get(i + 2..i + 2 + n).ok_or_else(|| self.err("bad \\u escape"))?;
                let ch = std::str::from_utf8(hex)
                    .ok()
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .and_then(char::from_u32)
                    .ok_or_else(|| self.err("bad \\u escape"))?;
                out.push(ch);
                i += 2 + n;
            } else {
                out.push(c as char); // latin-1
                i += 1;
            }
        }
        Ok(out)
    }

    fn long_from_le(&self, bytes: &[u8]) -> Object {
        if bytes.is_empty() {
            return Object::Int(0);
        }
        if bytes.len() <= 8 {
            let neg = bytes[bytes.len() - 1] & 0x80 != 0;
            let mut buf = if neg { [0xffu8; 8] } else { [0u8; 8] };
            buf[..bytes.len()].copy_from_slice(bytes);
            return Object::Int(i64::from_le_bytes(buf));
        }
        // Wider than 8 bytes: fits in i64 only if the extra bytes are pure sign extension.
        let (lo, hi) = bytes.split_at(8);
        let lo_neg = lo[7] & 0x80 != 0;
        let ext = if lo_neg { 0xff } else { 0 };
        if hi.iter().all(|&b| b == ext) {
            let mut buf = [0u8; 8];
            buf.copy_from_slice(lo);
            Object::Int(i64::from_le_bytes(buf))
        } else {
            Object::BigInt(bytes.to_vec())
        }
    }

    // ---- main loop ----------------------------------------------------------------------------

    fn run(mut self) -> Result<Pickle> {
        use op::*;
        loop {
            self.op_pos = self.pos;
            if self.pos >= self.data.len() {
                self.op = 0;
                return Err(Error::InvalidCheckpoint(format!(
                    "pickle: truncated stream: ended at byte {} without a STOP opcode",
                    self.pos
                )));
            }
            self.op = self.data[self.pos];
            self.pos += 1;
            match self.op {
                PROTO => {
                    let v = self.u8()?;
                    if v > 5 {
                        return Err(self.err(format_args!("unsupported pickle protocol {v}")));
                    }
                }
                FRAME => {
                    // Protocol-4 framing is only a read-ahead hint; check it and go on.
                    let n = self.u64()?;
                    let left = (self.data.len() - self.pos) as u64;
                    if n > left {
                        return Err(
                            self.err(format_args!("frame length {n} exceeds the {left} bytes left in the stream"))
                        );
                    }
                }
                STOP => {
                    let root = self.pop().map_err(|_| self.err("STOP with an empty stack"))?;
                    return Ok(Pickle { objects: self.objects, root });
                }
                MARK => self.marks.push(self.stack.len()),
                POP => {
                    if self.stack.len() > self.frame_start() {
                        self.stack.pop();
                    } else {
                        self.pop_mark()?;
                    }
                }
                POP_MARK => {
                    self.pop_mark()?;
                }
                DUP => {
                    let t = self.top()?;
                    self.stack.push(t);
                }

                // ---- constants
                NONE => self.push(Object::None),
                NEWTRUE => self.push(Object::Bool(true)),
                NEWFALSE => self.push(Object::Bool(false)),
                BININT => {
                    let v = self.u32()? as i32;
                    self.push(Object::Int(v as i64))
                }
                BININT1 => {
                    let v = self.u8()?;
                    self.push(Object::Int(v as i64))
                }
                BININT2 => {
                    let v = self.u16()?;
                    self.push(Object::Int(v as i64))
                }
                LONG1 => {
                    let n = self.u8()? as u64;
                    let b = self.take_len(n)?;
                    let o = self.long_from_le(b);
                    self.push(o)
                }
                LONG4 => {
                    let n = self.u32()? as i32;
                    if n < 0 {
                        return Err(self.err("negative length"));
                    }
                    let b = self.take_len(n as u64)?;
                    let o = self.long_from_le(b);
                    self.push(o)
                }
                INT | LONG => {
                    let s = self.line_str()?;
                    let o = self.parse_int_text(s)?;
                    self.push(o)
                }
                BINFLOAT => {
                    let v = f64::from_be_bytes(self.take_array()?);
                    self.push(Object::Float(v))
                }
                FLOAT => {
                    let s = self.line_str()?;
                    let v = s
                        .trim()
                        .parse::<f64>()
                        .map_err(|_| self.err(format_args!("bad float \"{}\"", printable(s))))?;
                    self.push(Object::Float(v))
                }

                // ---- strings and bytes
                BINUNICODE => {
                    let n = self.u32()? as u64;
                    let b = self.take_len(n)?;
                    let s = self.utf8(b)?;
                    self.push(Object::Str(s))
                }
                SHORT_BINUNICODE => {
                    let n = self.u8()? as u64;
                    let b = self.take_len(n)?;
                    let s = self.utf8(b)?;
                    self.push(Object::Str(s))
                }
                BINUNICODE8 => {
                    let n = self.u64()?;
                    let b = self.take_len(n)?;
                    let s = self.utf8(b)?;
                    self.push(Object::Str(s))
                }
                UNICODE => {
                    let l = self.line()?;
                    let s = self.parse_unicode_text(l)?;
                    self.push(Object::Str(s))
                }
                // Python 2 `str`: torch's loader decodes these as text; keep UTF-8 as str,
                // anything else as bytes.
                BINSTRING | SHORT_BINSTRING | STRING => {
                    let raw = match self.op {
                        BINSTRING => {
                            let n = self.u32()? as i32;
                            if n < 0 {
                                return Err(self.err("negative length"));
                            }
                            self.take_len(n as u64)?.to_vec()
                        }
                        SHORT_BINSTRING => {
                            let n = self.u8()? as u64;
                            self.take_len(n)?.to_vec()
                        }
                        _ => {
                            let l = self.line()?;
                            self.parse_string_text(l)?
                        }
                    };
                    match String::from_utf8(raw) {
                        Ok(s) => self.push(Object::Str(s)),
                        Err(e) => self.push(Object::Bytes(e.into_bytes())),
                    }
                }
                BINBYTES => {
                    let n = self.u32()? as u64;
                    let b = self.take_len(n)?.to_vec();
                    self.push(Object::Bytes(b))
                }
                SHORT_BINBYTES => {
                    let n = self.u8()? as u64;
                    let b = self.take_len(n)?.to_vec();
                    self.push(Object::Bytes(b))
                }
                BINBYTES8 | BYTEARRAY8 => {
                    let n = self.u64()?;
                    let b = self.take_len(n)?.to_vec();
                    self.push(Object::Bytes(b))
                }

                // ---- containers
                EMPTY_TUPLE => self.push(Object::Tuple(Vec::new())),
                TUPLE1 | TUPLE2 | TUPLE3 => {
                    let n = (self.op - TUPLE1 + 1) as usize;
                    if self.stack.len() < self.frame_start() + n {
                        return Err(self.err(format_args!("stack underflow: needs {n} items")));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.push(Object::Tuple(items))
                }
                TUPLE => {
                    let items = self.pop_mark()?;
                    self.push(Object::Tuple(items))
                }
                EMPTY_LIST => self.push(Object::List(Vec::new())),
                LIST => {
                    let items = self.pop_mark()?;
                    self.push(Object::List(items))
                }
                APPEND => {
                    let v = self.pop()?;
                    let l = self.top()?;
                    self.extend_seq(l, vec![v], false)?
                }
                APPENDS => {
                    let items = self.pop_mark()?;
                    let l = self.top()?;
                    self.extend_seq(l, items, false)?
                }
                EMPTY_DICT => self.push(Object::Dict(Vec::new())),
                DICT => {
                    let items = self.pop_mark()?;
                    let d = self.new_dict(&items)?;
                    self.stack.push(d)
                }
                SETITEM => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    let d = self.top()?;
                    self.set_items(d, &[k, v])?
                }
                SETITEMS => {
                    let items = self.pop_mark()?;
                    let d = self.top()?;
                    self.set_items(d, &items)?
                }
                EMPTY_SET => self.push(Object::Set(Vec::new())),
                ADDITEMS => {
                    let items = self.pop_mark()?;
                    let s = self.top()?;
                    self.extend_seq(s, items, true)?
                }
                FROZENSET => {
                    let items = self.pop_mark()?;
                    self.push(Object::Set(items))
                }

                // ---- memo
                BINPUT => {
                    let i = self.u8()? as u64;
                    self.memo_put(i)?
                }
                LONG_BINPUT => {
                    let i = self.u32()? as u64;
                    self.memo_put(i)?
                }
                PUT => {
                    let s = self.line_str()?;
                    let i = s.parse::<u64>().map_err(|_| self.err("bad memo index"))?;
                    self.memo_put(i)?
                }
                MEMOIZE => {
                    let i = self.memo.len() as u64;
                    self.memo_put(i)?
                }
                BINGET => {
                    let i = self.u8()? as u64;
                    let id = self.memo_get(i)?;
                    self.stack.push(id)
                }
                LONG_BINGET => {
                    let i = self.u32()? as u64;
                    let id = self.memo_get(i)?;
                    self.stack.push(id)
                }
                GET => {
                    let s = self.line_str()?;
                    let i = s.parse::<u64>().map_err(|_| self.err("bad memo index"))?;
                    let id = self.memo_get(i)?;
                    self.stack.push(id)
                }

                // ---- globals and calls (references only; nothing is imported or called)
                GLOBAL => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let module = String::from_utf8_lossy(module);
                    let name = String::from_utf8_lossy(name);
                    let id = self.global(&module, &name)?;
                    self.stack.push(id)
                }
                STACK_GLOBAL => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Object::Str(m), Object::Str(n)) = (&self.objects[module], &self.objects[name]) else {
                        return Err(self.err("STACK_GLOBAL needs two strings"));
                    };
                    let (m, n) = (m.clone(), n.clone());
                    let id = self.global(&m, &n)?;
                    self.stack.push(id)
                }
                INST => {
                    let module = String::from_utf8_lossy(self.line()?).into_owned();
                    let name = String::from_utf8_lossy(self.line()?).into_owned();
                    let func = self.global(&module, &name)?;
                    let items = self.pop_mark()?;
                    let args = self.new_obj(Object::Tuple(items));
                    let r = self.call(func, args)?;
                    self.stack.push(r)
                }
                OBJ => {
                    let items = self.pop_mark()?;
                    let Some((&func, rest)) = items.split_first() else {
                        return Err(self.err("OBJ without a class"));
                    };
                    let args = self.new_obj(Object::Tuple(rest.to_vec()));
                    let r = self.call(func, args)?;
                    self.stack.push(r)
                }
                REDUCE | NEWOBJ => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    let r = self.call(func, args)?;
                    self.stack.push(r)
                }
                NEWOBJ_EX => {
                    let kwargs = self.pop()?;
                    let args = self.pop()?;
                    let func = self.pop()?;
                    if !matches!(&self.objects[kwargs], Object::Dict(v) if v.is_empty()) {
                        return Err(self.err("NEWOBJ_EX with keyword arguments is not supported"));
                    }
                    let r = self.call(func, args)?;
                    self.stack.push(r)
                }
                BUILD => {
                    let state = self.pop()?;
                    let target = self.top()?;
                    self.build(target, state)?
                }
                BINPERSID => {
                    let pid = self.pop()?;
                    self.push(Object::PersistentId(pid))
                }
                PERSID => {
                    let l = self.line()?;
                    let s = self.utf8(l)?;
                    let pid = self.new_obj(Object::Str(s));
                    self.push(Object::PersistentId(pid))
                }
                EXT1 | EXT2 | EXT4 => {
                    return Err(Error::UnsafePickle(format!(
                        "pickle uses the copyreg extension registry (opcode {} at byte {}), \
                         which names globals indirectly; refused",
                        op_name(self.op),
                        self.op_pos
                    )));
                }
                NEXT_BUFFER => return Err(self.err("out-of-band buffers are not supported")),
                READONLY_BUFFER => {
                    self.top()?;
                }
                other => {
                    return Err(Error::InvalidCheckpoint(format!(
                        "pickle: unknown opcode 0x{other:02x} at byte {}",
                        self.op_pos
                    )));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(b: &[u8]) -> Result<Pickle> {
        Pickle::parse(b)
    }

    fn invalid(b: &[u8]) -> String {
        match parse(b) {
            Err(Error::InvalidCheckpoint(m)) => m,
            other => panic!("expected InvalidCheckpoint, got {other:?}"),
        }
    }

    fn unsafe_msg(b: &[u8]) -> String {
        match parse(b) {
            Err(Error::UnsafePickle(m)) => m,
            other => panic!("expected UnsafePickle, got {other:?}"),
        }
    }

    /// Pickle of {'a': [1, -2, 300, 70000, 2.5, None, True, False, 'é', (1, 2), 2**70, -2**40],
    /// 'b': {'x': 1}} written by CPython with the given protocol (generated once, embedded).
    const PY_P0: &[u8] = b"(dp0\nVa\np1\n(lp2\nI1\naI-2\naI300\naI70000\naF2.5\naNaI01\naI00\naV\xe9\np3\na(I1\nI2\ntp4\naL1180591620717411303424L\naL-1099511627776L\nasVb\np5\n(dp6\nVx\np7\nI1\nss.";
    const PY_P2: &[u8] = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01]q\x02(K\x01J\xfe\xff\xff\xffM,\x01Jp\x11\x01\x00G@\x04\x00\x00\x00\x00\x00\x00N\x88\x89X\x02\x00\x00\x00\xc3\xa9q\x03K\x01K\x02\x86q\x04\x8a\t\x00\x00\x00\x00\x00\x00\x00\x00@\x8a\x06\x00\x00\x00\x00\x00\xffeX\x01\x00\x00\x00bq\x05}q\x06X\x01\x00\x00\x00xq\x07K\x01su.";
    const PY_P4: &[u8] = b"\x80\x04\x95S\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x01a\x94]\x94(K\x01J\xfe\xff\xff\xffM,\x01Jp\x11\x01\x00G@\x04\x00\x00\x00\x00\x00\x00N\x88\x89\x8c\x02\xc3\xa9\x94K\x01K\x02\x86\x94\x8a\t\x00\x00\x00\x00\x00\x00\x00\x00@\x8a\x06\x00\x00\x00\x00\x00\xffe\x8c\x01b\x94}\x94\x8c\x01x\x94K\x01su.";

    fn check_py_sample(p: &Pickle) {
        let root = p.as_dict(p.root()).expect("dict");
        assert_eq!(root.len(), 2);
        assert_eq!(p.as_str(root[0].0), Some("a"));
        let list = p.as_seq(root[0].1).expect("list");
        let objs: Vec<&Object> = list.iter().map(|&i| p.get(i)).collect();
        assert_eq!(objs[0], &Object::Int(1));
        assert_eq!(objs[1], &Object::Int(-2));
        assert_eq!(objs[2], &Object::Int(300));
        assert_eq!(objs[3], &Object::Int(70000));
        assert_eq!(objs[4], &Object::Float(2.5));
        assert_eq!(objs[5], &Object::None);
        assert_eq!(objs[6], &Object::Bool(true));
        assert_eq!(objs[7], &Object::Bool(false));
        assert_eq!(objs[8], &Object::Str("é".into()));
        let t = p.as_seq(list[9]).unwrap();
        assert_eq!((p.as_int(t[0]), p.as_int(t[1])), (Some(1), Some(2)));
        assert!(matches!(objs[10], Object::BigInt(_)) || matches!(objs[10], Object::Int(_)));
        assert_eq!(objs[11], &Object::Int(-(1 << 40)));
        let inner = p.as_dict(root[1].1).unwrap();
        assert_eq!(p.as_str(inner[0].0), Some("x"));
        assert_eq!(p.as_int(inner[0].1), Some(1));
    }

    #[test]
    fn parses_cpython_output_protocols_0_2_4() {
        check_py_sample(&parse(PY_P2).unwrap());
        check_py_sample(&parse(PY_P4).unwrap());
        check_py_sample(&parse(PY_P0).unwrap());
        // The text LONG and binary LONG1 forms of 2**70 agree.
        let big = |p: &Pickle| {
            let list = p.as_seq(p.as_dict(p.root()).unwrap()[0].1).unwrap();
            p.get(list[10]).clone()
        };
        assert_eq!(big(&parse(PY_P0).unwrap()), big(&parse(PY_P2).unwrap()));
    }

    #[test]
    fn big_long1_is_kept_as_bigint() {
        let p = parse(PY_P2).unwrap();
        let list = p.as_seq(p.as_dict(p.root()).unwrap()[0].1).unwrap();
        let mut want = vec![0u8; 9];
        want[8] = 0x40;
        assert_eq!(p.get(list[10]), &Object::BigInt(want));
    }

    #[test]
    fn ordered_dict_reduce_and_setitems() {
        // OrderedDict() via GLOBAL+EMPTY_TUPLE+REDUCE, then SETITEMS, then BUILD with metadata,
        // and a duplicate key replacing the earlier value in place.
        let mut b = b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01(".to_vec();
        b.extend_from_slice(b"X\x01\x00\x00\x00kK\x01X\x01\x00\x00\x00jK\x02X\x01\x00\x00\x00kK\x03u");
        b.extend_from_slice(b"}X\x09\x00\x00\x00_metadataK\x00sb.");
        let p = parse(&b).unwrap();
        let d = p.as_dict(p.root()).unwrap();
        let got: Vec<(&str, i64)> = d.iter().map(|&(k, v)| (p.as_str(k).unwrap(), p.as_int(v).unwrap())).collect();
        assert_eq!(got, vec![("k", 3), ("j", 2)]);
    }

    #[test]
    fn whitelisted_globals_resolve() {
        for (m, n, g) in [
            ("collections", "OrderedDict", Global::OrderedDict),
            ("torch._utils", "_rebuild_tensor_v2", Global::RebuildTensorV2),
            ("torch._utils", "_rebuild_parameter", Global::RebuildParameter),
            ("torch._utils", "_rebuild_parameter_with_state", Global::RebuildParameterWithState),
            ("torch", "BFloat16Storage", Global::Storage(Dtype::BF16)),
            ("torch", "HalfStorage", Global::Storage(Dtype::F16)),
            ("torch", "FloatStorage", Global::Storage(Dtype::F32)),
            ("torch", "BoolStorage", Global::Storage(Dtype::BOOL)),
            ("torch", "bfloat16", Global::Dtype(Dtype::BF16)),
        ] {
            assert_eq!(Global::resolve(m, n).unwrap(), g);
            assert_eq!(g.qualified_name(), format!("{m}.{n}"));
        }
    }

    #[test]
    fn forbidden_globals_are_refused() {
        let m = unsafe_msg(b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00ls\x85R.");
        assert!(m.contains("forbidden global `os.system`"), "{m}");
        let m = unsafe_msg(b"cbuiltins\neval\n.");
        assert!(m.contains("`builtins.eval`"), "{m}");
        // STACK_GLOBAL (protocol 4)
        let m = unsafe_msg(b"\x80\x04\x8c\nsubprocess\x94\x8c\x05Popen\x94\x93\x94.");
        assert!(m.contains("`subprocess.Popen`"), "{m}");
        // INST names the class inline.
        let m = unsafe_msg(b"(S'ls'\nios\nsystem\n.");
        assert!(m.contains("`os.system`"), "{m}");
        // Near misses of whitelisted names.
        for (m, n) in [
            ("torch", "load"),
            ("torch._utils", "_rebuild_tensor"),
            ("torch.storage", "_load_from_bytes"),
            ("collections", "defaultdict"),
            ("torch", "UntypedStorage"),
            ("__builtin__", "getattr"),
        ] {
            assert!(matches!(Global::resolve(m, n), Err(Error::UnsafePickle(_))), "{m}.{n}");
        }
        let m = Global::resolve("torch._utils", "_rebuild_qtensor").unwrap_err().to_string();
        assert!(m.contains("`torch._utils._rebuild_qtensor`") && m.contains("whitelist"), "{m}");
        // Control characters in the name are escaped in the message.
        let m = unsafe_msg(b"cos\x1b[2J\nsystem\n.");
        assert!(!m.contains('\x1b'), "{m}");
        // Extension registry codes.
        assert!(matches!(parse(b"\x80\x02\x82\x01."), Err(Error::UnsafePickle(_))));
    }

    #[test]
    fn reduce_needs_a_global_callable() {
        let m = invalid(b"\x80\x02X\x01\x00\x00\x00f)R.");
        assert!(m.contains("not a whitelisted global"), "{m}");
    }

    #[test]
    fn unknown_opcode() {
        let m = invalid(b"\x80\x02\xff.");
        assert!(m.contains("unknown opcode 0xff at byte 2"), "{m}");
    }

    #[test]
    fn stack_underflow() {
        let m = invalid(b"\x80\x02R.");
        assert!(m.contains("stack underflow"), "{m}");
        let m = invalid(b"\x80\x02K\x01\x86.");
        assert!(m.contains("stack underflow"), "{m}");
        // Items below a MARK are not reachable from inside it.
        let m = invalid(b"\x80\x02}(K\x01K\x02s.");
        assert!(m.contains("stack underflow"), "{m}");
        let m = invalid(b"\x80\x02.");
        assert!(m.contains("STOP with an empty stack"), "{m}");
        let m = invalid(b"\x80\x02K\x01t.");
        assert!(m.contains("no MARK"), "{m}");
    }

    #[test]
    fn huge_length_prefixes_are_refused_without_allocating() {
        let m = invalid(b"\x80\x02X\xff\xff\xff\xffabc");
        assert!(m.contains("length prefix 4294967295 exceeds the 3 bytes left"), "{m}");
        let m = invalid(b"\x80\x04\x8d\xff\xff\xff\xff\xff\xff\xff\xffab");
        assert!(m.contains("exceeds the 2 bytes left"), "{m}");
        let m = invalid(b"\x80\x04\x8e\x00\x00\x00\x00\x00\x00\x00\x80ab");
        assert!(m.contains("exceeds"), "{m}");
        let m = invalid(b"\x80\x02\x8b\xff\xff\xff\x7f\x00.");
        assert!(m.contains("exceeds"), "{m}");
        let m = invalid(b"\x80\x02T\xff\xff\xff\xff.");
        assert!(m.contains("negative length"), "{m}");
        let m = invalid(b"\x80\x04\x95\xff\xff\xff\xff\xff\xff\xff\xff.");
        assert!(m.contains("frame length"), "{m}");
    }

    #[test]
    fn bad_memo_index() {
        let m = invalid(b"\x80\x02h\x05.");
        assert!(m.contains("memo index 5 was never stored"), "{m}");
        let m = invalid(b"\x80\x02j\x00\x00\x00\x01.");
        assert!(m.contains("memo index 16777216"), "{m}");
        let m = invalid(b"\x80\x02q\x00.");
        assert!(m.contains("stack underflow"), "{m}");
    }

    #[test]
    fn truncated_streams() {
        for cut in 0..PY_P2.len() {
            let m = invalid(&PY_P2[..cut]);
            assert!(m.contains("truncated") || m.contains("exceeds"), "cut {cut}: {m}");
        }
        for cut in 0..PY_P4.len() {
            assert!(matches!(parse(&PY_P4[..cut]), Err(Error::InvalidCheckpoint(_))), "{cut}");
        }
        let m = invalid(b"\x80\x02cos\nsys");
        assert!(m.contains("no terminating newline"), "{m}");
    }

    #[test]
    fn misc_errors() {
        assert!(invalid(b"\x80\x09N.").contains("unsupported pickle protocol 9"));
        assert!(invalid(b"\x80\x02X\x02\x00\x00\x00\xff\xfe.").contains("not valid UTF-8"));
        assert!(invalid(b"\x80\x02K\x01K\x02s.").contains("stack underflow"));
        assert!(invalid(b"\x80\x02]K\x01K\x02s.").contains("cannot set items on a list"));
        assert!(invalid(b"\x80\x02}(K\x01u.").contains("odd number"));
        assert!(invalid(b"\x80\x02K\x01K\x02a.").contains("cannot add items to a int"));
        assert!(invalid(b"\x80\x02)K\x01b.").contains("BUILD on a tuple"));
        assert!(invalid(b"\x80\x05\x97.").contains("out-of-band"));
        assert!(invalid(b"\x80\x02I12x\n.").contains("bad integer literal"));
    }

    #[test]
    fn persistent_ids_and_shared_memo_objects() {
        // [pid, pid] where the second is a memo reference to the first: same object id.
        let b = b"\x80\x02]((X\x07\x00\x00\x00storageq\x00ctorch\nFloatStorage\nq\x01X\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x04tQq\x02h\x02e.";
        let p = parse(b).unwrap();
        let l = p.as_seq(p.root()).unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0], l[1]);
        let Object::PersistentId(pid) = p.get(l[0]) else { panic!() };
        let t = p.as_seq(*pid).unwrap();
        assert_eq!(p.as_str(t[0]), Some("storage"));
        assert_eq!(p.get(t[1]), &Object::Global(Global::Storage(Dtype::F32)));
        assert_eq!(p.as_int(t[4]), Some(4));
    }

    #[test]
    fn self_referencing_list_is_fine() {
        // l = []; l.append(l)
        let p = parse(b"\x80\x02]q\x00h\x00a.").unwrap();
        let l = p.as_seq(p.root()).unwrap();
        assert_eq!(l, &[p.root()]);
        assert_eq!(p.describe(p.root()), "list of 1 items");
    }

    #[test]
    fn text_opcodes() {
        let p = parse(b"(S'a\\x41\\n\\'b'\nF1.5\nI-7\nL99L\nNP1\ntp0\n0g0\n.").unwrap();
        let t = p.as_seq(p.root()).unwrap();
        assert_eq!(p.as_str(t[0]), Some("aA\n'b"));
        assert_eq!(p.get(t[1]), &Object::Float(1.5));
        assert_eq!(p.as_int(t[2]), Some(-7));
        assert_eq!(p.as_int(t[3]), Some(99));
        assert_eq!(p.get(t[4]), &Object::None);
        assert!(matches!(p.get(t[5]), Object::PersistentId(_)));
        let p = parse(b"V\\u00e9x\\U0001F600\n.").unwrap();
        assert_eq!(p.as_str(p.root()), Some("éx😀"));
    }

    /// Deterministic mutation fuzzing: no input may panic.
    #[test]
    fn mutated_streams_never_panic() {
        let mut seed: u64 = 0x9e3779b97f4a7c15;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for base in [PY_P0, PY_P2, PY_P4] {
            for _ in 0..3000 {
                let mut b = base.to_vec();
                for _ in 0..1 + rnd() % 4 {
                    let i = (rnd() as usize) % b.len();
                    match rnd() % 3 {
                        0 => b[i] = rnd() as u8,
                        1 => {
                            b.remove(i);
                        }
                        _ => b.insert(i, rnd() as u8),
                    }
                }
                let _ = parse(&b);
            }
        }
    }
}
