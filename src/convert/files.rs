//! The converter's file access (RELIABILITY defects 7 and 15).
//!
//! * Reads from the input folder take only regular files: never a symbolic link (so a link in a
//!   cloned repository cannot pull `/etc/passwd` into a package that is then published), never a
//!   FIFO or device (so nothing blocks forever or streams `/dev/zero`), and small files are read
//!   up to a size cap. The type is checked before the file is opened (opening a FIFO blocks), and
//!   again on the opened handle.
//! * Writes into the output folder go to a fresh temporary file (created exclusively, so it is
//!   never an existing link) that is renamed over the target: a link planted at the target is
//!   replaced, never written through, and a failed conversion leaves the old files in place.
//! * Failed writes say "cannot write …" ([`Error::io_write`]), failed reads "cannot read …".

use std::fs::{File, Metadata, OpenOptions};
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::{Error, Result};

/// A small file of the input folder, as far as it could be read.
pub(super) enum InputFile {
    /// Not there (the error says so in the platform's words).
    Missing(std::io::Error),
    /// There, but not read; the reason says why ("it is a symbolic link (to …)").
    Refused(String),
    Bytes(Vec<u8>),
}

/// Why `meta` (from `symlink_metadata`, so links are not followed) is not a regular file.
fn not_regular(path: &Path, meta: &Metadata) -> Option<String> {
    let ft = meta.file_type();
    if ft.is_file() {
        return None;
    }
    if ft.is_symlink() {
        let target = std::fs::read_link(path).map(|t| t.display().to_string()).unwrap_or_else(|_| "?".into());
        return Some(format!(
            "it is a symbolic link (to {target}); convert reads only regular files from the input \
             folder, so that a link cannot copy a file from elsewhere into the package (replace \
             the link by a copy of the file, e.g. `cp -rL` the folder)"
        ));
    }
    Some(format!("it is {}, not a regular file", kind_of(meta)))
}

#[cfg(unix)]
fn kind_of(meta: &Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let ft = meta.file_type();
    if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO (named pipe)"
    } else if ft.is_char_device() || ft.is_block_device() {
        "a device"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

#[cfg(not(unix))]
fn kind_of(meta: &Metadata) -> &'static str {
    if meta.is_dir() {
        "a directory"
    } else {
        "a special file"
    }
}

/// Whether two metadata describe the same file (guards the gap between the check and the open).
#[cfg(unix)]
fn same_file(a: &Metadata, b: &Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(not(unix))]
fn same_file(a: &Metadata, b: &Metadata) -> bool {
    a.len() == b.len()
}

/// Opens `path` if it is a regular file (not a link, FIFO, device or directory): `Ok(Err(why))`
/// when it is not, `Err` for I/O errors (a missing file included).
pub(super) fn open_regular(path: &Path) -> Result<std::result::Result<(File, Metadata), String>> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| Error::io(path, e))?;
    if let Some(why) = not_regular(path, &meta) {
        return Ok(Err(why));
    }
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let opened = file.metadata().map_err(|e| Error::io(path, e))?;
    if !opened.is_file() || !same_file(&meta, &opened) {
        return Ok(Err("it was replaced while being opened".into()));
    }
    Ok(Ok((file, opened)))
}

/// Reads a small file of the input folder: a regular file of at most `cap` bytes.
pub(super) fn read_input(path: &Path, cap: u64) -> Result<InputFile> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(InputFile::Missing(e)),
        Err(e) => return Err(Error::io(path, e)),
        Ok(_) => {}
    }
    let (file, meta) = match open_regular(path)? {
        Ok(f) => f,
        Err(why) => return Ok(InputFile::Refused(why)),
    };
    let too_large = |len: u64| format!("it is {len} bytes, more than the {cap} this file can plausibly need");
    if meta.len() > cap {
        return Ok(InputFile::Refused(too_large(meta.len())));
    }
    let mut buf = Vec::with_capacity(meta.len() as usize);
    file.take(cap + 1).read_to_end(&mut buf).map_err(|e| Error::io(path, e))?;
    if buf.len() as u64 > cap {
        return Ok(InputFile::Refused(too_large(buf.len() as u64)));
    }
    Ok(InputFile::Bytes(buf))
}

/// Whether `path` is a regular file (links not followed).
pub(super) fn is_regular_file(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file())
}

/// The output folder of a conversion.
pub(super) struct OutputDir {
    dir: PathBuf,
    /// Whether this conversion created it (then a failed conversion removes it again if empty).
    created: bool,
}

impl OutputDir {
    /// Checks `out_dir` (not a symbolic link, not the input folder) and creates it if needed.
    pub fn prepare(out_dir: &Path, in_dir: &Path) -> Result<Self> {
        let existed = match std::fs::symlink_metadata(out_dir) {
            Ok(m) if m.file_type().is_symlink() => {
                let target =
                    std::fs::read_link(out_dir).map(|t| t.display().to_string()).unwrap_or_else(|_| "?".into());
                return Err(Error::InvalidInput(format!(
                    "the output directory {} is a symbolic link (to {target}); convert writes only \
                     into the folder it is given, never through a link, so pass the real folder",
                    out_dir.display()
                )));
            }
            Ok(_) => true,
            Err(_) => false,
        };
        if existed && std::fs::canonicalize(out_dir).ok() == std::fs::canonicalize(in_dir).ok() {
            return Err(Error::InvalidInput("the output directory must differ from the input directory".into()));
        }
        std::fs::create_dir_all(out_dir).map_err(|e| Error::io_write(out_dir, e))?;
        Ok(OutputDir { dir: out_dir.to_path_buf(), created: !existed })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A fresh temporary file in the folder that [`TempFile::persist`] renames to `name`.
    pub fn temp(&self, name: &str) -> Result<TempFile> {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let target = self.path(name);
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = self.path(&format!(".{name}.{}.{n}.tmp", std::process::id()));
            // create_new: O_EXCL, so an existing file or planted link at this name is never opened.
            match OpenOptions::new().read(true).write(true).create_new(true).open(&path) {
                Ok(file) => return Ok(TempFile { file, path, target, persisted: false }),
                Err(e) if e.kind() == ErrorKind::AlreadyExists && n < 1000 => continue,
                Err(e) => return Err(Error::io_write(&path, e)),
            }
        }
    }

    /// Writes `bytes` to `name` (through a temporary file and a rename).
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let mut t = self.temp(name)?;
        std::io::Write::write_all(&mut t.file, bytes).map_err(|e| Error::io_write(&t.target, e))?;
        t.persist()
    }

    /// Removes `name` if present (a link is removed, not followed).
    pub fn remove(&self, name: &str) -> Result<()> {
        let p = self.path(name);
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(Error::io_write(&p, e)),
            _ => Ok(()),
        }
    }

    /// After a failed conversion: removes the folder if this conversion created it and it is
    /// still empty (`remove_dir` refuses non-empty folders).
    pub fn abandon(self) {
        if self.created {
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}

/// A temporary file in the output folder, removed on drop unless persisted.
pub(super) struct TempFile {
    pub file: File,
    path: PathBuf,
    /// The final path, also named in write errors.
    pub target: PathBuf,
    persisted: bool,
}

impl TempFile {
    /// Renames the file to its final name, replacing whatever entry (file or link) was there.
    pub fn persist(mut self) -> Result<()> {
        std::fs::rename(&self.path, &self.target).map_err(|e| Error::io_write(&self.target, e))?;
        self.persisted = true;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.persisted {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("blockffn_files_{tag}_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn refused(r: Result<InputFile>) -> String {
        match r {
            Ok(InputFile::Refused(why)) => why,
            Ok(InputFile::Bytes(b)) => panic!("read {} bytes", b.len()),
            Ok(InputFile::Missing(e)) => panic!("missing: {e}"),
            Err(e) => panic!("error: {e}"),
        }
    }

    #[test]
    fn only_small_regular_files_are_read() {
        let d = scratch("read");
        let f = d.join("a.json");
        std::fs::write(&f, b"{\"k\": 1}").unwrap();
        assert!(matches!(read_input(&f, 8), Ok(InputFile::Bytes(b)) if b == b"{\"k\": 1}"));
        assert!(refused(read_input(&f, 7)).contains("8 bytes, more than the 7"));
        assert!(matches!(read_input(&d.join("none"), 8), Ok(InputFile::Missing(e)) if e.kind() == ErrorKind::NotFound));
        assert!(refused(read_input(&d, 8)).contains("a directory, not a regular file"));
        #[cfg(unix)]
        {
            let link = d.join("link.json");
            std::os::unix::fs::symlink(&f, &link).unwrap();
            let why = refused(read_input(&link, 1 << 20));
            assert!(why.contains("symbolic link") && why.contains("a.json"), "{why}");
            assert!(refused(read_input(Path::new("/dev/zero"), 1 << 20)).contains("a device"));
            assert!(!is_regular_file(&link) && is_regular_file(&f));
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn writes_replace_links_and_failures_leave_nothing() {
        let d = scratch("write");
        let victim = d.join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let out_path = d.join("out");
        let out = OutputDir::prepare(&out_path, &d.join("in")).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(&victim, out.path("config.json")).unwrap();
        out.write("config.json", b"new").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_eq!(std::fs::read(out.path("config.json")).unwrap(), b"new");
        // A temporary file that is dropped without being persisted is removed.
        let t = out.temp("model.safetensors").unwrap();
        drop(t);
        let names: Vec<_> = std::fs::read_dir(&out_path).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("config.json")]);
        // Writing over a directory is a write error naming the target.
        std::fs::create_dir(out.path("manifest.json")).unwrap();
        let e = out.write("manifest.json", b"{}").unwrap_err().to_string();
        assert!(e.starts_with("cannot write") && e.contains("manifest.json"), "{e}");
        // The input folder itself, or a link to a folder, is refused as output.
        let e = OutputDir::prepare(&out_path, &out_path).err().unwrap().to_string();
        assert!(e.contains("must differ from the input directory"), "{e}");
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(&out_path, d.join("out-link")).unwrap();
            let e = OutputDir::prepare(&d.join("out-link"), &d.join("in")).err().unwrap().to_string();
            assert!(e.contains("is a symbolic link"), "{e}");
        }
        std::fs::remove_dir_all(&d).unwrap();
    }
}
