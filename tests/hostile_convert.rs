//! Hostile inputs to `blockffn convert` (RELIABILITY defects 1, 7, 12 and the converter's part of
//! 15), each built from the review's reproduction. Every hostile run goes through the real CLI
//! under an address-space cap and a deadline and must end in a typed error (exit 1/2, no panic,
//! no abort), or, for planted links, in a correct package with nothing outside the folders
//! touched.
#![cfg(all(unix, not(target_arch = "wasm32")))]

mod common;

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use blockffn::convert::raw::{Dtype, RawTensor};
use blockffn::convert::read_source;
use common::*;

// ---- building checkpoints -----------------------------------------------------------------

/// The contents of one zip entry.
enum Data {
    Bytes(Vec<u8>),
    /// This many zero bytes, streamed into the deflater (never held in memory).
    Zeros(u64),
}

/// A zip of `entries`, deflated. A name starting with `dup:` is written under a
/// placeholder of the same length and renamed afterwards, so the archive holds that name twice
/// (the zip crate's writer refuses duplicates).
fn make_zip(entries: &[(String, Data)]) -> Vec<u8> {
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated).large_file(true);
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let mut renames = Vec::new();
    for (k, (name, data)) in entries.iter().enumerate() {
        let name = match name.strip_prefix("dup:") {
            Some(real) => {
                let placeholder = format!("{}{:03}", &real[..real.len() - 3], k % 1000);
                renames.push((placeholder.clone(), real.to_string()));
                placeholder
            }
            None => name.clone(),
        };
        w.start_file(name, opts).unwrap();
        match data {
            Data::Bytes(b) => w.write_all(b).unwrap(),
            Data::Zeros(n) => {
                let chunk = vec![0u8; 1 << 20];
                let mut left = *n;
                while left > 0 {
                    let k = left.min(chunk.len() as u64) as usize;
                    w.write_all(&chunk[..k]).unwrap();
                    left -= k as u64;
                }
            }
        }
    }
    let mut bytes = w.finish().unwrap().into_inner();
    for (from, to) in renames {
        let (from, to) = (from.as_bytes(), to.as_bytes());
        let mut hits = 0;
        for i in 0..bytes.len() - from.len() {
            if &bytes[i..i + from.len()] == from {
                bytes[i..i + from.len()].copy_from_slice(to);
                hits += 1;
            }
        }
        assert_eq!(hits, 2, "local header and central directory record");
    }
    bytes
}

fn unicode(out: &mut Vec<u8>, s: &str) {
    out.push(b'X');
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn int(out: &mut Vec<u8>, v: usize) {
    out.push(b'J');
    out.extend_from_slice(&i32::try_from(v).unwrap().to_le_bytes());
}

fn int_tuple(out: &mut Vec<u8>, v: &[usize]) {
    out.push(b'(');
    for &x in v {
        int(out, x);
    }
    out.push(b't');
}

/// A tensor of a hand-written state dict: contiguous, the whole of storage `key`.
struct Saved {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    key: String,
}

fn storage_type(d: Dtype) -> &'static str {
    match d {
        Dtype::F32 => "FloatStorage",
        Dtype::F16 => "HalfStorage",
        Dtype::BF16 => "BFloat16Storage",
        other => panic!("no storage type for {other:?}"),
    }
}

/// `OrderedDict` of `_rebuild_tensor_v2(...)`, as `torch.save(state_dict)` writes it.
fn state_dict_pickle(tensors: &[Saved]) -> Vec<u8> {
    let mut o = b"\x80\x02ccollections\nOrderedDict\n)R(".to_vec();
    for t in tensors {
        unicode(&mut o, &t.name);
        o.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n((");
        unicode(&mut o, "storage");
        o.extend_from_slice(format!("ctorch\n{}\n", storage_type(t.dtype)).as_bytes());
        unicode(&mut o, &t.key);
        unicode(&mut o, "cpu");
        int(&mut o, t.shape.iter().product());
        o.extend_from_slice(b"tQ");
        int(&mut o, 0);
        int_tuple(&mut o, &t.shape);
        let mut stride = vec![1usize; t.shape.len()];
        for d in (0..t.shape.len().saturating_sub(1)).rev() {
            stride[d] = stride[d + 1] * t.shape[d + 1];
        }
        int_tuple(&mut o, &stride);
        o.extend_from_slice(b"\x89ccollections\nOrderedDict\n)RtR");
    }
    o.extend_from_slice(b"u.");
    o
}

/// A fixture's tensors, re-saved as a `torch.save`-style zip by this file's own writer, with
/// `extra` tensors (zero storages of the given byte size) and entries added by `edit`.
fn resaved_checkpoint(
    fixture_name: &str,
    extra: &[(&str, Vec<usize>)],
    edit: impl FnOnce(&mut Vec<(String, Data)>),
) -> Vec<u8> {
    let (_, tensors) = read_source(&fixture(fixture_name).join("hf")).unwrap();
    torch_zip(tensors, extra, edit)
}

/// `tensors` saved as a `torch.save`-style zip (see [`resaved_checkpoint`]).
fn torch_zip(
    tensors: Vec<(String, RawTensor)>,
    extra: &[(&str, Vec<usize>)],
    edit: impl FnOnce(&mut Vec<(String, Data)>),
) -> Vec<u8> {
    let mut saved = Vec::new();
    let mut entries = vec![("archive/byteorder".to_string(), Data::Bytes(b"little".to_vec()))];
    for (i, (name, t)) in tensors.into_iter().enumerate() {
        let RawTensor { dtype, shape, data } = t;
        saved.push(Saved { name, dtype, shape, key: i.to_string() });
        entries.push((format!("archive/data/{i}"), Data::Bytes(data)));
    }
    for (name, shape) in extra {
        let key = format!("x{}", saved.len());
        let bytes = shape.iter().product::<usize>() as u64 * 4;
        saved.push(Saved { name: name.to_string(), dtype: Dtype::F32, shape: shape.clone(), key: key.clone() });
        entries.push((format!("archive/data/{key}"), Data::Zeros(bytes)));
    }
    entries.insert(0, ("archive/data.pkl".to_string(), Data::Bytes(state_dict_pickle(&saved))));
    edit(&mut entries);
    make_zip(&entries)
}

/// A checkpoint folder: `config.json` and `tokenizer.json` of `fixture_name`, and `weights` as
/// `pytorch_model.bin`.
fn hf_dir_with(fixture_name: &str, weights: &[u8]) -> PathBuf {
    let dir = scratch(&format!("hostile-{fixture_name}"));
    let src = fixture(fixture_name).join("hf");
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    std::fs::write(dir.join("pytorch_model.bin"), weights).unwrap();
    dir
}

/// A copy of a fixture's HF folder that a test may change.
fn hf_copy(name: &str) -> PathBuf {
    let src = fixture(name).join("hf");
    let dst = scratch(&format!("hf-{name}"));
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dst.join(p.file_name().unwrap())).unwrap();
    }
    dst
}

/// A pickle alone, deflated into `archive/data.pkl`, in a folder with a real config.
fn hf_dir_with_pickle(pkl: Vec<u8>) -> (PathBuf, u64) {
    let zip = make_zip(&[("archive/data.pkl".to_string(), Data::Bytes(pkl))]);
    let len = zip.len() as u64;
    (hf_dir_with("mla_block_linear", &zip), len)
}

// ---- running ------------------------------------------------------------------------------

/// Asserts a clean, typed failure with `needle` in the message; returns stderr.
fn assert_clean_error(o: &Output, args: &[&str], needle: &str) -> String {
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!err.contains("panicked"), "blockffn {args:?} panicked: {err}");
    assert!(matches!(o.status.code(), Some(1) | Some(2)), "blockffn {args:?}: {:?}: {err}", o.status);
    assert!(err.contains(needle), "blockffn {args:?}: expected `{needle}` in: {err}");
    err
}

fn convert_args<'a>(hf: &'a Path, out: &'a Path) -> [&'a str; 3] {
    ["convert", path_str(hf), path_str(out)]
}

fn weights(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("model.safetensors")).unwrap()
}

fn manifest_files(dir: &Path) -> Vec<String> {
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    m["files"].as_object().unwrap().keys().cloned().collect()
}

fn entries_of(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

// ---- defect 1: memory bounded by the input ------------------------------------------------

#[test]
fn sharded_checkpoints_convert_like_one_file() {
    // The two-step reader reads tensors file by file: shards of either format must give the
    // single file's weights exactly.
    let name = "mla_block3d";
    let want = weights(&convert(name, "f32"));
    let (_, tensors) = read_source(&fixture(name).join("hf")).unwrap();
    let (even, odd): (Vec<_>, Vec<_>) = tensors.into_iter().enumerate().partition(|(i, _)| i % 2 == 0);
    let strip = |v: Vec<(usize, (String, RawTensor))>| v.into_iter().map(|(_, t)| t).collect::<Vec<_>>();
    let (even, odd) = (strip(even), strip(odd));

    let bins = hf_dir_with(name, &torch_zip(even.clone(), &[], |_| {}));
    std::fs::rename(bins.join("pytorch_model.bin"), bins.join("pytorch_model-00001-of-00002.bin")).unwrap();
    std::fs::write(bins.join("pytorch_model-00002-of-00002.bin"), torch_zip(odd.clone(), &[], |_| {})).unwrap();
    let out = scratch("shards-bin-out");
    let report = run_ok(&convert_args(&bins, &out));
    assert!(weights(&out) == want, "sharded .bin: {report}");

    let st = hf_dir_with(name, b"");
    std::fs::remove_file(st.join("pytorch_model.bin")).unwrap();
    for (k, part) in [odd, even].iter().enumerate() {
        let views: Vec<(String, safetensors::tensor::TensorView)> = part
            .iter()
            .map(|(n, t)| (n.clone(), safetensors::tensor::TensorView::new(t.dtype, t.shape.clone(), &t.data).unwrap()))
            .collect();
        let path = st.join(format!("model-0000{}-of-00002.safetensors", k + 1));
        std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
    }
    let out = scratch("shards-st-out");
    run_ok(&convert_args(&st, &out));
    assert!(weights(&out) == want, "sharded .safetensors");
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["source"], "model-00001-of-00002.safetensors, model-00002-of-00002.safetensors");
}

#[test]
fn rebuilt_checkpoint_converts_byte_identically() {
    // The writer the hostile cases below build on: a fixture re-saved by it converts to exactly
    // the weights of the original.
    for name in ["mla_block_linear", "gqa_tied_block_linear"] {
        let hf = hf_dir_with(name, &resaved_checkpoint(name, &[], |_| {}));
        let out = scratch("rebuilt-out");
        run_ok(&convert_args(&hf, &out));
        assert!(weights(&out) == weights(&convert(name, "f32")), "{name}: re-saved checkpoint converts differently");
    }
}

#[test]
fn empty_list_flood_pickle_is_refused_within_the_cap() {
    // RELIABILITY: 64 Mi x EMPTY_LIST in a 65 KB file aborted at 2.6 GiB; 16 Mi took 662 MiB.
    for n in [64usize << 20, 16 << 20] {
        let mut pkl = b"\x80\x02".to_vec();
        pkl.resize(2 + n, b']');
        pkl.extend_from_slice(b"}.");
        let (hf, len) = hf_dir_with_pickle(pkl);
        assert!(len < 100_000, "{len}-byte file");
        let out = scratch("flood-out");
        let err = run_hostile(&convert_args(&hf, &out), "implausibly large");
        assert!(err.contains("amplification") && err.contains("data.pkl"), "{err}");
        assert!(!out.join("manifest.json").exists());
    }
}

/// `OrderedDict(memo list of `pairs` pairs)` reduced `calls` times.
fn ordered_dict_bomb(pairs: u32, calls: usize) -> Vec<u8> {
    let mut b = b"\x80\x02ccollections\nOrderedDict\nq\x00]q\x01(".to_vec();
    for i in 0..pairs {
        b.push(b'J');
        b.extend_from_slice(&i.to_le_bytes());
        b.extend_from_slice(b"K\x07\x86");
    }
    b.push(b'e');
    for _ in 0..calls {
        b.extend_from_slice(b"h\x00h\x01\x85R0");
    }
    b.extend_from_slice(b"}.");
    b
}

#[test]
fn ordered_dict_of_a_memoized_list_is_refused() {
    // RELIABILITY: 10,000 pairs x 1,000 calls took 902 MiB; 100,000 x 100,000 aborted at 4 GiB.
    for (pairs, calls) in [(10_000, 1_000), (100_000, 100_000)] {
        let (hf, _) = hf_dir_with_pickle(ordered_dict_bomb(pairs, calls));
        let out = scratch("odict-out");
        let err = run_hostile(&convert_args(&hf, &out), "implausibly large");
        assert!(err.contains("REDUCE"), "{err}");
    }
}

#[test]
fn one_big_key_in_many_dicts_is_parsed_without_copies() {
    // RELIABILITY: a 16 MiB string as the key of 10,000 dicts aborted at 4 GiB (a clone per
    // dict). Now the key is held once, the pickle parses, and the checkpoint is refused for what
    // it is: not a dict of tensors.
    let key_len = 16usize << 20;
    let mut b = b"\x80\x02]X".to_vec();
    b.extend_from_slice(&(key_len as u32).to_le_bytes());
    b.resize(b.len() + key_len, b'k');
    b.extend_from_slice(b"q\x000");
    for _ in 0..10_000 {
        b.extend_from_slice(b"}h\x00K\x01sa");
    }
    b.push(b'.');
    let (hf, _) = hf_dir_with_pickle(b);
    let out = scratch("key-out");
    run_hostile(&convert_args(&hf, &out), "top-level object is list of 10000 items");
}

#[test]
fn unused_huge_storage_is_refused_before_it_is_inflated() {
    // RELIABILITY: a 1.25 MB file with a 1 GiB zero storage for an unused tensor peaked at
    // 1,030 MiB before "unexpected tensor". Names and shapes are now checked first: under a
    // 256 MiB address-space cap (a quarter of the storage) the run still ends in that error.
    let ckpt = resaved_checkpoint("mla_block_linear", &[("model.extra.weight", vec![1 << 14, 1 << 14])], |_| {});
    assert!(ckpt.len() < 3 << 20, "{}-byte file", ckpt.len());
    let hf = hf_dir_with("mla_block_linear", &ckpt);
    let out = scratch("huge-out").join("pkg");
    let args = convert_args(&hf, &out);
    let (o, took) = run_sh("ulimit -v 262144", &args);
    let err = assert_clean_error(&o, &args, "unexpected tensor `model.extra.weight`");
    assert!(took < Duration::from_secs(5), "{took:?}: {err}");
    assert!(!out.exists(), "a refused conversion creates no output folder");

    // A tensor the config does use whose record claims 1 GiB: the claimed size is checked
    // against what the tensor needs before inflating.
    let ckpt = resaved_checkpoint("mla_block_linear", &[], |entries| {
        for (name, data) in entries.iter_mut() {
            if name == "archive/data/0" {
                *data = Data::Zeros(1 << 30);
            }
        }
    });
    let hf = hf_dir_with("mla_block_linear", &ckpt);
    let args = convert_args(&hf, &out);
    let (o, _) = run_sh("ulimit -v 262144", &args);
    let err = assert_clean_error(&o, &args, "storage record archive/data/0");
    assert!(err.contains("is 1073741824 bytes but the pickle says"), "{err}");
    assert!(!out.exists(), "the output folder this run created is removed again");
}

// ---- defect 12: duplicate zip entries -----------------------------------------------------

#[test]
fn duplicate_storage_entries_are_refused() {
    // RELIABILITY: two `archive/data/0` entries, zeros first: torch.load read the zeros, the
    // converter the real weights.
    let ckpt = resaved_checkpoint("mla_block_linear", &[], |entries| {
        let at = entries.iter().position(|(n, _)| n == "archive/data/0").unwrap();
        let Data::Bytes(real) = &entries[at].1 else { unreachable!() };
        let zeros = vec![0u8; real.len()];
        entries.insert(at, ("dup:archive/data/0".to_string(), Data::Bytes(zeros)));
    });
    let hf = hf_dir_with("mla_block_linear", &ckpt);
    let out = scratch("dup-out");
    let err = run_hostile(&convert_args(&hf, &out), "two entries named `archive/data/0`");
    assert!(err.contains("pytorch_model.bin"), "{err}");
}

// ---- defect 7: links, FIFOs, devices, companion files -------------------------------------

#[test]
fn companion_files_are_copied_only_when_regular_json() {
    let hf = hf_copy("mla_block_linear");
    let outside = scratch("outside").join("passwd");
    std::fs::write(&outside, "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::os::unix::fs::symlink(&outside, hf.join("tokenizer_config.json")).unwrap();
    std::fs::write(hf.join("generation_config.json"), "not json {").unwrap();
    let special = br#"{"bos_token": "<s>"}"#;
    std::fs::write(hf.join("special_tokens_map.json"), special).unwrap();
    let out = scratch("companion-out");
    let o = run(&convert_args(&hf, &out));
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "{err}");
    assert!(err.contains("warning: skipped tokenizer_config.json: it is a symbolic link"), "{err}");
    assert!(err.contains(path_str(&outside)), "the message names the link's target: {err}");
    assert!(err.contains("warning: skipped generation_config.json: it is not valid JSON"), "{err}");
    assert!(!err.contains("root:x:0:0"), "the linked file's content is never shown: {err}");
    assert_eq!(
        entries_of(&out),
        ["config.json", "manifest.json", "model.safetensors", "special_tokens_map.json", "tokenizer.json"]
    );
    assert_eq!(std::fs::read(out.join("special_tokens_map.json")).unwrap(), special);
    assert_eq!(manifest_files(&out), ["config.json", "model.safetensors", "special_tokens_map.json", "tokenizer.json"]);
    assert!(weights(&out) == weights(&convert("mla_block_linear", "f32")));
}

#[test]
fn planted_links_in_the_output_are_replaced_not_followed() {
    // RELIABILITY: OUT/config.json -> victim made convert overwrite the victim.
    let victims = scratch("victims");
    let out = scratch("planted-out");
    for name in ["config.json", "model.safetensors", "manifest.json", "tokenizer.json"] {
        let v = victims.join(name);
        std::fs::write(&v, format!("precious {name}")).unwrap();
        std::os::unix::fs::symlink(&v, out.join(name)).unwrap();
    }
    let hf = fixture("mla_block_linear").join("hf");
    run_ok(&convert_args(&hf, &out));
    for name in ["config.json", "model.safetensors", "manifest.json", "tokenizer.json"] {
        assert_eq!(std::fs::read_to_string(victims.join(name)).unwrap(), format!("precious {name}"));
        assert!(std::fs::symlink_metadata(out.join(name)).unwrap().file_type().is_file(), "{name}");
    }
    assert_eq!(std::fs::read(out.join("config.json")).unwrap(), std::fs::read(hf.join("config.json")).unwrap());
    assert!(weights(&out) == weights(&convert("mla_block_linear", "f32")));
    run_ok(&["logits", "--model", path_str(&out), "--ids", "1,2"]);
    assert_eq!(entries_of(&out), ["config.json", "manifest.json", "model.safetensors", "tokenizer.json"]);

    // An output folder that is itself a link is refused, and its target left alone.
    let target = scratch("link-target");
    let link = scratch("link-parent").join("out");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    run_hostile(&convert_args(&hf, &link), "is a symbolic link");
    assert!(entries_of(&target).is_empty());
}

#[test]
fn linked_or_special_input_files_are_typed_errors() {
    // RELIABILITY: tokenizer.json -> /dev/zero converted "successfully" without a tokenizer; a
    // FIFO config.json hung. Both, and the other shapes of the same problem, now fail at once.
    let out = scratch("special-out");
    let cases: [(&str, &str); 4] = [
        ("tokenizer.json", "symbolic link (to /dev/zero)"),
        ("config.json", "symbolic link"),
        ("pytorch_model.bin", "symbolic link"),
        ("tokenizer.json", "a directory, not a regular file"),
    ];
    for (k, (name, needle)) in cases.iter().enumerate() {
        let hf = hf_copy("mla_block_linear");
        let p = hf.join(name);
        std::fs::remove_file(&p).unwrap();
        match k {
            0 => std::os::unix::fs::symlink("/dev/zero", &p).unwrap(),
            1 | 2 => std::os::unix::fs::symlink(fixture("mla_block_linear").join("hf").join(name), &p).unwrap(),
            _ => std::fs::create_dir(&p).unwrap(),
        }
        let err = run_hostile(&convert_args(&hf, &out), needle);
        assert!(err.contains(name), "{err}");
        assert!(!out.join("manifest.json").exists(), "{name}");
    }
    for name in ["config.json", "tokenizer.json"] {
        let hf = hf_copy("mla_block_linear");
        let p = hf.join(name);
        std::fs::remove_file(&p).unwrap();
        assert!(Command::new("mkfifo").arg(&p).status().unwrap().success());
        let err = run_hostile(&convert_args(&hf, &out), "a FIFO (named pipe), not a regular file");
        assert!(err.contains(name), "{err}");
    }
    // A tokenizer.json that is a regular file but not a tokenizer is still an error.
    let hf = hf_copy("mla_block_linear");
    std::fs::write(hf.join("tokenizer.json"), "[]").unwrap();
    run_hostile(&convert_args(&hf, &out), "tokenizer");
}

// ---- defect 15: write errors say "write"; failures keep the old package -------------------

#[test]
fn write_failure_says_cannot_write_and_leaves_no_partial_package() {
    // A file-size limit (SIGXFSZ ignored, so the write returns EFBIG) stands in for a full disk:
    // the weights (~500 KB) cannot be written, config.json (~1 KB) could.
    let hf = fixture("mla_block_linear").join("hf");
    let out = scratch("full-out");
    let args = convert_args(&hf, &out);
    let (o, _) = run_sh("trap '' XFSZ; ulimit -f 64", &args);
    let err = assert_clean_error(&o, &args, "cannot write");
    assert!(err.contains("model.safetensors") && !err.contains("cannot read"), "{err}");
    assert!(entries_of(&out).is_empty(), "no manifest, no temporary files: {:?}", entries_of(&out));
}

#[test]
fn failed_conversion_keeps_the_existing_package() {
    let out = convert("mla_block_linear", "f32");
    let before: Vec<(String, Vec<u8>)> =
        entries_of(&out).into_iter().map(|n| (n.clone(), std::fs::read(out.join(&n)).unwrap())).collect();
    // A checkpoint refused late (f16 range) after the output folder is prepared.
    let hf = hf_copy("mla_block_linear");
    let (_, tensors) = read_source(&hf).unwrap();
    let name = "model.embed_tokens.weight";
    let embed = &tensors.iter().find(|(n, _)| n == name).unwrap().1;
    let huge: Vec<u8> = match embed.dtype {
        Dtype::F32 => 1e30f32.to_le_bytes().to_vec(),
        Dtype::BF16 => half::bf16::from_f32(1e30).to_le_bytes().to_vec(),
        other => panic!("fixture dtype {other:?}"),
    };
    let big: Vec<u8> = std::iter::repeat_n(huge, embed.numel()).flatten().collect();
    let ckpt = resaved_checkpoint("mla_block_linear", &[], |entries| {
        let k = tensors.iter().position(|(n, _)| n == name).unwrap();
        let at = entries.iter().position(|(n, _)| *n == format!("archive/data/{k}")).unwrap();
        entries[at].1 = Data::Bytes(big);
    });
    std::fs::write(hf.join("pytorch_model.bin"), ckpt).unwrap();
    run_err(&["convert", path_str(&hf), path_str(&out), "--dtype", "f16"], "beyond the f16 range");
    let after: Vec<(String, Vec<u8>)> =
        entries_of(&out).into_iter().map(|n| (n.clone(), std::fs::read(out.join(&n)).unwrap())).collect();
    assert!(before == after, "the existing package is untouched");
    run_ok(&["logits", "--model", path_str(&out), "--ids", "1,2"]);
}
