// Rotate-half (NeoX) RoPE in place on `heads` slices of `dim` values of every token of the span
// (token t's slice h at base + t · token_stride + h · stride), token t at position step.pos0 + t —
// the twin of kernels::scalar::rope_rotate_half. cos/sin come from a table the host computed once
// with the CPU's own f32 sin_cos (WGSL's sin/cos are not accurate enough for large angles),
// `dim / 2` (cos, sin) pairs per position.

struct Params {
    heads: u32,
    dim: u32,
    stride: u32,
    base: u32,
    token_stride: u32,
    _a: u32,
    _b: u32,
    _c: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> table: array<vec2<f32>>; // [positions, dim / 2] of (cos, sin)
@group(0) @binding(2) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(64)
fn rope(@builtin(global_invocation_id) gid: vec3<u32>) {
    let half = p.dim / 2u;
    let i = gid.x;
    let hd = gid.y;
    let t = gid.z;
    if (i < half && hd < p.heads) {
        let cs = table[(step.pos0 + t) * half + i];
        let o = p.base + t * p.token_stride + hd * p.stride;
        let a = x[o + i];
        let b = x[o + i + half];
        x[o + i] = a * cs.x - b * cs.y;
        x[o + i + half] = b * cs.x + a * cs.y;
    }
}
