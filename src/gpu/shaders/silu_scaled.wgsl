// x[i] = silu(x[i]) · scale, silu(v) = v / (1 + exp(-v)) — the twin of
// kernels::scalar::silu_scaled (an expert's activation times its router score).

struct Params {
    n: u32,
    scale: f32,
    _a: u32,
    _b: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(256)
fn silu_scaled(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i < p.n) {
        let v = x[i];
        x[i] = v / (1.0 + exp(-v)) * p.scale;
    }
}
