// Keel playground: a chat over /v1/chat/completions (streamed with fetch + SSE parsing) and the
// engine's live state from /v1/engine/stats. Plain browser JavaScript, no build step.

const $ = (id) => document.getElementById(id);
const STATS_INTERVAL_MS = 1000;
const SETTINGS_KEY = 'keel-playground-settings';
const SETTING_IDS = ['system', 'temperature', 'top-p', 'top-k', 'max-tokens', 'seed', 'api-key'];

/** The conversation so far, as the API takes it. */
const history = [];
let inFlight = null;

function headers() {
  const key = $('api-key').value.trim();
  return { 'content-type': 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}) };
}

function loadSettings() {
  let saved = {};
  try {
    saved = JSON.parse(localStorage.getItem(SETTINGS_KEY) ?? '{}') ?? {};
  } catch {
    localStorage.removeItem(SETTINGS_KEY);
  }
  for (const id of SETTING_IDS) if (typeof saved[id] === 'string') $(id).value = saved[id];
}

function saveSettings() {
  localStorage.setItem(SETTINGS_KEY, JSON.stringify(Object.fromEntries(SETTING_IDS.map((id) => [id, $(id).value]))));
}

function showSliderValues() {
  $('temperature-value').textContent = Number($('temperature').value).toFixed(2);
  $('top-p-value').textContent = Number($('top-p').value).toFixed(2);
}

/**
 * Max tokens as set, within the room the conversation leaves in the model's context (asked of
 * /tokenize): a setting past the context would make the server refuse the request.
 */
async function maxTokensFor(messages) {
  const response = await fetch('/tokenize', { method: 'POST', headers: headers(), body: JSON.stringify({ messages }) });
  if (!response.ok) throw new Error(`${response.status}: ${await errorMessage(response)}`);
  const { count, max_model_len: maxModelLen } = await response.json();
  $('max-tokens').max = String(maxModelLen);
  const room = maxModelLen - count;
  if (room < 1) throw new Error(`the conversation fills the model's context (${count} of ${maxModelLen} tokens): start a new chat`);
  return Math.min(Number($('max-tokens').value), room);
}

function samplingBody(maxTokens) {
  const body = {
    temperature: Number($('temperature').value),
    top_p: Number($('top-p').value),
    max_tokens: maxTokens,
  };
  const topK = Number($('top-k').value);
  if (topK > 0) body.top_k = topK;
  if ($('seed').value.trim() !== '') body.seed = Number($('seed').value);
  return body;
}

function addBubble(role, text) {
  $('empty-state').hidden = true;
  const bubble = document.createElement('article');
  bubble.className = `message ${role}`;
  bubble.dataset.role = role;
  const label = document.createElement('div');
  label.className = 'role';
  label.textContent = role;
  const content = document.createElement('div');
  content.className = 'content';
  content.textContent = text;
  const meta = document.createElement('div');
  meta.className = 'meta';
  bubble.append(label, content, meta);
  $('messages').append(bubble);
  bubble.scrollIntoView({ block: 'end' });
  return { bubble, content, meta };
}

/** Yields each `data:` payload of a server-sent-events body. */
async function* sseEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = event
        .split('\n')
        .filter((line) => line.startsWith('data:'))
        .map((line) => line.slice(5).trimStart())
        .join('\n');
      if (data) yield data;
    }
  }
}

async function errorMessage(response) {
  try {
    return (await response.json()).error?.message ?? response.statusText;
  } catch {
    return response.statusText;
  }
}

async function send(text) {
  history.push({ role: 'user', content: text });
  addBubble('user', text);
  const reply = addBubble('assistant', '');
  reply.bubble.dataset.state = 'streaming';
  setBusy(true);
  inFlight = new AbortController();
  const system = $('system').value.trim();
  const messages = system ? [{ role: 'system', content: system }, ...history] : [...history];
  const started = performance.now();
  let firstTokenAt = null;
  let answer = '';
  let finishReason = null;
  let usage = null;
  try {
    const maxTokens = await maxTokensFor(messages);
    const response = await fetch('/v1/chat/completions', {
      method: 'POST',
      headers: headers(),
      body: JSON.stringify({ messages, stream: true, stream_options: { include_usage: true }, ...samplingBody(maxTokens) }),
      signal: inFlight.signal,
    });
    if (!response.ok) throw new Error(`${response.status}: ${await errorMessage(response)}`);
    for await (const data of sseEvents(response.body)) {
      if (data === '[DONE]') break;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message);
      if (chunk.usage) usage = chunk.usage;
      const choice = chunk.choices[0];
      if (!choice) continue;
      if (choice.delta.content) {
        firstTokenAt ??= performance.now();
        answer += choice.delta.content;
        reply.content.textContent = answer;
        reply.bubble.scrollIntoView({ block: 'end' });
      }
      finishReason = choice.finish_reason ?? finishReason;
    }
    history.push({ role: 'assistant', content: answer });
    reply.bubble.dataset.state = 'done';
    reply.meta.textContent = describeReply(usage, started, firstTokenAt, finishReason);
  } catch (error) {
    const stopped = error.name === 'AbortError';
    reply.bubble.dataset.state = stopped ? 'stopped' : 'error';
    if (stopped) history.push({ role: 'assistant', content: answer });
    else history.pop();
    reply.meta.textContent = stopped ? 'stopped' : error.message;
    if (!stopped) reply.bubble.classList.add('error');
  } finally {
    inFlight = null;
    setBusy(false);
  }
}

function describeReply(usage, started, firstTokenAt, finishReason) {
  const parts = [];
  if (usage) parts.push(`${usage.completion_tokens} tokens`);
  if (firstTokenAt !== null) parts.push(`first token ${Math.round(firstTokenAt - started)} ms`);
  const seconds = (performance.now() - started) / 1000;
  if (usage && seconds > 0) parts.push(`${(usage.completion_tokens / seconds).toFixed(1)} tok/s`);
  if (finishReason) parts.push(finishReason === 'length' ? 'hit max tokens' : finishReason);
  return parts.join(' · ');
}

function setBusy(busy) {
  $('send').disabled = busy;
  $('stop').hidden = !busy;
}

function formatPercent(fraction) {
  return `${(fraction * 100).toFixed(fraction > 0 && fraction < 0.1 ? 1 : 0)}%`;
}

async function refreshStats() {
  try {
    const response = await fetch('/v1/engine/stats', { headers: headers() });
    if (!response.ok) throw new Error(await errorMessage(response));
    const s = await response.json();
    $('model-name').textContent = s.model;
    $('stat-running').textContent = s.running;
    $('stat-waiting').textContent = s.waiting;
    $('stat-tps').textContent = s.generation_tokens_per_second.toFixed(1);
    $('stat-hit-rate').textContent = formatPercent(s.prefix_cache_hit_rate);
    const kv = s.kv_cache;
    $('stat-kv-usage').textContent = `${formatPercent(kv.usage)} of ${kv.total_blocks} blocks × ${kv.block_size} tokens`;
    $('kv-used').style.width = `${kv.usage * 100}%`;
    $('kv-bar').setAttribute('aria-valuenow', String(kv.usage));
    $('stat-used').textContent = kv.used_blocks;
    $('stat-free').textContent = kv.free_blocks;
    $('stat-cached').textContent = kv.cached_blocks;
    $('stat-generated').textContent = s.generation_tokens_total.toLocaleString();
    $('stat-preemptions').textContent = s.preemptions_total.toLocaleString();
    $('health-dot').className = 'dot ok';
    $('health-dot').title = 'engine is serving';
  } catch (error) {
    $('health-dot').className = 'dot down';
    $('health-dot').title = `engine state unavailable: ${error.message}`;
    $('model-name').textContent = `unavailable: ${error.message}`;
  } finally {
    setTimeout(refreshStats, STATS_INTERVAL_MS);
  }
}

function start() {
  loadSettings();
  showSliderValues();
  for (const id of SETTING_IDS) {
    $(id).addEventListener('input', () => {
      saveSettings();
      showSliderValues();
    });
  }
  $('composer').addEventListener('submit', (event) => {
    event.preventDefault();
    const text = $('prompt').value.trim();
    if (!text || inFlight) return;
    $('prompt').value = '';
    send(text);
  });
  $('prompt').addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $('composer').requestSubmit();
    }
  });
  $('stop').addEventListener('click', () => inFlight?.abort());
  $('reset').addEventListener('click', () => {
    inFlight?.abort();
    history.length = 0;
    for (const bubble of document.querySelectorAll('.message')) bubble.remove();
    $('empty-state').hidden = false;
  });
  refreshStats();
}

start();
