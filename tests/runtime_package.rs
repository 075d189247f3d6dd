//! The runtime package: conversion is reproducible, the committed wasm-test package is current,
//! integrity is checked, and safetensors sources convert like pytorch_model.bin.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use blockffn::package::{load_dir, Manifest};
use common::*;

fn manifest(dir: &std::path::Path) -> Manifest {
    Manifest::parse(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap()
}

#[test]
fn committed_runtime_fixture_is_what_the_converter_makes() {
    // tests/fixtures/mla_block_linear/runtime is embedded by the wasm test; it must not go stale.
    let fresh = convert("mla_block_linear", "f32");
    let committed = fixture("mla_block_linear").join("runtime");
    assert_eq!(manifest(&fresh).files, manifest(&committed).files);
}

#[test]
fn corrupted_or_truncated_weights_fail_integrity() {
    let dir = convert("gqa_tied_block_linear", "f32");
    let w = dir.join("model.safetensors");
    let mut bytes = std::fs::read(&w).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&w, &bytes).unwrap();
    let e = load_dir(&dir).err().expect("corruption is detected");
    assert_eq!(e.code(), "IntegrityMismatch", "{e}");
    assert!(e.to_string().contains("sha256"), "{e}");

    bytes.truncate(bytes.len() - 100);
    std::fs::write(&w, &bytes).unwrap();
    let e = load_dir(&dir).err().expect("truncation is detected");
    assert_eq!(e.code(), "IntegrityMismatch", "{e}");
    run_err(&["logits", "--model", path_str(&dir), "--ids", "1,2"], "truncated");
}

#[test]
fn hf_directory_without_conversion_gets_a_hint() {
    let hf = fixture("mla_block_linear").join("hf");
    run_err(&["logits", "--model", path_str(&hf), "--ids", "1,2"], "blockffn convert");
    run_err(&["logits", "--model", "/nonexistent/model", "--ids", "1,2"], "/nonexistent/model");
}
