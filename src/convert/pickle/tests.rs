use super::*;

fn parse(b: &[u8]) -> Result<Pickle> {
    Pickle::parse(b)
}

fn invalid(b: &[u8]) -> String {
    match parse(b) {
        Err(Error::InvalidCheckpoint(m)) => m,
        other => panic!("expected InvalidCheckpoint, got {other:?}"),
    }
}

fn unsafe_msg(b: &[u8]) -> String {
    match parse(b) {
        Err(Error::UnsafePickle(m)) => m,
        other => panic!("expected UnsafePickle, got {other:?}"),
    }
}

/// Pickle of {'a': [1, -2, 300, 70000, 2.5, None, True, False, 'é', (1, 2), 2**70, -2**40],
/// 'b': {'x': 1}} written by CPython with the given protocol (generated once, embedded).
const PY_P0: &[u8] = b"(dp0\nVa\np1\n(lp2\nI1\naI-2\naI300\naI70000\naF2.5\naNaI01\naI00\naV\xe9\np3\na(I1\nI2\ntp4\naL1180591620717411303424L\naL-1099511627776L\nasVb\np5\n(dp6\nVx\np7\nI1\nss.";
const PY_P2: &[u8] = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01]q\x02(K\x01J\xfe\xff\xff\xffM,\x01Jp\x11\x01\x00G@\x04\x00\x00\x00\x00\x00\x00N\x88\x89X\x02\x00\x00\x00\xc3\xa9q\x03K\x01K\x02\x86q\x04\x8a\t\x00\x00\x00\x00\x00\x00\x00\x00@\x8a\x06\x00\x00\x00\x00\x00\xffeX\x01\x00\x00\x00bq\x05}q\x06X\x01\x00\x00\x00xq\x07K\x01su.";
const PY_P4: &[u8] = b"\x80\x04\x95S\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x01a\x94]\x94(K\x01J\xfe\xff\xff\xffM,\x01Jp\x11\x01\x00G@\x04\x00\x00\x00\x00\x00\x00N\x88\x89\x8c\x02\xc3\xa9\x94K\x01K\x02\x86\x94\x8a\t\x00\x00\x00\x00\x00\x00\x00\x00@\x8a\x06\x00\x00\x00\x00\x00\xffe\x8c\x01b\x94}\x94\x8c\x01x\x94K\x01su.";

fn check_py_sample(p: &Pickle) {
    let root = p.as_dict(p.root()).expect("dict");
    assert_eq!(root.len(), 2);
    assert_eq!(p.as_str(root[0].0), Some("a"));
    let list = p.as_seq(root[0].1).expect("list");
    let objs: Vec<&Object> = list.iter().map(|&i| p.get(i)).collect();
    assert_eq!(objs[0], &Object::Int(1));
    assert_eq!(objs[1], &Object::Int(-2));
    assert_eq!(objs[2], &Object::Int(300));
    assert_eq!(objs[3], &Object::Int(70000));
    assert_eq!(objs[4], &Object::Float(2.5));
    assert_eq!(objs[5], &Object::None);
    assert_eq!(objs[6], &Object::Bool(true));
    assert_eq!(objs[7], &Object::Bool(false));
    assert_eq!(objs[8], &Object::Str("é".into()));
    let t = p.as_seq(list[9]).unwrap();
    assert_eq!((p.as_int(t[0]), p.as_int(t[1])), (Some(1), Some(2)));
    assert!(matches!(objs[10], Object::BigInt(_)) || matches!(objs[10], Object::Int(_)));
    assert_eq!(objs[11], &Object::Int(-(1 << 40)));
    let inner = p.as_dict(root[1].1).unwrap();
    assert_eq!(p.as_str(inner[0].0), Some("x"));
    assert_eq!(p.as_int(inner[0].1), Some(1));
}

#[test]
fn parses_cpython_output_protocols_0_2_4() {
    check_py_sample(&parse(PY_P2).unwrap());
    check_py_sample(&parse(PY_P4).unwrap());
    check_py_sample(&parse(PY_P0).unwrap());
    // The text LONG and binary LONG1 forms of 2**70 agree.
    let big = |p: &Pickle| {
        let list = p.as_seq(p.as_dict(p.root()).unwrap()[0].1).unwrap();
        p.get(list[10]).clone()
    };
    assert_eq!(big(&parse(PY_P0).unwrap()), big(&parse(PY_P2).unwrap()));
}

#[test]
fn big_long1_is_kept_as_bigint() {
    let p = parse(PY_P2).unwrap();
    let list = p.as_seq(p.as_dict(p.root()).unwrap()[0].1).unwrap();
    let mut want = vec![0u8; 9];
    want[8] = 0x40;
    assert_eq!(p.get(list[10]), &Object::BigInt(want));
}

#[test]
fn ordered_dict_reduce_and_setitems() {
    // OrderedDict() via GLOBAL+EMPTY_TUPLE+REDUCE, then SETITEMS, then BUILD with metadata,
    // and a duplicate key replacing the earlier value in place.
    let mut b = b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01(".to_vec();
    b.extend_from_slice(b"X\x01\x00\x00\x00kK\x01X\x01\x00\x00\x00jK\x02X\x01\x00\x00\x00kK\x03u");
    b.extend_from_slice(b"}X\x09\x00\x00\x00_metadataK\x00sb.");
    let p = parse(&b).unwrap();
    let d = p.as_dict(p.root()).unwrap();
    let got: Vec<(&str, i64)> = d.iter().map(|&(k, v)| (p.as_str(k).unwrap(), p.as_int(v).unwrap())).collect();
    assert_eq!(got, vec![("k", 3), ("j", 2)]);
}

#[test]
fn whitelisted_globals_resolve() {
    for (m, n, g) in [
        ("collections", "OrderedDict", Global::OrderedDict),
        ("torch._utils", "_rebuild_tensor_v2", Global::RebuildTensorV2),
        ("torch._utils", "_rebuild_parameter", Global::RebuildParameter),
        ("torch._utils", "_rebuild_parameter_with_state", Global::RebuildParameterWithState),
        ("torch", "BFloat16Storage", Global::Storage(Dtype::BF16)),
        ("torch", "HalfStorage", Global::Storage(Dtype::F16)),
        ("torch", "FloatStorage", Global::Storage(Dtype::F32)),
        ("torch", "BoolStorage", Global::Storage(Dtype::BOOL)),
        ("torch", "bfloat16", Global::Dtype(Dtype::BF16)),
    ] {
        assert_eq!(Global::resolve(m, n).unwrap(), g);
        assert_eq!(g.qualified_name(), format!("{m}.{n}"));
    }
}

#[test]
fn forbidden_globals_are_refused() {
    let m = unsafe_msg(b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00ls\x85R.");
    assert!(m.contains("forbidden global `os.system`"), "{m}");
    let m = unsafe_msg(b"cbuiltins\neval\n.");
    assert!(m.contains("`builtins.eval`"), "{m}");
    // STACK_GLOBAL (protocol 4)
    let m = unsafe_msg(b"\x80\x04\x8c\nsubprocess\x94\x8c\x05Popen\x94\x93\x94.");
    assert!(m.contains("`subprocess.Popen`"), "{m}");
    // INST names the class inline.
    let m = unsafe_msg(b"(S'ls'\nios\nsystem\n.");
    assert!(m.contains("`os.system`"), "{m}");
    // Near misses of whitelisted names.
    for (m, n) in [
        ("torch", "load"),
        ("torch._utils", "_rebuild_tensor"),
        ("torch.storage", "_load_from_bytes"),
        ("collections", "defaultdict"),
        ("torch", "UntypedStorage"),
        ("__builtin__", "getattr"),
    ] {
        assert!(matches!(Global::resolve(m, n), Err(Error::UnsafePickle(_))), "{m}.{n}");
    }
    let m = Global::resolve("torch._utils", "_rebuild_qtensor").unwrap_err().to_string();
    assert!(m.contains("`torch._utils._rebuild_qtensor`") && m.contains("whitelist"), "{m}");
    // Control characters in the name are escaped in the message.
    let m = unsafe_msg(b"cos\x1b[2J\nsystem\n.");
    assert!(!m.contains('\x1b'), "{m}");
    // Extension registry codes.
    assert!(matches!(parse(b"\x80\x02\x82\x01."), Err(Error::UnsafePickle(_))));
}

#[test]
fn reduce_needs_a_global_callable() {
    let m = invalid(b"\x80\x02X\x01\x00\x00\x00f)R.");
    assert!(m.contains("not a whitelisted global"), "{m}");
}

#[test]
fn unknown_opcode() {
    let m = invalid(b"\x80\x02\xff.");
    assert!(m.contains("unknown opcode 0xff at byte 2"), "{m}");
}

#[test]
fn stack_underflow() {
    let m = invalid(b"\x80\x02R.");
    assert!(m.contains("stack underflow"), "{m}");
    let m = invalid(b"\x80\x02K\x01\x86.");
    assert!(m.contains("stack underflow"), "{m}");
    // Items below a MARK are not reachable from inside it.
    let m = invalid(b"\x80\x02}(K\x01K\x02s.");
    assert!(m.contains("stack underflow"), "{m}");
    let m = invalid(b"\x80\x02.");
    assert!(m.contains("STOP with an empty stack"), "{m}");
    let m = invalid(b"\x80\x02K\x01t.");
    assert!(m.contains("no MARK"), "{m}");
}

#[test]
fn huge_length_prefixes_are_refused_without_allocating() {
    let m = invalid(b"\x80\x02X\xff\xff\xff\xffabc");
    assert!(m.contains("length prefix 4294967295 exceeds the 3 bytes left"), "{m}");
    let m = invalid(b"\x80\x04\x8d\xff\xff\xff\xff\xff\xff\xff\xffab");
    assert!(m.contains("exceeds the 2 bytes left"), "{m}");
    let m = invalid(b"\x80\x04\x8e\x00\x00\x00\x00\x00\x00\x00\x80ab");
    assert!(m.contains("exceeds"), "{m}");
    let m = invalid(b"\x80\x02\x8b\xff\xff\xff\x7f\x00.");
    assert!(m.contains("exceeds"), "{m}");
    let m = invalid(b"\x80\x02T\xff\xff\xff\xff.");
    assert!(m.contains("negative length"), "{m}");
    let m = invalid(b"\x80\x04\x95\xff\xff\xff\xff\xff\xff\xff\xff.");
    assert!(m.contains("frame length"), "{m}");
}

#[test]
fn bad_memo_index() {
    let m = invalid(b"\x80\x02h\x05.");
    assert!(m.contains("memo index 5 was never stored"), "{m}");
    let m = invalid(b"\x80\x02j\x00\x00\x00\x01.");
    assert!(m.contains("memo index 16777216"), "{m}");
    let m = invalid(b"\x80\x02q\x00.");
    assert!(m.contains("stack underflow"), "{m}");
}

#[test]
fn truncated_streams() {
    for cut in 0..PY_P2.len() {
        let m = invalid(&PY_P2[..cut]);
        assert!(m.contains("truncated") || m.contains("exceeds"), "cut {cut}: {m}");
    }
    for cut in 0..PY_P4.len() {
        assert!(matches!(parse(&PY_P4[..cut]), Err(Error::InvalidCheckpoint(_))), "{cut}");
    }
    let m = invalid(b"\x80\x02cos\nsys");
    assert!(m.contains("no terminating newline"), "{m}");
}

#[test]
fn misc_errors() {
    assert!(invalid(b"\x80\x09N.").contains("unsupported pickle protocol 9"));
    assert!(invalid(b"\x80\x02X\x02\x00\x00\x00\xff\xfe.").contains("not valid UTF-8"));
    assert!(invalid(b"\x80\x02K\x01K\x02s.").contains("stack underflow"));
    assert!(invalid(b"\x80\x02]K\x01K\x02s.").contains("cannot set items on a list"));
    assert!(invalid(b"\x80\x02}(K\x01u.").contains("odd number"));
    assert!(invalid(b"\x80\x02K\x01K\x02a.").contains("cannot add items to a int"));
    assert!(invalid(b"\x80\x02)K\x01b.").contains("BUILD on a tuple"));
    assert!(invalid(b"\x80\x05\x97.").contains("out-of-band"));
    assert!(invalid(b"\x80\x02I12x\n.").contains("bad integer literal"));
}

#[test]
fn persistent_ids_and_shared_memo_objects() {
    // [pid, pid] where the second is a memo reference to the first: same object id.
    let b = b"\x80\x02]((X\x07\x00\x00\x00storageq\x00ctorch\nFloatStorage\nq\x01X\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x04tQq\x02h\x02e.";
    let p = parse(b).unwrap();
    let l = p.as_seq(p.root()).unwrap();
    assert_eq!(l.len(), 2);
    assert_eq!(l[0], l[1]);
    let Object::PersistentId(pid) = p.get(l[0]) else { panic!() };
    let t = p.as_seq(*pid).unwrap();
    assert_eq!(p.as_str(t[0]), Some("storage"));
    assert_eq!(p.get(t[1]), &Object::Global(Global::Storage(Dtype::F32)));
    assert_eq!(p.as_int(t[4]), Some(4));
}

#[test]
fn self_referencing_list_is_fine() {
    // l = []; l.append(l)
    let p = parse(b"\x80\x02]q\x00h\x00a.").unwrap();
    let l = p.as_seq(p.root()).unwrap();
    assert_eq!(l, &[p.root()]);
    assert_eq!(p.describe(p.root()), "list of 1 items");
}

#[test]
fn text_opcodes() {
    let p = parse(b"(S'a\\x41\\n\\'b'\nF1.5\nI-7\nL99L\nNP1\ntp0\n0g0\n.").unwrap();
    let t = p.as_seq(p.root()).unwrap();
    assert_eq!(p.as_str(t[0]), Some("aA\n'b"));
    assert_eq!(p.get(t[1]), &Object::Float(1.5));
    assert_eq!(p.as_int(t[2]), Some(-7));
    assert_eq!(p.as_int(t[3]), Some(99));
    assert_eq!(p.get(t[4]), &Object::None);
    assert!(matches!(p.get(t[5]), Object::PersistentId(_)));
    let p = parse(b"V\\u00e9x\\U0001F600\n.").unwrap();
    assert_eq!(p.as_str(p.root()), Some("éx😀"));
}

/// Deterministic mutation fuzzing: no input may panic.
#[test]
fn mutated_streams_never_panic() {
    let mut seed: u64 = 0x9e3779b97f4a7c15;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for base in [PY_P0, PY_P2, PY_P4] {
        for _ in 0..3000 {
            let mut b = base.to_vec();
            for _ in 0..1 + rnd() % 4 {
                let i = (rnd() as usize) % b.len();
                match rnd() % 3 {
                    0 => b[i] = rnd() as u8,
                    1 => {
                        b.remove(i);
                    }
                    _ => b.insert(i, rnd() as u8),
                }
            }
            let _ = parse(&b);
        }
    }
}

// ---- memory budget (RELIABILITY defect 1) -----------------------------------------------------

fn budget_used(b: &[u8]) -> (Result<Pickle>, usize) {
    parser::Parser::new(b, budget::for_len(b.len())).run_measured()
}

fn implausible(b: &[u8]) -> String {
    let m = invalid(b);
    assert!(m.contains("implausibly large") && m.contains("amplification"), "{m}");
    m
}

/// `\x80\x02` + `n` × EMPTY_LIST + `}.`
fn empty_list_flood(n: usize) -> Vec<u8> {
    let mut b = b"\x80\x02".to_vec();
    b.resize(2 + n, b']');
    b.extend_from_slice(b"}.");
    b
}

#[test]
fn a_flood_of_one_byte_opcodes_is_refused_by_the_budget() {
    // 16 Mi EMPTY_LISTs (a 16 KB file once deflated) used to take 662 MiB.
    let m = implausible(&empty_list_flood(16 << 20));
    assert!(m.contains("opcode EMPTY_LIST"), "{m}");
    // A small flood is still parsed (the budget grows with the input).
    let p = parse(&empty_list_flood(1000)).unwrap();
    assert_eq!(p.describe(p.root()), "dict of 0 items");
    assert_eq!(p.len(), 1001);
}

/// `OrderedDict(memo[1])` called `calls` times on a memoized list of `pairs` (int, int) pairs.
fn ordered_dict_of_memo_list(pairs: u32, calls: usize) -> Vec<u8> {
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
    b.extend_from_slice(b"h\x00h\x01\x85R.");
    b
}

#[test]
fn ordered_dict_of_a_memoized_list_charges_every_copy() {
    // 10,000 pairs x 1,000 calls: 86 KB of pickle that used to take 902 MiB.
    let m = implausible(&ordered_dict_of_memo_list(10_000, 1_000));
    assert!(m.contains("opcode REDUCE"), "{m}");
    // A few copies are fine, and each is a real dict of the pairs.
    let p = parse(&ordered_dict_of_memo_list(3, 2)).unwrap();
    let d = p.as_dict(p.root()).unwrap();
    let got: Vec<(i64, i64)> = d.iter().map(|&(k, v)| (p.as_int(k).unwrap(), p.as_int(v).unwrap())).collect();
    assert_eq!(got, vec![(0, 7), (1, 7), (2, 7)]);
}

/// One `key_len`-byte string, memoized, used as the key of `dicts` separate dicts.
fn one_key_in_many_dicts(key_len: usize, dicts: usize) -> Vec<u8> {
    let mut b = b"\x80\x02]X".to_vec();
    b.extend_from_slice(&(key_len as u32).to_le_bytes());
    b.resize(b.len() + key_len, b'k');
    b.extend_from_slice(b"q\x000");
    for _ in 0..dicts {
        b.extend_from_slice(b"}h\x00K\x01sa");
    }
    b.push(b'.');
    b
}

#[test]
fn a_key_shared_by_many_dicts_is_not_copied() {
    // 1 MiB key x 1,000 dicts used to clone the key per dict (1,012 MiB).
    let b = one_key_in_many_dicts(1 << 20, 1000);
    let (p, used) = budget_used(&b);
    let p = p.unwrap();
    assert_eq!(p.as_seq(p.root()).unwrap().len(), 1000);
    // The key's bytes are held once: the parse needs about the pickle's size, not 1000 x 1 MiB.
    assert!(used < b.len() + (1 << 20) / 4, "used {used} for a {}-byte pickle", b.len());
    assert!(Pickle::parse_with_budget(&b, (1 << 20) + 200_000).is_ok());
    // Each dict maps the one key to 1.
    let first = p.as_dict(p.as_seq(p.root()).unwrap()[999]).unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(p.as_str(first[0].0).map(str::len), Some(1 << 20));
}

#[test]
fn duplicate_keys_follow_python_equality() {
    // {1: 2, True: 3} is one key; 'a' and b'a' are two.
    let p = parse(b"\x80\x02}(K\x01K\x02\x88K\x03u.").unwrap();
    let d = p.as_dict(p.root()).unwrap();
    assert_eq!(d.len(), 1);
    assert_eq!((p.as_int(d[0].0), p.as_int(d[0].1)), (Some(1), Some(3)));
    let p = parse(b"\x80\x03}(X\x01\x00\x00\x00aK\x01C\x01aK\x02X\x01\x00\x00\x00aK\x03u.").unwrap();
    let d = p.as_dict(p.root()).unwrap();
    let vals: Vec<i64> = d.iter().map(|&(_, v)| p.as_int(v).unwrap()).collect();
    assert_eq!(vals, vec![3, 2]);
    // Equal keys that are different objects (not memo references) also collide.
    let p = parse(b"\x80\x02}(X\x02\x00\x00\x00abK\x01X\x02\x00\x00\x00abK\x02u.").unwrap();
    assert_eq!(p.as_dict(p.root()).unwrap().len(), 1);
}

#[test]
fn real_state_dict_pickles_use_a_fraction_of_the_budget() {
    use std::io::Read;
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let mut checked = 0;
    for entry in std::fs::read_dir(fixtures).unwrap() {
        let bin = entry.unwrap().path().join("hf/pytorch_model.bin");
        let Ok(bytes) = std::fs::read(&bin) else { continue };
        let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
        let name = zip.file_names().find(|n| n.ends_with("/data.pkl")).unwrap().to_owned();
        let mut pkl = Vec::new();
        zip.by_name(&name).unwrap().read_to_end(&mut pkl).unwrap();
        let (p, used) = budget_used(&pkl);
        p.unwrap();
        let per_byte = used as f64 / pkl.len() as f64;
        println!("{}: {} bytes of pickle, {used} bytes of budget ({per_byte:.1}/byte)", bin.display(), pkl.len());
        assert!(per_byte * 4.0 <= budget::PER_INPUT_BYTE as f64, "{}: {per_byte:.1} bytes per byte", bin.display());
        checked += 1;
    }
    assert!(checked >= 6, "fixtures found: {checked}");
}

/// The schoolbook base-256 conversion this module used before `decimal_magnitude_le`.
fn reference_magnitude(digits: &[u8]) -> Vec<u8> {
    let mut mag: Vec<u8> = vec![0];
    for &d in digits {
        let mut carry = (d - b'0') as u32;
        for byte in mag.iter_mut() {
            let v = *byte as u32 * 10 + carry;
            *byte = v as u8;
            carry = v >> 8;
        }
        if carry > 0 {
            mag.push(carry as u8);
        }
    }
    mag
}

#[test]
fn long_decimal_literals_convert_exactly_and_fast() {
    let mut seed: u64 = 0x853c49e6748fea9b;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for len in [1usize, 18, 19, 20, 38, 39, 40, 100, 777, 4300] {
        for _ in 0..5 {
            let digits: Vec<u8> = (0..len).map(|_| b'0' + (rnd() % 10) as u8).collect();
            assert_eq!(text::decimal_magnitude_le(&digits), reference_magnitude(&digits), "{len} digits");
        }
    }
    assert_eq!(text::decimal_magnitude_le(b"0000"), vec![0]);
    // 2**70 and -2**70 as text LONGs match their LONG1 encodings.
    let p = parse(b"(L1180591620717411303424L\nL-1180591620717411303424L\nt.").unwrap();
    let t = p.as_seq(p.root()).unwrap();
    let mut pos = vec![0u8; 9];
    pos[8] = 0x40;
    let mut neg = vec![0u8; 9];
    neg[8] = 0xc0;
    assert_eq!((p.get(t[0]), p.get(t[1])), (&Object::BigInt(pos), &Object::BigInt(neg)));
    // 10,000 literals of 4,300 digits (43 MB): linear time, not ~100 s.
    let lit = format!("L{}L\n0", "7".repeat(4300));
    let mut b = b"\x80\x02N".to_vec();
    for _ in 0..2000 {
        b.extend_from_slice(lit.as_bytes());
    }
    b.push(b'.');
    let t0 = std::time::Instant::now();
    assert!(parse(&b).is_ok());
    assert!(t0.elapsed() < std::time::Duration::from_secs(5), "{:?}", t0.elapsed());
}
