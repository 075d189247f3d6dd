//! `blockffn::package::Manifest::parse` (`manifest.json` of a runtime package), then
//! `Manifest::verify` of every listed file against the input itself (size and sha256 paths).
//! Seeds: the fixture's and the demo model's `manifest.json`.
#![no_main]

use blockffn::package::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    blockffn_fuzz::touch();
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(m) = Manifest::parse(text) else { return };
    for name in m.files.keys() {
        let _ = m.verify(name, data);
    }
    let _ = m.verify("model.safetensors", &[]);
});
