//! The dense FFN of the dense baselines: `down(SiLU(gate x) · up x)`, or `down(SiLU(up x))` when
//! not gated.

use crate::kernels::{matvec, silu};
use crate::weights::{TensorInfo, WeightStore};

pub(crate) struct DenseFfnWeights {
    pub gate: Option<TensorInfo>,
    pub up: TensorInfo,
    pub down: TensorInfo,
}

pub(crate) fn forward(w: &DenseFfnWeights, store: &WeightStore, x: &[f32], out: &mut [f32]) {
    let n = w.up.shape[0];
    let mut u = vec![0.0; n];
    matvec(store.mat(&w.up), x, &mut u);
    match &w.gate {
        Some(g) => {
            let mut gv = vec![0.0; n];
            matvec(store.mat(g), x, &mut gv);
            for (a, b) in u.iter_mut().zip(&gv) {
                *a *= silu(*b);
            }
        }
        None => u.iter_mut().for_each(|v| *v = silu(*v)),
    }
    matvec(store.mat(&w.down), &u, out);
}
