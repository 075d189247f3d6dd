// Appends the span's rows to a cache: dst[(step.pos0 + t) · n + j] = src[t · src_stride + src_off + j]
// — what cpu::mla / cpu::gqa do with `extend_from_slice` (the latent, the rotated key, the values).

struct Params {
    n: u32,
    src_stride: u32,
    src_off: u32,
    _a: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(64)
fn store_rows(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x;
    let t = gid.y;
    if (j < p.n) {
        dst[(step.pos0 + t) * p.n + j] = src[t * p.src_stride + p.src_off + j];
    }
}
