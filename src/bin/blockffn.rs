//! `blockffn`: the native command-line tool (convert, logits, generate, eval).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use blockffn::convert::{convert_dir, OutDtype};
use blockffn::generate::{evaluate, generate, GenerateOptions};
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
        #[arg(long, value_delimiter = ',', num_args = 1.., required = true)]
        ids: Vec<u32>,
        /// Also print the sorted active expert ids per layer and position.
        #[arg(long)]
        experts: bool,
    },
    /// Generate text after a prompt.
    Generate {
        #[command(flatten)]
        model: ModelArgs,
        /// Prompt text (BOS is prepended).
        #[arg(long, conflicts_with = "ids", required_unless_present = "ids")]
        prompt: Option<String>,
        /// Prompt as comma-separated token ids, used exactly as given.
        #[arg(long, value_delimiter = ',', num_args = 1..)]
        ids: Option<Vec<u32>>,
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
        /// Print {"ids": [...], "text": "..."} instead of streaming text.
        #[arg(long)]
        json: bool,
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
}

#[derive(Args)]
struct ModelArgs {
    /// A converted model directory (with manifest.json).
    #[arg(long)]
    model: PathBuf,
    /// Compute every expert instead of only the active ones (same result, for comparison).
    #[arg(long)]
    dense: bool,
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

fn tokenizer(pkg: &Package, dir: &Path) -> Result<Tokenizer> {
    let json = pkg.tokenizer_json.as_ref().ok_or_else(|| {
        Error::Tokenizer(format!("{} has no tokenizer.json; pass token ids with --ids instead", dir.display()))
    })?;
    Tokenizer::from_bytes(json, pkg.model.config().bos_token_id)
}

fn run(cli: Cli) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    let out_err = |e: std::io::Error| Error::io("<stdout>", e);
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
        Cmd::Logits { model, ids, experts } => {
            let pkg = model.load()?;
            let m = &pkg.model;
            let mut cache = m.new_cache();
            let out = m.forward(&mut cache, &ids, model.mode(), Logits::All)?;
            let mut obj = serde_json::json!({ "logits": out.logits });
            if experts {
                let layers = m.config().num_hidden_layers;
                let per_layer: Vec<Vec<&Vec<u16>>> =
                    (0..layers).map(|l| out.active.iter().map(|pos| &pos[l]).collect()).collect();
                obj["active_experts"] = serde_json::to_value(per_layer).expect("serializable");
            }
            serde_json::to_writer(&mut stdout, &obj).map_err(|e| Error::io("<stdout>", e.into()))?;
            writeln!(stdout).map_err(out_err)?;
        }
        Cmd::Generate {
            model,
            prompt,
            ids,
            max_new_tokens,
            temperature,
            top_k,
            top_p,
            repetition_penalty,
            seed,
            ignore_eos,
            json,
        } => {
            let params = SamplingParams { temperature, top_k, top_p, repetition_penalty, seed };
            let mut sampler = Sampler::new(params)?;
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
                (None, None) => unreachable!("clap requires --prompt or --ids"),
            };
            let opts = GenerateOptions { max_new_tokens, mode: model.mode(), stop_at_eos: !ignore_eos };
            let mut printed = String::new();
            let mut so_far = Vec::new();
            let (new_ids, _reason) = generate(&pkg.model, &prompt_ids, &mut sampler, &opts, |ev| {
                so_far.push(ev.id);
                if !json {
                    if let Some(t) = &tok {
                        if let Ok(text) = t.decode(&so_far) {
                            // Print only once the decoded text extends what is already shown.
                            if text.starts_with(&printed) && !text.ends_with('\u{fffd}') {
                                let _ = write!(stdout, "{}", &text[printed.len()..]);
                                let _ = stdout.flush();
                                printed = text;
                            }
                        }
                    }
                }
                true
            })?;
            let text = match &tok {
                Some(t) => Some(t.decode(&new_ids)?),
                None => None,
            };
            if json {
                let obj = serde_json::json!({ "ids": new_ids, "text": text });
                writeln!(stdout, "{obj}").map_err(out_err)?;
            } else {
                match &text {
                    Some(t) => {
                        if t.starts_with(&printed) {
                            write!(stdout, "{}", &t[printed.len()..]).map_err(out_err)?;
                        }
                        writeln!(stdout).map_err(out_err)?;
                    }
                    None => writeln!(stdout, "{}", new_ids.iter().map(u32::to_string).collect::<Vec<_>>().join(","))
                        .map_err(out_err)?,
                }
            }
        }
        Cmd::Eval { model, text, max_tokens, json } => {
            let body = std::fs::read_to_string(&text).map_err(|e| Error::io(&text, e))?;
            let pkg = model.load()?;
            let tok = tokenizer(&pkg, &model.model)?;
            let mut ids = tok.encode(&body)?;
            if let Some(n) = max_tokens {
                ids.truncate(n);
            }
            let r = evaluate(&pkg.model, &ids, model.mode())?;
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
    }
    Ok(())
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
