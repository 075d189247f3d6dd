//! `blockffn::tokenizer::Tokenizer::from_bytes` (a package's `tokenizer.json`, through the
//! `tokenizers` crate as the wasm build compiles it), then encode / encode_plain / decode of a
//! fixed text with special tokens, non-ASCII and digits. Seeds: the fixtures' byte-level BPE and
//! the demo model's tokenizer.
//!
//! Finding (tokenizers 0.23.2): any JSON syntax error inside the `decoder` value panics
//! (`decoders/mod.rs:90`, `.expect("Helper")`) instead of returning an error; a truncated
//! tokenizer.json hits it. `BLOCKFFN_FUZZ_SKIP_INVALID_JSON=1` lets a long campaign get past it.
#![no_main]

use blockffn::tokenizer::Tokenizer;
use libfuzzer_sys::fuzz_target;

const TEXT: &str = "Hello world! <|im_start|>user\n2+2=4 ünïcödé 日本語 🙂\t<s></s><|im_end|>";

fuzz_target!(|data: &[u8]| {
    if blockffn_fuzz::skip_invalid_json() && serde_json::from_slice::<serde_json::Value>(data).is_err() {
        return;
    }
    let Ok(tok) = Tokenizer::from_bytes(data, Some(1)) else { return };
    let _ = tok.vocab_size();
    if let Ok(ids) = tok.encode(TEXT) {
        let _ = tok.decode(&ids);
    }
    if let Ok(ids) = tok.encode_plain(TEXT) {
        let _ = tok.decode(&ids);
    }
    let _ = tok.decode(&[0, 1, 2, 3, 100, 383, 70000, u32::MAX]);
});
