// Attention scores of the span's query tokens against the cached positions, every head at once —
// the twin of the score products in cpu::mla / cpu::gqa (kernels::scalar::matvec over the cached
// rows, kernels::scalar::dot). Query token i (grid z) sits at position step.pos0 + i and sees
// positions t ≤ step.pos0 + i (causal). One thread per (position, head, query); scores
// `[k, heads, step.t_len]`, the entries past a query's own position left unwritten.
//   mla_scores: s = (q_abs,h · c_t + q_pe,h · k_pe,t) · scale   (absorbed: the latent is the key)
//   gqa_scores: s = k_t,kvh · q_h · scale                        (kvh = h / (heads / kv_heads))

struct Params {
    _t: u32,
    heads: u32,
    r: u32,     // MLA: kv_lora_rank; GQA: head_dim
    rope: u32,  // MLA: qk_rope_head_dim; GQA: kv_heads
    qhd: u32,   // MLA: nope + rope (the q row per head); GQA: unused
    nope: u32,
    scale: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;     // MLA: q_abs [k, heads, r]; GQA: q [k, heads, hd]
@group(0) @binding(2) var<storage, read> q2: array<f32>;    // MLA: q (rotated) [k, heads, qhd]; GQA: unused
@group(0) @binding(3) var<storage, read> keys: array<f32>;  // MLA: latent [T, r]; GQA: k [T, kv_heads · hd]
@group(0) @binding(4) var<storage, read> keys2: array<f32>; // MLA: k_pe [T, rope]
@group(0) @binding(5) var<storage, read_write> s: array<f32>;

@compute @workgroup_size(64)
fn mla_scores(@builtin(global_invocation_id) gid: vec3<u32>) {
    let t = gid.x;
    let h = gid.y;
    let i = gid.z;
    if (t <= step.pos0 + i && h < p.heads) {
        let qh = i * p.heads + h;
        var a = 0.0;
        for (var c = 0u; c < p.r; c++) {
            a += keys[t * p.r + c] * q[qh * p.r + c];
        }
        var b = 0.0;
        for (var c = 0u; c < p.rope; c++) {
            b += keys2[t * p.rope + c] * q2[qh * p.qhd + p.nope + c];
        }
        s[qh * step.t_len + t] = (a + b) * p.scale;
    }
}

@compute @workgroup_size(64)
fn gqa_scores(@builtin(global_invocation_id) gid: vec3<u32>) {
    let t = gid.x;
    let h = gid.y;
    let i = gid.z;
    let hd = p.r;
    let kv_heads = p.rope;
    if (t <= step.pos0 + i && h < p.heads) {
        let qh = i * p.heads + h;
        let kvh = h / (p.heads / kv_heads);
        var a = 0.0;
        for (var c = 0u; c < hd; c++) {
            a += keys[t * kv_heads * hd + kvh * hd + c] * q[qh * hd + c];
        }
        s[qh * step.t_len + t] = a * p.scale;
    }
}
