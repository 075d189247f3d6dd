//! The Rust tokenizer gives exactly the ids the Python `tokenizers` library gave when the demo
//! model's tokenizer was trained (train/train_tokenizer.py wrote id_check.json).
#![cfg(not(target_arch = "wasm32"))]

mod common;

use blockffn::tokenizer::Tokenizer;
use common::*;

#[test]
fn rust_ids_equal_python_ids() {
    let dir = fixture("tokenizer");
    let json = std::fs::read(dir.join("tokenizer.json")).unwrap();
    let tok = Tokenizer::from_bytes(&json, Some(1)).unwrap();
    let check: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("id_check.json")).unwrap()).unwrap();
    let cases = check.as_array().or_else(|| check["cases"].as_array()).expect("a list of cases");
    assert!(cases.len() >= 20);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = case["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(tok.encode_plain(text).unwrap(), want, "ids of {text:?}");
        // With BOS, as the engine encodes prompts (once, even if the text starts with "<s>").
        let mut with_bos = if want.first() == Some(&1) { vec![] } else { vec![1] };
        with_bos.extend(&want);
        assert_eq!(tok.encode(text).unwrap(), with_bos);
        // decode drops special tokens, so only plain text round-trips
        if !["<s>", "</s>", "<unk>", "<|im_"].iter().any(|s| text.contains(s)) {
            assert_eq!(tok.decode(&want).unwrap(), text, "round trip of {text:?}");
        }
    }
}
