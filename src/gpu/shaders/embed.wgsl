// h[t, :] = E[ids[t], :] · scale_emb — the twin of kernels::scalar::row_to_f32 (then the scale, as
// cpu::Cpu::embed does). The ids are read on the GPU (a sampled token never goes through the host).
// Element access: elems.wgsl.

struct Params {
    hidden: u32,
    k: u32,
    scale: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<u32>;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> h: array<f32>;
@group(0) @binding(4) var<storage, read> wscale: array<f32>;

@compute @workgroup_size(256)
fn embed(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x;
    let t = gid.y;
    if (j < p.hidden && t < p.k) {
        h[t * p.hidden + j] = load_DT(ids[t] * p.hidden + j) * p.scale;
    }
}
