// Chat templates and the OpenAI-shaped `chat.completions.create`, built on `engine.generate`
// (so it works the same over both transports).

import { BlockffnError } from './errors.js';

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

/** Renders `messages` with the named template, ending with the assistant's turn opening. */
export function renderChat(messages, template = 'chatml') {
  if (!Array.isArray(messages) || messages.length === 0) {
    throw new BlockffnError('InvalidInput', 'messages must be a non-empty array of { role, content }');
  }
  const roles = ['system', 'user', 'assistant', 'developer', 'tool'];
  let out = '';
  messages.forEach((m, i) => {
    if (!m || !roles.includes(m.role)) {
      throw new BlockffnError('InvalidInput', `messages[${i}].role must be one of ${roles.join(', ')}`);
    }
    const text = contentText(m, i);
    if (template === 'minicpm') {
      out += m.role === 'user' ? `<用户>${text.trim()}<AI>` : text.trim();
    } else {
      out += `<|im_start|>${m.role === 'developer' ? 'system' : m.role}\n${text}<|im_end|>\n`;
    }
  });
  if (template !== 'minicpm') out += '<|im_start|>assistant\n';
  return out;
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

function startChatCompletion(engine, request) {
  if (!request || typeof request !== 'object') {
    throw new BlockffnError('InvalidInput', 'chat.completions.create() takes a request object with messages');
  }
  const r = request;
  if (r.n !== undefined && r.n !== 1) throw new BlockffnError('InvalidInput', 'n must be 1 (one choice per request)');
  for (const k of ['frequency_penalty', 'presence_penalty']) {
    if (r[k]) throw new BlockffnError('InvalidInput', `${k} is not supported; use repetition_penalty instead`);
  }
  if (r.tools || r.response_format) {
    throw new BlockffnError('InvalidInput', 'tools and response_format are not supported by this engine');
  }
  const stream = async function* () {
    const info = await engine.modelInfo();
    const template = info.chatTemplate;
    const prompt = renderChat(r.messages, template);
    const userStops = r.stop === undefined || r.stop === null ? [] : Array.isArray(r.stop) ? r.stop : [r.stop];
    const opts = {
      maxTokens: r.max_completion_tokens ?? r.max_tokens ?? undefined,
      temperature: r.temperature ?? 1,
      topP: r.top_p ?? undefined,
      topK: r.top_k ?? undefined,
      repetitionPenalty: r.repetition_penalty ?? undefined,
      seed: r.seed ?? Math.floor(Math.random() * 2 ** 32),
      stop: [...chatStops(template), ...userStops],
      signal: r.signal,
      mode: r.mode,
    };
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
