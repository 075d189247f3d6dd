// Greedy sampling on the GPU — the twin of sampling::argmax after the repetition penalty
// (CTRL-style, on every id of the context once: positive logits ÷ penalty, negative × penalty).
// One workgroup over the vocabulary: each thread keeps its strided share's best (value, id), a
// shared-memory tree takes the larger value and the lower id on a tie (the first maximum, as on
// the CPU). Writes the id twice: into `ids[0]`, the input of the next step's embedding (the token
// never goes through the host), and into `out[0]`, the word the host reads back; `out[1]` is 1
// when a logit is not finite (the host then reports the damaged model, as the CPU path does).

const WG: u32 = 256u;

struct Params {
    vocab: u32,
    penalty: f32, // 1: none
    _a: u32,
    _b: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> seen: array<u32>; // bit i: id i is in the context
@group(0) @binding(3) var<storage, read_write> ids: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<u32>;

var<workgroup> best_v: array<f32, 256>;
var<workgroup> best_i: array<u32, 256>;
var<workgroup> nonfinite: atomic<u32>;

fn penalised(i: u32) -> f32 {
    let l = logits[i];
    if (p.penalty != 1.0 && ((seen[i / 32u] >> (i % 32u)) & 1u) == 1u) {
        return select(l * p.penalty, l / p.penalty, l > 0.0);
    }
    return l;
}

@compute @workgroup_size(256)
fn argmax(@builtin(local_invocation_index) lid: u32) {
    var bv = -3.4028234663852886e38;
    var bi = 0xffffffffu;
    if (lid == 0u) {
        atomicStore(&nonfinite, 0u);
    }
    workgroupBarrier();
    for (var i = lid; i < p.vocab; i += WG) {
        if ((bitcast<u32>(logits[i]) & 0x7f800000u) == 0x7f800000u) {
            atomicOr(&nonfinite, 1u);
        }
        let v = penalised(i);
        if (bi == 0xffffffffu || v > bv) {
            bv = v;
            bi = i;
        }
    }
    best_v[lid] = bv;
    best_i[lid] = bi;
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        workgroupBarrier();
        if (lid < s) {
            let ov = best_v[lid + s];
            let oi = best_i[lid + s];
            if (oi != 0xffffffffu && (best_i[lid] == 0xffffffffu || ov > best_v[lid] || (ov == best_v[lid] && oi < best_i[lid]))) {
                best_v[lid] = ov;
                best_i[lid] = oi;
            }
        }
    }
    workgroupBarrier();
    if (lid == 0u) {
        ids[0] = best_i[0];
        out[0] = best_i[0];
        out[1] = atomicLoad(&nonfinite);
    }
}
