//! `blockffn`: the native command-line tool (convert, logits, generate, eval).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use blockffn::convert::{convert_dir, OutDtype};
use blockffn::generate::{evaluate_with_progress, generate, GenerateOptions};
use blockffn::model::{FfnMode, Logits};
use blockffn::package::{load_dir, Package};
use blockffn::sampling::{Sampler, SamplingParams};
use blockffn::tokenizer::Tokenizer;
use blockffn::{Error, Result};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "blockffn", version, about = "Run and convert BlockFFN Mixture-of-Experts language models")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Convert a released Hugging Face checkpoint (pytorch_model.bin or *.safetensors) into a runtime package.
    Convert {
        /// Directory with config.json, pytorch_model.bin or *.safetensors, and optionally tokenizer.json.
        hf_dir: PathBuf,
        /// Output directory for the runtime package (created if missing).
        out_dir: PathBuf,
        /// Dtype of the weight matrices (norms and routers always stay f32). q8: int8 with one f32
        /// scale per 32 weights of a row, for matrices whose rows are a multiple of 32 (others f32).
        #[arg(long, default_value = "f32", value_parser = ["f32", "f16", "bf16", "q8"])]
        dtype: String,
    },
    /// Print the logits (and optionally the active experts) for a sequence of token ids, as JSON.
    Logits {
        #[command(flatten)]
        model: ModelArgs,
        /// Comma-separated token ids, used exactly as given (no BOS is added).
        #[arg(long, value_delimiter = ',', num_args = 1.., required_unless_present = "ids_file")]
        ids: Option<Vec<u32>>,
        /// Token ids from a file (`-`: standard input), separated by commas or whitespace: for
        /// sequences too long for one command-line argument.
        #[arg(long, conflicts_with = "ids")]
        ids_file: Option<PathBuf>,
        /// Also print the sorted active expert ids per layer and position.
        #[arg(long)]
        experts: bool,
    },
    /// Generate text after a prompt.
    Generate {
        #[command(flatten)]
        model: ModelArgs,
        /// Prompt text (BOS is prepended).
        #[arg(long, conflicts_with_all = ["ids", "prompt_file", "ids_file"], required_unless_present_any = ["ids", "prompt_file", "ids_file"])]
        prompt: Option<String>,
        /// Prompt text from a UTF-8 file (`-`: standard input), for prompts too long for one argument.
        #[arg(long, conflicts_with_all = ["ids", "ids_file"])]
        prompt_file: Option<PathBuf>,
        /// Prompt as comma-separated token ids, used exactly as given.
        #[arg(long, value_delimiter = ',', num_args = 1.., conflicts_with = "ids_file")]
        ids: Option<Vec<u32>>,
        /// Prompt token ids from a file (`-`: standard input), separated by commas or whitespace.
        #[arg(long)]
        ids_file: Option<PathBuf>,
        #[arg(long)]
        max_new_tokens: usize,
        /// Sampling temperature; greedy decoding when absent or 0.
        #[arg(long)]
        temperature: Option<f32>,
        #[arg(long)]
        top_k: Option<usize>,
        #[arg(long)]
        top_p: Option<f32>,
        #[arg(long)]
        repetition_penalty: Option<f32>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Keep generating past the end-of-sequence token.
        #[arg(long)]
        ignore_eos: bool,
        /// Stop before this text (repeatable); text that could start it is held back until it cannot.
        #[arg(long)]
        stop: Vec<String>,
        /// Print {"ids": [...], "text": "..."} instead of streaming text.
        #[arg(long)]
        json: bool,
        /// Speculative decoding: `ngram` drafts by prompt lookup, `eagle` with the package's draft
        /// head; the draft is verified in one forward over the union of its experts (same output
        /// as `off`); `auto` takes the draft head where the package has one, else prompt lookup.
        #[arg(long, default_value = "off", value_parser = ["off", "ngram", "eagle", "auto"])]
        speculative: String,
        /// Draft tokens per verification: a number (1-15), or `auto` (from the live acceptance
        /// rate and the measured cost of verifying).
        #[arg(long, default_value = "auto")]
        draft_len: String,
        /// Draft trees: this many alternatives beside each draft token, verified in the same
        /// forward (greedy decoding on the CPU; 0: chains).
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=3))]
        draft_tree: u32,
        /// With --json: add "timing" (ms to the first token; decode tokens/s after it).
        #[arg(long)]
        timing: bool,
    },
    /// Perplexity, token-level sparsity (TLS) and chunk-level sparsity (CLS_L) on a text file.
    Eval {
        #[command(flatten)]
        model: ModelArgs,
        /// UTF-8 text file, evaluated as one document.
        #[arg(long)]
        text: PathBuf,
        /// Evaluate only the first N tokens (BOS included).
        #[arg(long)]
        max_tokens: Option<usize>,
        #[arg(long)]
        json: bool,
    },
    /// Prefill and decode speed (tokens/s, medians of --reps runs) on deterministic token ids, as JSON.
    Bench {
        #[command(flatten)]
        model: ModelArgs,
        /// Prompt tokens (run in blocks, as `generate` does).
        #[arg(long, default_value_t = 128)]
        prompt_len: usize,
        /// Greedy decode steps after the prompt.
        #[arg(long, default_value_t = 64)]
        decode: usize,
        #[arg(long, default_value_t = 5)]
        reps: usize,
    },
}

#[derive(Args)]
struct ModelArgs {
    /// A converted model directory (with manifest.json).
    #[arg(long)]
    model: PathBuf,
    /// Compute every expert instead of only the active ones (same result, for comparison).
    #[arg(long)]
    dense: bool,
    /// Where the model runs: `cpu` (SIMD kernels) or `gpu` (wgpu: Vulkan, Metal or DX12; needs a
    /// build with the `gpu` feature). Same JSON output either way.
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "gpu"])]
    backend: String,
}

/// Runs `$body` with `$m` bound to the package's model on the backend `$args` chose (the CPU
/// model's weights move to the GPU; nothing is copied twice).
macro_rules! on_backend {
    ($args:expr, $pkg:expr, $m:ident => $body:expr) => {{
        match $args.backend.as_str() {
            #[cfg(feature = "gpu")]
            "gpu" => {
                let $m = &gpu_model($pkg.model)?;
                $body
            }
            #[cfg(not(feature = "gpu"))]
            "gpu" => {
                drop($pkg);
                return Err(Error::Unsupported(
                    "this blockffn was built without the GPU backend; rebuild with `--features cli,gpu`".into(),
                ));
            }
            _ => {
                let $m = &$pkg.model;
                $body
            }
        }
    }};
}

#[cfg(feature = "gpu")]
fn gpu_model(m: blockffn::model::Model) -> Result<blockffn::model::Model<blockffn::gpu::GpuBackend>> {
    let gpu = blockffn::gpu::Gpu::new_blocking()?;
    eprintln!("GPU: {} ({:?})", gpu.info.name, gpu.info.backend);
    let (config, store) = m.into_parts();
    Ok(blockffn::model::Model::with_backend(blockffn::gpu::GpuBackend::new(gpu, config, store)?))
}

impl ModelArgs {
    fn mode(&self) -> FfnMode {
        if self.dense {
            FfnMode::Dense
        } else {
            FfnMode::Sparse
        }
    }
    fn load(&self) -> Result<Package> {
        load_dir(&self.model)
    }
}

/// Largest prompt or id list read from a file or standard input.
const MAX_INPUT_BYTES: u64 = 64 << 20;
/// Largest text `eval` reads.
const MAX_EVAL_BYTES: u64 = 1 << 30;

/// A file's bytes, or standard input's for `-`, at most `cap` bytes.
fn read_input(path: &Path, cap: u64) -> Result<Vec<u8>> {
    if path.as_os_str() != "-" {
        return blockffn::package::read_bounded(path, cap);
    }
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(std::io::stdin().lock(), cap + 1), &mut bytes)
        .map_err(|e| Error::io("<stdin>", e))?;
    if bytes.len() as u64 > cap {
        return Err(Error::InvalidInput(format!("standard input is larger than the {cap} bytes accepted")));
    }
    Ok(bytes)
}

fn read_text(path: &Path, cap: u64) -> Result<String> {
    String::from_utf8(read_input(path, cap)?)
        .map_err(|e| Error::InvalidInput(format!("{} is not UTF-8 text (invalid byte at offset {})", path.display(), e.utf8_error().valid_up_to())))
}

/// Token ids separated by commas and/or whitespace.
fn read_ids(path: &Path) -> Result<Vec<u32>> {
    let text = read_text(path, MAX_INPUT_BYTES)?;
    let ids = text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|w| !w.is_empty())
        .enumerate()
        .map(|(i, w)| {
            w.parse::<u32>().map_err(|_| {
                Error::InvalidInput(format!("{}: item {i} `{}` is not a token id", path.display(), w.escape_debug()))
            })
        })
        .collect::<Result<Vec<u32>>>()?;
    if ids.is_empty() {
        return Err(Error::InvalidInput(format!("{} holds no token ids", path.display())));
    }
    Ok(ids)
}

fn tokenizer(pkg: &Package, dir: &Path) -> Result<Tokenizer> {
    let json = pkg.tokenizer_json.as_ref().ok_or_else(|| {
        Error::Tokenizer(format!("{} has no tokenizer.json; pass token ids with --ids instead", dir.display()))
    })?;
    Tokenizer::from_bytes(json, pkg.model.config().bos_token_id)
}

fn run(cli: Cli) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    let out_err = |e: std::io::Error| Error::io_write("<stdout>", e);
    match cli.cmd {
        Cmd::Convert { hf_dir, out_dir, dtype } => {
            let dtype = OutDtype::parse(&dtype)?;
            let mut bar: Option<indicatif::ProgressBar> = None;
            let report = convert_dir(&hf_dir, &out_dir, dtype, |p| {
                // A bar only for inputs large enough to take a while.
                if p.total_bytes < 32 << 20 {
                    return;
                }
                let b = bar.get_or_insert_with(|| {
                    let b = indicatif::ProgressBar::new(p.total_bytes);
                    b.set_style(
                        indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {msg}")
                            .expect("valid template"),
                    );
                    b
                });
                b.set_position(p.done_bytes);
                b.set_message(p.tensor.to_string());
            })?;
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            eprintln!(
                "converted {} ({} tensors, {} parameters) to {} as {} ({} bytes of weights, max rounding error {:e})",
                report.source,
                report.tensors,
                report.parameters,
                out_dir.display(),
                report.dtype,
                report.weight_bytes,
                report.max_abs_rounding_error
            );
        }
        Cmd::Logits { model, ids, ids_file, experts } => {
            let ids = match (ids, ids_file) {
                (Some(ids), _) => ids,
                (None, Some(f)) => read_ids(&f)?,
                (None, None) => unreachable!("clap requires --ids or --ids-file"),
            };
            let pkg = model.load()?;
            let (out, layers) = on_backend!(model, pkg, m => {
                let mut cache = m.new_cache()?;
                (m.forward(&mut cache, &ids, model.mode(), Logits::All)?, m.config().num_hidden_layers)
            });
            let mut obj = serde_json::json!({ "logits": out.logits });
            if experts {
                let active = out.active();
                let per_layer: Vec<Vec<&Vec<u16>>> =
                    (0..layers).map(|l| active.iter().map(|pos| &pos[l]).collect()).collect();
                obj["active_experts"] = serde_json::to_value(per_layer).expect("serializable");
            }
            serde_json::to_writer(&mut stdout, &obj).map_err(|e| Error::io_write("<stdout>", e.into()))?;
            writeln!(stdout).map_err(out_err)?;
        }
        Cmd::Generate {
            model,
            prompt,
            prompt_file,
            ids,
            ids_file,
            max_new_tokens,
            temperature,
            top_k,
            top_p,
            repetition_penalty,
            seed,
            ignore_eos,
            stop,
            json,
            speculative,
            draft_len,
            draft_tree,
            timing,
        } => {
            let speculative = parse_speculative(&speculative, &draft_len)?;
            let prompt = match prompt_file {
                Some(f) => Some(read_text(&f, MAX_INPUT_BYTES)?),
                None => prompt,
            };
            let ids = match ids_file {
                Some(f) => Some(read_ids(&f)?),
                None => ids,
            };
            let params = SamplingParams { temperature, top_k, top_p, repetition_penalty, seed };
            let sampler = Sampler::new(params)?;
            let pkg = model.load()?;
            // A text prompt needs the tokenizer; with --ids it is only used to print text.
            let tok = if prompt.is_some() || pkg.tokenizer_json.is_some() {
                Some(tokenizer(&pkg, &model.model)?)
            } else {
                None
            };
            let prompt_ids = match (&prompt, ids) {
                (Some(text), _) => {
                    if text.is_empty() {
                        return Err(Error::InvalidInput("the prompt is empty; give some text with --prompt".into()));
                    }
                    tok.as_ref().expect("tokenizer loaded for a text prompt").encode(text)?
                }
                (None, Some(ids)) => ids,
                (None, None) => unreachable!("clap requires a prompt or ids"),
            };
            let opts = GenerateOptions {
                max_new_tokens,
                mode: model.mode(),
                stop_at_eos: !ignore_eos,
                stop_ids: Vec::new(),
                stop_strings: stop.clone(),
                speculative,
                draft_tree_width: draft_tree as usize,
            };
            let mut shown = 0usize;
            let t0 = std::time::Instant::now();
            let mut first: Option<(std::time::Duration, usize)> = None;
            let mut count = 0usize;
            let (new_ids, _reason, text, spec) = on_backend!(model, pkg, m => {
                generate(m, tok.as_ref(), &prompt_ids, sampler, &opts, |ev| {
                    count += ev.ids.len();
                    first.get_or_insert((t0.elapsed(), count));
                    if !json && !ev.text.is_empty() {
                        let _ = write!(stdout, "{}", ev.text);
                        let _ = stdout.flush();
                        shown += ev.text.len();
                    }
                    true
                })?
            });
            if json {
                // Without stop strings the text is the whole decode, as it always was.
                let text = match &tok {
                    Some(t) if stop.is_empty() => Some(t.decode(&new_ids)?),
                    Some(_) => Some(text),
                    None => None,
                };
                let mut obj = serde_json::json!({ "ids": new_ids, "text": text });
                if timing {
                    let end = t0.elapsed();
                    let (t1, n1) = first.unwrap_or((end, count));
                    let decode = (end - t1).as_secs_f64();
                    obj["timing"] = serde_json::json!({
                        "first_token_ms": t1.as_secs_f64() * 1e3,
                        "decode_tokens": count - n1,
                        "decode_tokens_per_second": if decode > 0.0 { (count - n1) as f64 / decode } else { 0.0 },
                    });
                }
                if let Some(s) = spec {
                    obj["speculative"] = serde_json::json!({
                        "verifies": s.verifies,
                        "plain_steps": s.plain,
                        "drafted": s.drafted,
                        "accepted": s.accepted,
                        "tokens_per_forward": s.tokens_per_forward(),
                        "mean_union": s.mean_union,
                    });
                }
                writeln!(stdout, "{obj}").map_err(out_err)?;
            } else if tok.is_some() {
                writeln!(stdout, "{}", &text[shown..]).map_err(out_err)?;
            } else {
                writeln!(stdout, "{}", new_ids.iter().map(u32::to_string).collect::<Vec<_>>().join(","))
                    .map_err(out_err)?;
            }
        }
        Cmd::Eval { model, text, max_tokens, json } => {
            let body = read_text(&text, MAX_EVAL_BYTES)?;
            let pkg = model.load()?;
            let tok = tokenizer(&pkg, &model.model)?;
            let mut ids = tok.encode(&body)?;
            if let Some(n) = max_tokens {
                ids.truncate(n);
            }
            let bar = progress_bar(ids.len() as u64, "tokens");
            let r = on_backend!(model, pkg, m => {
                evaluate_with_progress(m, &ids, model.mode(), |done| bar.set_position(done as u64))?
            });
            bar.finish_and_clear();
            if json {
                writeln!(stdout, "{}", serde_json::to_string(&r).expect("serializable")).map_err(out_err)?;
            } else {
                let f = |x: Option<f64>| x.map_or("n/a".to_string(), |v| format!("{v:.4}"));
                writeln!(stdout, "tokens  {}\nppl     {:.4}\nTLS     {}", r.tokens, r.ppl, f(r.sparsity.tls))
                    .map_err(out_err)?;
                for (l, v) in &r.sparsity.cls {
                    writeln!(stdout, "CLS_{l:<3} {}", f(*v)).map_err(out_err)?;
                }
                writeln!(stdout, "reuse   {}", f(r.sparsity.reuse)).map_err(out_err)?;
            }
        }
        Cmd::Bench { model, prompt_len, decode, reps } => {
            let pkg = model.load()?;
            let r = on_backend!(model, pkg, m => bench(m, model.mode(), prompt_len, decode, reps)?);
            let mode = format!("{:?}", model.mode());
            let obj = serde_json::json!({
                "backend": model.backend, "mode": mode, "prompt_len": prompt_len, "decode": decode, "reps": reps, "result": r
            });
            writeln!(stdout, "{obj}").map_err(out_err)?;
        }
    }
    Ok(())
}

/// Median prefill and decode tokens/s of `reps` runs from an empty cache (one warm-up run first).
fn bench<B: blockffn::backend::Backend>(
    m: &blockffn::model::Model<B>,
    mode: FfnMode,
    prompt_len: usize,
    decode: usize,
    reps: usize,
) -> Result<serde_json::Value> {
    let cfg = m.config();
    let vocab = cfg.vocab_size as u64;
    if prompt_len == 0 || prompt_len + decode > cfg.max_position_embeddings {
        return Err(Error::InvalidInput(format!(
            "--prompt-len {prompt_len} + --decode {decode} must be 1..={} tokens (the model's context)",
            cfg.max_position_embeddings
        )));
    }
    let mut ids: Vec<u32> = (0..prompt_len as u64).map(|i| ((i * 7919 + 13) % vocab) as u32).collect();
    ids[0] = cfg.bos_token_id.unwrap_or(1).min(vocab as u32 - 1);
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (mut pre, mut dec) = (Vec::new(), Vec::new());
    let mut active = 0usize;
    let mut slots = 0usize;
    for rep in 0..=reps.max(1) {
        let mut cache = m.new_cache()?;
        let t0 = std::time::Instant::now();
        let (mut id, _) = m.forward_greedy(&mut cache, &ids, mode, 1.0, &ids)?;
        let t1 = std::time::Instant::now();
        for _ in 0..decode {
            let (next, ex) = m.forward_greedy(&mut cache, &[id], mode, 1.0, &[])?;
            if rep == 1 {
                for set in ex.to_sets().iter().flatten() {
                    active += set.len();
                    slots += cfg.num_experts();
                }
            }
            id = next;
        }
        let t2 = std::time::Instant::now();
        if rep > 0 {
            pre.push(prompt_len as f64 / (t1 - t0).as_secs_f64());
            dec.push(decode as f64 / (t2 - t1).as_secs_f64().max(1e-9));
        }
    }
    Ok(serde_json::json!({
        "prefill_tok_s": median(pre),
        "decode_tok_s": median(dec),
        "decode_active_fraction": if slots > 0 { Some(active as f64 / slots as f64) } else { None },
        "dispatches_per_decode_step": m.backend().last_dispatches(),
        "last_decode_step_gpu_times": m.backend().last_timings(),
    }))
}

/// A progress bar on standard error for long runs: hidden when stderr is not a terminal.
fn progress_bar(len: u64, unit: &str) -> indicatif::ProgressBar {
    let b = indicatif::ProgressBar::new(len);
    b.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{bar:30}} {{human_pos}}/{{human_len}} {unit}  {{per_sec}}  {{eta}} left"
        ))
        .expect("valid template"),
    );
    b
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--speculative` and `--draft-len` as the generation options take them.
fn parse_speculative(mode: &str, len: &str) -> Result<blockffn::spec::Speculative> {
    use blockffn::spec::{DraftLen, Speculative, MAX_DRAFT};
    let len = match len {
        "auto" => DraftLen::Auto,
        n => match n.parse::<usize>() {
            Ok(k) if (1..=MAX_DRAFT).contains(&k) => DraftLen::Fixed(k),
            _ => {
                return Err(Error::InvalidInput(format!("--draft-len takes 1 to {MAX_DRAFT} or auto, not {n:?}")));
            }
        },
    };
    Ok(match mode {
        "off" => Speculative::Off,
        "ngram" => Speculative::Ngram(len),
        "eagle" => Speculative::Eagle(len),
        _ => Speculative::Auto(len),
    })
}
