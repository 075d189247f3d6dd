//! The shared sparsity fixture, tests/fixtures/sparsity/sparsity.json: sequences of packed expert
//! bitmasks (3 layers × 40 experts, 2 words per layer) with the TLS, CLS_L and reuse that
//! src/metrics.rs computes from them. tests/js/sparsity.test.mjs checks the npm package's JS
//! implementation (js/sparsity.js) against the same file, so one file pins both.
//!
//! The file is written by this test: `BLOCKFFN_WRITE_SPARSITY_FIXTURE=1 cargo test --test
//! sparsity_fixture` (deterministic; the masks come from a fixed-seed generator).

use blockffn::experts::{self, ExpertMasks};
use blockffn::metrics::{self, ActiveSets, RunningSparsity, SparsityReport, CLS_WINDOWS};
use serde_json::Value;

const LAYERS: usize = 3;
const EXPERTS: usize = 40;
const WORDS: usize = 2;
const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sparsity/sparsity.json");

struct Seq {
    name: &'static str,
    about: &'static str,
    masks: Vec<Vec<u32>>,
    /// Written out for the hand-made sequence: the sorted ids per layer of each mask.
    sets: Option<ActiveSets>,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// True with probability `p` (to 1/2^20).
    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) % (1 << 20)) < (p * (1 << 20) as f64) as u64
    }
}

fn masks_of(sets: &ActiveSets) -> Vec<Vec<u32>> {
    let m = ExpertMasks::from_sets(sets, LAYERS, EXPERTS);
    (0..m.tokens()).map(|t| m.token(t).to_vec()).collect()
}

/// Each (layer, expert) switches state with probability `flip` per token: neighbouring tokens share experts.
fn markov(rng: &mut Rng, tokens: usize, start: f64, flip: f64) -> ActiveSets {
    let mut on: Vec<Vec<bool>> = (0..LAYERS).map(|_| (0..EXPERTS).map(|_| rng.chance(start)).collect()).collect();
    (0..tokens)
        .map(|_| {
            on.iter_mut()
                .map(|layer| {
                    layer.iter_mut().for_each(|a| *a ^= rng.chance(flip));
                    (0..EXPERTS as u16).filter(|&e| layer[e as usize]).collect()
                })
                .collect()
        })
        .collect()
}

fn independent(rng: &mut Rng, tokens: usize, p: f64) -> ActiveSets {
    (0..tokens)
        .map(|_| (0..LAYERS).map(|_| (0..EXPERTS as u16).filter(|_| rng.chance(p)).collect()).collect())
        .collect()
}

fn sequences() -> Vec<Seq> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let all: Vec<u16> = (0..EXPERTS as u16).collect();
    let hand: ActiveSets = vec![
        vec![vec![0, 31, 32, 39], vec![5], vec![]],
        vec![vec![0, 32], vec![5, 6], vec![1]],
        vec![vec![31], vec![], vec![1, 2, 3]],
        vec![vec![], vec![], vec![]],
        vec![all.clone(), vec![7], vec![38, 39]],
        vec![vec![39], vec![7], vec![39]],
    ];
    let mut unknown = masks_of(&independent(&mut rng, 20, 0.25));
    unknown[7].clear();
    unknown[19].clear();
    vec![
        Seq {
            name: "hand",
            about: "word boundaries (experts 31, 32, 39), an empty layer, a token with nothing active, a full layer",
            masks: masks_of(&hand),
            sets: Some(hand),
        },
        Seq {
            name: "locality-70",
            about: "70 tokens whose experts persist (a state flip with p = 0.1 per token): one full window of 64",
            masks: masks_of(&markov(&mut rng, 70, 0.2, 0.1)),
            sets: None,
        },
        Seq {
            name: "independent-130",
            about: "130 tokens, each expert active with p = 0.15 independently: two windows of 64",
            masks: masks_of(&independent(&mut rng, 130, 0.15)),
            sets: None,
        },
        Seq {
            name: "all-active-9",
            about: "every expert of every layer active",
            masks: masks_of(&vec![vec![all.clone(); LAYERS]; 9]),
            sets: None,
        },
        Seq { name: "one-token", about: "one token: TLS only", masks: masks_of(&independent(&mut rng, 1, 0.3)), sets: None },
        Seq { name: "empty", about: "no tokens: every number null", masks: vec![], sets: None },
        Seq {
            name: "unknown-masks",
            about: "20 tokens, two with an empty mask (a token never run): skipped, as RunningSparsity::push skips a mask of another length",
            masks: unknown,
            sets: None,
        },
    ]
}

/// RunningSparsity over every mask of a sequence (the engine's `stats`).
fn running(masks: &[Vec<u32>]) -> SparsityReport {
    let mut r = RunningSparsity::new(LAYERS, EXPERTS);
    masks.iter().for_each(|m| r.push(m));
    r.report()
}

/// The batch `metrics::sparsity` over the same sequence as one segment (masks of another length left out).
fn batch(masks: &[Vec<u32>]) -> metrics::Sparsity {
    let seg: ActiveSets = masks
        .iter()
        .filter(|m| m.len() == LAYERS * WORDS)
        .map(|m| m.chunks_exact(WORDS).map(|l| experts::ids(l).collect()).collect())
        .collect();
    metrics::sparsity(&[seg], EXPERTS, &CLS_WINDOWS)
}

fn num(x: Option<f64>) -> String {
    serde_json::to_string(&x).unwrap()
}

fn render(seqs: &[Seq]) -> String {
    let mut out = String::new();
    out.push_str("{\n");
    out.push_str(
        "  \"about\": \"Packed expert bitmasks and the TLS, CLS_L and reuse src/metrics.rs computes from them (RunningSparsity; \
         the batch sparsity() agrees). Written by tests/sparsity_fixture.rs (BLOCKFFN_WRITE_SPARSITY_FIXTURE=1); checked by it \
         and by tests/js/sparsity.test.mjs. A mask: layers x wordsPerLayer u32, bit e % 32 of word l * wordsPerLayer + e / 32 \
         set iff expert e of layer l is active.\",\n",
    );
    out.push_str(&format!("  \"layers\": {LAYERS},\n  \"experts\": {EXPERTS},\n  \"wordsPerLayer\": {WORDS},\n"));
    out.push_str(&format!("  \"windows\": {},\n", j(&CLS_WINDOWS.to_vec())));
    out.push_str("  \"sequences\": [\n");
    for (i, s) in seqs.iter().enumerate() {
        let r = running(&s.masks);
        out.push_str(&format!("    {{\n      \"name\": {},\n      \"about\": {},\n", j(&s.name), j(&s.about)));
        let rows: Vec<String> = s.masks.iter().map(|m| format!("        {}", j(m))).collect();
        if rows.is_empty() {
            out.push_str("      \"masks\": [],\n");
        } else {
            out.push_str(&format!("      \"masks\": [\n{}\n      ],\n", rows.join(",\n")));
        }
        if let Some(sets) = &s.sets {
            let rows: Vec<String> = sets.iter().map(|t| format!("        {}", j(t))).collect();
            out.push_str(&format!("      \"sets\": [\n{}\n      ],\n", rows.join(",\n")));
        }
        let cls: Vec<String> = CLS_WINDOWS.iter().map(|w| format!("\"{w}\": {}", num(r.cls[&w.to_string()]))).collect();
        out.push_str(&format!(
            "      \"expected\": {{ \"tokens\": {}, \"tls\": {}, \"cls\": {{ {} }}, \"reuse\": {} }}\n",
            r.tokens,
            num(r.tls),
            cls.join(", "),
            num(r.reuse)
        ));
        out.push_str(if i + 1 < seqs.len() { "    },\n" } else { "    }\n" });
    }
    out.push_str("  ]\n}\n");
    out
}

fn j<T: serde::Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).unwrap()
}

/// The fixture's text, written first when BLOCKFFN_WRITE_SPARSITY_FIXTURE is set (once, before any test reads it).
fn fixture_text() -> String {
    static WRITE: std::sync::Once = std::sync::Once::new();
    WRITE.call_once(|| {
        if std::env::var_os("BLOCKFFN_WRITE_SPARSITY_FIXTURE").is_some() {
            std::fs::create_dir_all(std::path::Path::new(PATH).parent().unwrap()).unwrap();
            std::fs::write(PATH, render(&sequences())).unwrap();
        }
    });
    std::fs::read_to_string(PATH).expect("tests/fixtures/sparsity/sparsity.json")
}

#[test]
fn the_fixture_is_what_the_rust_metrics_write() {
    let text = render(&sequences());
    let file = fixture_text();
    assert!(file == text, "{PATH} differs from what src/metrics.rs computes: BLOCKFFN_WRITE_SPARSITY_FIXTURE=1 cargo test --test sparsity_fixture");
}

#[test]
fn running_and_batch_metrics_agree_exactly_on_the_fixture_sequences() {
    for s in sequences() {
        let (r, b) = (running(&s.masks), batch(&s.masks));
        assert_eq!(r.tls, b.tls, "{}: TLS", s.name);
        assert_eq!(r.reuse, b.reuse, "{}: reuse", s.name);
        for w in CLS_WINDOWS {
            assert_eq!(r.cls[&w.to_string()], b.cls[&w], "{}: CLS_{w}", s.name);
        }
    }
}

/// |a − b| ≤ 1e-12 (serde_json parses floats to within an ulp; JS reads them exactly).
fn close(got: Option<f64>, want: &Value, what: &str) {
    match (got, want.as_f64()) {
        (Some(g), Some(w)) => assert!((g - w).abs() <= 1e-12, "{what}: {g} vs {w}"),
        (None, None) => assert!(want.is_null(), "{what}: {want}"),
        (g, _) => panic!("{what}: {g:?} vs {want}"),
    }
}

#[test]
fn metrics_recomputed_from_the_fixture_masks_equal_its_numbers() {
    let fx: Value = serde_json::from_str(&fixture_text()).unwrap();
    assert_eq!(
        (fx["layers"].as_u64(), fx["experts"].as_u64(), fx["wordsPerLayer"].as_u64()),
        (Some(3), Some(40), Some(2))
    );
    assert_eq!(experts::words_for(EXPERTS), WORDS);
    let seqs = fx["sequences"].as_array().unwrap();
    assert!(seqs.len() >= 5);
    for s in seqs {
        let name = s["name"].as_str().unwrap();
        let masks: Vec<Vec<u32>> = serde_json::from_value(s["masks"].clone()).unwrap();
        let want = &s["expected"];
        for (what, got) in [
            ("running", running(&masks)),
            ("batch", {
                let b = batch(&masks);
                let tokens = masks.iter().filter(|m| m.len() == LAYERS * WORDS).count();
                SparsityReport {
                    tokens,
                    tls: b.tls,
                    cls: b.cls.iter().map(|(w, v)| (w.to_string(), *v)).collect(),
                    reuse: b.reuse,
                }
            }),
        ] {
            assert_eq!(got.tokens as u64, want["tokens"].as_u64().unwrap(), "{name} ({what}): tokens");
            close(got.tls, &want["tls"], &format!("{name} ({what}): TLS"));
            close(got.reuse, &want["reuse"], &format!("{name} ({what}): reuse"));
            for w in CLS_WINDOWS {
                close(got.cls[&w.to_string()], &want["cls"][w.to_string()], &format!("{name} ({what}): CLS_{w}"));
            }
        }
        if let Some(sets) = s.get("sets") {
            let sets: ActiveSets = serde_json::from_value(sets.clone()).unwrap();
            assert_eq!(masks_of(&sets), masks, "{name}: sets → masks");
            for (t, m) in masks.iter().enumerate() {
                let ids: Vec<Vec<u16>> = m.chunks_exact(WORDS).map(|l| experts::ids(l).collect()).collect();
                assert_eq!(ids, sets[t], "{name}: token {t}");
            }
        }
    }
}
