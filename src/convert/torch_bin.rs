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

/// Overlapping views (stride 0, as from `expand`) can describe far more elements than their
/// storage holds; materialising them is allowed only up to this many extra bytes in total.
const MAX_EXPANSION_BYTES: u64 = 1 << 30;

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
        Error::InvalidCheckpoint(m) => Error::InvalidCheckpoint(format!("{}: {m}", path.display())),
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
                "zip archive has no <prefix>/data.pkl record, so it was not written by torch.save".into(),
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
fn read_entry<R: Read + Seek>(zip: &mut zip::ZipArchive<R>, name: &str, limit: u64, total_len: u64) -> Result<Vec<u8>> {
    let entry = zip.by_name(name).map_err(|e| zip_err(&format!("cannot open {name}"), e))?;
    let declared = entry.size();
    if declared > limit {
        return Err(Error::InvalidCheckpoint(format!("{name} is {declared} bytes, more than the {limit} allowed")));
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
    let want = (info.numel as u64)
        .checked_mul(es)
        .ok_or_else(|| Error::InvalidCheckpoint(format!("storage `{}` size overflows", info.key)))?;
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
    buf.try_reserve_exact(want.min(total_len) as usize)
        .map_err(|_| Error::OutOfMemory(format!("cannot allocate {want} bytes for storage {entry_name}")))?;
    // Reading one byte past the expected end lets the zip reader reach EOF and verify the CRC.
    entry.take(want + 1).read_to_end(&mut buf).map_err(|e| {
        Error::InvalidCheckpoint(format!("cannot read storage record {entry_name} (used by tensor `{tensor}`): {e}"))
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
    storages[storage].users += 1;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Cursor, Write};

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/torch");

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(Path::new(FIXTURES).join(name)).unwrap()
    }

    fn invalid(r: Result<Vec<(String, RawTensor)>>) -> String {
        match r {
            Err(Error::InvalidCheckpoint(m)) => m,
            Err(e) => panic!("expected InvalidCheckpoint, got {e:?}"),
            Ok(t) => panic!("expected InvalidCheckpoint, got {} tensors", t.len()),
        }
    }

    /// Every entry of a zip, in archive order.
    fn unzip(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut z = zip::ZipArchive::new(Cursor::new(bytes)).unwrap();
        (0..z.len())
            .map(|i| {
                let mut f = z.by_index(i).unwrap();
                let mut v = Vec::new();
                f.read_to_end(&mut v).unwrap();
                (f.name().to_owned(), v)
            })
            .collect()
    }

    fn make_zip(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        for (name, data) in entries {
            w.start_file(name.as_str(), opts).unwrap();
            w.write_all(data).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    /// state.bin with one entry (matched by suffix) replaced, or removed when `new` is None.
    fn state_with(suffix: &str, new: Option<Vec<u8>>) -> Vec<u8> {
        let mut entries = unzip(&fixture("state.bin"));
        let i = entries.iter().position(|(n, _)| n.ends_with(suffix)).unwrap();
        match new {
            Some(d) => entries[i].1 = d,
            None => {
                entries.remove(i);
            }
        }
        make_zip(&entries)
    }

    fn to_f64(dtype: Dtype, data: &[u8]) -> Vec<f64> {
        let es = elem_size(dtype);
        data.chunks_exact(es)
            .map(|c| match dtype {
                Dtype::BF16 => half::bf16::from_le_bytes([c[0], c[1]]).to_f64(),
                Dtype::F16 => half::f16::from_le_bytes([c[0], c[1]]).to_f64(),
                Dtype::F32 => f32::from_le_bytes(c.try_into().unwrap()) as f64,
                Dtype::F64 => f64::from_le_bytes(c.try_into().unwrap()),
                Dtype::I64 => i64::from_le_bytes(c.try_into().unwrap()) as f64,
                Dtype::I32 => i32::from_le_bytes(c.try_into().unwrap()) as f64,
                Dtype::BOOL | Dtype::U8 => c[0] as f64,
                other => panic!("unexpected dtype {other:?}"),
            })
            .collect()
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn check_against_expected(tensors: &[(String, RawTensor)]) {
        let expected: serde_json::Value = serde_json::from_slice(&fixture("expected.json")).unwrap();
        let expected = expected["tensors"].as_array().unwrap();
        let names: Vec<&str> = tensors.iter().map(|(n, _)| n.as_str()).collect();
        let want_names: Vec<&str> = expected.iter().map(|e| e["name"].as_str().unwrap()).collect();
        assert_eq!(names, want_names, "names and order");
        for ((name, t), e) in tensors.iter().zip(expected) {
            assert_eq!(format!("{:?}", t.dtype), e["dtype"].as_str().unwrap(), "{name} dtype");
            let shape: Vec<usize> =
                e["shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
            assert_eq!(t.shape, shape, "{name} shape");
            assert_eq!(t.data.len(), t.numel() * elem_size(t.dtype), "{name} byte length");
            assert_eq!(hex(&t.data), e["data_hex"].as_str().unwrap(), "{name} bytes");
            let values: Vec<f64> = e["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            assert_eq!(to_f64(t.dtype, &t.data), values, "{name} values");
        }
    }

    #[test]
    fn reads_state_bin_exactly() {
        let from_path = read_pytorch_bin(&Path::new(FIXTURES).join("state.bin")).unwrap();
        check_against_expected(&from_path);
        let from_bytes = read_pytorch_bin_bytes(&fixture("state.bin")).unwrap();
        check_against_expected(&from_bytes);
        // Spot checks of the cases the fixture exercises.
        let get = |n: &str| &from_path.iter().find(|(k, _)| k == n).unwrap().1;
        assert_eq!(get("transposed").shape, vec![4, 3]);
        assert_eq!(get("col_slice").shape, vec![3, 2]);
        assert_eq!(get("scalar").shape, Vec::<usize>::new());
        assert_eq!(get("scalar").data, 2.5f32.to_le_bytes());
        assert_eq!(get("empty").shape, vec![0, 3]);
        assert!(get("empty").data.is_empty());
        assert_eq!(get("tied.a").data, get("tied.b").data);
        assert_eq!(get("tied.a").data, get("tied.c").data);
        assert_eq!(get("tied.row1").data, get("tied.a").data[8..]);
    }

    #[test]
    fn other_prefix_and_deflated_records() {
        // torch names the top directory after the file; any single directory works, and
        // compressed records are read too.
        let entries: Vec<(String, Vec<u8>)> = unzip(&fixture("state.bin"))
            .into_iter()
            .map(|(n, d)| (n.replacen("state/", "pytorch_model/", 1), d))
            .collect();
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        for (name, data) in &entries {
            w.start_file(name.as_str(), opts).unwrap();
            w.write_all(data).unwrap();
        }
        let bytes = w.finish().unwrap().into_inner();
        check_against_expected(&read_pytorch_bin_bytes(&bytes).unwrap());
        // No byteorder record (older torch): little-endian is assumed.
        check_against_expected(&read_pytorch_bin_bytes(&state_with("/byteorder", None)).unwrap());
    }

    #[test]
    fn evil_pickle_is_refused_and_not_executed() {
        let marker = Path::new("/tmp/blockffn_pwned");
        let _ = std::fs::remove_file(marker);
        let path = Path::new(FIXTURES).join("evil.bin");
        for r in [read_pytorch_bin(&path), read_pytorch_bin_bytes(&fixture("evil.bin"))] {
            match r {
                Err(Error::UnsafePickle(m)) => {
                    assert!(m.contains("forbidden global `os.system`"), "{m}")
                }
                other => panic!("expected UnsafePickle, got {other:?}"),
            }
        }
        assert!(!marker.exists(), "the evil pickle's command ran");
    }

    #[test]
    fn truncated_files_error_without_panicking() {
        let bytes = fixture("state.bin");
        let entries = unzip(&bytes);
        // Cut points: every 97 bytes, plus inside data.pkl and inside a storage record.
        let find = |needle: &[u8]| bytes.windows(needle.len()).position(|w| w == needle).unwrap();
        let pkl_at = find(b"\x80\x02ccollections");
        let storage_name = b"state/data/5";
        let storage_at = find(storage_name) + storage_name.len();
        let mut cuts: Vec<usize> = (0..bytes.len()).step_by(97).collect();
        cuts.extend([0, 1, 3, 4, 30, pkl_at + 1, pkl_at + 200, pkl_at + 1000]);
        cuts.extend([storage_at + 30, storage_at + 70, bytes.len() - 1, bytes.len() - 22]);
        for cut in cuts {
            match read_pytorch_bin_bytes(&bytes[..cut]) {
                Err(Error::InvalidCheckpoint(_)) => {}
                other => panic!("cut at {cut}: expected InvalidCheckpoint, got {other:?}"),
            }
        }
        // Truncated file on disk: Io or InvalidCheckpoint, never a panic.
        let dir = std::env::temp_dir().join(format!("blockffn_torch_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("cut.bin");
        std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
        let r = read_pytorch_bin(&p);
        assert!(matches!(r, Err(Error::InvalidCheckpoint(_) | Error::Io { .. })), "{r:?}");
        std::fs::remove_dir_all(&dir).unwrap();

        // Well-formed zips whose data.pkl is cut short.
        let pkl = &entries.iter().find(|(n, _)| n.ends_with("data.pkl")).unwrap().1;
        for cut in [0, 1, 2, 33, 100, pkl.len() / 2, pkl.len() - 1] {
            let m = invalid(read_pytorch_bin_bytes(&state_with("data.pkl", Some(pkl[..cut].to_vec()))));
            assert!(m.contains("data.pkl") && m.contains("pickle"), "cut {cut}: {m}");
        }
        // ... and whose storage record is cut short.
        let m = invalid(read_pytorch_bin_bytes(&state_with("data/5", Some(vec![0u8; 10]))));
        assert!(m.contains("state/data/5") && m.contains("`transposed`"), "{m}");
        // A storage record missing altogether.
        let m = invalid(read_pytorch_bin_bytes(&state_with("data/0", None)));
        assert!(m.contains("missing") && m.contains("model.embed.weight"), "{m}");
    }

    #[test]
    fn corrupt_storage_bytes_fail_the_crc() {
        let mut bytes = fixture("state.bin");
        let name = b"state/data/0";
        let at = bytes.windows(name.len()).position(|w| w == name).unwrap() + name.len();
        // The local header's extra field pads data to 64 bytes; find the record's first data byte
        // by its known value (bf16 -0.625 = 0xbf20, little-endian 20 bf).
        let data_at = at + bytes[at..].windows(2).position(|w| w == [0x20, 0xbf]).unwrap();
        bytes[data_at] ^= 0x01;
        let m = invalid(read_pytorch_bin_bytes(&bytes));
        assert!(m.contains("state/data/0"), "{m}");
    }

    #[test]
    fn legacy_and_foreign_formats() {
        let legacy = b"\x80\x02\x8a\x0alZ\xfc\x9cF\xf9 j\xa8P\x19.\x80\x02M\xe9\x03.";
        let m = invalid(read_pytorch_bin_bytes(legacy));
        assert!(m.contains("legacy PyTorch format is not supported"), "{m}");
        assert!(m.contains("_use_new_zipfile_serialization=True"), "{m}");
        let mut tar = vec![0u8; 600];
        tar[257..262].copy_from_slice(b"ustar");
        assert!(invalid(read_pytorch_bin_bytes(&tar)).contains("legacy"));
        assert!(invalid(read_pytorch_bin_bytes(b"")).contains("empty"));
        assert!(invalid(read_pytorch_bin_bytes(b"hello world")).contains("not a PyTorch zip"));
        let st = b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":1}        ";
        assert!(invalid(read_pytorch_bin_bytes(st)).contains("safetensors"));
        // A zip that torch did not write.
        let z = make_zip(&[("readme.txt".into(), b"hi".to_vec())]);
        assert!(invalid(read_pytorch_bin_bytes(&z)).contains("no <prefix>/data.pkl"));
        // Missing file: Io.
        let r = read_pytorch_bin(Path::new("/nonexistent/blockffn/pytorch_model.bin"));
        assert!(matches!(r, Err(Error::Io { .. })), "{r:?}");
    }

    #[test]
    fn big_endian_is_refused() {
        let m = invalid(read_pytorch_bin_bytes(&state_with("/byteorder", Some(b"big".to_vec()))));
        assert!(m.contains("big-endian"), "{m}");
    }

    // ---- hand-made pickles --------------------------------------------------------------------

    fn unicode(out: &mut Vec<u8>, s: &str) {
        out.push(b'X');
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }

    fn int(out: &mut Vec<u8>, v: i64) {
        out.push(b'J');
        out.extend_from_slice(&(v as i32).to_le_bytes());
    }

    fn int_tuple(out: &mut Vec<u8>, v: &[i64]) {
        out.push(b'(');
        for &x in v {
            int(out, x);
        }
        out.push(b't');
    }

    struct T<'a> {
        name: &'a str,
        storage_type: &'a str,
        key: &'a str,
        numel: i64,
        offset: i64,
        size: &'a [i64],
        stride: &'a [i64],
    }

    fn tensor_pickle(ts: &[T]) -> Vec<u8> {
        let mut o = b"\x80\x02ccollections\nOrderedDict\n)R(".to_vec();
        for t in ts {
            unicode(&mut o, t.name);
            o.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n(");
            o.push(b'(');
            unicode(&mut o, "storage");
            o.extend_from_slice(format!("ctorch\n{}\n", t.storage_type).as_bytes());
            unicode(&mut o, t.key);
            unicode(&mut o, "cpu");
            int(&mut o, t.numel);
            o.extend_from_slice(b"tQ");
            int(&mut o, t.offset);
            int_tuple(&mut o, t.size);
            int_tuple(&mut o, t.stride);
            o.extend_from_slice(b"\x89ccollections\nOrderedDict\n)RtR");
        }
        o.extend_from_slice(b"u.");
        o
    }

    fn archive(pkl: Vec<u8>, storages: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut e = vec![("archive/data.pkl".to_string(), pkl), ("archive/byteorder".to_string(), b"little".to_vec())];
        for (k, d) in storages {
            e.push((format!("archive/data/{k}"), d.clone()));
        }
        e.push(("archive/version".to_string(), b"3\n".to_vec()));
        make_zip(&e)
    }

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn hand_made_views_gather_correctly() {
        let data: Vec<f32> = (0..24).map(|i| i as f32).collect();
        let t = |name, offset, size, stride| T {
            name,
            storage_type: "FloatStorage",
            key: "0",
            numel: 24,
            offset,
            size,
            stride,
        };
        let pkl = tensor_pickle(&[
            // [2,3,4] permuted to [4,3,2] (strides 1,4,12)
            t("perm", 0, &[4, 3, 2], &[1, 4, 12]),
            // every other element starting at 1
            t("step", 1, &[12], &[2]),
            // broadcast (stride 0) rows
            t("bcast", 5, &[3, 2], &[0, 1]),
            // size-1 dim with a silly stride
            t("one", 23, &[1, 1], &[1_000_000, 7]),
        ]);
        let got = read_pytorch_bin_bytes(&archive(pkl, &[("0", f32_bytes(&data))])).unwrap();
        let vals = |i: usize| to_f64(Dtype::F32, &got[i].1.data);
        let mut perm = Vec::new();
        for a in 0..4 {
            for b in 0..3 {
                for c in 0..2 {
                    perm.push((a + 4 * b + 12 * c) as f64);
                }
            }
        }
        assert_eq!(vals(0), perm);
        assert_eq!(vals(1), (0..12).map(|i| (1 + 2 * i) as f64).collect::<Vec<_>>());
        assert_eq!(vals(2), vec![5.0, 6.0, 5.0, 6.0, 5.0, 6.0]);
        assert_eq!(vals(3), vec![23.0]);
        assert_eq!(got[3].1.shape, vec![1, 1]);

        // A broadcast view that would blow up memory is refused.
        let pkl = tensor_pickle(&[t("huge", 0, &[1 << 20, 1 << 10], &[0, 0])]);
        let m = invalid(read_pytorch_bin_bytes(&archive(pkl, &[("0", f32_bytes(&data))])));
        assert!(m.contains("`huge`") && m.contains("overlapping view"), "{m}");
    }

    #[test]
    fn out_of_bounds_views_name_the_tensor() {
        let st = f32_bytes(&[0.0; 8]);
        let cases: &[(i64, &[i64], &[i64])] = &[
            (0, &[9], &[1]),       // too many elements
            (7, &[2], &[1]),       // offset pushes past the end
            (0, &[3, 3], &[3, 1]), // 2-D view past the end
            (0, &[2, 2], &[7, 1]), // stride past the end
            (9, &[0], &[1]),       // empty but offset past the end
            (-1, &[1], &[1]),      // negative offset
            (0, &[-2], &[1]),      // negative size
            (0, &[2], &[-1]),      // negative stride
        ];
        for (off, size, stride) in cases {
            let pkl = tensor_pickle(&[T {
                name: "w.bad",
                storage_type: "FloatStorage",
                key: "0",
                numel: 8,
                offset: *off,
                size,
                stride,
            }]);
            let r = read_pytorch_bin_bytes(&archive(pkl, &[("0", st.clone())]));
            assert!(r.is_err(), "{off} {size:?} {stride:?} accepted");
            let m = invalid(r);
            assert!(m.contains("`w.bad`"), "{off} {size:?} {stride:?}: {m}");
        }
        // size and stride of different rank
        let pkl = tensor_pickle(&[T {
            name: "w.rank",
            storage_type: "FloatStorage",
            key: "0",
            numel: 8,
            offset: 0,
            size: &[2, 2],
            stride: &[1],
        }]);
        let m = invalid(read_pytorch_bin_bytes(&archive(pkl, &[("0", st.clone())])));
        assert!(m.contains("`w.rank`") && m.contains("dims"), "{m}");
        // Storage record length disagreeing with the pickle's numel.
        let pkl = tensor_pickle(&[T {
            name: "w.len",
            storage_type: "FloatStorage",
            key: "0",
            numel: 6,
            offset: 0,
            size: &[6],
            stride: &[1],
        }]);
        let m = invalid(read_pytorch_bin_bytes(&archive(pkl, &[("0", st.clone())])));
        assert!(m.contains("`w.len`") && m.contains("32 bytes"), "{m}");
        // One storage used with two different dtypes.
        let a = T { name: "a", storage_type: "FloatStorage", key: "0", numel: 8, offset: 0, size: &[8], stride: &[1] };
        let b = T { name: "b", storage_type: "HalfStorage", key: "0", numel: 8, offset: 0, size: &[8], stride: &[1] };
        let m = invalid(read_pytorch_bin_bytes(&archive(tensor_pickle(&[a, b]), &[("0", st)])));
        assert!(m.contains("`b`") && m.contains("storage `0`"), "{m}");
    }

    #[test]
    fn non_tensor_values_name_the_key() {
        // {'config': 3}
        let mut o = b"\x80\x02}(".to_vec();
        unicode(&mut o, "config");
        int(&mut o, 3);
        o.extend_from_slice(b"u.");
        let m = invalid(read_pytorch_bin_bytes(&archive(o, &[])));
        assert!(m.contains("`config`") && m.contains("not a tensor"), "{m}");
        // A nested state dict {'model': {...}}
        let mut o = b"\x80\x02}(".to_vec();
        unicode(&mut o, "model");
        o.extend_from_slice(b"}u.");
        let m = invalid(read_pytorch_bin_bytes(&archive(o, &[])));
        assert!(m.contains("`model`"), "{m}");
        // A storage type that is not a storage (a dtype global)
        let mut o = b"\x80\x02}(".to_vec();
        unicode(&mut o, "x");
        o.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n((");
        unicode(&mut o, "storage");
        o.extend_from_slice(b"ctorch\nbfloat16\n");
        unicode(&mut o, "0");
        unicode(&mut o, "cpu");
        int(&mut o, 1);
        o.extend_from_slice(b"tQK\x00(K\x01t(K\x01ttRu.");
        let m = invalid(read_pytorch_bin_bytes(&archive(o, &[("0", vec![0, 0])])));
        assert!(m.contains("`x`") && m.contains("torch.bfloat16"), "{m}");
        // Non-string key, and a top level that is not a dict.
        let m = invalid(read_pytorch_bin_bytes(&archive(b"\x80\x02}(K\x01K\x02u.".to_vec(), &[])));
        assert!(m.contains("not a string"), "{m}");
        let m = invalid(read_pytorch_bin_bytes(&archive(b"\x80\x02]K\x01a.".to_vec(), &[])));
        assert!(m.contains("top-level object is list"), "{m}");
        // An empty dict is a valid (empty) checkpoint.
        assert!(read_pytorch_bin_bytes(&archive(b"\x80\x02}.".to_vec(), &[])).unwrap().is_empty());
    }

    #[test]
    fn mutated_archives_never_panic() {
        let pkl = unzip(&fixture("state.bin")).into_iter().find(|(n, _)| n.ends_with("data.pkl")).unwrap().1;
        let mut seed: u64 = 0x2545f4914f6cdd1d;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let entries = unzip(&fixture("state.bin"));
        for _ in 0..400 {
            let mut p = pkl.clone();
            for _ in 0..1 + rnd() % 3 {
                let i = (rnd() as usize) % p.len();
                p[i] = rnd() as u8;
            }
            let mut e = entries.clone();
            for (n, d) in e.iter_mut() {
                if n.ends_with("data.pkl") {
                    *d = p.clone();
                }
            }
            let r = read_pytorch_bin_bytes(&make_zip(&e));
            assert!(matches!(r, Ok(_) | Err(Error::InvalidCheckpoint(_) | Error::UnsafePickle(_))), "{r:?}");
        }
    }
}
