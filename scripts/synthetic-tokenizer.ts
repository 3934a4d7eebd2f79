// Writes a tokenizer.json of a given size beside a bench config, so that a model with random
// weights (--load-format dummy) can run structured output: the grammar engine's masks cost what
// they cost over a real vocabulary of that size. The tokens are keel-tiny's byte-level tokens,
// then concatenations of two of them (a deterministic sample), then the config's remaining ids as
// special tokens; merges are empty (prompts in these benchmarks are token ids).
//
//   node --import tsx scripts/synthetic-tokenizer.ts bench/configs/llama-3.1-8b 128000 DIR
//   (DIR gets config.json and tokenizer.json; 128000 text tokens, the rest of vocab_size special)
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const [configDir, textTokensArg, outDir] = process.argv.slice(2);
if (!configDir || !textTokensArg || !outDir) throw new Error('usage: synthetic-tokenizer.ts CONFIG_DIR TEXT_TOKENS OUT_DIR');
const vocabSize = (JSON.parse(readFileSync(join(configDir, 'config.json'), 'utf8')) as { vocab_size: number }).vocab_size;
const textTokens = Number(textTokensArg);
if (!(Number.isInteger(textTokens) && textTokens > 8192 && textTokens < vocabSize)) throw new Error(`TEXT_TOKENS must be an integer in (8192, ${vocabSize})`);
const tiny = JSON.parse(readFileSync('models/keel-tiny/tokenizer.json', 'utf8')) as { model: { vocab: Record<string, number> } };
const base = Object.keys(tiny.model.vocab).filter((t) => !t.startsWith('<|'));
const vocab = new Map<string, number>(base.map((t, i) => [t, i]));
let state = 12345;
const next = () => (state = (Math.imul(state, 1103515245) + 12345) >>> 0);
while (vocab.size < textTokens) {
  const token = base[next() % base.length] + base[next() % base.length];
  if (!vocab.has(token)) vocab.set(token, vocab.size);
}
const added = Array.from({ length: vocabSize - textTokens }, (_, i) => ({
  id: textTokens + i,
  content: i === 0 ? '<|end_of_text|>' : `<|reserved_${i}|>`,
  single_word: false,
  lstrip: false,
  rstrip: false,
  normalized: false,
  special: true,
}));
mkdirSync(outDir, { recursive: true });
copyFileSync(join(configDir, 'config.json'), join(outDir, 'config.json'));
writeFileSync(
  join(outDir, 'tokenizer.json'),
  JSON.stringify({
    version: '1.0',
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: null,
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, vocab: Object.fromEntries(vocab), merges: [] },
  }),
);
writeFileSync(join(outDir, 'tokenizer_config.json'), JSON.stringify({ eos_token: '<|end_of_text|>' }));
console.log(`wrote ${outDir}: ${vocab.size} text tokens, ${added.length} special, vocab_size ${vocabSize}`);
