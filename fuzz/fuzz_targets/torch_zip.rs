//! `blockffn::convert::torch_bin::read_pytorch_bin_bytes`: a whole `torch.save` zip checkpoint
//! (zip directory, deflate, `data.pkl`, storages, views). Seeds: the fixtures' `pytorch_model.bin`.
//! Checks beyond "no panic, no memory bomb": every tensor returned holds exactly
//! `numel * element size` bytes (the `RawTensor` contract the converter relies on).
#![no_main]

use blockffn::convert::torch_bin::read_pytorch_bin_bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    blockffn_fuzz::touch();
    let Ok(tensors) = read_pytorch_bin_bytes(data) else { return };
    for (name, t) in &tensors {
        let want = t.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).and_then(|n| n.checked_mul(t.dtype.bitsize() / 8));
        assert_eq!(want, Some(t.data.len()), "tensor `{name}` {:?} {:?}: data length disagrees with its shape", t.dtype, t.shape);
    }
});
