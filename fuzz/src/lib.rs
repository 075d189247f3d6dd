//! Shared pieces of the fuzz targets: a memory-capped global allocator and small builders.
//!
//! # Memory caps
//!
//! Every target links this crate, so every Rust allocation goes through [`Capped`]. A single
//! allocation of [`MALLOC_LIMIT`] bytes or more, or more than [`LIVE_LIMIT`] bytes live at once,
//! prints `blockffn-fuzz: memory cap: ...` and aborts. libFuzzer reports the abort as a crash
//! ("deadly signal") and saves the input, so a memory bomb is a finding like a panic.
//!
//! Why our own allocator and not only libFuzzer's `-malloc_limit_mb`: that flag works through the
//! sanitizer's malloc hooks, so in the stable-toolchain build (`--sanitizer none`) it does nothing.
//! `scripts/fuzz.sh` still passes `-rss_limit_mb` (polled by libFuzzer in every build) and
//! `-malloc_limit_mb` (effective in sanitizer builds), with the same numbers as here.
//!
//! Why these numbers (1 GiB per allocation, 1.5 GiB live): inputs are at most 1 MiB (`-max_len`
//! in `scripts/fuzz.sh`), and the largest legitimate allocation the targets make is about the
//! input's size (the weights buffer) plus a model built to a 4 MiB budget (`config_model`). An
//! allocation of 1 GiB from such an input is an amplification of over 1000x: what the reliability
//! review calls a memory bomb (its hostile-input runs were capped at 1.5 GiB of address space,
//! and a browser tab's wasm memory tops out at 2-4 GiB). The 256 MiB pickle and 1 GiB
//! view-expansion limits of the converter stay below the per-allocation cap, so hitting them is a
//! clean error, not a finding; the cap is strict at exactly 1 GiB so a 1 GiB expansion plus its
//! base storage trips it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use blockffn::weights::AlignedBuf;

/// Largest single allocation allowed, in bytes (`-malloc_limit_mb=1024`).
pub const MALLOC_LIMIT: usize = 1024 << 20;
/// Most Rust heap bytes live at once (`-rss_limit_mb=1536`).
pub const LIVE_LIMIT: usize = 1536 << 20;

static LIVE: AtomicUsize = AtomicUsize::new(0);

pub struct Capped;

extern "C" {
    fn write(fd: i32, buf: *const u8, n: usize) -> isize;
}

/// Writes `msg` and `n` to stderr without allocating, then aborts.
#[cold]
fn over_cap(what: &[u8], n: usize) -> ! {
    let mut buf = [0u8; 160];
    let mut len = 0;
    let mut put = |b: &[u8]| {
        for &c in b {
            if len < buf.len() {
                buf[len] = c;
                len += 1;
            }
        }
    };
    put(b"\nblockffn-fuzz: memory cap: ");
    put(what);
    put(b" ");
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut v = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    put(&digits[i..]);
    put(b" bytes (a memory bomb: see fuzz/src/lib.rs)\n");
    // SAFETY: `buf[..len]` is initialised; fd 2 is stderr. The result does not matter: we abort.
    unsafe {
        write(2, buf.as_ptr(), len);
    }
    std::process::abort()
}

#[inline]
fn reserve(size: usize) {
    if size >= MALLOC_LIMIT {
        over_cap(b"one allocation of", size);
    }
    let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
    if live > LIVE_LIMIT {
        over_cap(b"live heap would reach", live);
    }
}

// SAFETY: forwards to `System`, only counting sizes.
unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        reserve(layout.size());
        let p = System.alloc(layout);
        if p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        reserve(layout.size());
        let p = System.alloc_zeroed(layout);
        if p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size >= MALLOC_LIMIT {
            over_cap(b"one allocation of", new_size);
        }
        if new_size > layout.size() {
            reserve(new_size - layout.size());
        }
        let p = System.realloc(ptr, layout, new_size);
        if p.is_null() {
            if new_size > layout.size() {
                LIVE.fetch_sub(new_size - layout.size(), Ordering::Relaxed);
            }
        } else if new_size < layout.size() {
            LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Capped = Capped;

/// `data` copied into the 8-byte aligned buffer the runtime reads weights from.
pub fn aligned(data: &[u8]) -> AlignedBuf {
    let mut buf = AlignedBuf::zeroed(data.len()).expect("input-sized buffer");
    buf.as_bytes_mut().copy_from_slice(data);
    buf
}

/// The fixtures' `config.json` files: the `safetensors` target tries each against a mutated
/// weight file (their converted packages are its seeds), so `Model::new` and `forward` run on
/// whatever a mutation still lets through.
pub const FIXTURE_CONFIGS: &[&str] = &[
    include_str!("../../tests/fixtures/mla_block_linear/hf/config.json"),
    include_str!("../../tests/fixtures/gqa_tied_block_linear/hf/config.json"),
    include_str!("../../tests/fixtures/gqa_dense/hf/config.json"),
    include_str!("../../tests/fixtures/gqa_sum_norm/hf/config.json"),
    include_str!("../../tests/fixtures/mla_block3d/hf/config.json"),
    include_str!("../../tests/fixtures/mla_noqlora_none_norm/hf/config.json"),
    include_str!("../../tests/fixtures/mla_topk/hf/config.json"),
];

/// Weight budget of the model the `config_model` target builds: a config implying more
/// parameters than this is skipped (it is valid, just too big to build per input).
pub const MODEL_BUDGET_BYTES: usize = 4 << 20;

/// A runtime `model.safetensors` holding every `(name, shape)` as F32, with small deterministic
/// non-zero values (so routers activate some experts and attention is not all-equal). `None`
/// when the shapes overflow or the tensors exceed [`MODEL_BUDGET_BYTES`].
pub fn synth_safetensors(tensors: &[(String, Vec<usize>)]) -> Option<Vec<u8>> {
    let mut total = 0usize;
    let mut header = serde_json::Map::new();
    for (name, shape) in tensors {
        let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))?;
        let bytes = numel.checked_mul(4)?;
        let end = total.checked_add(bytes)?;
        if end > MODEL_BUDGET_BYTES {
            return None;
        }
        header.insert(
            name.clone(),
            serde_json::json!({ "dtype": "F32", "shape": shape, "data_offsets": [total, end] }),
        );
        total = end;
    }
    let mut h = serde_json::to_vec(&serde_json::Value::Object(header)).ok()?;
    while (8 + h.len()) % 8 != 0 {
        h.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + h.len() + total);
    out.extend_from_slice(&(h.len() as u64).to_le_bytes());
    out.extend_from_slice(&h);
    let mut x: u32 = 0x9e37_79b9;
    while out.len() < 8 + h.len() + total {
        // xorshift32 -> a value in [-0.5, 0.5)
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let v = (x >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
        out.extend_from_slice(&v.to_le_bytes());
    }
    Some(out)
}

/// Keeps this crate (and so its global allocator) linked into a target that uses nothing else
/// from it.
#[inline(never)]
pub fn touch() {
    std::hint::black_box(&GLOBAL);
}

/// `BLOCKFFN_FUZZ_SKIP_INVALID_JSON=1`: the `tokenizer` target skips inputs that are not valid
/// JSON. Only for long campaigns on a tree where `tokenizers`' decoder panic on malformed JSON
/// (see the tokenizer target) is not yet guarded, so the campaign gets past that one finding;
/// scripts/fuzz.sh never sets it.
pub fn skip_invalid_json() -> bool {
    static SKIP: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SKIP.get_or_init(|| std::env::var_os("BLOCKFFN_FUZZ_SKIP_INVALID_JSON").is_some_and(|v| v == "1"))
}
