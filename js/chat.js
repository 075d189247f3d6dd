// Chat templates and the OpenAI-shaped `chat.completions.create`, built on `engine.generate`
// (so it works the same over both transports).

import { BlockffnError } from './errors.js';
import { checkOptionNames, checkSignal, describe, optBoolean, optNumber } from './options.js';

/**
 * Which template a package's tokenizer_config.json asks for. The engine renders known forms
 * itself (no Jinja): ChatML (`<|im_start|>role\n…<|im_end|>\n`) and MiniCPM (`<用户>…<AI>…`).
 * Anything else, or no template, falls back to ChatML.
 * @returns {{ name: 'chatml' | 'minicpm', fallback: boolean }}
 */
export function detectChatTemplate(tokenizerConfig) {
  let t = tokenizerConfig && tokenizerConfig.chat_template;
  if (Array.isArray(t)) {
    const d = t.find((x) => x && x.name === 'default') || t[0];
    t = d && d.template;
  }
  if (typeof t !== 'string' || t === '') return { name: 'chatml', fallback: false };
  if (t.includes('<|im_start|>')) return { name: 'chatml', fallback: false };
  if (t.includes('<用户>') && t.includes('<AI>')) return { name: 'minicpm', fallback: false };
  return { name: 'chatml', fallback: true };
}

function contentText(m, i) {
  const c = m.content;
  if (typeof c === 'string') return c;
  if (c === null || c === undefined) return '';
  if (Array.isArray(c)) {
    return c
      .map((p) => {
        if (p && p.type === 'text' && typeof p.text === 'string') return p.text;
        throw new BlockffnError('InvalidInput', `messages[${i}] has a ${p && p.type} part; this model reads text only`);
      })
      .join('');
  }
  throw new BlockffnError('InvalidInput', `messages[${i}].content must be a string or an array of text parts`);
}

/**
 * `messages` rendered with the named template, ending with the assistant's turn opening, as a
 * segmented prompt: the template's control tokens (`{ control }`) apart from the text
 * (`{ text }`), so that `engine.generate(prompt)` encodes message content as text only — a
 * `<|im_end|>` typed in a message cannot close its turn and forge another.
 * @returns {{ segments: Array<{ text: string } | { control: string }> }}
 */
export function chatPrompt(messages, template = 'chatml') {
  if (!Array.isArray(messages) || messages.length === 0) {
    throw new BlockffnError('InvalidInput', 'messages must be a non-empty array of { role, content }');
  }
  const roles = ['system', 'user', 'assistant', 'developer', 'tool'];
  const segments = [];
  const control = (c) => segments.push({ control: c });
  const text = (t) => t && segments.push({ text: t });
  messages.forEach((m, i) => {
    if (!m || !roles.includes(m.role)) {
      throw new BlockffnError('InvalidInput', `messages[${i}].role must be one of ${roles.join(', ')}`);
    }
    const content = contentText(m, i);
    if (template === 'minicpm') {
      if (m.role === 'user') {
        control('<用户>');
        text(content.trim());
        control('<AI>');
      } else {
        text(content.trim());
      }
    } else {
      control('<|im_start|>');
      text(`${m.role === 'developer' ? 'system' : m.role}\n${content}`);
      control('<|im_end|>');
      text('\n');
    }
  });
  if (template !== 'minicpm') {
    control('<|im_start|>');
    text('assistant\n');
  }
  return { segments };
}

/** The prompt of chatPrompt as one string (for display; special tokens typed in content are not marked). */
export function renderChat(messages, template = 'chatml') {
  return chatPrompt(messages, template)
    .segments.map((s) => s.text ?? s.control)
    .join('');
}

/** Strings that end the assistant's turn for a template. */
export function chatStops(template) {
  return template === 'minicpm' ? ['<用户>'] : ['<|im_end|>', '<|im_start|>'];
}

let counter = 0;
const newId = () => `chatcmpl-${Date.now().toString(36)}${(counter++).toString(36)}`;

function finishReasonOf(r) {
  if (r === 'length' || r === 'context') return 'length';
  return 'stop';
}

/**
 * OpenAI-style chat completion over `engine` (any transport).
 * Supported: messages, stream, stream_options.include_usage (usage is always sent on the last
 * chunk), max_tokens / max_completion_tokens, temperature, top_p, seed, stop, n (1 only);
 * extensions: top_k, repetition_penalty, mode ("sparse" | "dense"), signal (AbortSignal).
 */
export function createChatCompletion(engine, request) {
  try {
    return startChatCompletion(engine, request);
  } catch (e) {
    return Promise.reject(e);
  }
}

/** Request fields this engine reads. */
const SUPPORTED = [
  'messages', 'stream', 'stream_options', 'max_tokens', 'max_completion_tokens', 'temperature', 'top_p', 'seed', 'stop', 'n',
  // extensions
  'top_k', 'repetition_penalty', 'mode', 'signal', 'speculative', 'draft_tree',
];
/** OpenAI fields that change nothing here (usage is always sent; there is one model). */
const IGNORED = ['model', 'user', 'store', 'metadata', 'service_tier', 'parallel_tool_calls'];
/** OpenAI fields for features this engine does not have: refused unless at their no-op value. */
const REFUSED = {
  frequency_penalty: (v) => v === 0 || 'use repetition_penalty instead',
  presence_penalty: (v) => v === 0 || 'use repetition_penalty instead',
  logprobs: (v) => v === false || 'this engine returns no log probabilities',
  top_logprobs: () => 'this engine returns no log probabilities',
  logit_bias: (v) => (v && typeof v === 'object' && Object.keys(v).length === 0) || 'this engine has no logit bias',
  tools: () => 'this engine has no tool calling',
  tool_choice: (v) => v === 'none' || 'this engine has no tool calling',
  functions: () => 'this engine has no tool calling',
  function_call: (v) => v === 'none' || 'this engine has no tool calling',
  response_format: (v) => (v && v.type === 'text') || 'this engine has no structured output',
  modalities: (v) => (Array.isArray(v) && v.every((m) => m === 'text')) || 'this engine reads and writes text only',
  audio: () => 'this engine reads and writes text only',
  prediction: () => 'this engine has no predicted outputs',
  reasoning_effort: () => 'this model has no reasoning mode',
  web_search_options: () => 'this engine cannot search the web',
};

/** The request's sampling fields, checked under their chat names, as generate() options. */
function chatOptions(r) {
  checkOptionNames(r, [...SUPPORTED, ...IGNORED, ...Object.keys(REFUSED)], 'chat.completions.create()');
  for (const [k, allowed] of Object.entries(REFUSED)) {
    if (r[k] === undefined || r[k] === null) continue;
    const ok = allowed(r[k]);
    if (ok !== true) throw new BlockffnError('InvalidInput', `${k} is not supported: ${ok}`);
  }
  if (r.n !== undefined && r.n !== null && r.n !== 1) {
    throw new BlockffnError('InvalidInput', `n must be 1 (one choice per request), got ${describe(r.n)}`);
  }
  optBoolean(r, 'stream');
  if (r.mode !== undefined && r.mode !== null && r.mode !== 'sparse' && r.mode !== 'dense') {
    throw new BlockffnError('InvalidInput', `mode must be "sparse" or "dense", got ${describe(r.mode)}`);
  }
  const stop = r.stop === undefined || r.stop === null ? [] : Array.isArray(r.stop) ? r.stop : [r.stop];
  if (!stop.every((s) => typeof s === 'string')) {
    throw new BlockffnError('InvalidInput', 'stop must be a string or an array of strings');
  }
  const count = (key) => optNumber(r, key, { min: 0, integer: true });
  const maxTokens = count('max_completion_tokens') ?? count('max_tokens');
  const seed = typeof r.seed === 'bigint' ? r.seed : optNumber(r, 'seed', { min: 0, integer: true });
  return {
    maxTokens,
    temperature: optNumber(r, 'temperature', { min: 0 }) ?? 1,
    topP: optNumber(r, 'top_p', { min: 0, max: 1, exclusiveMin: true }),
    topK: optNumber(r, 'top_k', { min: 1, integer: true }),
    repetitionPenalty: optNumber(r, 'repetition_penalty', { min: 0, exclusiveMin: true }),
    seed: seed ?? Math.floor(Math.random() * 2 ** 32),
    stop,
    signal: checkSignal(r.signal),
    mode: r.mode ?? undefined,
    // generate() checks them (same values: 'auto' | 'ngram' | 'eagle' | false; 0-3).
    speculative: r.speculative ?? undefined,
    draftTree: r.draft_tree ?? undefined,
  };
}

function startChatCompletion(engine, request) {
  if (!request || typeof request !== 'object') {
    throw new BlockffnError('InvalidInput', 'chat.completions.create() takes a request object with messages');
  }
  const r = request;
  const checked = chatOptions(r);
  chatPrompt(r.messages); // checks the messages now, before the model (and so the template) is known
  const stream = async function* () {
    const info = await engine.modelInfo();
    const template = info.chatTemplate;
    const prompt = chatPrompt(r.messages, template);
    const opts = { ...checked, stop: [...chatStops(template), ...checked.stop] };
    const id = newId();
    const created = Math.floor(Date.now() / 1000);
    const base = { id, object: 'chat.completion.chunk', created, model: info.id };
    let first = true;
    let completion = 0;
    let promptTokens = 0;
    for await (const c of engine.generate(prompt, opts)) {
      completion += c.tokenIds.length;
      promptTokens = c.stats.promptTokens;
      const extra = { tokenIds: c.tokenIds, experts: c.experts, stats: c.stats };
      if (c.finishReason) {
        if (c.text || first) {
          yield {
            ...base,
            choices: [{ index: 0, delta: first ? { role: 'assistant', content: c.text } : { content: c.text }, finish_reason: null, logprobs: null }],
            blockffn: extra,
          };
        }
        yield {
          ...base,
          choices: [{ index: 0, delta: {}, finish_reason: finishReasonOf(c.finishReason), logprobs: null }],
          usage: { prompt_tokens: promptTokens, completion_tokens: completion, total_tokens: promptTokens + completion },
          blockffn: { ...extra, finishReason: c.finishReason },
        };
        return;
      }
      yield {
        ...base,
        choices: [{ index: 0, delta: first ? { role: 'assistant', content: c.text } : { content: c.text }, finish_reason: null, logprobs: null }],
        blockffn: extra,
      };
      first = false;
    }
  };
  if (r.stream) return Promise.resolve(stream());
  return (async () => {
    let content = '';
    let last = null;
    for await (const ch of stream()) {
      if (ch.choices[0].delta.content) content += ch.choices[0].delta.content;
      last = ch;
    }
    return {
      id: last.id,
      object: 'chat.completion',
      created: last.created,
      model: last.model,
      choices: [{ index: 0, message: { role: 'assistant', content }, finish_reason: last.choices[0].finish_reason, logprobs: null }],
      usage: last.usage,
      blockffn: { stats: last.blockffn.stats },
    };
  })();
}
