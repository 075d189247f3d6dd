//! Refusing zip archives with two entries of the same name (RELIABILITY defect 12).
//!
//! The zip crate keys entries by name, so a second central-directory record named like an earlier
//! one silently replaces it, while PyTorch's reader returns the first: one file could show one set
//! of weights to PyTorch-based review tools and another to this converter. The crate does not
//! expose the raw record list, so the central directory is walked here, record by record.

use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom};

use crate::{Error, Result};

const CENTRAL_HEADER_SIGNATURE: u32 = 0x0201_4b50;
const CENTRAL_HEADER_LEN: usize = 46;

/// Walks the central directory at `dir_start` and refuses a repeated entry name. `distinct` is the
/// number of entries the zip crate kept: more records than that also means names that collide
/// (e.g. two raw names that decode to one), which is refused too.
pub(super) fn refuse_duplicate_names<R: Read + Seek>(r: &mut R, dir_start: u64, distinct: usize) -> Result<()> {
    let io_err = |e: std::io::Error| {
        Error::InvalidCheckpoint(format!("cannot read the zip central directory: {e} (is the file truncated?)"))
    };
    r.seek(SeekFrom::Start(dir_start)).map_err(io_err)?;
    let mut seen: HashSet<Vec<u8>> = HashSet::new();
    let mut records = 0usize;
    loop {
        let mut head = [0u8; CENTRAL_HEADER_LEN];
        if super::read_up_to(r, &mut head).map_err(io_err)? < CENTRAL_HEADER_LEN
            || u32::from_le_bytes([head[0], head[1], head[2], head[3]]) != CENTRAL_HEADER_SIGNATURE
        {
            break;
        }
        let field = |at: usize| u16::from_le_bytes([head[at], head[at + 1]]) as usize;
        let (name_len, extra_len, comment_len) = (field(28), field(30), field(32));
        let mut name = vec![0u8; name_len];
        r.read_exact(&mut name).map_err(io_err)?;
        r.seek(SeekFrom::Current((extra_len + comment_len) as i64)).map_err(io_err)?;
        records += 1;
        if seen.contains(&name) {
            return Err(duplicate(&String::from_utf8_lossy(&name)));
        }
        seen.insert(name);
    }
    if records > distinct {
        return Err(Error::InvalidCheckpoint(format!(
            "zip archive's central directory holds {records} entries but only {distinct} distinct \
             names (entries whose names collide); refused, because readers disagree on which copy \
             counts. Re-save the checkpoint with torch.save"
        )));
    }
    Ok(())
}

fn duplicate(name: &str) -> Error {
    Error::InvalidCheckpoint(format!(
        "zip archive holds two entries named `{}`; PyTorch reads the first and a zip library may \
         read the last, so tools could disagree on the weights (the file may be crafted to do \
         that) and it is refused. Re-save the checkpoint with torch.save",
        name.escape_debug()
    ))
}
