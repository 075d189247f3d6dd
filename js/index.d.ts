// Type declarations of the blockffn npm package (hand-written; see docs/API.md).

export type ErrorCode =
  | 'ModelNotFound'
  | 'IntegrityMismatch'
  | 'OutOfMemory'
  | 'InvalidConfig'
  | 'InvalidCheckpoint'
  | 'InvalidInput'
  | 'Aborted'
  | 'Tokenizer'
  | 'Network'
  | 'Unsupported'
  | 'DeviceLost'
  | 'Internal';

export declare const ERROR_CODES: readonly ErrorCode[];

/** Every error the engine reports. `message` says what went wrong and what to do. */
export declare class BlockffnError extends Error {
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown });
  readonly name: 'BlockffnError';
  readonly code: ErrorCode;
}

/** Where the wasm module comes from (default: the build next to the package that `simd` picks). */
export type WasmSource = string | URL | BufferSource | WebAssembly.Module;

/** The build that runs: SIMD128 (every browser with WebAssembly SIMD) or SIMD128 + relaxed SIMD (fused multiply-add). */
export type Backend = 'wasm-simd128' | 'wasm-relaxed-simd' | 'webgpu';

/** Where models run: see CreateEngineOptions.backend. */
export type BackendChoice = 'auto' | 'webgpu' | 'wasm';

/** The WebGPU adapter a model runs on (or was offered). */
export interface GpuInfo {
  /** The adapter's description (may be empty in browsers). */
  name: string;
  /** A software renderer (e.g. SwiftShader): correct but slower than wasm; 'auto' does not use it. */
  software: boolean;
  backend: string;
  /** The largest storage binding: no single tensor may exceed it. */
  maxBindingBytes: number;
  maxBufferBytes: number;
}

/** Whether this JavaScript engine runs WebAssembly relaxed SIMD (what `simd: 'auto'` checks). */
export function relaxedSimdSupported(): boolean;

/** Any other key is an InvalidInput error naming the nearest valid one. */
export interface CreateEngineOptions {
  /**
   * false (default): run in this thread. true: start a module Web Worker. A Worker: one running
   * `blockffn/worker`. A function returning such a Worker: called for the first worker and again to
   * replace one that stopped. With true or a function, the next load() after the worker stopped
   * (terminated, crashed, or its wasm trapped) starts a new one.
   */
  worker?: boolean | Worker | (() => Worker);
  wasm?: WasmSource;
  /**
   * Which packaged build to use when `wasm` is not given: 'auto' (default) picks
   * `blockffn_relaxed_bg.wasm` where the JavaScript engine runs relaxed SIMD, else `blockffn_bg.wasm`.
   * One module per JS realm (thread): the first engine decides.
   */
  simd?: 'auto' | 'relaxed' | 'baseline';
  /**
   * Where models run (a load() may override it): 'auto' (default) WebGPU when a hardware adapter
   * exists and the model fits its limits, else wasm; 'webgpu' rejects with Unsupported (no WebGPU)
   * or OutOfMemory (the model exceeds the adapter's limits) instead of falling back; 'wasm'.
   */
  backend?: BackendChoice;
}

export type LoadPhase = 'download' | 'verify' | 'parse' | 'ready';

export interface ProgressEvent {
  phase: LoadPhase;
  /** File being downloaded / verified (download, verify). */
  file?: string | null;
  /** Bytes received so far over all files (download). */
  loaded?: number;
  /** Bytes of all files (download), or number of files (verify). */
  total?: number;
  /** Files verified so far (verify). */
  verified?: number;
  /** 0..1 within the phase. */
  progress: number;
  /** The bytes come from the browser cache (download, ready). */
  fromCache?: boolean;
  text?: string;
}

/** A model directory URL (or its manifest.json), picked files, or in Node a directory path (or its manifest.json). */
export type ModelSource = string | URL | FileList | File[];

/** Any other key is an InvalidInput error naming the nearest valid one. */
export interface LoadOptions {
  onProgress?: (event: ProgressEvent) => void;
  /** Aborts the load (Aborted); `AbortSignal.timeout(ms)` bounds it in time. */
  signal?: AbortSignal;
  /** Use the Cache API ('blockffn-v1') for URL sources; default true where it exists. */
  cache?: boolean;
  /** Expected weight dtype; an InvalidConfig error when the package holds another. Default 'auto'. */
  dtype?: 'auto' | 'f32' | 'f16' | 'bf16' | 'q8' | (string & {});
  /** Memory ceiling for the pre-allocation check (default 4 GiB, the wasm32 limit). */
  maxMemoryBytes?: number;
  /** Overrides createEngine's `backend` for this load. */
  backend?: BackendChoice;
  /** Download the package's draft head (eagle.json + eagle.safetensors) when it lists one (default true). */
  draftHead?: boolean;
}

export interface ModelInfo {
  /** The model directory URL (with a trailing slash), the local path (Node), or "files:…" for picked files. */
  id: string;
  backend: Backend;
  /** Why this backend runs the model (e.g. why 'auto' did not use WebGPU). */
  backendReason: string;
  /** The adapter when WebGPU was offered (null when none was found). */
  gpu: GpuInfo | null;
  /** Dtype of the weight matrices, from manifest.json ("f32", "f16", "bf16", …). */
  dtype: 'f32' | 'f16' | 'bf16' | 'q8' | (string & {});
  params: number;
  weightBytes: number;
  vocabSize: number;
  hiddenSize: number;
  numLayers: number;
  numAttentionHeads: number;
  contextLength: number;
  attention: 'mla' | 'gqa';
  ffn: 'block_linear' | 'block' | 'dense';
  /** count 0 for dense-FFN models. A token's bitmask has numLayers * wordsPerLayer u32 words. */
  experts: { count: number; size: number; wordsPerLayer: number };
  bosTokenId: number | null;
  eosTokenId: number | null;
  hasTokenizer: boolean;
  /** The package's EAGLE draft head (speculative: 'eagle'), or null when it has none or draftHead: false. */
  draftHead: { params: number } | null;
  chatTemplate: 'chatml' | 'minicpm';
  /** tokenizer_config.json has a template this engine does not know; ChatML is used. */
  chatTemplateFallback: boolean;
  fromCache: boolean;
  /** The model is stored in the browser cache now. */
  cached: boolean;
  warnings: string[];
  /** config.json as parsed. */
  config: Record<string, unknown>;
}

export interface RuntimeInfo {
  /** Where the loaded model runs (the wasm build before a model is loaded). */
  backend: Backend;
  /** What the last load asked for (createEngine's, or load()'s override). */
  requestedBackend: BackendChoice;
  /** Why the loaded model runs where it does; null before a load. */
  backendReason: string | null;
  gpu: GpuInfo | null;
  /** The wasm build of this thread (tokenizer, and the model unless it runs on WebGPU). */
  wasmBackend: 'wasm-simd128' | 'wasm-relaxed-simd';
  wasmMemoryBytes: number;
  crossOriginIsolated: boolean;
  modelLoaded: boolean;
}

/**
 * A prompt built from a template's control tokens and text. Text is always text: special tokens
 * written in it (e.g. a `<|im_end|>` in a user message) are encoded as characters, never as
 * control tokens. A control is its token id when it is an added token of the vocabulary, else text.
 */
export interface SegmentedPrompt {
  segments: Array<{ text: string } | { control: string }>;
}

export type Prompt = string | ArrayLike<number> | SegmentedPrompt;

/** Any other key is an InvalidInput error naming the nearest valid one. */
export interface GenerateOptions {
  /** New tokens at most (default: until EOS or the context is full). */
  maxTokens?: number;
  /** 0 or absent: greedy. */
  temperature?: number;
  topK?: number;
  topP?: number;
  repetitionPenalty?: number;
  /** Sampling seed (default 0); same seed and options → same ids as `blockffn generate`. */
  seed?: number | bigint;
  /** Generation stops before any of these strings (which are not emitted). */
  stop?: string | string[];
  /** Keep generating past the model's EOS token. */
  ignoreEos?: boolean;
  signal?: AbortSignal;
  /** "sparse" (default) computes only active experts; "dense" computes all (same result). */
  mode?: 'sparse' | 'dense';
  /**
   * Speculative decoding: 'ngram' (prompt lookup) or 'eagle' (the package's draft head, wasm
   * backend) drafts tokens that one forward verifies over the union of their experts; greedy output
   * is identical to plain decoding, sampled output has the same distribution. 'auto' takes the draft
   * head where there is one (and the wasm backend runs), else prompt lookup. false (default) is plain
   * decoding. A chunk then may carry several tokens. 'eagle' rejects with Unsupported without a head
   * or on WebGPU.
   */
  speculative?: 'auto' | 'ngram' | 'eagle' | false;
  /** Draft tokens per verification (1-15); 'auto' or absent: chosen per step from the measured acceptance and cost. */
  draftLen?: number | 'auto';
  /**
   * Draft trees: this many alternatives (0-3) beside each draft token, verified in the same forward,
   * each node attending to its own ancestors (greedy decoding on the wasm backend; chains otherwise).
   * Default 0 (chains).
   */
  draftTree?: number;
}

/** What one speculative step did. */
export interface SpeculationStep {
  /** Draft tokens verified (0: a plain step). */
  drafted: number;
  accepted: number;
  /** Per layer: experts active for at least one token of the verified span (what the verification read). */
  union: number[];
}

export interface SpeculationTotals {
  verifies: number;
  plain: number;
  drafted: number;
  accepted: number;
  /** Mean union size per verification, averaged over layers. */
  meanUnion: number;
}

export interface GenerationStats {
  /** Generated tokens whose experts are known. */
  tokens: number;
  /** Token-level sparsity over the generated tokens (null before the first). */
  tls: number | null;
  /** Chunk-level sparsity CLS_L for L in 1..64 (null until a full window). */
  cls: { '1': number | null; '2': number | null; '4': number | null; '8': number | null; '16': number | null; '32': number | null; '64': number | null };
  /** Mean share of a token's experts reused by the next token. */
  reuse: number | null;
  promptTokens: number;
  elapsedMs: number;
  prefillMs: number;
  /** Decode speed (tokens after the first chunk, per second). */
  tokensPerSecond: number;
  /** With speculative decoding. */
  speculation?: SpeculationTotals;
}

export type FinishReason = 'length' | 'eos' | 'stop' | 'context';

export interface GenerationChunk {
  /** New text (may be empty while a character is incomplete or could start a stop string). */
  text: string;
  /** The new token(s) of this chunk. */
  tokenIds: number[];
  /** One bitmask per token of tokenIds: wordsPerLayer u32 words per layer (empty when unknown). */
  experts: Uint32Array[];
  stats: GenerationStats;
  /** With speculative decoding: the step that produced this chunk (the tokens after the first are accepted drafts). */
  speculation?: SpeculationStep;
  /** Set on the last chunk only. */
  finishReason?: FinishReason;
}

export interface ChatMessage {
  role: 'system' | 'developer' | 'user' | 'assistant' | 'tool';
  content: string | Array<{ type: 'text'; text: string }> | null;
}

/**
 * Any other key is an InvalidInput error naming the nearest valid one. OpenAI fields for features
 * this engine lacks (tools, response_format, logprobs, logit_bias, non-zero frequency/presence
 * penalties, …) are refused by name.
 */
export interface ChatCompletionRequest {
  messages: ChatMessage[];
  stream?: boolean;
  stream_options?: { include_usage?: boolean };
  max_tokens?: number;
  max_completion_tokens?: number;
  temperature?: number;
  top_p?: number;
  seed?: number;
  stop?: string | string[];
  n?: 1;
  /** Accepted and ignored (one model; usage is always sent). */
  model?: string;
  user?: string;
  store?: boolean;
  metadata?: Record<string, string>;
  service_tier?: string;
  parallel_tool_calls?: boolean;
  /** Extensions. */
  top_k?: number;
  repetition_penalty?: number;
  mode?: 'sparse' | 'dense';
  signal?: AbortSignal;
}

export interface CompletionUsage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export interface ChatCompletionChunk {
  id: string;
  object: 'chat.completion.chunk';
  created: number;
  model: string;
  choices: Array<{
    index: 0;
    delta: { role?: 'assistant'; content?: string };
    finish_reason: 'stop' | 'length' | null;
    logprobs: null;
  }>;
  /** On the last chunk. */
  usage?: CompletionUsage;
  blockffn: { tokenIds: number[]; experts: Uint32Array[]; stats: GenerationStats; finishReason?: FinishReason };
}

export interface ChatCompletion {
  id: string;
  object: 'chat.completion';
  created: number;
  model: string;
  choices: Array<{
    index: 0;
    message: { role: 'assistant'; content: string };
    finish_reason: 'stop' | 'length';
    logprobs: null;
  }>;
  usage: CompletionUsage;
  blockffn: { stats: GenerationStats };
}

export interface ChatCompletions {
  create(request: ChatCompletionRequest & { stream: true }): Promise<AsyncIterable<ChatCompletionChunk>>;
  create(request: ChatCompletionRequest & { stream?: false }): Promise<ChatCompletion>;
  create(request: ChatCompletionRequest): Promise<ChatCompletion | AsyncIterable<ChatCompletionChunk>>;
}

/** The one engine interface of both transports. */
export interface Engine {
  /**
   * Replaces the loaded model (freed first). A newer load() or an unload() aborts one still in
   * progress, which then rejects with Aborted.
   */
  load(source: ModelSource, options?: LoadOptions): Promise<ModelInfo>;
  /** A text prompt gets BOS first; ids are used as given; a SegmentedPrompt's text is never parsed for special tokens. */
  generate(prompt: Prompt, options?: GenerateOptions): AsyncIterableIterator<GenerationChunk>;
  readonly chat: { readonly completions: ChatCompletions };
  /** Ids of `text` (or of a SegmentedPrompt), BOS first unless addBos is false. */
  tokenize(text: string | SegmentedPrompt, options?: { addBos?: boolean }): Promise<number[]>;
  /** Text of `ids`, special tokens skipped. */
  detokenize(ids: ArrayLike<number>): Promise<string>;
  /** Logits of every position of `ids` in a fresh context, flattened positions × vocab. */
  logits(ids: ArrayLike<number>, options?: { mode?: 'sparse' | 'dense' }): Promise<Float32Array>;
  modelInfo(): Promise<ModelInfo>;
  runtimeInfo(): Promise<RuntimeInfo>;
  /** Frees the model (running generations finish first); a load() in progress ends with Aborted. */
  unload(): Promise<void>;
}

export interface WorkerEngine extends Engine {
  /** The worker now in use (a new one after a stopped worker was replaced). */
  readonly worker: Worker;
  /** How many times a stopped worker was replaced. */
  readonly restarts: number;
  /** Stops the worker if this engine started it; the engine cannot be used afterwards. */
  terminate(): void;
}

export declare function createEngine(options?: CreateEngineOptions & { worker?: false }): Promise<Engine>;
export declare function createEngine(options: CreateEngineOptions & { worker: true | Worker | (() => Worker) }): Promise<WorkerEngine>;
export declare function createEngine(options?: CreateEngineOptions): Promise<Engine>;

export declare const CACHE_NAME: 'blockffn-v1';
/** True when every file of the model at `url` is in the browser cache. */
export declare function hasModelInCache(url: string | URL): Promise<boolean>;
/** Removes the model at `url` from the browser cache; true when something was removed. */
export declare function deleteModelFromCache(url: string | URL): Promise<boolean>;

/**
 * The URL of a model directory as load() and the cache helpers resolve it: relative URLs against the
 * page, `…/manifest.json` naming its directory, a trailing slash added. InvalidInput if not a URL.
 */
export declare function modelBaseUrl(url: string | URL): URL;
/** The URL of file `name` (default "manifest.json") of the model at `url`; the model URL's query is kept. */
export declare function modelFileUrl(url: string | URL, name?: string): string;

// Expert bitmasks and sparsity metrics (the definitions of src/metrics.rs). A mask is one token's
// experts, all layers: numLayers * wordsPerLayer u32 words (GenerationChunk.experts); masks of
// another length (empty: a token never run) are skipped.

/** One token's expert bitmask, as GenerationChunk.experts carries it (or a plain copy). */
export type ExpertMask = Uint32Array | ArrayLike<number>;
/** Window sizes L of CLS_L: [1, 2, 4, 8, 16, 32, 64]. */
export declare const CLS_WINDOWS: readonly number[];
/** Sorted expert ids per layer of one token's bitmask (exactly `numLayers` lists when given). */
export declare function unpackExperts(mask: ExpertMask, wordsPerLayer: number, numLayers?: number): number[][];
/** Number of active (layer, expert) pairs in a mask. */
export declare function countExperts(mask: ExpertMask): number;
/** Whether expert `expert` of layer `layer` is set in a mask. */
export declare function isExpertActive(mask: ExpertMask, wordsPerLayer: number, layer: number, expert: number): boolean;
export interface SparsityReport {
  /** Tokens counted (masks of the right length). */
  tokens: number;
  tls: number | null;
  /** CLS_L by window size (null until a full window). */
  cls: Record<string, number | null>;
  reuse: number | null;
}
/**
 * TLS, CLS_L and reuse of one segment of tokens, as GenerationStats reports them (equal to the
 * engine's running statistics over the same masks).
 */
export declare function sparsity(masks: ArrayLike<ExpertMask>, numLayers: number, numExperts: number, windows?: readonly number[]): SparsityReport;
/** The chunk of token `t` for chunk size L, aligned as CLS_L counts windows (the first token alone, then windows of L). */
export declare function chunkOf(t: number, L: number, n: number): { index: number; start: number; end: number; full: boolean };
/** Tokens of masks[start .. end) using each expert: numLayers × numExperts counts, row-major. */
export declare function chunkCounts(masks: ArrayLike<ExpertMask>, start: number, end: number, numLayers: number, numExperts: number): Uint16Array;
/** CLS_L if tokens picked experts independently at the observed per-(layer, expert) rates. */
export declare function independentCls(masks: ArrayLike<ExpertMask>, numLayers: number, numExperts: number, windows?: readonly number[]): Record<string, number | null>;
export interface ExpertCost {
  /** Weights of one expert of one layer. */
  expertParams: number;
  flopsPerExpert: number;
  bytesPerExpert: number;
  /** All matrix multiplications of one token, every expert computed. */
  denseFlopsPerToken: number;
}
/** What the cost model reads of a ModelInfo. */
export type CostModelInfo = Pick<ModelInfo, 'numLayers' | 'hiddenSize' | 'params' | 'vocabSize' | 'dtype' | 'experts'> & {
  config?: Record<string, unknown>;
};
/** Per-expert costs of a model from its shapes (FLOPs count a multiply-add as 2). */
export declare function costModel(info: CostModelInfo): ExpertCost;
export interface ExpertSavings {
  tokens: number;
  /** (token, layer, expert) blocks in all, and those sparse execution skipped. */
  blocks: number;
  skipped: number;
  skippedShare: number;
  flopsSaved: number;
  flopsDense: number;
  /** flopsSaved as a share of the whole model's FLOPs over these tokens. */
  flopsShareOfModel: number;
  bytesSkipped: number;
  bytesDense: number;
  /** Chunks as chunkOf aligns them, and the weight bytes a decoder reading each chunk's union once would read. */
  chunks: number;
  chunkBytesRead: number;
  chunkBytesDense: number;
}
/** What sparse execution skipped over `masks` versus dense, and what chunks of L would read. */
export declare function expertSavings(masks: ArrayLike<ExpertMask>, info: CostModelInfo, L: number): ExpertSavings;

/**
 * Chat messages rendered with a template ("chatml" or "minicpm"), ending with the assistant turn, as
 * a SegmentedPrompt: what chat.completions.create generates from (message content stays text).
 */
export declare function chatPrompt(messages: ChatMessage[], template?: 'chatml' | 'minicpm'): SegmentedPrompt;
/**
 * The same prompt as one string, for display. Passing it to generate() parses special tokens in
 * message content as control tokens: use chatPrompt() for content you did not write.
 */
export declare function renderChat(messages: ChatMessage[], template?: 'chatml' | 'minicpm'): string;
export declare function detectChatTemplate(tokenizerConfig: unknown): { name: 'chatml' | 'minicpm'; fallback: boolean };
/** Stop strings that end the assistant's turn for a template (what chat.completions.create passes as `stop`). */
export declare function chatStops(template: 'chatml' | 'minicpm'): string[];
