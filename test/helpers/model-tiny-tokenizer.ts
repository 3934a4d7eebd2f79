import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * GPT-2's reversible byte -> printable character map used by byte-level BPE: printable Latin-1
 * bytes map to themselves, the others to code points from 256 up, in byte order.
 */
export function byteLevelAlphabet(): string[] {
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const chars: string[] = [];
  let next = 256;
  for (let b = 0; b < 256; b++) chars.push(String.fromCodePoint(printable(b) ? b : next++));
  return chars;
}

/** The byte-level spelling of `text` (each UTF-8 byte as its alphabet character). */
export function byteLevel(text: string): string {
  const alphabet = byteLevelAlphabet();
  return Array.from(new TextEncoder().encode(text), (b) => alphabet[b]).join('');
}

const BYTE = (b: number) => byteLevelAlphabet()[b];

/**
 * Merges of the tiny byte-level BPE. Besides ASCII words they split multi-byte characters across
 * tokens: 😀 (F0 9F 98 80) becomes two tokens of two bytes, € (E2 82 AC) a two-byte token and a
 * single byte, and é (C3 A9) stays two one-byte tokens.
 */
const MERGES: [string, string][] = [
  ['h', 'e'],
  ['l', 'l'],
  ['he', 'll'],
  ['hell', 'o'],
  ['Ġ', 'hello'],
  ['Ġ', 'w'],
  ['o', 'r'],
  ['Ġw', 'or'],
  ['l', 'd'],
  ['Ġwor', 'ld'],
  [BYTE(0xf0), BYTE(0x9f)],
  [BYTE(0x98), BYTE(0x80)],
  [BYTE(0xe2), BYTE(0x82)],
];

export const TINY_SPECIAL_TOKENS = { bos: '<|bos|>', eos: '<|eos|>', user: '<|user|>' };
/** An added token that is not special: it survives skip_special_tokens. */
export const TINY_PLAIN_ADDED_TOKEN = '<tool>';

/** tokenizer.json of a byte-level BPE (GPT-2 / Llama 3 / Qwen style) whose post-processor prepends <|bos|>. */
export function tinyByteLevelTokenizerJson(): Record<string, unknown> {
  const vocab: Record<string, number> = {};
  byteLevelAlphabet().forEach((c, i) => (vocab[c] = i));
  for (const [a, b] of MERGES) vocab[a + b] = Object.keys(vocab).length;
  let id = Object.keys(vocab).length;
  const added = [...Object.values(TINY_SPECIAL_TOKENS).map((content) => ({ content, special: true })), { content: TINY_PLAIN_ADDED_TOKEN, special: false }].map(
    (t) => ({ id: id++, ...t, single_word: false, lstrip: false, rstrip: false, normalized: false }),
  );
  const bosId = added[0].id;
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: TINY_SPECIAL_TOKENS.bos, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [
        { SpecialToken: { id: TINY_SPECIAL_TOKENS.bos, type_id: 0 } },
        { Sequence: { id: 'A', type_id: 0 } },
        { SpecialToken: { id: TINY_SPECIAL_TOKENS.bos, type_id: 1 } },
        { Sequence: { id: 'B', type_id: 1 } },
      ],
      special_tokens: { [TINY_SPECIAL_TOKENS.bos]: { id: TINY_SPECIAL_TOKENS.bos, ids: [bosId], tokens: [TINY_SPECIAL_TOKENS.bos] } },
    },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, vocab, merges: MERGES },
  };
}

/** tokenizer.json of a SentencePiece-style (Llama 2 / Mistral) tokenizer: ▁ for spaces, a decoder that strips the first space. */
export function tinyMetaspaceTokenizerJson(): Record<string, unknown> {
  const pieces = ['<unk>', '<s>', '</s>', '▁Hello', '▁world', '!', '▁'];
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: ['<unk>', '<s>', '</s>'].map((content, id) => ({ id, content, special: true, single_word: false, lstrip: false, rstrip: false, normalized: false })),
    normalizer: null,
    pre_tokenizer: { type: 'Metaspace', replacement: '▁', prepend_scheme: 'first', split: false },
    post_processor: null,
    decoder: {
      type: 'Sequence',
      decoders: [
        { type: 'Replace', pattern: { String: '▁' }, content: ' ' },
        { type: 'ByteFallback' },
        { type: 'Fuse' },
        { type: 'Strip', content: ' ', start: 1, stop: 0 },
      ],
    },
    model: { type: 'BPE', dropout: null, unk_token: '<unk>', fuse_unk: true, byte_fallback: true, vocab: Object.fromEntries(pieces.map((p, i) => [p, i])), merges: [] },
  };
}

/** Writes tokenizer.json and tokenizer_config.json for the tiny byte-level tokenizer into `dir`. */
export function writeTinyTokenizer(dir: string, config: Record<string, unknown> = {}): void {
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(tinyByteLevelTokenizerJson()));
  writeFileSync(
    join(dir, 'tokenizer_config.json'),
    JSON.stringify({ tokenizer_class: 'PreTrainedTokenizerFast', bos_token: TINY_SPECIAL_TOKENS.bos, eos_token: TINY_SPECIAL_TOKENS.eos, ...config }),
  );
}
