//! SIMD128 normalisation and activations: `rmsnorm`, `softmax`, `silu_scaled` (polynomial `exp`);
//! numerics in the notes of `kernels::simd128`. RoPE and the scalar `silu` come from
//! `kernels::scalar`.

use core::arch::wasm32::*;

use super::{hsum, ld, st};

// ---------------------------------------------------------------------------------------------
// Normalisation and activations.

/// RMSNorm: out = x · rsqrt(mean(x²) + eps) · w. No mean subtraction, no bias.
pub fn rmsnorm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    assert_eq!(x.len(), w.len());
    assert_eq!(x.len(), out.len());
    let n = x.len();
    let (xp, wp, op) = (x.as_ptr(), w.as_ptr(), out.as_mut_ptr());
    let z = f32x4_splat(0.0);
    let (mut a0, mut a1, mut a2, mut a3) = (z, z, z, z);
    let mut i = 0;
    // SAFETY: indices < n = every slice's length.
    unsafe {
        while i + 16 <= n {
            let (v0, v1, v2, v3) = (ld(xp.add(i)), ld(xp.add(i + 4)), ld(xp.add(i + 8)), ld(xp.add(i + 12)));
            a0 = f32x4_add(a0, f32x4_mul(v0, v0));
            a1 = f32x4_add(a1, f32x4_mul(v1, v1));
            a2 = f32x4_add(a2, f32x4_mul(v2, v2));
            a3 = f32x4_add(a3, f32x4_mul(v3, v3));
            i += 16;
        }
        while i + 4 <= n {
            let v = ld(xp.add(i));
            a0 = f32x4_add(a0, f32x4_mul(v, v));
            i += 4;
        }
    }
    let mut ss = hsum(f32x4_add(f32x4_add(a0, a1), f32x4_add(a2, a3)));
    for v in &x[i..] {
        ss += v * v;
    }
    let inv = 1.0 / (ss / n as f32 + eps).sqrt();
    let iv = f32x4_splat(inv);
    let mut i = 0;
    // SAFETY: as above.
    unsafe {
        while i + 4 <= n {
            st(op.add(i), f32x4_mul(f32x4_mul(ld(xp.add(i)), iv), ld(wp.add(i))));
            i += 4;
        }
    }
    for j in i..n {
        out[j] = x[j] * inv * w[j];
    }
}

/// e^x on four lanes: x = n·ln2 + r with |r| ≤ ln2/2 (Cody–Waite, two-part ln2), e^r by its
/// degree-7 Taylor polynomial (truncation < 6e-9 relative), times 2^n applied as two factors so
/// results down to the subnormal range are right. x is clamped to [-104, 88.8] first: below,
/// e^x rounds to 0; above, it overflows to +inf. NaN stays NaN: the clamp uses the
/// NaN-propagating `min`/`max` (with `+relaxed-simd`, LLVM may turn `pmin`/`pmax` into the relaxed
/// forms, whose NaN result is implementation-defined).
#[inline(always)]
fn exp4(x: v128) -> v128 {
    let x = f32x4_max(f32x4_min(x, f32x4_splat(88.8)), f32x4_splat(-104.0));
    let n = f32x4_nearest(f32x4_mul(x, f32x4_splat(core::f32::consts::LOG2_E)));
    let r = f32x4_sub(x, f32x4_mul(n, f32x4_splat(355.0 / 512.0))); // ln2_hi: n·ln2_hi is exact
    let r = f32x4_sub(r, f32x4_mul(n, f32x4_splat(-2.121_944_4e-4))); // ln2 − ln2_hi
    let mut p = f32x4_splat(1.0 / 5040.0);
    for c in [1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = f32x4_add(f32x4_mul(p, r), f32x4_splat(c));
    }
    let ni = i32x4_trunc_sat_f32x4(n);
    let n1 = i32x4_shr(ni, 1);
    let n2 = i32x4_sub(ni, n1);
    let bias = i32x4_splat(127);
    let s1 = i32x4_shl(i32x4_add(n1, bias), 23);
    let s2 = i32x4_shl(i32x4_add(n2, bias), 23);
    f32x4_mul(f32x4_mul(p, s1), s2)
}

/// Loads up to three trailing elements into a vector (the other lanes 0), for one more vector step.
#[inline(always)]
fn load_tail(t: &[f32]) -> v128 {
    let mut a = [0.0f32; 4];
    a[..t.len()].copy_from_slice(t);
    // SAFETY: `a` is 16 readable bytes.
    unsafe { ld(a.as_ptr()) }
}

#[inline(always)]
fn store_tail(t: &mut [f32], v: v128) {
    let mut a = [0.0f32; 4];
    // SAFETY: `a` is 16 writable bytes.
    unsafe { st(a.as_mut_ptr(), v) };
    let n = t.len();
    t.copy_from_slice(&a[..n]);
}

/// In-place softmax; returns nothing, leaves a probability vector.
pub fn softmax(x: &mut [f32]) {
    let n = x.len();
    let split = n - n % 4;
    // Maximum, ignoring NaNs like `f32::max` (pmax keeps its first operand when the second is NaN).
    let mut mv = f32x4_splat(f32::NEG_INFINITY);
    let p = x.as_ptr();
    // SAFETY: every vector access in this function is below `split` ≤ n.
    unsafe {
        for i in (0..split).step_by(4) {
            mv = f32x4_pmax(mv, ld(p.add(i)));
        }
    }
    let lanes = [
        f32x4_extract_lane::<0>(mv),
        f32x4_extract_lane::<1>(mv),
        f32x4_extract_lane::<2>(mv),
        f32x4_extract_lane::<3>(mv),
    ];
    let m = lanes.iter().chain(&x[split..]).copied().fold(f32::NEG_INFINITY, f32::max);
    let mm = f32x4_splat(m);
    let mut sv = f32x4_splat(0.0);
    let p = x.as_mut_ptr();
    unsafe {
        for i in (0..split).step_by(4) {
            let e = exp4(f32x4_sub(ld(p.add(i)), mm));
            st(p.add(i), e);
            sv = f32x4_add(sv, e);
        }
    }
    let mut s = hsum(sv);
    let tail = &mut x[split..];
    if !tail.is_empty() {
        store_tail(tail, exp4(f32x4_sub(load_tail(tail), mm)));
        for &v in tail.iter() {
            s += v;
        }
    }
    let sd = f32x4_splat(s);
    let p = x.as_mut_ptr();
    unsafe {
        for i in (0..split).step_by(4) {
            st(p.add(i), f32x4_div(ld(p.add(i)), sd));
        }
    }
    for v in &mut x[split..] {
        *v /= s;
    }
}

#[inline(always)]
fn silu_scaled4(v: v128, scale: v128) -> v128 {
    let e = exp4(f32x4_neg(v));
    f32x4_mul(f32x4_div(v, f32x4_add(f32x4_splat(1.0), e)), scale)
}

/// `x[i] = silu(x[i]) · scale` over a slice (an expert's activation times its router score).
pub fn silu_scaled(x: &mut [f32], scale: f32) {
    let n = x.len();
    let split = n - n % 4;
    let sc = f32x4_splat(scale);
    let p = x.as_mut_ptr();
    let mut i = 0;
    // SAFETY: every vector access is below `split` ≤ n.
    unsafe {
        while i < split {
            st(p.add(i), silu_scaled4(ld(p.add(i)), sc));
            i += 4;
        }
    }
    if split < n {
        let tail = &mut x[split..];
        let v = silu_scaled4(load_tail(tail), sc);
        store_tail(tail, v);
    }
}
