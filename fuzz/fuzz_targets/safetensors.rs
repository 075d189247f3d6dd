//! `blockffn::weights::WeightStore::from_buf` over an `AlignedBuf`: the runtime `model.safetensors`
//! reader (header, offsets, dtypes, alignment, q8 scale pairing). When the store is accepted, every
//! tensor is viewed (`mat`, `f32s`), and `Model::new` is tried with each fixture config; a model
//! that builds runs one token (sparse) and two tokens as a chunk. Seeds: converted fixture
//! packages in f32, f16 and q8 (`fuzz/make_seeds.sh`).
#![no_main]

use blockffn::config::ModelConfig;
use blockffn::model::{FfnMode, Logits, Model};
use blockffn::tensor::{DType, Mat};
use blockffn::weights::WeightStore;
use libfuzzer_sys::fuzz_target;

fn view_all(store: &WeightStore) {
    let names: Vec<String> = store.names().cloned().collect();
    for n in &names {
        let t = store.info(n).expect("listed name");
        match store.mat(t) {
            Mat::F32 { data, rows, cols } => assert!(rows * cols <= data.len()),
            Mat::F16 { data, rows, cols } => assert!(rows * cols <= data.len()),
            Mat::BF16 { data, rows, cols } => assert!(rows * cols <= data.len()),
            Mat::Q8 { data, scales, rows, cols } => {
                assert!(rows * cols <= data.len());
                let _ = scales.len();
            }
        }
        if t.dtype == DType::F32 {
            let _ = store.f32s(t).len();
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(store) = WeightStore::from_buf(blockffn_fuzz::aligned(data)) else { return };
    view_all(&store);
    for text in blockffn_fuzz::FIXTURE_CONFIGS {
        let cfg = ModelConfig::from_json_str(text).expect("fixture config parses");
        // Cheap to rebuild: the store only indexes the buffer.
        let Ok(store) = WeightStore::from_buf(blockffn_fuzz::aligned(data)) else { return };
        let Ok(model) = Model::new(cfg, store) else { continue };
        let Ok(mut cache) = model.new_cache() else { continue };
        let _ = model.forward(&mut cache, &[1], FfnMode::Sparse, Logits::Last);
        let _ = model.forward_chunk(&mut cache, &[2, 3], Logits::All);
        return;
    }
});
