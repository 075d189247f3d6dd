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
//! to stay inside its storage and gathered into contiguous row-major bytes.
//!
//! Reading is in two steps, so that a caller can check names and shapes before any storage is
//! inflated: [`TorchArchive`] opens the zip (refusing duplicate entry names) and parses the pickle
//! into an index of tensors; [`TorchArchive::read_each`] then reads the tensors asked for, one at a
//! time. A storage shared by several of them (tied weights, views) is read once and kept only
//! until its last user; a storage much larger than what its tensors use is refused before it is
//! inflated (a zip entry's claimed size costs nothing to write and ~1000× its size to inflate).

#[cfg(test)]
mod tests;
mod views;
mod zip_names;

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Cursor, Read, Seek};
use std::path::{Path, PathBuf};

use super::pickle::Pickle;
use super::raw::{Dtype, RawTensor, TensorMeta};
use crate::{Error, Result};
use views::{collect_tensors, covers_whole, gather, StorageInfo, TensorSpec};

/// Largest `data.pkl` accepted (a state dict's pickle is a few hundred KiB even for big models).
const MAX_PICKLE_BYTES: u64 = 256 << 20;

/// A storage may hold at most this many times the bytes its tensors use, plus
/// [`STORAGE_SLACK_BYTES`] (views of part of a storage are legal, but a record far larger than
/// what is read from it only costs time and memory to inflate).
const STORAGE_OVERHEAD_FACTOR: u64 = 4;
const STORAGE_SLACK_BYTES: u64 = 16 << 20;

const LEGACY_MSG: &str = "legacy PyTorch format is not supported; re-save with \
                          torch.save(..., _use_new_zipfile_serialization=True)";

/// Read a `torch.save` zip checkpoint from disk. Tensors come back in the saved dict's order.
pub fn read_pytorch_bin(path: &Path) -> Result<Vec<(String, RawTensor)>> {
    TorchArchive::open_file(path)?.read_all()
}

/// Read a `torch.save` zip checkpoint held in memory. Tensors come back in the saved dict's order.
pub fn read_pytorch_bin_bytes(bytes: &[u8]) -> Result<Vec<(String, RawTensor)>> {
    TorchArchive::from_bytes(bytes)?.read_all()
}

/// An opened `torch.save` checkpoint: the zip directory and the pickle's tensor index, with no
/// storage read yet.
pub struct TorchArchive<R> {
    zip: zip::ZipArchive<R>,
    /// `<prefix>/` of every record.
    prefix: String,
    total_len: u64,
    storages: Vec<StorageInfo>,
    specs: Vec<TensorSpec>,
    /// The file this came from, to prefix messages with.
    origin: Option<PathBuf>,
}

impl TorchArchive<BufReader<File>> {
    /// Opens the checkpoint at `path` and indexes its tensors (reads the zip directory and
    /// `data.pkl` only). Errors name the file.
    pub fn open_file(path: &Path) -> Result<Self> {
        let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let mut head = [0u8; 512];
        let n = read_up_to(&mut file, &mut head).map_err(|e| Error::io(path, e))?;
        sniff(&head[..n], len).map_err(|e| in_file(e, path))?;
        file.rewind().map_err(|e| Error::io(path, e))?;
        let mut archive = Self::open(BufReader::new(file), len).map_err(|e| in_file(e, path))?;
        archive.origin = Some(path.to_path_buf());
        Ok(archive)
    }
}

impl<'a> TorchArchive<Cursor<&'a [u8]>> {
    /// Opens a checkpoint held in memory and indexes its tensors.
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Self> {
        sniff(&bytes[..bytes.len().min(512)], bytes.len() as u64)?;
        Self::open(Cursor::new(bytes), bytes.len() as u64)
    }
}

impl<R: Read + Seek> TorchArchive<R> {
    fn open(reader: R, total_len: u64) -> Result<Self> {
        let mut zip = open_zip_refusing_duplicates(reader)?;
        let pkl_name = find_pickle(&zip)?;
        let prefix = pkl_name.strip_suffix("data.pkl").unwrap_or_default().to_owned();
        check_byteorder(&mut zip, &prefix, total_len)?;
        let pkl = read_entry(&mut zip, &pkl_name, MAX_PICKLE_BYTES, total_len)?;
        let pickle = Pickle::parse(&pkl).map_err(|e| match e {
            Error::InvalidCheckpoint(m) => Error::InvalidCheckpoint(format!("{pkl_name}: {m}")),
            Error::UnsafePickle(m) => Error::UnsafePickle(format!("{pkl_name}: {m}")),
            other => other,
        })?;
        drop(pkl);
        let (storages, specs) = collect_tensors(&pickle)?;
        Ok(TorchArchive { zip, prefix, total_len, storages, specs, origin: None })
    }

    /// Number of tensors in the saved dict.
    pub fn len(&self) -> usize {
        self.specs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    /// Name, dtype and shape of every tensor, in the saved dict's order.
    pub fn tensors(&self) -> impl Iterator<Item = TensorMeta> + '_ {
        self.specs.iter().map(|s| TensorMeta {
            name: s.name.clone(),
            dtype: self.storages[s.storage].dtype,
            shape: s.size.clone(),
        })
    }

    /// Reads the tensors at `order` (indices into [`TorchArchive::tensors`]), one at a time and in
    /// that order, handing each to `f`. Every storage involved is size-checked before any is
    /// inflated; each is inflated once and dropped after its last use in `order`.
    pub fn read_each(&mut self, order: &[usize], f: impl FnMut(usize, RawTensor) -> Result<()>) -> Result<()> {
        let r = self.read_each_inner(order, f);
        match &self.origin {
            Some(path) => r.map_err(|e| in_file(e, path)),
            None => r,
        }
    }

    /// Every tensor, in the saved dict's order.
    pub fn read_all(mut self) -> Result<Vec<(String, RawTensor)>> {
        let order: Vec<usize> = (0..self.specs.len()).collect();
        let mut tensors = Vec::with_capacity(order.len());
        self.read_each(&order, |_, t| {
            tensors.push(t);
            Ok(())
        })?;
        let names = std::mem::take(&mut self.specs).into_iter().map(|s| s.name);
        Ok(names.zip(tensors).collect())
    }

    fn read_each_inner(&mut self, order: &[usize], mut f: impl FnMut(usize, RawTensor) -> Result<()>) -> Result<()> {
        let mut users = self.plan_storages(order)?;
        let mut loaded: HashMap<usize, Vec<u8>> = HashMap::new();
        for &i in order {
            let spec = &self.specs[i];
            let info = &self.storages[spec.storage];
            let bytes = match loaded.remove(&spec.storage) {
                Some(b) => b,
                None => {
                    let entry = format!("{}data/{}", self.prefix, info.key);
                    load_storage(&mut self.zip, &entry, info, self.total_len, &spec.name)?
                }
            };
            users[spec.storage] -= 1;
            let last_user = users[spec.storage] == 0;
            let data = if last_user && spec.offset == 0 && covers_whole(spec, info.numel) {
                bytes // the tensor is exactly its storage: hand the buffer over without copying
            } else {
                let d = gather(&bytes, elem_size(info.dtype), spec)?;
                if !last_user {
                    loaded.insert(spec.storage, bytes);
                }
                d
            };
            f(i, RawTensor { dtype: info.dtype, shape: spec.size.clone(), data })?;
        }
        Ok(())
    }

    /// How many tensors of `order` use each storage; refuses an index out of range and a storage
    /// far larger than what is read from it, before anything is inflated.
    fn plan_storages(&self, order: &[usize]) -> Result<Vec<usize>> {
        let mut users = vec![0usize; self.storages.len()];
        let mut needed = vec![0u64; self.storages.len()];
        let mut first_user: Vec<Option<usize>> = vec![None; self.storages.len()];
        for &i in order {
            let spec = self.specs.get(i).ok_or_else(|| {
                Error::InvalidInput(format!("tensor index {i} is out of range ({} tensors)", self.specs.len()))
            })?;
            let s = spec.storage;
            users[s] += 1;
            let bytes = (spec.numel() as u64).saturating_mul(elem_size(self.storages[s].dtype) as u64);
            needed[s] = needed[s].saturating_add(bytes);
            first_user[s].get_or_insert(i);
        }
        for (s, info) in self.storages.iter().enumerate() {
            let Some(user) = first_user[s] else { continue };
            self.check_storage_size(info, needed[s], &self.specs[user].name)?;
        }
        Ok(users)
    }

    fn check_storage_size(&self, info: &StorageInfo, needed: u64, tensor: &str) -> Result<()> {
        let entry = format!("{}data/{}", self.prefix, info.key);
        let stored =
            info.bytes().ok_or_else(|| Error::InvalidCheckpoint(format!("storage `{}` size overflows", info.key)))?;
        let allowed = needed.saturating_mul(STORAGE_OVERHEAD_FACTOR).saturating_add(STORAGE_SLACK_BYTES);
        if stored > allowed {
            return Err(Error::InvalidCheckpoint(format!(
                "storage record {entry} (used by tensor `{tensor}`) holds {stored} bytes, but the \
                 tensors read from it use only {needed}; refused before inflating it (a storage \
                 this much larger than its views only costs memory, and is how a small file can \
                 claim gigabytes). Re-save the checkpoint with contiguous tensors, e.g. \
                 torch.save({{k: v.contiguous().clone() for k, v in state_dict.items()}}, ...)"
            )));
        }
        Ok(())
    }
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
pub(super) fn in_file(e: Error, path: &Path) -> Error {
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
    if total_len == 0 || head.is_empty() {
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

/// Opens the zip, walks its central directory for repeated names, and reopens it (the crate
/// gives the raw reader back only by value).
fn open_zip_refusing_duplicates<R: Read + Seek>(reader: R) -> Result<zip::ZipArchive<R>> {
    let zip = zip::ZipArchive::new(reader).map_err(|e| zip_err("cannot open zip archive", e))?;
    let (dir_start, distinct) = (zip.central_directory_start(), zip.len());
    let mut reader = zip.into_inner();
    zip_names::refuse_duplicate_names(&mut reader, dir_start, distinct)?;
    reader.rewind().map_err(|e| Error::InvalidCheckpoint(format!("cannot reread the zip archive: {e}")))?;
    zip::ZipArchive::new(reader).map_err(|e| zip_err("cannot open zip archive", e))
}

/// The name of the one `<prefix>/data.pkl` record.
fn find_pickle<R: Read + Seek>(zip: &zip::ZipArchive<R>) -> Result<String> {
    let names: Vec<&str> =
        zip.file_names().filter(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1).collect();
    match names.as_slice() {
        [one] => Ok((*one).to_owned()),
        [] => Err(Error::InvalidCheckpoint(
            "zip archive has no <prefix>/data.pkl record, so it was not written by torch.save".into(),
        )),
        many => Err(Error::InvalidCheckpoint(format!(
            "zip archive holds several pickles ({}); expected exactly one <prefix>/data.pkl",
            many.join(", ")
        ))),
    }
}

/// Byte order (absent in files from older torch versions, which were little-endian).
fn check_byteorder<R: Read + Seek>(zip: &mut zip::ZipArchive<R>, prefix: &str, total_len: u64) -> Result<()> {
    let name = format!("{prefix}byteorder");
    if zip.index_for_name(&name).is_none() {
        return Ok(());
    }
    let order = read_entry(zip, &name, 64, total_len)?;
    match String::from_utf8_lossy(&order).trim() {
        "little" => Ok(()),
        "big" => Err(Error::InvalidCheckpoint(
            "checkpoint was saved on a big-endian machine (byteorder = big), which is not \
             supported; re-save it on a little-endian machine"
                .into(),
        )),
        other => {
            Err(Error::InvalidCheckpoint(format!("{name} says \"{}\", expected \"little\"", other.escape_debug())))
        }
    }
}

/// Read a whole zip entry of at most `limit` bytes, never trusting the header's size for the
/// allocation (a lying header cannot make us reserve more than the archive's length).
fn read_entry<R: Read + Seek>(zip: &mut zip::ZipArchive<R>, name: &str, limit: u64, total_len: u64) -> Result<Vec<u8>> {
    let entry = zip.by_name(name).map_err(|e| zip_err(&format!("cannot open {name}"), e))?;
    let declared = entry.size();
    if declared > limit {
        return Err(Error::InvalidCheckpoint(format!(
            "{name} is {declared} bytes, more than the {limit} allowed (a state dict's pickle is a \
             few MiB at most, so the file is corrupt or hostile)"
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

/// Read one storage record and check that its length matches the pickle's element count; the
/// record's claimed size is checked before anything is inflated, and the inflater is bounded.
fn load_storage<R: Read + Seek>(
    zip: &mut zip::ZipArchive<R>,
    entry_name: &str,
    info: &StorageInfo,
    total_len: u64,
    tensor: &str,
) -> Result<Vec<u8>> {
    let es = elem_size(info.dtype) as u64;
    let want =
        info.bytes().ok_or_else(|| Error::InvalidCheckpoint(format!("storage `{}` size overflows", info.key)))?;
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
