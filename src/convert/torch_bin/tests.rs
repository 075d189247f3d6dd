use super::*;
use std::io::{Cursor, Write};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/torch");

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(FIXTURES).join(name)).unwrap()
}

fn invalid(r: Result<Vec<(String, RawTensor)>>) -> String {
    match r {
        Err(Error::InvalidCheckpoint(m)) => m,
        Err(e) => panic!("expected InvalidCheckpoint, got {e:?}"),
        Ok(t) => panic!("expected InvalidCheckpoint, got {} tensors", t.len()),
    }
}

/// Every entry of a zip, in archive order.
fn unzip(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut z = zip::ZipArchive::new(Cursor::new(bytes)).unwrap();
    (0..z.len())
        .map(|i| {
            let mut f = z.by_index(i).unwrap();
            let mut v = Vec::new();
            f.read_to_end(&mut v).unwrap();
            (f.name().to_owned(), v)
        })
        .collect()
}

fn make_zip(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, data) in entries {
        w.start_file(name.as_str(), opts).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// state.bin with one entry (matched by suffix) replaced, or removed when `new` is None.
fn state_with(suffix: &str, new: Option<Vec<u8>>) -> Vec<u8> {
    let mut entries = unzip(&fixture("state.bin"));
    let i = entries.iter().position(|(n, _)| n.ends_with(suffix)).unwrap();
    match new {
        Some(d) => entries[i].1 = d,
        None => {
            entries.remove(i);
        }
    }
    make_zip(&entries)
}

fn to_f64(dtype: Dtype, data: &[u8]) -> Vec<f64> {
    let es = elem_size(dtype);
    data.chunks_exact(es)
        .map(|c| match dtype {
            Dtype::BF16 => half::bf16::from_le_bytes([c[0], c[1]]).to_f64(),
            Dtype::F16 => half::f16::from_le_bytes([c[0], c[1]]).to_f64(),
            Dtype::F32 => f32::from_le_bytes(c.try_into().unwrap()) as f64,
            Dtype::F64 => f64::from_le_bytes(c.try_into().unwrap()),
            Dtype::I64 => i64::from_le_bytes(c.try_into().unwrap()) as f64,
            Dtype::I32 => i32::from_le_bytes(c.try_into().unwrap()) as f64,
            Dtype::BOOL | Dtype::U8 => c[0] as f64,
            other => panic!("unexpected dtype {other:?}"),
        })
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn check_against_expected(tensors: &[(String, RawTensor)]) {
    let expected: serde_json::Value = serde_json::from_slice(&fixture("expected.json")).unwrap();
    let expected = expected["tensors"].as_array().unwrap();
    let names: Vec<&str> = tensors.iter().map(|(n, _)| n.as_str()).collect();
    let want_names: Vec<&str> = expected.iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, want_names, "names and order");
    for ((name, t), e) in tensors.iter().zip(expected) {
        assert_eq!(format!("{:?}", t.dtype), e["dtype"].as_str().unwrap(), "{name} dtype");
        let shape: Vec<usize> = e["shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        assert_eq!(t.shape, shape, "{name} shape");
        assert_eq!(t.data.len(), t.numel() * elem_size(t.dtype), "{name} byte length");
        assert_eq!(hex(&t.data), e["data_hex"].as_str().unwrap(), "{name} bytes");
        let values: Vec<f64> = e["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert_eq!(to_f64(t.dtype, &t.data), values, "{name} values");
    }
}

#[test]
fn reads_state_bin_exactly() {
    let from_path = read_pytorch_bin(&Path::new(FIXTURES).join("state.bin")).unwrap();
    check_against_expected(&from_path);
    let from_bytes = read_pytorch_bin_bytes(&fixture("state.bin")).unwrap();
    check_against_expected(&from_bytes);
    // Spot checks of the cases the fixture exercises.
    let get = |n: &str| &from_path.iter().find(|(k, _)| k == n).unwrap().1;
    assert_eq!(get("transposed").shape, vec![4, 3]);
    assert_eq!(get("col_slice").shape, vec![3, 2]);
    assert_eq!(get("scalar").shape, Vec::<usize>::new());
    assert_eq!(get("scalar").data, 2.5f32.to_le_bytes());
    assert_eq!(get("empty").shape, vec![0, 3]);
    assert!(get("empty").data.is_empty());
    assert_eq!(get("tied.a").data, get("tied.b").data);
    assert_eq!(get("tied.a").data, get("tied.c").data);
    assert_eq!(get("tied.row1").data, get("tied.a").data[8..]);
}

#[test]
fn other_prefix_and_deflated_records() {
    // torch names the top directory after the file; any single directory works, and
    // compressed records are read too.
    let entries: Vec<(String, Vec<u8>)> =
        unzip(&fixture("state.bin")).into_iter().map(|(n, d)| (n.replacen("state/", "pytorch_model/", 1), d)).collect();
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in &entries {
        w.start_file(name.as_str(), opts).unwrap();
        w.write_all(data).unwrap();
    }
    let bytes = w.finish().unwrap().into_inner();
    check_against_expected(&read_pytorch_bin_bytes(&bytes).unwrap());
    // No byteorder record (older torch): little-endian is assumed.
    check_against_expected(&read_pytorch_bin_bytes(&state_with("/byteorder", None)).unwrap());
}

#[test]
fn evil_pickle_is_refused_and_not_executed() {
    let marker = Path::new("/tmp/blockffn_pwned");
    let _ = std::fs::remove_file(marker);
    let path = Path::new(FIXTURES).join("evil.bin");
    for r in [read_pytorch_bin(&path), read_pytorch_bin_bytes(&fixture("evil.bin"))] {
        match r {
            Err(Error::UnsafePickle(m)) => {
                assert!(m.contains("forbidden global `os.system`"), "{m}")
            }
            other => panic!("expected UnsafePickle, got {other:?}"),
        }
    }
    assert!(!marker.exists(), "the evil pickle's command ran");
}

#[test]
fn truncated_files_error_without_panicking() {
    let bytes = fixture("state.bin");
    let entries = unzip(&bytes);
    // Cut points: every 97 bytes, plus inside data.pkl and inside a storage record.
    let find = |needle: &[u8]| bytes.windows(needle.len()).position(|w| w == needle).unwrap();
    let pkl_at = find(b"\x80\x02ccollections");
    let storage_name = b"state/data/5";
    let storage_at = find(storage_name) + storage_name.len();
    let mut cuts: Vec<usize> = (0..bytes.len()).step_by(97).collect();
    cuts.extend([0, 1, 3, 4, 30, pkl_at + 1, pkl_at + 200, pkl_at + 1000]);
    cuts.extend([storage_at + 30, storage_at + 70, bytes.len() - 1, bytes.len() - 22]);
    for cut in cuts {
        match read_pytorch_bin_bytes(&bytes[..cut]) {
            Err(Error::InvalidCheckpoint(_)) => {}
            other => panic!("cut at {cut}: expected InvalidCheckpoint, got {other:?}"),
        }
    }
    // Truncated file on disk: Io or InvalidCheckpoint, never a panic.
    let dir = std::env::temp_dir().join(format!("blockffn_torch_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("cut.bin");
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let r = read_pytorch_bin(&p);
    assert!(matches!(r, Err(Error::InvalidCheckpoint(_) | Error::Io { .. })), "{r:?}");
    std::fs::remove_dir_all(&dir).unwrap();

    // Well-formed zips whose data.pkl is cut short.
    let pkl = &entries.iter().find(|(n, _)| n.ends_with("data.pkl")).unwrap().1;
    for cut in [0, 1, 2, 33, 100, pkl.len() / 2, pkl.len() - 1] {
        let m = invalid(read_pytorch_bin_bytes(&state_with("data.pkl", Some(pkl[..cut].to_vec()))));
        assert!(m.contains("data.pkl") && m.contains("pickle"), "cut {cut}: {m}");
    }
    // ... and whose storage record is cut short.
    let m = invalid(read_pytorch_bin_bytes(&state_with("data/5", Some(vec![0u8; 10]))));
    assert!(m.contains("state/data/5") && m.contains("`transposed`"), "{m}");
    // A storage record missing altogether.
    let m = invalid(read_pytorch_bin_bytes(&state_with("data/0", None)));
    assert!(m.contains("missing") && m.contains("model.embed.weight"), "{m}");
}

#[test]
fn corrupt_storage_bytes_fail_the_crc() {
    let mut bytes = fixture("state.bin");
    let name = b"state/data/0";
    let at = bytes.windows(name.len()).position(|w| w == name).unwrap() + name.len();
    // The local header's extra field pads data to 64 bytes; find the record's first data byte
    // by its known value (bf16 -0.625 = 0xbf20, little-endian 20 bf).
    let data_at = at + bytes[at..].windows(2).position(|w| w == [0x20, 0xbf]).unwrap();
    bytes[data_at] ^= 0x01;
    let m = invalid(read_pytorch_bin_bytes(&bytes));
    assert!(m.contains("state/data/0"), "{m}");
}

#[test]
fn legacy_and_foreign_formats() {
    let legacy = b"\x80\x02\x8a\x0alZ\xfc\x9cF\xf9 j\xa8P\x19.\x80\x02M\xe9\x03.";
    let m = invalid(read_pytorch_bin_bytes(legacy));
    assert!(m.contains("legacy PyTorch format is not supported"), "{m}");
    assert!(m.contains("_use_new_zipfile_serialization=True"), "{m}");
    let mut tar = vec![0u8; 600];
    tar[257..262].copy_from_slice(b"ustar");
    assert!(invalid(read_pytorch_bin_bytes(&tar)).contains("legacy"));
    assert!(invalid(read_pytorch_bin_bytes(b"")).contains("empty"));
    assert!(invalid(read_pytorch_bin_bytes(b"hello world")).contains("not a PyTorch zip"));
    let st = b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":1}        ";
    assert!(invalid(read_pytorch_bin_bytes(st)).contains("safetensors"));
    // A zip that torch did not write.
    let z = make_zip(&[("readme.txt".into(), b"hi".to_vec())]);
    assert!(invalid(read_pytorch_bin_bytes(&z)).contains("no <prefix>/data.pkl"));
    // Missing file: Io.
    let r = read_pytorch_bin(Path::new("/nonexistent/blockffn/pytorch_model.bin"));
    assert!(matches!(r, Err(Error::Io { .. })), "{r:?}");
}

#[test]
fn big_endian_is_refused() {
    let m = invalid(read_pytorch_bin_bytes(&state_with("/byteorder", Some(b"big".to_vec()))));
    assert!(m.contains("big-endian"), "{m}");
}

// ---- hand-made pickles --------------------------------------------------------------------

fn unicode(out: &mut Vec<u8>, s: &str) {
    out.push(b'X');
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn int(out: &mut Vec<u8>, v: i64) {
    out.push(b'J');
    out.extend_from_slice(&(v as i32).to_le_bytes());
}

fn int_tuple(out: &mut Vec<u8>, v: &[i64]) {
    out.push(b'(');
    for &x in v {
        int(out, x);
    }
    out.push(b't');
}

struct T<'a> {
    name: &'a str,
    storage_type: &'a str,
    key: &'a str,
    numel: i64,
    offset: i64,
    size: &'a [i64],
    stride: &'a [i64],
}

fn tensor_pickle(ts: &[T]) -> Vec<u8> {
    let mut o = b"\x80\x02ccollections\nOrderedDict\n)R(".to_vec();
    for t in ts {
        unicode(&mut o, t.name);
        o.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n(");
        o.push(b'(');
        unicode(&mut o, "storage");
        o.extend_from_slice(format!("ctorch\n{}\n", t.storage_type).as_bytes());
        unicode(&mut o, t.key);
        unicode(&mut o, "cpu");
        int(&mut o, t.numel);
        o.extend_from_slice(b"tQ");
        int(&mut o, t.offset);
        int_tuple(&mut o, t.size);
        int_tuple(&mut o, t.stride);
        o.extend_from_slice(b"\x89ccollections\nOrderedDict\n)RtR");
    }
    o.extend_from_slice(b"u.");
    o
}

fn archive(pkl: Vec<u8>, storages: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut e = vec![("archive/data.pkl".to_string(), pkl), ("archive/byteorder".to_string(), b"little".to_vec())];
    for (k, d) in storages {
        e.push((format!("archive/data/{k}"), d.clone()));
    }
    e.push(("archive/version".to_string(), b"3\n".to_vec()));
    make_zip(&e)
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn hand_made_views_gather_correctly() {
    let data: Vec<f32> = (0..24).map(|i| i as f32).collect();
    let t = |name, offset, size, stride| T {
        name,
        storage_type: "FloatStorage",
        key: "0",
        numel: 24,
        offset,
        size,
        stride,
    };
    let pkl = tensor_pickle(&[
        // [2,3,4] permuted to [4,3,2] (strides 1,4,12)
        t("perm", 0, &[4, 3, 2], &[1, 4, 12]),
        // every other element starting at 1
        t("step", 1, &[12], &[2]),
        // broadcast (stride 0) rows
        t("bcast", 5, &[3, 2], &[0, 1]),
        // size-1 dim with a silly stride
        t("one", 23, &[1, 1], &[1_000_000, 7]),
    ]);
    let got = read_pytorch_bin_bytes(&archive(pkl, &[("0", f32_bytes(&data))])).unwrap();
    let vals = |i: usize| to_f64(Dtype::F32, &got[i].1.data);
    let mut perm = Vec::new();
    for a in 0..4 {
        for b in 0..3 {
            for c in 0..2 {
                perm.push((a + 4 * b + 12 * c) as f64);
            }
        }
    }
    assert_eq!(vals(0), perm);
    assert_eq!(vals(1), (0..12).map(|i| (1 + 2 * i) as f64).collect::<Vec<_>>());
    assert_eq!(vals(2), vec![5.0, 6.0, 5.0, 6.0, 5.0, 6.0]);
    assert_eq!(vals(3), vec![23.0]);
    assert_eq!(got[3].1.shape, vec![1, 1]);

    // A broadcast view that would blow up memory is refused.
    let pkl = tensor_pickle(&[t("huge", 0, &[1 << 20, 1 << 10], &[0, 0])]);
    let m = invalid(read_pytorch_bin_bytes(&archive(pkl, &[("0", f32_bytes(&data))])));
    assert!(m.contains("`huge`") && m.contains("overlapping view"), "{m}");
}

#[test]
fn out_of_bounds_views_name_the_tensor() {
    let st = f32_bytes(&[0.0; 8]);
    let cases: &[(i64, &[i64], &[i64])] = &[
        (0, &[9], &[1]),       // too many elements
        (7, &[2], &[1]),       // offset pushes past the end
        (0, &[3, 3], &[3, 1]), // 2-D view past the end
        (0, &[2, 2], &[7, 1]), // stride past the end
        (9, &[0], &[1]),       // empty but offset past the end
        (-1, &[1], &[1]),      // negative offset
        (0, &[-2], &[1]),      // negative size
        (0, &[2], &[-1]),      // negative stride
    ];
    for (off, size, stride) in cases {
        let pkl = tensor_pickle(&[T {
            name: "w.bad",
            storage_type: "FloatStorage",
            key: "0",
            numel: 8,
            offset: *off,
            size,
            stride,
        }]);
        let r = read_pytorch_bin_bytes(&archive(pkl, &[("0", st.clone())]));
        assert!(r.is_err(), "{off} {size:?} {stride:?} accepted");
        let m = invalid(r);
        assert!(m.contains("`w.bad`"), "{off} {size:?} {stride:?}: {m}");
    }
    // size and stride of different rank
    let pkl = tensor_pickle(&[T {
        name: "w.rank",
        storage_type: "FloatStorage",
        key: "0",
        numel: 8,
        offset: 0,
        size: &[2, 2],
        stride: &[1],
    }]);
    let m = invalid(read_pytorch_bin_bytes(&archive(pkl, &[("0", st.clone())])));
    assert!(m.contains("`w.rank`") && m.contains("dims"), "{m}");
    // Storage record length disagreeing with the pickle's numel.
    let pkl = tensor_pickle(&[T {
        name: "w.len",
        storage_type: "FloatStorage",
        key: "0",
        numel: 6,
        offset: 0,
        size: &[6],
        stride: &[1],
    }]);
    let m = invalid(read_pytorch_bin_bytes(&archive(pkl, &[("0", st.clone())])));
    assert!(m.contains("`w.len`") && m.contains("32 bytes"), "{m}");
    // One storage used with two different dtypes.
    let a = T { name: "a", storage_type: "FloatStorage", key: "0", numel: 8, offset: 0, size: &[8], stride: &[1] };
    let b = T { name: "b", storage_type: "HalfStorage", key: "0", numel: 8, offset: 0, size: &[8], stride: &[1] };
    let m = invalid(read_pytorch_bin_bytes(&archive(tensor_pickle(&[a, b]), &[("0", st)])));
    assert!(m.contains("`b`") && m.contains("storage `0`"), "{m}");
}

#[test]
fn non_tensor_values_name_the_key() {
    // {'config': 3}
    let mut o = b"\x80\x02}(".to_vec();
    unicode(&mut o, "config");
    int(&mut o, 3);
    o.extend_from_slice(b"u.");
    let m = invalid(read_pytorch_bin_bytes(&archive(o, &[])));
    assert!(m.contains("`config`") && m.contains("not a tensor"), "{m}");
    // A nested state dict {'model': {...}}
    let mut o = b"\x80\x02}(".to_vec();
    unicode(&mut o, "model");
    o.extend_from_slice(b"}u.");
    let m = invalid(read_pytorch_bin_bytes(&archive(o, &[])));
    assert!(m.contains("`model`"), "{m}");
    // A storage type that is not a storage (a dtype global)
    let mut o = b"\x80\x02}(".to_vec();
    unicode(&mut o, "x");
    o.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n((");
    unicode(&mut o, "storage");
    o.extend_from_slice(b"ctorch\nbfloat16\n");
    unicode(&mut o, "0");
    unicode(&mut o, "cpu");
    int(&mut o, 1);
    o.extend_from_slice(b"tQK\x00(K\x01t(K\x01ttRu.");
    let m = invalid(read_pytorch_bin_bytes(&archive(o, &[("0", vec![0, 0])])));
    assert!(m.contains("`x`") && m.contains("torch.bfloat16"), "{m}");
    // Non-string key, and a top level that is not a dict.
    let m = invalid(read_pytorch_bin_bytes(&archive(b"\x80\x02}(K\x01K\x02u.".to_vec(), &[])));
    assert!(m.contains("not a string"), "{m}");
    let m = invalid(read_pytorch_bin_bytes(&archive(b"\x80\x02]K\x01a.".to_vec(), &[])));
    assert!(m.contains("top-level object is list"), "{m}");
    // An empty dict is a valid (empty) checkpoint.
    assert!(read_pytorch_bin_bytes(&archive(b"\x80\x02}.".to_vec(), &[])).unwrap().is_empty());
}

#[test]
fn mutated_archives_never_panic() {
    let pkl = unzip(&fixture("state.bin")).into_iter().find(|(n, _)| n.ends_with("data.pkl")).unwrap().1;
    let mut seed: u64 = 0x2545f4914f6cdd1d;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let entries = unzip(&fixture("state.bin"));
    for _ in 0..400 {
        let mut p = pkl.clone();
        for _ in 0..1 + rnd() % 3 {
            let i = (rnd() as usize) % p.len();
            p[i] = rnd() as u8;
        }
        let mut e = entries.clone();
        for (n, d) in e.iter_mut() {
            if n.ends_with("data.pkl") {
                *d = p.clone();
            }
        }
        let r = read_pytorch_bin_bytes(&make_zip(&e));
        assert!(matches!(r, Ok(_) | Err(Error::InvalidCheckpoint(_) | Error::UnsafePickle(_))), "{r:?}");
    }
}

// ---- two-step reading, duplicate names, oversized storages (RELIABILITY defects 1, 12) -------

/// Replaces every occurrence of `from` by `to` (same length) in `bytes`.
fn patch_all(bytes: &mut [u8], from: &[u8], to: &[u8]) -> usize {
    assert_eq!(from.len(), to.len());
    let mut n = 0;
    let mut i = 0;
    while i + from.len() <= bytes.len() {
        if &bytes[i..i + from.len()] == from {
            bytes[i..i + from.len()].copy_from_slice(to);
            n += 1;
            i += from.len();
        } else {
            i += 1;
        }
    }
    n
}

#[test]
fn duplicate_entry_names_are_refused() {
    // A zeroed copy of state/data/0 stored first under a placeholder name, then renamed to
    // state/data/0 in its local header and central directory record.
    let mut entries = unzip(&fixture("state.bin"));
    let i = entries.iter().position(|(n, _)| n == "state/data/0").unwrap();
    let zeros = vec![0u8; entries[i].1.len()];
    entries.insert(i, ("state/data/Q".into(), zeros));
    let mut bytes = make_zip(&entries);
    assert_eq!(patch_all(&mut bytes, b"state/data/Q", b"state/data/0"), 2);
    let m = invalid(read_pytorch_bin_bytes(&bytes));
    assert!(m.contains("two entries named `state/data/0`") && m.contains("torch.save"), "{m}");
    // The same archive without the duplicate reads as before.
    entries.remove(i);
    check_against_expected(&read_pytorch_bin_bytes(&make_zip(&entries)).unwrap());
}

#[test]
fn index_first_then_only_the_tensors_asked_for() {
    let bytes = fixture("state.bin");
    let archive = TorchArchive::from_bytes(&bytes).unwrap();
    let metas: Vec<TensorMeta> = archive.tensors().collect();
    let all = read_pytorch_bin_bytes(&bytes).unwrap();
    assert_eq!(metas.len(), all.len());
    for (m, (name, t)) in metas.iter().zip(&all) {
        assert_eq!((&m.name, m.dtype, &m.shape), (name, t.dtype, &t.shape));
        assert_eq!(m.byte_len(), Some(t.data.len() as u64));
    }
    // Without storage record 0, the tensors that do not use it still read (nothing else is
    // inflated), and asking for one that does names it.
    let broken = state_with("data/0", None);
    let mut archive = TorchArchive::from_bytes(&broken).unwrap();
    let uses_0 = |name: &str| name == "model.embed.weight";
    let others: Vec<usize> = (0..metas.len()).filter(|&i| !uses_0(&metas[i].name)).rev().collect();
    let mut got = Vec::new();
    archive
        .read_each(&others, |i, t| {
            got.push(i);
            assert_eq!(t.data, all[i].1.data, "{}", metas[i].name);
            Ok(())
        })
        .unwrap();
    assert_eq!(got, others, "tensors come back in the order asked for");
    let embed = metas.iter().position(|m| uses_0(&m.name)).unwrap();
    let m = invalid(archive.read_each(&[embed], |_, _| Ok(())).map(|_| Vec::new()));
    assert!(m.contains("missing") && m.contains("model.embed.weight"), "{m}");
    let r = archive.read_each(&[metas.len()], |_, _| Ok(()));
    assert!(matches!(r, Err(Error::InvalidInput(_))), "{r:?}");
}

#[test]
fn storage_far_larger_than_its_views_is_refused_before_inflating() {
    // The pickle claims a 1 GiB storage and reads 4 floats of it; the record itself holds only
    // 16 bytes, so reaching the record would give a size-mismatch error instead.
    let t = |numel| T {
        name: "w.small_view",
        storage_type: "FloatStorage",
        key: "0",
        numel,
        offset: 0,
        size: &[4],
        stride: &[1],
    };
    let pkl = tensor_pickle(&[t(1 << 28)]);
    let m = invalid(read_pytorch_bin_bytes(&archive(pkl, &[("0", f32_bytes(&[1.0; 4]))])));
    assert!(m.contains("refused before inflating") && m.contains("`w.small_view`"), "{m}");
    assert!(m.contains("1073741824 bytes") && m.contains("use only 16"), "{m}");
    // A modest overhang (a view of part of a small storage) is fine.
    let pkl = tensor_pickle(&[t(64)]);
    let got = read_pytorch_bin_bytes(&archive(pkl, &[("0", f32_bytes(&[2.0; 64]))])).unwrap();
    assert_eq!(to_f64(Dtype::F32, &got[0].1.data), vec![2.0; 4]);
}
