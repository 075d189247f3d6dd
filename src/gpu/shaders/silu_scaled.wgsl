// Activations, n values per token (workgroup y: the span's tokens), silu(v) = v / (1 + exp(-v)):
//   silu_scaled: x = silu(x) · scale — the twin of kernels::scalar::silu_scaled (an expert's
//                activation times its router score; scale 1 for the non-gated dense FFN);
//   silu_gate:   x = x · silu(g) — the gated dense FFN's product (cpu::dense_ffn).

struct Params {
    n: u32,
    scale: f32,
    _a: u32,
    _b: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> g: array<f32>;

@compute @workgroup_size(256)
fn silu_scaled(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x < p.n) {
        let i = gid.y * p.n + gid.x;
        let v = x[i];
        x[i] = v / (1.0 + exp(-v)) * p.scale;
    }
}

@compute @workgroup_size(256)
fn silu_gate(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x < p.n) {
        let i = gid.y * p.n + gid.x;
        let v = g[i];
        x[i] = x[i] * (v / (1.0 + exp(-v)));
    }
}
