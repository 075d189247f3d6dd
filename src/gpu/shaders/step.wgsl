// The span being run, shared by the kernels whose work depends on where it sits in the sequence
// (prepended by the pipeline builder; not a kernel). Written once per forward, before the one
// submission: every bind group is built at load time and only this buffer changes per token.

struct Step {
    pos0: u32,      // position of the span's first token (the cache held pos0 positions before it)
    k: u32,         // tokens in the span
    t_len: u32,     // pos0 + k: the row stride of the score matrix
    head_from: u32, // first span token whose logits are computed
}

@group(0) @binding(10) var<uniform> step: Step;
