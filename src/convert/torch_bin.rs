//! Reader for PyTorch zip checkpoints (`pytorch_model.bin`, as written by `torch.save`).
//!
//! Layout of the zip archive (the `<prefix>` directory name varies: `archive`, `pytorch_model`,
//! the file's stem, ...):
//!
//! * `<prefix>/data.pkl` — a pickle of the saved object, here an `OrderedDict` of name → tensor.
//!   It is parsed as data by [`super::pickle`], never executed.
//! * `<prefix>/byteorder` — `little` or `big` (absent in older files: little).
//! * `<prefix>/data/<key>` — the raw bytes of each storage, referenced from the pickle through
//!   persistent ids `('storage', torch.XStorage, key, location, numel)`.
//!
//! Each tensor is `torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, ...)`,
//! optionally wrapped in `_rebuild_parameter(tensor, requires_grad, hooks)`. The view is checked
//! to stay inside its storage and gathered into contiguous row-major bytes. Storages shared by
//! several tensors (tied weights, views) are read once and kept only until their last user.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::Path;

use super::pickle::{Global, ObjId, Object, Pickle};
use super::raw::{Dtype, RawTensor};
use crate::{Error, Result};

/// Largest `data.pkl` accepted (a state dict's pickle is a few hundred KiB even for big models).
const MAX_PICKLE_BYTES: u64 = 256 << 20;

const LEGACY_MSG: &str = "legacy PyTorch format is not supported; re-save with \
                          torch.save(..., _use_new_zipfile_serialization=True)";

/// Read a `torch.save` zip checkpoint from disk. Tensors come back in the saved dict's order.
pub fn read_pytorch_bin(path: &Path) -> Result<Vec<(String, RawTensor)>> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut head = [0u8; 512];
    let n = read_up_to(&mut file, &mut head).map_err(|e| Error::io(path, e))?;
    sniff(&head[..n], len).map_err(|e| in_file(e, path))?;
    file.rewind().map_err(|e| Error::io(path, e))?;
    read_archive(BufReader::new(file), len).map_err(|e| in_file(e, path))
}

/// Read a `torch.save` zip checkpoint held in memory.
pub fn read_pytorch_bin_bytes(bytes: &[u8]) -> Result<Vec<(String, RawTensor)>> {
    sniff(&bytes[..bytes.len().min(512)], bytes.len() as u64)?;
    read_archive(std::io::Cursor::new(bytes), bytes.len() as u64)
}

/// Bytes per element; every dtype a torch storage type maps to is a whole number of bytes.
fn elem_size(d: Dtype) -> usize {
    d.bitsize() / 8
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Prefix a format error with the file it came from.
fn in_file(e: Error, path: &Path) -> Error {
    match e {
        Error::InvalidCheckpoint(m) => {
            Error::InvalidCheckpoint(format!("{}: {m}", path.display()))
        }
        Error::UnsafePickle(m) => Error::UnsafePickle(format!("{}: {m}", path.display())),
        other => other,
    }
}

/// Recognise the container from its first bytes and explain anything that is not a torch zip.
fn sniff(head: &[u8], total_len: u64) -> Result<()> {
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        return Ok(());
    }
    if total_len == 0 {
        return Err(Error::InvalidCheckpoint("file is empty".into()));
    }
    // Legacy torch.save (before 1.6, or _use_new_zipfile_serialization=False) starts with a
    // pickled magic number (protocol 2: 0x80 0x02); the even older format is a tar archive.
    if head[0] == 0x80 || head.get(257..262) == Some(b"ustar".as_slice()) {
        return Err(Error::InvalidCheckpoint(LEGACY_MSG.into()));
    }
    let shown: Vec<String> = head.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let mut msg = format!(
        "not a PyTorch zip checkpoint (a torch.save file starts with \"PK\"; this one starts \
         with bytes {})",
        shown.join(" ")
    );
    if head.len() > 8 && head[8] == b'{' {
        msg.push_str("; it looks like a .safetensors file, which has its own reader");
    }
    Err(Error::InvalidCheckpoint(msg))
}

fn zip_err(what: &str, e: zip::result::ZipError) -> Error {
    Error::InvalidCheckpoint(format!("{what}: {e} (is the file truncated or corrupt?)"))
}

/// A storage referenced from the pickle: `('storage', torch.XStorage, key, location, numel)`.
#[derive(Debug)]
struct StorageInfo {
    key: String,
    dtype: Dtype,
    numel: usize,
    /// How many tensors still need it (drives when its bytes can be dropped).
    users: usize,
}

/// One tensor to materialise: a strided view into a storage.
#[derive(Debug)]
struct TensorSpec {
    name: String,
    storage: usize,
    offset: usize,
    size: Vec<usize>,
    stride: Vec<usize>,
}

fn read_archive<R: Read + Seek>(reader: R, total_len: u64) -> Result<Vec<(String, RawTensor)>> {
    let mut zip = zip::ZipArchive::new(reader).map_err(|e| zip_err("cannot open zip archive", e))?;

    // Locate `<prefix>/data.pkl`.
    let pkl_names: Vec<String> = zip
        .file_names()
        .filter(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
        .map(str::to_owned)
        .collect();
    let pkl_name = match pkl_names.as_slice() {
        [one] => one.clone(),
        [] => {
            return Err(Error::InvalidCheckpoint(
                "zip archive has no <prefix>/data.pkl record, so it was not written by torch.save"
                    .into(),
            ))
        }
        many => {
            return Err(Error::InvalidCheckpoint(format!(
                "zip archive holds several pickles ({}); expected exactly one <prefix>/data.pkl",
                many.join(", ")
            )))
        }
    };
    let prefix = pkl_name.strip_suffix("data.pkl").unwrap_or_default().to_owned();

    // Byte order (absent in files from older torch versions, which were little-endian).
    let byteorder_name = format!("{prefix}byteorder");
    if zip.index_for_name(&byteorder_name).is_some() {
        let order = read_entry(&mut zip, &byteorder_name, 64, total_len)?;
        match String::from_utf8_lossy(&order).trim() {
            "little" => {}
            "big" => {
                return Err(Error::InvalidCheckpoint(
                    "checkpoint was saved on a big-endian machine (byteorder = big), which is \
                     not supported; re-save it on a little-endian machine"
                        .into(),
                ))
            }
            other => {
                return Err(Error::InvalidCheckpoint(format!(
                    "{byteorder_name} says \"{}\", expected \"little\"",
                    other.escape_debug()
                )))
            }
        }
    }

    let pkl = read_entry(&mut zip, &pkl_name, MAX_PICKLE_BYTES, total_len)?;
    let pickle = Pickle::parse(&pkl).map_err(|e| match e {
        Error::InvalidCheckpoint(m) => Error::InvalidCheckpoint(format!("{pkl_name}: {m}")),
        Error::UnsafePickle(m) => Error::UnsafePickle(format!("{pkl_name}: {m}")),
        other => other,
    })?;
    drop(pkl);

    let (mut storages, specs) = collect_tensors(&pickle)?;

    // Materialise in dict order; each storage is read once and dropped after its last user.
    let mut loaded: HashMap<usize, Vec<u8>> = HashMap::new();
    let mut out = Vec::with_capacity(specs.len());
    for spec in specs {
        let info = &storages[spec.storage];
        let es = elem_size(info.dtype);
        let bytes = match loaded.remove(&spec.storage) {
            Some(b) => b,
            None => {
                let entry = format!("{prefix}data/{}", info.key);
                load_storage(&mut zip, &entry, info, total_len, &spec.name)?
            }
        };
        let info = &mut storages[spec.storage];
        info.users -= 1;
        let last_user = info.users == 0;
        let dtype = info.dtype;
        let data = if last_user && spec.offset == 0 && covers_whole(&spec, info.numel) {
            bytes // the tensor is exactly its storage: hand the buffer over without copying
        } else {
            let d = gather(&bytes, es, &spec)?;
            if !last_user {
                loaded.insert(spec.storage, bytes);
            }
            d
        };
        out.push((spec.name, RawTensor { dtype, shape: spec.size, data }));
    }
    Ok(out)
}

/// Read a whole zip entry of at most `limit` bytes, never trusting the header's size for the
/// allocation (a lying header cannot make us reserve more than the archive's length).
fn read_entry<R: Read + Seek>(
    zip: &mut zip::ZipArchive<R>,
    name: &str,
    limit: u64,
    total_len: u64,
) -> Result<Vec<u8>> {
    let entry = zip.by_name(name).map_err(|e| zip_err(&format!("cannot open {name}"), e))?;
    let declared = entry.size();
    if declared > limit {
        return Err(Error::InvalidCheckpoint(format!(
            "{name} is {declared} bytes, more than the {limit} allowed"
        )));
    }
    let mut buf = Vec::with_capacity(declared.min(total_len) as usize);
    entry
        .take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::InvalidCheckpoint(format!("cannot read {name}: {e} (truncated?)")))?;
    if buf.len() as u64 > limit {
        return Err(Error::InvalidCheckpoint(format!("{name} is more than {limit} bytes")));
    }
    Ok(buf)
}

/// Read one storage record and check that its length matches the pickle's element count.
fn load_storage<R: Read + Seek>(
    zip: &mut zip::ZipArchive<R>,
    entry_name: &str,
    info: &StorageInfo,
    total_len: u64,
    tensor: &str,
) -> Result<Vec<u8>> {
    let es = elem_size(info.dtype) as u64;
    let want = (info.numel as u64).checked_mul(es).ok_or_else(|| {
        Error::InvalidCheckpoint(format!("storage `{}` size overflows", info.key))
    })?;
    let entry = match zip.by_name(entry_name) {
        Ok(e) => e,
        Err(zip::result::ZipError::FileNotFound) => {
            return Err(Error::InvalidCheckpoint(format!(
                "storage record {entry_name} (used by tensor `{tensor}`) is missing from the \
                 archive"
            )))
        }
        Err(e) => return Err(zip_err(&format!("cannot open {entry_name}"), e)),
    };
    if entry.size() != want {
        return Err(Error::InvalidCheckpoint(format!(
            "storage record {entry_name} (used by tensor `{tensor}`) is {} bytes but the pickle \
             says {} elements of {es} bytes = {want} bytes",
            entry.size(),
            info.numel
        )));
    }
    let mut buf = Vec::new();
    buf.try_reserve_exact(want.min(total_len) as usize).map_err(|_| {
        Error::OutOfMemory(format!("cannot allocate {want} bytes for storage {entry_name}"))
    })?;
    // Reading one byte past the expected end lets the zip reader reach EOF and verify the CRC.
    entry.take(want + 1).read_to_end(&mut buf).map_err(|e| {
        Error::InvalidCheckpoint(format!(
            "cannot read storage record {entry_name} (used by tensor `{tensor}`): {e}"
        ))
    })?;
    if buf.len() as u64 != want {
        return Err(Error::InvalidCheckpoint(format!(
            "storage record {entry_name} (used by tensor `{tensor}`) holds {} bytes, expected \
             {want}",
            buf.len()
        )));
    }
    Ok(buf)
}

/// Walk the pickle's top-level dict and describe every tensor (and the storages they use).
fn collect_tensors(p: &Pickle) -> Result<(Vec<StorageInfo>, Vec<TensorSpec>)> {
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
    for &(k, v) in items {
        let name = p.as_str(k).ok_or_else(|| {
            Error::InvalidCheckpoint(format!(
                "the checkpoint's dict has a key that is not a string ({})",
                p.describe(k)
            ))
        })?;
        let spec = tensor_spec(p, name, v, &mut storages, &mut by_key)?;
        specs.push(spec);
    }
    Ok((storages, specs))
}

fn bad_tensor(name: &str, what: impl std::fmt::Display) -> Error {
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
            Object::Call {
                func: Global::RebuildParameter | Global::RebuildParameterWithState,
                args,
                ..
            } if cur == value => {
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
        return Err(bad_tensor(
            name,
            format_args!("size has {} dims but stride has {}", size.len(), stride.len()),
        ));
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
    storages[storage].users += 1;
    Ok(spec)
}

fn non_negative(p: &Pickle, name: &str, id: ObjId, what: &str) -> Result<usize> {
    p.as_int(id)
        .and_then(|v| usize::try_from(v).ok())
        .ok_or_else(|| bad_tensor(name, format_args!("{what} is {}", p.describe(id))))
}

fn int_tuple(p: &Pickle, name: &str, id: ObjId, what: &str) -> Result<Vec<usize>> {
    let items = p
        .as_seq(id)
        .ok_or_else(|| bad_tensor(name, format_args!("{what} is {}", p.describe(id))))?;
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
        return Err(bad_tensor(
            name,
            format_args!("storage is {}, expected a persistent storage id", p.describe(id)),
        ));
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
            return Err(bad_tensor(
                name,
                format_args!("storage type is {}, expected torch.XStorage", p.describe(t[1])),
            ))
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
            storages.push(StorageInfo { key: key.clone(), dtype, numel, users: 0 });
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

fn covers_whole(spec: &TensorSpec, storage_numel: usize) -> bool {
    spec.size.iter().product::<usize>() == storage_numel && is_contiguous(&spec.size, &spec.stride)
}

/// Copy the strided view into contiguous row-major bytes (bounds were checked beforehand).
fn gather(src: &[u8], es: usize, spec: &TensorSpec) -> Result<Vec<u8>> {
    let numel: usize = spec.size.iter().product();
    let nbytes = numel * es; // no overflow: checked in check_bounds
    let mut out = Vec::new();
    out.try_reserve_exact(nbytes).map_err(|_| {
        Error::OutOfMemory(format!("cannot allocate {nbytes} bytes for tensor `{}`", spec.name))
    })?;
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
