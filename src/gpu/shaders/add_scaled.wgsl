// h += y · s over n values per token (workgroup y: the span's tokens): the residual update of every
// block (cpu::Cpu::attention / ffn).

struct Params {
    n: u32,
    s: f32,
    _a: u32,
    _b: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> y: array<f32>;
@group(0) @binding(2) var<storage, read_write> h: array<f32>;

@compute @workgroup_size(256)
fn add_scaled(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x < p.n) {
        let i = gid.y * p.n + gid.x;
        h[i] += y[i] * p.s;
    }
}
