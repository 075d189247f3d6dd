//! The dense FFN of the dense baselines: `down(SiLU(gate x) · up x)`, or `down(SiLU(up x))` when
//! not gated.

use crate::kernels::{matmul, silu};
use crate::weights::{TensorInfo, WeightStore};

pub(crate) struct DenseFfnWeights {
    pub gate: Option<TensorInfo>,
    pub up: TensorInfo,
    pub down: TensorInfo,
}

/// The FFN for the k tokens of `xs` (`[k, hidden]`), each weight read once for all of them.
pub(crate) fn forward_span(w: &DenseFfnWeights, store: &WeightStore, xs: &[f32], out: &mut [f32]) {
    let (n, hsz) = (w.up.shape[0], w.up.shape[1]);
    let k = xs.len() / hsz;
    let mut u = vec![0.0; k * n];
    matmul(store.mat(&w.up), xs, &mut u);
    match &w.gate {
        Some(g) => {
            let mut gv = vec![0.0; k * n];
            matmul(store.mat(g), xs, &mut gv);
            for (a, b) in u.iter_mut().zip(&gv) {
                *a *= silu(*b);
            }
        }
        None => u.iter_mut().for_each(|v| *v = silu(*v)),
    }
    matmul(store.mat(&w.down), &u, out);
}
