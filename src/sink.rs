//! Where a weights file goes while it is read: the loader (native `package::load_dir`, the JS
//! loader through `wasm::WeightBuffer`) writes it chunk by chunk into a [`WeightSink`], so the
//! bytes land once in their final place — a host buffer for the CPU backend ([`HostSink`]), GPU
//! buffers for a device backend — and are hashed on the way, never held twice.

use sha2::{Digest, Sha256};

use crate::weights::AlignedBuf;
use crate::{Error, Result};

pub trait WeightSink {
    /// Total bytes the sink was sized for.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Writes `chunk` at byte `offset` (chunks may come in any order; in order is cheapest).
    fn write(&mut self, offset: usize, chunk: &[u8]) -> Result<()>;
    /// SHA-256 of everything written, as lowercase hex (free when written in order).
    fn sha256(&self) -> String;
}

/// The weights in one aligned host buffer: what the CPU backend runs from.
pub struct HostSink {
    buf: AlignedBuf,
    hasher: Sha256,
    /// Bytes hashed so far (a prefix of the buffer); hashing stops at the first out-of-order write.
    hashed: usize,
    in_order: bool,
}

impl HostSink {
    /// Allocates `len` bytes; `OutOfMemory` (never an abort) when they cannot be had.
    pub fn new(len: usize) -> Result<Self> {
        Ok(HostSink { buf: AlignedBuf::zeroed(len)?, hasher: Sha256::new(), hashed: 0, in_order: true })
    }

    pub fn bytes(&self) -> &[u8] {
        self.buf.as_bytes()
    }

    /// The filled buffer.
    pub fn into_buf(self) -> AlignedBuf {
        self.buf
    }
}

impl WeightSink for HostSink {
    fn len(&self) -> usize {
        self.buf.len()
    }

    fn write(&mut self, offset: usize, chunk: &[u8]) -> Result<()> {
        let len = self.buf.len();
        let end = offset.checked_add(chunk.len()).filter(|&e| e <= len).ok_or_else(|| {
            Error::InvalidInput(format!(
                "chunk of {} bytes at offset {offset} does not fit the {len}-byte weight buffer",
                chunk.len()
            ))
        })?;
        self.buf.as_bytes_mut()[offset..end].copy_from_slice(chunk);
        if self.in_order && offset == self.hashed {
            self.hasher.update(chunk);
            self.hashed = end;
        } else {
            self.in_order = false;
        }
        Ok(())
    }

    fn sha256(&self) -> String {
        let digest = if self.in_order && self.hashed == self.buf.len() {
            self.hasher.clone().finalize()
        } else {
            Sha256::digest(self.buf.as_bytes())
        };
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Copies `reader` (exactly `sink.len()` bytes) into `sink` in chunks of `chunk` bytes.
pub fn fill_from(sink: &mut dyn WeightSink, reader: &mut dyn std::io::Read, chunk: usize) -> std::io::Result<()> {
    let mut tmp = vec![0u8; chunk.min(sink.len()).max(1)];
    let mut at = 0;
    while at < sink.len() {
        let n = (sink.len() - at).min(tmp.len());
        reader.read_exact(&mut tmp[..n])?;
        sink.write(at, &tmp[..n]).map_err(std::io::Error::other)?;
        at += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_and_scattered_writes_hash_the_same() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut a = HostSink::new(data.len()).unwrap();
        fill_from(&mut a, &mut &data[..], 999).unwrap();
        let mut b = HostSink::new(data.len()).unwrap();
        b.write(5000, &data[5000..]).unwrap();
        b.write(0, &data[..5000]).unwrap();
        assert_eq!(a.bytes(), &data[..]);
        assert_eq!(a.sha256(), b.sha256());
        assert_eq!(a.sha256(), crate::package::sha256_hex(&data));
        assert!(b.write(9_999, &[1, 2]).is_err());
    }
}
