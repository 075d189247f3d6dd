// ys[t, :] = Σ_j Σ_r u[t, j, r] · W_down[union[j]·de + r, :] — the twin of
// kernels::scalar::chunk_down over the union compacted by route.wgsl, zero coefficients skipped.
// Split over the union for parallelism: `chunk_down` gives each union entry j its own slice of
// the grid (z) and writes that expert's partial sums, one thread per 32-bit word of an output row
// (1 f32 column, 2 f16/bf16, 4 q8), rows r in order; `chunk_down_reduce` then adds the partials in
// union order. Dense mode (every expert listed) adds exact zeros for the inactive ones, so sparse
// and dense stay bit-identical; the CPU adds the same terms in one sequence (float rounding apart).

struct Params {
    cols: u32, // H
    de: u32,
    k: u32,    // max tokens (the partials' token stride)
    dense: u32, // 1: zero coefficients are not skipped (dense mode: every row is read)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<u32>; // [ne · de, H], expert-major rows
@group(0) @binding(2) var<storage, read> u: array<f32>;
@group(0) @binding(3) var<storage, read> union_ids: array<u32>;
@group(0) @binding(4) var<storage, read_write> part: array<f32>; // [ne, max_k, H]: one slice per union entry
@group(0) @binding(5) var<storage, read> wscale: array<f32>;
@group(0) @binding(6) var<storage, read_write> ys: array<f32>; // [k, H]

fn i8_at(v: u32, b: u32) -> i32 {
    return bitcast<i32>(v << (24u - 8u * b)) >> 24u;
}

fn coeff(t: u32, j: u32, r: u32) -> f32 {
    return u[(t * union_ids[0] + j) * p.de + r];
}

fn down_f32(t: u32, j: u32, i: u32) {
    var acc = 0.0;
    {
        let e = union_ids[1u + j];
        for (var r = 0u; r < p.de; r++) {
            let c = coeff(t, j, r);
            if (c != 0.0 || p.dense == 1u) {
                acc += c * bitcast<f32>(w[(e * p.de + r) * p.cols + i]);
            }
        }
    }
    part[(j * p.k + t) * p.cols + i] = acc;
}

fn down_f16(t: u32, j: u32, i: u32) {
    var acc = vec2<f32>(0.0);
    let words = p.cols / 2u;
    {
        let e = union_ids[1u + j];
        for (var r = 0u; r < p.de; r++) {
            let c = coeff(t, j, r);
            if (c != 0.0 || p.dense == 1u) {
                acc += c * unpack2x16float(w[(e * p.de + r) * words + i]);
            }
        }
    }
    part[(j * p.k + t) * p.cols + 2u * i] = acc.x;
    part[(j * p.k + t) * p.cols + 2u * i + 1u] = acc.y;
}

fn down_bf16(t: u32, j: u32, i: u32) {
    var acc = vec2<f32>(0.0);
    let words = p.cols / 2u;
    {
        let e = union_ids[1u + j];
        for (var r = 0u; r < p.de; r++) {
            let c = coeff(t, j, r);
            if (c != 0.0 || p.dense == 1u) {
                let v = w[(e * p.de + r) * words + i];
                acc += c * vec2<f32>(bitcast<f32>(v << 16u), bitcast<f32>(v & 0xffff0000u));
            }
        }
    }
    part[(j * p.k + t) * p.cols + 2u * i] = acc.x;
    part[(j * p.k + t) * p.cols + 2u * i + 1u] = acc.y;
}

// q8: the coefficient folded into the block scale, y += (c · scale_b) · q, as the CPU does.
fn down_q8(t: u32, j: u32, i: u32) {
    var acc = vec4<f32>(0.0);
    let words = p.cols / 4u;
    let nb = p.cols / 32u;
    {
        let e = union_ids[1u + j];
        for (var r = 0u; r < p.de; r++) {
            let c = coeff(t, j, r);
            if (c != 0.0 || p.dense == 1u) {
                let row = e * p.de + r;
                let cs = c * wscale[row * nb + (4u * i) / 32u];
                let v = w[row * words + i];
                acc += cs * vec4<f32>(f32(i8_at(v, 0u)), f32(i8_at(v, 1u)), f32(i8_at(v, 2u)), f32(i8_at(v, 3u)));
            }
        }
    }
    for (var b = 0u; b < 4u; b++) {
        part[(j * p.k + t) * p.cols + 4u * i + b] = acc[b];
    }
}

const PER_WORD: u32 = WORD_ELEMS;

@compute @workgroup_size(256)
fn chunk_down(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i < p.cols / PER_WORD && gid.y < p.k && gid.z < union_ids[0]) {
        down_DT(gid.y, gid.z, i);
    }
}

// ys[t, c] = Σ_j part[j, t, c] over the union, in its order.
@compute @workgroup_size(256)
fn chunk_down_reduce(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    let t = gid.y;
    if (c < p.cols && t < p.k) {
        var acc = 0.0;
        for (var j = 0u; j < union_ids[0]; j++) {
            acc += part[(j * p.k + t) * p.cols + c];
        }
        ys[t * p.cols + c] = acc;
    }
}
