/** OpenAI (and vLLM) endpoints Keel does not serve, by what they are for: a 404 says which it was. */
const UNSUPPORTED: [RegExp, string][] = [
  [/^\/v1\/embeddings\b/, 'embeddings'],
  [/^\/v1\/audio\//, 'audio (speech, transcriptions, translations)'],
  [/^\/v1\/images\//, 'image generation'],
  [/^\/v1\/moderations\b/, 'moderations'],
  [/^\/v1\/(files|uploads)\b/, 'file uploads'],
  [/^\/v1\/batches\b/, 'the Batch API'],
  [/^\/v1\/fine_tuning\//, 'fine-tuning'],
  [/^\/v1\/(assistants|threads)\b/, 'the Assistants API'],
  [/^\/v1\/vector_stores\b/, 'vector stores'],
  [/^\/v1\/realtime\b/, 'the Realtime API'],
  [/^\/v1\/conversations\b/, 'the Conversations API (chain responses with previous_response_id)'],
  [/^\/v1\/responses\/[^/]+\/cancel\b/, 'cancelling background responses (Keel answers every response in the foreground)'],
  [/^(\/v1)?\/(score|rerank|pooling|classify)\b/, 'scoring, reranking and pooling models'],
];

const SERVED = '/v1/chat/completions, /v1/completions, /v1/responses, /v1/models, /tokenize and /detokenize';

/** The 404 message for `method path`: what is unsupported when Keel knows the endpoint, else that the URL is unknown. */
export function notFoundMessage(method: string, path: string): string {
  const known = UNSUPPORTED.find(([pattern]) => pattern.test(path));
  if (known) return `Keel does not support ${known[1]} (${method} ${path}); it serves ${SERVED}`;
  return `Invalid URL (${method} ${path}); Keel serves ${SERVED}`;
}
