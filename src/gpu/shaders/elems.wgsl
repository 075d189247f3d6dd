// Single weights by element index, prepended to kernels that read weights one at a time (gathers,
// transposed products). Not a kernel. `_DT(` is replaced by the dtype's suffix, as for rows.wgsl.
// Globals expected: `w: array<u32>`; q8 also `wscale` (one f32 per 32 weights).

// The signed byte b (0..3) of a word.
fn i8_at(v: u32, b: u32) -> i32 {
    return bitcast<i32>(v << (24u - 8u * b)) >> 24u;
}

// Weight i widened to f32 (kernels::scalar::row_to_f32; q8: scale · q, one rounding).
fn load_f32(i: u32) -> f32 {
    return bitcast<f32>(w[i]);
}
fn load_f16(i: u32) -> f32 {
    let v = unpack2x16float(w[i / 2u]);
    return select(v.x, v.y, (i & 1u) == 1u);
}
fn load_bf16(i: u32) -> f32 {
    let v = w[i / 2u];
    return bitcast<f32>(select(v << 16u, v & 0xffff0000u, (i & 1u) == 1u));
}
fn load_q8(i: u32) -> f32 {
    return wscale[i / 32u] * f32(i8_at(w[i / 4u], i % 4u));
}

// c · weight i as kernels::scalar::axpy_rows forms it (q8 folds c into the block scale first).
fn axpy_term_f32(c: f32, i: u32) -> f32 {
    return c * load_f32(i);
}
fn axpy_term_f16(c: f32, i: u32) -> f32 {
    return c * load_f16(i);
}
fn axpy_term_bf16(c: f32, i: u32) -> f32 {
    return c * load_bf16(i);
}
fn axpy_term_q8(c: f32, i: u32) -> f32 {
    return (c * wscale[i / 32u]) * f32(i8_at(w[i / 4u], i % 4u));
}
