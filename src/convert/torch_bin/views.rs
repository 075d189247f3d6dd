//! The tensors a checkpoint's pickle describes: which storage each one views, at what offset,
//! size and stride, checked to stay inside the storage; and gathering a view into contiguous
//! row-major bytes.

use std::collections::HashMap;

use super::elem_size;
use crate::convert::pickle::{Global, ObjId, Object, Pickle};
use crate::convert::raw::Dtype;
use crate::{Error, Result};

/// Overlapping views (stride 0, as from `expand`) can describe far more elements than their
/// storage holds; materialising them is allowed only up to this many extra bytes in total.
pub(super) const MAX_EXPANSION_BYTES: u64 = 1 << 30;

/// A storage referenced from the pickle: `('storage', torch.XStorage, key, location, numel)`.
#[derive(Debug)]
pub(super) struct StorageInfo {
    pub key: String,
    pub dtype: Dtype,
    pub numel: usize,
}

impl StorageInfo {
    /// Size of the storage record in bytes (`None` on overflow).
    pub fn bytes(&self) -> Option<u64> {
        (self.numel as u64).checked_mul(elem_size(self.dtype) as u64)
    }
}

/// One tensor to materialise: a strided view into a storage.
#[derive(Debug)]
pub(super) struct TensorSpec {
    pub name: String,
    pub storage: usize,
    pub offset: usize,
    pub size: Vec<usize>,
    pub stride: Vec<usize>,
}

impl TensorSpec {
    pub fn numel(&self) -> usize {
        self.size.iter().product()
    }
}

/// Walk the pickle's top-level dict and describe every tensor (and the storages they use).
pub(super) fn collect_tensors(p: &Pickle) -> Result<(Vec<StorageInfo>, Vec<TensorSpec>)> {
    let root = p.root();
    let items = p.as_dict(root).ok_or_else(|| {
        Error::InvalidCheckpoint(format!(
            "the checkpoint's top-level object is {}, expected a dict of tensors",
            p.describe(root)
        ))
    })?;
    let mut storages: Vec<StorageInfo> = Vec::new();
    let mut by_key: HashMap<String, usize> = HashMap::new();
    let mut specs = Vec::with_capacity(items.len());
    let mut expansion: u64 = 0;
    for &(k, v) in items {
        let name = p.as_str(k).ok_or_else(|| {
            Error::InvalidCheckpoint(format!(
                "the checkpoint's dict has a key that is not a string ({})",
                p.describe(k)
            ))
        })?;
        let spec = tensor_spec(p, name, v, &mut storages, &mut by_key)?;
        let storage = &storages[spec.storage];
        let numel = spec.size.iter().product::<usize>() as u64;
        if numel > storage.numel as u64 {
            let extra = (numel - storage.numel as u64) * elem_size(storage.dtype) as u64;
            expansion = expansion.saturating_add(extra);
            if expansion > MAX_EXPANSION_BYTES {
                return Err(bad_tensor(
                    name,
                    format_args!(
                        "overlapping view of {numel} elements over a storage of {} would \
                         expand the checkpoint by more than {MAX_EXPANSION_BYTES} bytes",
                        storage.numel
                    ),
                ));
            }
        }
        specs.push(spec);
    }
    Ok((storages, specs))
}

pub(super) fn bad_tensor(name: &str, what: impl std::fmt::Display) -> Error {
    Error::InvalidCheckpoint(format!("tensor `{name}`: {what}"))
}

fn tensor_spec(
    p: &Pickle,
    name: &str,
    value: ObjId,
    storages: &mut Vec<StorageInfo>,
    by_key: &mut HashMap<String, usize>,
) -> Result<TensorSpec> {
    let not_tensor = || {
        Error::InvalidCheckpoint(format!(
            "value for key `{name}` is not a tensor (found {}); only a flat dict of tensors is \
             supported",
            p.describe(value)
        ))
    };
    // Unwrap one nn.Parameter: _rebuild_parameter[_with_state](tensor, requires_grad, hooks...).
    let mut cur = value;
    let args = loop {
        match p.get(cur) {
            Object::Call { func: Global::RebuildTensorV2, args, .. } => {
                break p.as_seq(*args).ok_or_else(not_tensor)?;
            }
            Object::Call { func: Global::RebuildParameter | Global::RebuildParameterWithState, args, .. }
                if cur == value =>
            {
                cur = *p.as_seq(*args).and_then(|a| a.first()).ok_or_else(not_tensor)?;
            }
            _ => return Err(not_tensor()),
        }
    };

    // _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, hooks[, metadata])
    if args.len() < 4 {
        return Err(bad_tensor(
            name,
            format_args!("_rebuild_tensor_v2 has {} arguments, expected at least 4", args.len()),
        ));
    }
    let storage = storage_ref(p, name, args[0], storages, by_key)?;
    let offset = non_negative(p, name, args[1], "storage offset")?;
    let size = int_tuple(p, name, args[2], "size")?;
    let stride = int_tuple(p, name, args[3], "stride")?;
    if size.len() != stride.len() {
        return Err(bad_tensor(name, format_args!("size has {} dims but stride has {}", size.len(), stride.len())));
    }
    let mut spec = TensorSpec { name: name.to_owned(), storage, offset, size, stride };
    check_bounds(&spec, &storages[storage])?;
    // A dim of size 1 never moves along its stride; zero it so later index arithmetic cannot
    // overflow on an arbitrary stride value there.
    for (s, st) in spec.size.iter().zip(spec.stride.iter_mut()) {
        if *s == 1 {
            *st = 0;
        }
    }
    Ok(spec)
}

fn non_negative(p: &Pickle, name: &str, id: ObjId, what: &str) -> Result<usize> {
    p.as_int(id)
        .and_then(|v| usize::try_from(v).ok())
        .ok_or_else(|| bad_tensor(name, format_args!("{what} is {}", p.describe(id))))
}

fn int_tuple(p: &Pickle, name: &str, id: ObjId, what: &str) -> Result<Vec<usize>> {
    let items = p.as_seq(id).ok_or_else(|| bad_tensor(name, format_args!("{what} is {}", p.describe(id))))?;
    items.iter().map(|&i| non_negative(p, name, i, what)).collect()
}

fn storage_ref(
    p: &Pickle,
    name: &str,
    id: ObjId,
    storages: &mut Vec<StorageInfo>,
    by_key: &mut HashMap<String, usize>,
) -> Result<usize> {
    let Object::PersistentId(pid) = p.get(id) else {
        return Err(bad_tensor(name, format_args!("storage is {}, expected a persistent storage id", p.describe(id))));
    };
    let bad = || {
        bad_tensor(
            name,
            format_args!(
                "storage id is {}, expected ('storage', torch.XStorage, key, location, numel)",
                p.describe(*pid)
            ),
        )
    };
    let t = p.as_seq(*pid).ok_or_else(bad)?;
    if t.len() != 5 || p.as_str(t[0]) != Some("storage") {
        return Err(bad());
    }
    let dtype = match p.get(t[1]) {
        Object::Global(Global::Storage(d)) => *d,
        _ => {
            return Err(bad_tensor(name, format_args!("storage type is {}, expected torch.XStorage", p.describe(t[1]))))
        }
    };
    let key = match p.get(t[2]) {
        Object::Str(s) if !s.is_empty() => s.clone(),
        Object::Int(i) => i.to_string(),
        _ => return Err(bad()),
    };
    let numel = non_negative(p, name, t[4], "storage element count")?;
    match by_key.get(&key) {
        Some(&i) => {
            let s = &storages[i];
            if s.dtype != dtype || s.numel != numel {
                return Err(bad_tensor(
                    name,
                    format_args!(
                        "storage `{key}` is used as {:?} x {} here but as {:?} x {} by an \
                         earlier tensor",
                        dtype, numel, s.dtype, s.numel
                    ),
                ));
            }
            Ok(i)
        }
        None => {
            storages.push(StorageInfo { key: key.clone(), dtype, numel });
            by_key.insert(key, storages.len() - 1);
            Ok(storages.len() - 1)
        }
    }
}

/// Every element the view can address must lie inside the storage.
fn check_bounds(spec: &TensorSpec, storage: &StorageInfo) -> Result<()> {
    let overflow = || bad_tensor(&spec.name, "size/stride arithmetic overflows");
    let mut numel: usize = 1;
    for &s in &spec.size {
        numel = numel.checked_mul(s).ok_or_else(overflow)?;
    }
    numel.checked_mul(elem_size(storage.dtype)).ok_or_else(overflow)?;
    if numel == 0 {
        if spec.offset > storage.numel {
            return Err(bad_tensor(
                &spec.name,
                format_args!(
                    "storage offset {} is past the end of storage `{}` ({} elements)",
                    spec.offset, storage.key, storage.numel
                ),
            ));
        }
        return Ok(());
    }
    let mut last = spec.offset;
    for (&s, &st) in spec.size.iter().zip(&spec.stride) {
        last = (s - 1).checked_mul(st).and_then(|d| last.checked_add(d)).ok_or_else(overflow)?;
    }
    if last >= storage.numel {
        return Err(bad_tensor(
            &spec.name,
            format_args!(
                "view (offset {}, size {:?}, stride {:?}) reaches element {last} but storage \
                 `{}` has only {} elements",
                spec.offset, spec.size, spec.stride, storage.key, storage.numel
            ),
        ));
    }
    Ok(())
}

fn is_contiguous(size: &[usize], stride: &[usize]) -> bool {
    let mut expect = 1usize;
    for (&s, &st) in size.iter().zip(stride).rev() {
        if s != 1 && st != expect {
            return false;
        }
        expect = expect.saturating_mul(s);
    }
    true
}

pub(super) fn covers_whole(spec: &TensorSpec, storage_numel: usize) -> bool {
    spec.size.iter().product::<usize>() == storage_numel && is_contiguous(&spec.size, &spec.stride)
}

/// Copy the strided view into contiguous row-major bytes (bounds were checked beforehand).
pub(super) fn gather(src: &[u8], es: usize, spec: &TensorSpec) -> Result<Vec<u8>> {
    let numel: usize = spec.size.iter().product();
    let nbytes = numel * es; // no overflow: checked in check_bounds
    let mut out = Vec::new();
    out.try_reserve_exact(nbytes)
        .map_err(|_| Error::OutOfMemory(format!("cannot allocate {nbytes} bytes for tensor `{}`", spec.name)))?;
    if numel == 0 {
        return Ok(out);
    }
    if is_contiguous(&spec.size, &spec.stride) {
        out.extend_from_slice(&src[spec.offset * es..(spec.offset + numel) * es]);
        return Ok(out);
    }
    // Copy runs along the innermost dim when it is dense, single elements otherwise.
    let nd = spec.size.len();
    let (run, outer) = if spec.stride[nd - 1] == 1 { (spec.size[nd - 1], nd - 1) } else { (1, nd) };
    let run_bytes = run * es;
    let mut idx = vec![0usize; outer];
    let mut base = spec.offset;
    loop {
        out.extend_from_slice(&src[base * es..base * es + run_bytes]);
        // Odometer increment over the outer dims.
        let mut d = outer;
        loop {
            if d == 0 {
                return Ok(out);
            }
            d -= 1;
            idx[d] += 1;
            base += spec.stride[d];
            if idx[d] < spec.size[d] {
                break;
            }
            base -= spec.stride[d] * spec.size[d];
            idx[d] = 0;
        }
    }
}
