//! The opcode interpreter: builds the passive object graph, one opcode at a time, iteratively.

use std::collections::HashMap;

use super::budget::{cost, Budget, Exceeded};
use super::dict_index::{DictIndex, Slot};
use super::op::{self, *};
use super::text;
use super::{printable, Global, ObjId, Object, Pickle};
use crate::{Error, Result};

pub(super) struct Parser<'a> {
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
    index: DictIndex,
    budget: Budget,
    /// High-water marks of `stack` and `marks` already charged to the budget.
    stack_charged: usize,
    marks_charged: usize,
}

impl<'a> Parser<'a> {
    pub fn new(data: &'a [u8], budget: usize) -> Self {
        Parser {
            data,
            pos: 0,
            op_pos: 0,
            op: 0,
            objects: Vec::new(),
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            index: DictIndex::default(),
            budget: Budget::new(budget),
            stack_charged: 0,
            marks_charged: 0,
        }
    }

    pub fn run(mut self) -> Result<Pickle> {
        let root = self.run_to_stop()?;
        Ok(Pickle { objects: self.objects, root })
    }

    /// [`Parser::run`] that also reports the budget used (to measure real pickles' needs).
    #[cfg(test)]
    pub fn run_measured(mut self) -> (Result<Pickle>, usize) {
        let r = self.run_to_stop();
        let used = self.budget.used();
        (r.map(|root| Pickle { objects: self.objects, root }), used)
    }

    /// Executes opcodes up to `STOP`; returns the root object.
    fn run_to_stop(&mut self) -> Result<ObjId> {
        loop {
            self.op_pos = self.pos;
            let Some(&code) = self.data.get(self.pos) else {
                self.op = 0;
                return Err(Error::InvalidCheckpoint(format!(
                    "pickle: truncated stream: ended at byte {} without a STOP opcode",
                    self.pos
                )));
            };
            self.op = code;
            self.pos += 1;
            if code == STOP {
                return self.pop().map_err(|_| self.err("STOP with an empty stack"));
            }
            self.execute(code)?;
        }
    }

    fn execute(&mut self, code: u8) -> Result<()> {
        match code {
            PROTO | FRAME | MARK | POP | POP_MARK | DUP => self.control(code),
            NONE | NEWTRUE | NEWFALSE | BININT | BININT1 | BININT2 | LONG1 | LONG4 | INT | LONG | BINFLOAT | FLOAT => {
                self.number(code)
            }
            BINUNICODE | SHORT_BINUNICODE | BINUNICODE8 | UNICODE | BINSTRING | SHORT_BINSTRING | STRING | BINBYTES
            | SHORT_BINBYTES | BINBYTES8 | BYTEARRAY8 => self.text(code),
            EMPTY_TUPLE | TUPLE1 | TUPLE2 | TUPLE3 | TUPLE | EMPTY_LIST | LIST | APPEND | APPENDS | EMPTY_DICT
            | DICT | SETITEM | SETITEMS | EMPTY_SET | ADDITEMS | FROZENSET => self.container(code),
            BINPUT | LONG_BINPUT | PUT | MEMOIZE | BINGET | LONG_BINGET | GET => self.memo_op(code),
            GLOBAL | STACK_GLOBAL | INST | OBJ | REDUCE | NEWOBJ | NEWOBJ_EX | BUILD | BINPERSID | PERSID => {
                self.call_op(code)
            }
            EXT1 | EXT2 | EXT4 => Err(Error::UnsafePickle(format!(
                "pickle uses the copyreg extension registry (opcode {} at byte {}), which names \
                 globals indirectly; refused",
                op::name(code),
                self.op_pos
            ))),
            NEXT_BUFFER => Err(self.err("out-of-band buffers are not supported")),
            READONLY_BUFFER => self.top().map(drop),
            _ => Err(self.unknown_opcode()),
        }
    }

    // ---- messages ---------------------------------------------------------------------------

    fn err(&self, msg: impl std::fmt::Display) -> Error {
        Error::InvalidCheckpoint(format!("pickle: {} (opcode {} at byte {})", msg, op::name(self.op), self.op_pos))
    }

    fn unknown_opcode(&self) -> Error {
        Error::InvalidCheckpoint(format!("pickle: unknown opcode 0x{:02x} at byte {}", self.op, self.op_pos))
    }

    fn over_budget(&self, e: Exceeded) -> Error {
        self.err(format_args!(
            "implausibly large object graph: this {}-byte pickle expands to more than the {} bytes \
             of parser memory allowed for it (a real state dict needs about 10 bytes per pickle byte), \
             so the file is corrupt or built to exhaust memory (a pickle amplification bomb); \
             re-save the checkpoint with torch.save(model.state_dict(), ...) or convert a \
             .safetensors copy of it",
            self.data.len(),
            e.limit
        ))
    }

    // ---- budget -----------------------------------------------------------------------------

    fn charge(&mut self, bytes: usize) -> Result<()> {
        self.budget.charge(bytes).map_err(|e| self.over_budget(e))
    }

    fn charge_n(&mut self, n: usize, each: usize) -> Result<()> {
        self.budget.charge_n(n, each).map_err(|e| self.over_budget(e))
    }

    /// Entries, items and index slots for `n` dict pairs.
    fn charge_pairs(&mut self, n: usize) -> Result<()> {
        self.charge_n(n, cost::PAIR + 2 * cost::MAP_ENTRY)
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

    /// A 4-byte signed length (`BINSTRING`, `LONG4`), refused when negative.
    fn take_i32_len(&mut self) -> Result<&'a [u8]> {
        let n = self.u32()? as i32;
        if n < 0 {
            return Err(self.err("negative length"));
        }
        self.take_len(n as u64)
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

    fn take_utf8(&mut self, len: u64) -> Result<String> {
        let b = self.take_len(len)?;
        self.utf8(b)
    }

    fn utf8(&self, bytes: &[u8]) -> Result<String> {
        String::from_utf8(bytes.to_vec()).map_err(|_| self.err("string is not valid UTF-8"))
    }

    // ---- arena and stack --------------------------------------------------------------------

    /// Adds an object to the arena, charging its slot and its payload.
    fn new_obj(&mut self, o: Object) -> Result<ObjId> {
        let payload = match &o {
            Object::Str(s) => s.len(),
            Object::Bytes(b) | Object::BigInt(b) => b.len(),
            Object::Tuple(v) | Object::List(v) | Object::Set(v) => v.len().saturating_mul(cost::ITEM),
            Object::Dict(v) => v.len().saturating_mul(cost::PAIR),
            _ => 0,
        };
        self.charge(cost::OBJECT.saturating_add(payload))?;
        self.objects.push(o);
        Ok(self.objects.len() - 1)
    }

    fn push_id(&mut self, id: ObjId) -> Result<()> {
        self.stack.push(id);
        if self.stack.len() > self.stack_charged {
            self.charge(cost::STACK_SLOT)?;
            self.stack_charged = self.stack.len();
        }
        Ok(())
    }

    fn push(&mut self, o: Object) -> Result<()> {
        let id = self.new_obj(o)?;
        self.push_id(id)
    }

    fn push_mark(&mut self) -> Result<()> {
        self.marks.push(self.stack.len());
        if self.marks.len() > self.marks_charged {
            self.charge(cost::STACK_SLOT)?;
            self.marks_charged = self.marks.len();
        }
        Ok(())
    }

    /// Start of the current frame (items above the innermost MARK).
    fn frame_start(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self) -> Result<ObjId> {
        if self.stack.len() <= self.frame_start() {
            return Err(self.err("stack underflow"));
        }
        self.stack.pop().ok_or_else(|| self.err("stack underflow"))
    }

    fn top(&self) -> Result<ObjId> {
        match self.stack.last() {
            Some(&id) if self.stack.len() > self.frame_start() => Ok(id),
            _ => Err(self.err("stack underflow")),
        }
    }

    /// Pop everything above the innermost MARK, and the MARK.
    fn pop_mark(&mut self) -> Result<Vec<ObjId>> {
        let m = self.marks.pop().ok_or_else(|| self.err("no MARK on the stack"))?;
        Ok(self.stack.split_off(m))
    }

    // ---- opcode groups ----------------------------------------------------------------------

    fn control(&mut self, code: u8) -> Result<()> {
        match code {
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
                    return Err(self.err(format_args!("frame length {n} exceeds the {left} bytes left in the stream")));
                }
            }
            MARK => self.push_mark()?,
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
                self.push_id(t)?;
            }
            _ => return Err(self.unknown_opcode()),
        }
        Ok(())
    }

    fn number(&mut self, code: u8) -> Result<()> {
        let o = match code {
            NONE => Object::None,
            NEWTRUE => Object::Bool(true),
            NEWFALSE => Object::Bool(false),
            BININT => Object::Int(self.u32()? as i32 as i64),
            BININT1 => Object::Int(self.u8()? as i64),
            BININT2 => Object::Int(self.u16()? as i64),
            LONG1 => {
                let n = self.u8()? as u64;
                text::long_from_le(self.take_len(n)?)
            }
            LONG4 => text::long_from_le(self.take_i32_len()?),
            INT | LONG => {
                let s = self.line_str()?;
                text::parse_int(s).map_err(|m| self.err(m))?
            }
            BINFLOAT => Object::Float(f64::from_be_bytes(self.take_array()?)),
            FLOAT => {
                let s = self.line_str()?;
                let v =
                    s.trim().parse::<f64>().map_err(|_| self.err(format_args!("bad float \"{}\"", printable(s))))?;
                Object::Float(v)
            }
            _ => return Err(self.unknown_opcode()),
        };
        self.push(o)
    }

    fn text(&mut self, code: u8) -> Result<()> {
        let o = match code {
            BINUNICODE => {
                let n = self.u32()? as u64;
                Object::Str(self.take_utf8(n)?)
            }
            SHORT_BINUNICODE => {
                let n = self.u8()? as u64;
                Object::Str(self.take_utf8(n)?)
            }
            BINUNICODE8 => {
                let n = self.u64()?;
                Object::Str(self.take_utf8(n)?)
            }
            UNICODE => {
                let l = self.line()?;
                Object::Str(text::parse_unicode(l).map_err(|m| self.err(m))?)
            }
            // Python 2 `str`: torch's loader decodes these as text; keep UTF-8 as str, anything
            // else as bytes.
            BINSTRING | SHORT_BINSTRING | STRING => {
                let raw = match code {
                    BINSTRING => self.take_i32_len()?.to_vec(),
                    SHORT_BINSTRING => {
                        let n = self.u8()? as u64;
                        self.take_len(n)?.to_vec()
                    }
                    _ => {
                        let l = self.line()?;
                        text::parse_string(l).map_err(|m| self.err(m))?
                    }
                };
                match String::from_utf8(raw) {
                    Ok(s) => Object::Str(s),
                    Err(e) => Object::Bytes(e.into_bytes()),
                }
            }
            BINBYTES => {
                let n = self.u32()? as u64;
                Object::Bytes(self.take_len(n)?.to_vec())
            }
            SHORT_BINBYTES => {
                let n = self.u8()? as u64;
                Object::Bytes(self.take_len(n)?.to_vec())
            }
            BINBYTES8 | BYTEARRAY8 => {
                let n = self.u64()?;
                Object::Bytes(self.take_len(n)?.to_vec())
            }
            _ => return Err(self.unknown_opcode()),
        };
        self.push(o)
    }

    fn container(&mut self, code: u8) -> Result<()> {
        match code {
            EMPTY_TUPLE => self.push(Object::Tuple(Vec::new())),
            TUPLE1 | TUPLE2 | TUPLE3 => {
                let n = (code - TUPLE1 + 1) as usize;
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
                self.extend_seq(l, vec![v], false)
            }
            APPENDS => {
                let items = self.pop_mark()?;
                let l = self.top()?;
                self.extend_seq(l, items, false)
            }
            EMPTY_DICT => self.push(Object::Dict(Vec::new())),
            DICT => {
                let items = self.pop_mark()?;
                let d = self.new_dict(&items)?;
                self.push_id(d)
            }
            SETITEM => {
                let v = self.pop()?;
                let k = self.pop()?;
                let d = self.top()?;
                self.set_items(d, &[k, v])
            }
            SETITEMS => {
                let items = self.pop_mark()?;
                let d = self.top()?;
                self.set_items(d, &items)
            }
            EMPTY_SET => self.push(Object::Set(Vec::new())),
            ADDITEMS => {
                let items = self.pop_mark()?;
                let s = self.top()?;
                self.extend_seq(s, items, true)
            }
            FROZENSET => {
                let items = self.pop_mark()?;
                self.push(Object::Set(items))
            }
            _ => Err(self.unknown_opcode()),
        }
    }

    fn memo_op(&mut self, code: u8) -> Result<()> {
        match code {
            BINPUT => {
                let i = self.u8()? as u64;
                self.memo_put(i)
            }
            LONG_BINPUT => {
                let i = self.u32()? as u64;
                self.memo_put(i)
            }
            PUT => {
                let i = self.memo_index_line()?;
                self.memo_put(i)
            }
            MEMOIZE => {
                let i = self.memo.len() as u64;
                self.memo_put(i)
            }
            BINGET => {
                let i = self.u8()? as u64;
                self.memo_get(i)
            }
            LONG_BINGET => {
                let i = self.u32()? as u64;
                self.memo_get(i)
            }
            GET => {
                let i = self.memo_index_line()?;
                self.memo_get(i)
            }
            _ => Err(self.unknown_opcode()),
        }
    }

    /// Globals and calls: references only; nothing is imported or called.
    fn call_op(&mut self, code: u8) -> Result<()> {
        match code {
            GLOBAL => {
                let module = String::from_utf8_lossy(self.line()?);
                let name = String::from_utf8_lossy(self.line()?);
                let id = self.global(&module, &name)?;
                self.push_id(id)
            }
            STACK_GLOBAL => {
                let name = self.pop()?;
                let module = self.pop()?;
                let (Object::Str(m), Object::Str(n)) = (&self.objects[module], &self.objects[name]) else {
                    return Err(self.err("STACK_GLOBAL needs two strings"));
                };
                let g = Global::resolve(m, n)?;
                let id = self.new_obj(Object::Global(g))?;
                self.push_id(id)
            }
            INST => {
                let module = String::from_utf8_lossy(self.line()?).into_owned();
                let name = String::from_utf8_lossy(self.line()?).into_owned();
                let func = self.global(&module, &name)?;
                let items = self.pop_mark()?;
                let args = self.new_obj(Object::Tuple(items))?;
                let r = self.call(func, args)?;
                self.push_id(r)
            }
            OBJ => {
                let items = self.pop_mark()?;
                let Some((&func, rest)) = items.split_first() else {
                    return Err(self.err("OBJ without a class"));
                };
                let args = self.new_obj(Object::Tuple(rest.to_vec()))?;
                let r = self.call(func, args)?;
                self.push_id(r)
            }
            REDUCE | NEWOBJ => {
                let args = self.pop()?;
                let func = self.pop()?;
                let r = self.call(func, args)?;
                self.push_id(r)
            }
            NEWOBJ_EX => {
                let kwargs = self.pop()?;
                let args = self.pop()?;
                let func = self.pop()?;
                if !matches!(&self.objects[kwargs], Object::Dict(v) if v.is_empty()) {
                    return Err(self.err("NEWOBJ_EX with keyword arguments is not supported"));
                }
                let r = self.call(func, args)?;
                self.push_id(r)
            }
            BUILD => {
                let state = self.pop()?;
                let target = self.top()?;
                self.build(target, state)
            }
            BINPERSID => {
                let pid = self.pop()?;
                self.push(Object::PersistentId(pid))
            }
            PERSID => {
                let l = self.line()?;
                let s = self.utf8(l)?;
                let pid = self.new_obj(Object::Str(s))?;
                self.push(Object::PersistentId(pid))
            }
            _ => Err(self.unknown_opcode()),
        }
    }

    // ---- memo -------------------------------------------------------------------------------

    fn memo_index_line(&mut self) -> Result<u64> {
        let s = self.line_str()?;
        s.parse::<u64>().map_err(|_| self.err("bad memo index"))
    }

    fn memo_get(&mut self, idx: u64) -> Result<()> {
        let id =
            self.memo.get(&idx).copied().ok_or_else(|| self.err(format_args!("memo index {idx} was never stored")))?;
        self.push_id(id)
    }

    fn memo_put(&mut self, idx: u64) -> Result<()> {
        let top = self.top()?;
        if !self.memo.contains_key(&idx) {
            self.charge(cost::MAP_ENTRY)?;
        }
        self.memo.insert(idx, top);
        Ok(())
    }

    // ---- containers -------------------------------------------------------------------------

    fn set_items(&mut self, dict: ObjId, pairs: &[ObjId]) -> Result<()> {
        if !pairs.len().is_multiple_of(2) {
            return Err(self.err("odd number of items for a dict"));
        }
        if !matches!(self.objects[dict], Object::Dict(_)) {
            return Err(self.err(format_args!("cannot set items on a {}", self.objects[dict].kind())));
        }
        self.charge_pairs(pairs.len() / 2)?;
        self.insert_pairs(dict, pairs);
        Ok(())
    }

    /// Inserts already charged key/value pairs into `dict` (which must be a dict).
    fn insert_pairs(&mut self, dict: ObjId, pairs: &[ObjId]) {
        for kv in pairs.chunks_exact(2) {
            let (k, v) = (kv[0], kv[1]);
            let Object::Dict(items) = &self.objects[dict] else { return };
            let slot = self.index.slot(&self.objects, dict, items, k);
            let Object::Dict(items) = &mut self.objects[dict] else { return };
            match slot {
                Some(Slot::Existing(i)) => items[i].1 = v,
                Some(Slot::New) | None => items.push((k, v)),
            }
        }
    }

    fn new_dict(&mut self, pairs: &[ObjId]) -> Result<ObjId> {
        let d = self.new_obj(Object::Dict(Vec::new()))?;
        self.set_items(d, pairs)?;
        Ok(d)
    }

    fn extend_seq(&mut self, target: ObjId, items: Vec<ObjId>, want_set: bool) -> Result<()> {
        match &self.objects[target] {
            Object::List(_) if !want_set => {}
            Object::Set(_) if want_set => {}
            other => {
                let kind = other.kind();
                return Err(self.err(format_args!("cannot add items to a {kind}")));
            }
        }
        self.charge_n(items.len(), cost::ITEM)?;
        if let Object::List(v) | Object::Set(v) = &mut self.objects[target] {
            v.extend(items);
        }
        Ok(())
    }

    // ---- calls ------------------------------------------------------------------------------

    /// `func(*args)` where `func` must be a (whitelisted) global and `args` a tuple.
    fn call(&mut self, func: ObjId, args: ObjId) -> Result<ObjId> {
        let Object::Global(g) = self.objects[func] else {
            return Err(self.err(format_args!("callable is a {}, not a whitelisted global", self.objects[func].kind())));
        };
        let (arg_count, first_arg) = match &self.objects[args] {
            Object::Tuple(v) => (v.len(), v.first().copied()),
            other => {
                let kind = other.kind();
                return Err(self.err(format_args!("call arguments are a {kind}, not a tuple")));
            }
        };
        if g != Global::OrderedDict {
            return self.new_obj(Object::Call { func: g, args, state: None });
        }
        // OrderedDict() or OrderedDict(iterable_of_pairs): build the dict directly.
        match (arg_count, first_arg) {
            (0, _) => self.new_dict(&[]),
            (1, Some(seq)) => self.ordered_dict_from(seq),
            _ => Err(self.err("OrderedDict() takes at most one argument")),
        }
    }

    /// `OrderedDict(seq)`: a new dict holding a copy of `seq`'s pairs. The copy is charged before
    /// it is made, so a memoized list of N pairs passed to K calls costs N·K against the budget.
    fn ordered_dict_from(&mut self, seq: ObjId) -> Result<ObjId> {
        let n_pairs = match &self.objects[seq] {
            Object::List(v) | Object::Tuple(v) => v.len(),
            Object::Dict(v) => v.len(),
            other => {
                let kind = other.kind();
                return Err(self.err(format_args!("OrderedDict() argument is a {kind}")));
            }
        };
        self.charge_pairs(n_pairs)?;
        let pairs = self.pairs_of(seq)?;
        let d = self.new_obj(Object::Dict(Vec::new()))?;
        self.insert_pairs(d, &pairs);
        Ok(d)
    }

    /// The flattened key/value ids of a dict, or of a list/tuple of 2-item tuples/lists.
    fn pairs_of(&self, seq: ObjId) -> Result<Vec<ObjId>> {
        match &self.objects[seq] {
            Object::Dict(v) => Ok(v.iter().flat_map(|&(k, v)| [k, v]).collect()),
            Object::List(v) | Object::Tuple(v) => {
                let mut pairs = Vec::with_capacity(v.len() * 2);
                for &p in v {
                    match &self.objects[p] {
                        Object::Tuple(kv) | Object::List(kv) if kv.len() == 2 => pairs.extend_from_slice(kv),
                        _ => return Err(self.err("OrderedDict() item is not a pair")),
                    }
                }
                Ok(pairs)
            }
            other => Err(self.err(format_args!("OrderedDict() argument is a {}", other.kind()))),
        }
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
        self.new_obj(Object::Global(g))
    }
}
