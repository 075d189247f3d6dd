// y = W x for one part of a row-major W (rows row0 .. row0 + rows): the twin of
// kernels::scalar::matvec. One workgroup computes ROWS consecutive rows; each of its WG threads
// accumulates a strided share of every row in f32, then a shared-memory tree adds the shares.
// Weights arrive as u32 words: f32 bit patterns, two f16 or bf16 (low half first), or four int8
// (low byte first) with one f32 scale per 32 weights.

const WG: u32 = 256u;
const ROWS: u32 = 4u;

struct Params {
    rows: u32, // rows in this part
    cols: u32,
    row0: u32, // first row of this part in y
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<u32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
// q8 only: weight scales, the input quantized per block (four int8 per word) and its scales
// (quantize_q8.wgsl; a negative scale marks a block with a non-finite value, and then the exact
// dequantized product is used for the whole vector, as on the CPU).
@group(0) @binding(4) var<storage, read> wscale: array<f32>;
@group(0) @binding(5) var<storage, read> qx: array<u32>;
@group(0) @binding(6) var<storage, read> sx: array<f32>;

var<workgroup> partial: array<f32, 1024>; // ROWS * WG
var<workgroup> nonfinite: atomic<u32>;

fn reduce_and_store(lid: u32, first: u32) {
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        workgroupBarrier();
        if (lid < s) {
            for (var r = 0u; r < ROWS; r++) {
                partial[r * WG + lid] += partial[r * WG + lid + s];
            }
        }
    }
    workgroupBarrier();
    if (lid < ROWS && first + lid < p.rows) {
        y[p.row0 + first + lid] = partial[lid * WG];
    }
}

@compute @workgroup_size(256)
fn matvec_f32(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let first = wid.x * ROWS;
    for (var r = 0u; r < ROWS; r++) {
        var acc = 0.0;
        let row = first + r;
        if (row < p.rows) {
            let base = row * p.cols;
            for (var c = lid; c < p.cols; c += WG) {
                acc += bitcast<f32>(w[base + c]) * x[c];
            }
        }
        partial[r * WG + lid] = acc;
    }
    reduce_and_store(lid, first);
}

@compute @workgroup_size(256)
fn matvec_f16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let first = wid.x * ROWS;
    let words = p.cols / 2u;
    for (var r = 0u; r < ROWS; r++) {
        var acc = 0.0;
        let row = first + r;
        if (row < p.rows) {
            let base = row * words;
            for (var k = lid; k < words; k += WG) {
                let v = unpack2x16float(w[base + k]);
                acc += v.x * x[2u * k];
                acc += v.y * x[2u * k + 1u];
            }
        }
        partial[r * WG + lid] = acc;
    }
    reduce_and_store(lid, first);
}

@compute @workgroup_size(256)
fn matvec_bf16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let first = wid.x * ROWS;
    let words = p.cols / 2u;
    for (var r = 0u; r < ROWS; r++) {
        var acc = 0.0;
        let row = first + r;
        if (row < p.rows) {
            let base = row * words;
            for (var k = lid; k < words; k += WG) {
                let v = w[base + k];
                acc += bitcast<f32>(v << 16u) * x[2u * k];
                acc += bitcast<f32>(v & 0xffff0000u) * x[2u * k + 1u];
            }
        }
        partial[r * WG + lid] = acc;
    }
    reduce_and_store(lid, first);
}

// The signed byte b (0..3) of a word.
fn i8_at(v: u32, b: u32) -> i32 {
    return bitcast<i32>(v << (24u - 8u * b)) >> 24u;
}

@compute @workgroup_size(256)
fn matvec_q8(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let first = wid.x * ROWS;
    let nb = p.cols / 32u; // blocks per row; one thread takes whole blocks, as the CPU sums them
    for (var b = lid; b < nb; b += WG) {
        if (sx[b] < 0.0) {
            atomicOr(&nonfinite, 1u);
        }
    }
    workgroupBarrier();
    let exact = atomicLoad(&nonfinite) != 0u;
    for (var r = 0u; r < ROWS; r++) {
        var acc = 0.0;
        let row = first + r;
        if (row < p.rows) {
            for (var b = lid; b < nb; b += WG) {
                let s = wscale[row * nb + b];
                let wbase = (row * p.cols + b * 32u) / 4u;
                if (exact) {
                    var fsum = 0.0;
                    for (var k = 0u; k < 8u; k++) {
                        let v = w[wbase + k];
                        for (var j = 0u; j < 4u; j++) {
                            fsum += f32(i8_at(v, j)) * x[b * 32u + 4u * k + j];
                        }
                    }
                    acc += s * fsum;
                } else {
                    var isum = 0;
                    for (var k = 0u; k < 8u; k++) {
                        let v = w[wbase + k];
                        let q = qx[b * 8u + k];
                        for (var j = 0u; j < 4u; j++) {
                            isum += i8_at(v, j) * i8_at(q, j);
                        }
                    }
                    acc += (s * sx[b]) * f32(isum);
                }
            }
        }
        partial[r * WG + lid] = acc;
    }
    reduce_and_store(lid, first);
}
