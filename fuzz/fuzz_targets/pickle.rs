//! `blockffn::convert::pickle::Pickle::parse`: the data-only unpickler behind every
//! `pytorch_model.bin` (its `data.pkl`). Seeds: the fixtures' `data.pkl` files.
//! Checks beyond "no panic, no memory bomb": every object id the arena hands out is in range.
#![no_main]

use blockffn::convert::pickle::Pickle;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(p) = Pickle::parse(data) else { return };
    let _ = p.describe(p.root());
    for id in 0..p.len() {
        let _ = p.describe(id);
        let _ = (p.as_str(id), p.as_int(id));
        if let Some(items) = p.as_seq(id) {
            for &c in items {
                let _ = p.get(c);
            }
        }
        if let Some(pairs) = p.as_dict(id) {
            for &(k, v) in pairs {
                let _ = (p.get(k), p.get(v));
            }
        }
    }
    blockffn_fuzz::touch();
});
