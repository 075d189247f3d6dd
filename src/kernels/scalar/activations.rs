//! Scalar normalisation and activations: RMSNorm, SiLU, softmax, rotary embeddings.

/// RMSNorm: out = x · rsqrt(mean(x²) + eps) · w. No mean subtraction, no bias.
pub fn rmsnorm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    assert_eq!(x.len(), w.len());
    assert_eq!(x.len(), out.len());
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let inv = 1.0 / (ms + eps).sqrt();
    for ((o, &v), &g) in out.iter_mut().zip(x).zip(w) {
        *o = v * inv * g;
    }
}

#[inline]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// `x[i] = silu(x[i]) · scale` over a slice (an expert's activation times its router score).
pub fn silu_scaled(x: &mut [f32], scale: f32) {
    for v in x.iter_mut() {
        *v = silu(*v) * scale;
    }
}

/// In-place softmax; returns nothing, leaves a probability vector.
pub fn softmax(x: &mut [f32]) {
    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut s = 0.0;
    for v in x.iter_mut() {
        *v = (*v - m).exp();
        s += *v;
    }
    for v in x.iter_mut() {
        *v /= s;
    }
}

/// Rotary embedding tables: inverse frequencies `theta^(-2i/d)` for i < d/2, in f32 like the reference.
pub fn rope_inv_freq(dim: usize, theta: f32) -> Vec<f32> {
    (0..dim / 2).map(|i| 1.0 / theta.powf((2 * i) as f32 / dim as f32)).collect()
}

/// Rotate-half (NeoX) RoPE on a contiguous slice of even length at position `pos`.
pub fn rope_rotate_half(x: &mut [f32], inv_freq: &[f32], pos: usize) {
    let half = x.len() / 2;
    assert_eq!(inv_freq.len(), half);
    for i in 0..half {
        let angle = pos as f32 * inv_freq[i];
        let (s, c) = angle.sin_cos();
        let a = x[i];
        let b = x[i + half];
        x[i] = a * c - b * s;
        x[i + half] = b * c + a * s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rmsnorm_and_rope_hand_values() {
        let mut out = [0.0; 2];
        rmsnorm(&[3.0, 4.0], &[1.0, 2.0], 0.0, &mut out);
        let inv = 1.0 / (12.5f32).sqrt();
        assert!((out[0] - 3.0 * inv).abs() < 1e-6 && (out[1] - 8.0 * inv).abs() < 1e-6);
        let f = rope_inv_freq(4, 10000.0);
        assert_eq!(f[0], 1.0);
        assert!((f[1] - 0.01).abs() < 1e-7);
        let mut x = [1.0, 0.0, 0.0, 0.0];
        rope_rotate_half(&mut x, &f, 1);
        assert!((x[0] - 1f32.cos()).abs() < 1e-6 && (x[2] - 1f32.sin()).abs() < 1e-6);
    }
}
