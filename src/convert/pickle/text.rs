//! Decoding of the protocol-0 text arguments (`INT`/`LONG` literals, quoted `STRING`s,
//! raw-unicode-escape `UNICODE`) and of little-endian two's complement integers (`LONG1`/`LONG4`).
//!
//! Errors are plain messages; the parser adds the opcode and byte offset.

use super::{printable, Object};

/// Python refuses longer decimal literals (`sys.int_info.default_max_str_digits`).
const MAX_DECIMAL_DIGITS: usize = 4300;

/// An `INT` or `LONG` literal: `00`/`01` are the protocol-0 booleans, an optional `L` suffix is
/// allowed, and anything beyond `i64` becomes [`Object::BigInt`].
pub(super) fn parse_int(s: &str) -> Result<Object, String> {
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
    let (neg, digits) = match s.as_bytes() {
        [b'-', d @ ..] => (true, d),
        [b'+', d @ ..] => (false, d),
        d => (false, d),
    };
    if digits.is_empty() || digits.len() > MAX_DECIMAL_DIGITS || !digits.iter().all(u8::is_ascii_digit) {
        return Err(format!("bad integer literal \"{}\"", printable(s)));
    }
    let mut bytes = decimal_magnitude_le(digits);
    // Two's complement with room for the sign bit.
    bytes.push(0);
    if neg {
        negate_le(&mut bytes);
    }
    trim_sign_extension(&mut bytes);
    Ok(long_from_le(&bytes))
}

/// The magnitude of ASCII decimal `digits` as minimal little-endian bytes (at least one byte).
/// Works on 64-bit limbs, 19 digits at a time, so a 4,300-digit literal costs ~50k multiplies.
pub(super) fn decimal_magnitude_le(digits: &[u8]) -> Vec<u8> {
    let mut limbs: Vec<u64> = vec![0];
    for chunk in digits.chunks(19) {
        let scale = 10u64.pow(chunk.len() as u32) as u128;
        let mut carry = chunk.iter().fold(0u64, |acc, d| acc * 10 + (d - b'0') as u64) as u128;
        for limb in limbs.iter_mut() {
            let v = *limb as u128 * scale + carry;
            *limb = v as u64;
            carry = v >> 64;
        }
        if carry > 0 {
            limbs.push(carry as u64);
        }
    }
    let mut bytes: Vec<u8> = limbs.iter().flat_map(|l| l.to_le_bytes()).collect();
    while bytes.len() > 1 && bytes.last() == Some(&0) {
        bytes.pop();
    }
    bytes
}

fn negate_le(bytes: &mut [u8]) {
    let mut carry = 1u16;
    for byte in bytes.iter_mut() {
        let v = (!*byte) as u16 + carry;
        *byte = v as u8;
        carry = v >> 8;
    }
}

/// Drops redundant sign-extension bytes, as pickle's `LONG1` encoding does.
fn trim_sign_extension(bytes: &mut Vec<u8>) {
    while bytes.len() > 1 {
        let n = bytes.len();
        let (last, prev) = (bytes[n - 1], bytes[n - 2]);
        if (last == 0 && prev & 0x80 == 0) || (last == 0xff && prev & 0x80 != 0) {
            bytes.pop();
        } else {
            break;
        }
    }
}

/// A little-endian two's complement integer: [`Object::Int`] when it fits in `i64`.
pub(super) fn long_from_le(bytes: &[u8]) -> Object {
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
    let ext = if lo[7] & 0x80 != 0 { 0xff } else { 0 };
    if hi.iter().all(|&b| b == ext) {
        let mut buf = [0u8; 8];
        buf.copy_from_slice(lo);
        Object::Int(i64::from_le_bytes(buf))
    } else {
        Object::BigInt(bytes.to_vec())
    }
}

/// A protocol-0 `STRING` argument: a quoted Python bytes repr.
pub(super) fn parse_string(line: &[u8]) -> Result<Vec<u8>, String> {
    let inner = match line {
        [q @ (b'\'' | b'"'), mid @ .., q2] if q == q2 => mid,
        _ => return Err("STRING argument is not quoted".into()),
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
            return Err("STRING argument ends in a backslash".into());
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
                let v = inner
                    .get(i..i + 2)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or("bad \\x escape")?;
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

/// A protocol-0 `UNICODE` argument (raw-unicode-escape: `\uXXXX`, `\UXXXXXXXX`, else latin-1).
pub(super) fn parse_unicode(line: &[u8]) -> Result<String, String> {
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    while i < line.len() {
        let c = line[i];
        if c == b'\\' && matches!(line.get(i + 1), Some(b'u' | b'U')) {
            let n = if line[i + 1] == b'u' { 4 } else { 8 };
            let ch = line
                .get(i + 2..i + 2 + n)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .and_then(char::from_u32)
                .ok_or("bad \\u escape")?;
            out.push(ch);
            i += 2 + n;
        } else {
            out.push(c as char); // latin-1
            i += 1;
        }
    }
    Ok(out)
}
