// Input vectors (one per token: workgroup y) quantized like q8 weights, per block of 32 — the twin of
// tensor::quantize_q8: scale = max|x| / 127, q = round(x / scale) half away from zero, clamped to
// ±127, an all-zero block scale 0. One thread per block. A block with a non-finite value gets
// scale −1 (scales are ≥ 0 otherwise): the q8 matvec then takes the exact path for the whole
// vector, as the CPU does when quantize_q8 returns None.

struct Params {
    n: u32, // values per token; a multiple of 32
    _a: u32,
    _b: u32,
    _c: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> qx: array<u32>;
@group(0) @binding(3) var<storage, read_write> sx: array<f32>;

fn is_finite(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7f800000u) != 0x7f800000u;
}

// round() half away from zero, exactly (WGSL's round() ties to even).
fn round_away(v: f32) -> f32 {
    let a = abs(v);
    var t = trunc(a);
    if (a - t >= 0.5) {
        t += 1.0;
    }
    return select(t, -t, v < 0.0);
}

@compute @workgroup_size(64)
fn quantize_q8(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x >= p.n / 32u) {
        return;
    }
    let b = gid.y * (p.n / 32u) + gid.x;
    var m = 0.0;
    var finite = true;
    for (var j = 0u; j < 32u; j++) {
        let v = x[b * 32u + j];
        finite = finite && is_finite(v);
        m = max(m, abs(v));
    }
    if (!finite) {
        sx[b] = -1.0;
        return;
    }
    let scale = m / 127.0;
    sx[b] = scale;
    for (var k = 0u; k < 8u; k++) {
        var word = 0u;
        for (var j = 0u; j < 4u; j++) {
            var q = 0.0;
            if (scale > 0.0) {
                q = clamp(round_away(x[b * 32u + 4u * k + j] / scale), -127.0, 127.0);
            }
            word |= (bitcast<u32>(i32(q)) & 0xffu) << (8u * j);
        }
        qx[b * 8u + k] = word;
    }
}
