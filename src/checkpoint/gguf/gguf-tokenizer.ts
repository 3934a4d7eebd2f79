import { invalidModel } from '../../errors.ts';
import type { TokenizerDocuments } from '../model-documents.ts';
import { specialTokenIds } from './gguf-config.ts';
import type { GgufMetadata } from './metadata.ts';

/** llama.cpp's token types (tokenizer.ggml.token_type). */
const NORMAL = 1;
const UNKNOWN = 2;
const CONTROL = 3;
const USER_DEFINED = 4;
const UNUSED = 5;

/** Split pre-tokenizers, Isolated: the pieces BPE runs on. */
const split = (regex: string) => ({ type: 'Split', pattern: { Regex: regex }, behavior: 'Isolated', invert: false });
const byteLevel = (useRegex: boolean) => ({ type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: useRegex });

const LLAMA3_REGEX = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const QWEN2_REGEX = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const TEKKEN_REGEX =
  '[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+';
const DEEPSEEK3_REGEXES = [
  '\\p{N}{1,3}',
  '[一-龥぀-ゟ゠-ヿ]+',
  "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
];

/**
 * A byte-level BPE vocabulary's pre-tokenization, by llama.cpp's name for it (tokenizer.ggml.pre,
 * which its converter picks by hashing the Hugging Face tokenizer's output): the pre-tokenizer and
 * normalizer of that tokenizer's tokenizer.json, and whether its merges apply to whole-word tokens.
 */
interface PreTokenization {
  names: string[];
  preTokenizer: unknown;
  normalizer: unknown;
  /** BPE's ignore_merges: a piece that is a token is taken whole (Llama 3, Tekken). */
  ignoreMerges: boolean;
  /** tokenizer.ggml.add_bos_token's default, as llama.cpp has it. */
  addBos: boolean;
}

const PRE_TOKENIZATIONS: readonly PreTokenization[] = [
  { names: ['gpt-2', 'phi-2'], preTokenizer: byteLevel(true), normalizer: null, ignoreMerges: false, addBos: false },
  {
    names: ['llama3', 'llama-v3', 'llama-bpe', 'falcon3', 'pixtral', 'smaug-bpe', 'dbrx'],
    preTokenizer: { type: 'Sequence', pretokenizers: [split(LLAMA3_REGEX), byteLevel(false)] },
    normalizer: null,
    ignoreMerges: true,
    addBos: true,
  },
  {
    names: ['qwen2', 'deepseek-r1-qwen', 'stablelm2'],
    preTokenizer: { type: 'Sequence', pretokenizers: [split(QWEN2_REGEX), byteLevel(false)] },
    normalizer: { type: 'NFC' },
    ignoreMerges: false,
    addBos: false,
  },
  {
    names: ['smollm', 'starcoder', 'refact', 'codeshell'],
    preTokenizer: { type: 'Sequence', pretokenizers: [{ type: 'Digits', individual_digits: true }, byteLevel(true)] },
    normalizer: null,
    ignoreMerges: false,
    addBos: false,
  },
  {
    names: ['deepseek-v3'],
    preTokenizer: { type: 'Sequence', pretokenizers: [...DEEPSEEK3_REGEXES.map(split), byteLevel(false)] },
    normalizer: null,
    ignoreMerges: false,
    addBos: true,
  },
  {
    names: ['tekken'],
    preTokenizer: { type: 'Sequence', pretokenizers: [split(TEKKEN_REGEX), byteLevel(false)] },
    normalizer: null,
    ignoreMerges: true,
    addBos: true,
  },
];

/**
 * The tokenizer a GGUF file's vocabulary describes, as the Hugging Face files that would have
 * produced it: tokenizer.json (a BPE model: byte-level for `gpt2` vocabularies, with their merges
 * and pre-tokenization; SentencePiece-style with byte fallback for `llama` ones, merges ranked by
 * the scores of the tokens they make, as transformers converts SentencePiece models) and
 * tokenizer_config.json (special tokens, chat template). Control, unknown and user-defined tokens
 * become added tokens. Null when the file carries no vocabulary.
 */
export function ggufTokenizer(m: GgufMetadata): TokenizerDocuments | null {
  if (!m.has('tokenizer.ggml.model')) return null;
  const model = m.string('tokenizer.ggml.model');
  if (model === 'none') return null;
  const tokens = m.strings('tokenizer.ggml.tokens');
  const types = m.has('tokenizer.ggml.token_type') ? m.numbers('tokenizer.ggml.token_type') : tokens.map(() => NORMAL);
  if (types.length !== tokens.length) throw invalidModel(`${m.source}: tokenizer.ggml.token_type has ${types.length} entries for ${tokens.length} tokens`);
  const ids = specialTokenIds(m);
  for (const id of [ids.bos, ...ids.eos, ids.pad]) {
    if (id !== null && id >= tokens.length) throw invalidModel(`${m.source}: special token id ${id} is outside the vocabulary of ${tokens.length} tokens`);
  }
  const vocab: Record<string, number> = {};
  tokens.forEach((t, i) => (vocab[t] ??= i));
  const addedTokens = tokens.flatMap((content, id) =>
    types[id] === CONTROL || types[id] === UNKNOWN || types[id] === USER_DEFINED
      ? [{ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: types[id] !== USER_DEFINED }]
      : [],
  );
  const unk = m.has('tokenizer.ggml.unknown_token_id') ? m.uint('tokenizer.ggml.unknown_token_id') : null;
  let body: Record<string, unknown>;
  let addBosDefault: boolean;
  if (model === 'gpt2') {
    const pre = m.string('tokenizer.ggml.pre');
    const scheme = PRE_TOKENIZATIONS.find((p) => p.names.includes(pre));
    if (scheme === undefined) {
      const known = PRE_TOKENIZATIONS.flatMap((p) => p.names).join(', ');
      throw invalidModel(`${m.source}: tokenizer.ggml.pre "${pre}" is a pre-tokenization Keel does not know (known: ${known})`);
    }
    addBosDefault = scheme.addBos;
    body = {
      normalizer: scheme.normalizer,
      pre_tokenizer: scheme.preTokenizer,
      decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
      model: bpeModel(vocab, m.strings('tokenizer.ggml.merges').map(splitMerge), { ignoreMerges: scheme.ignoreMerges, byteFallback: false, unk: null }),
    };
  } else if (model === 'llama') {
    const scores = m.numbers('tokenizer.ggml.scores');
    if (scores.length !== tokens.length) throw invalidModel(`${m.source}: tokenizer.ggml.scores has ${scores.length} entries for ${tokens.length} tokens`);
    const spacePrefix = m.bool('tokenizer.ggml.add_space_prefix', true);
    addBosDefault = true;
    const replaceSpaces = { type: 'Replace', pattern: { String: ' ' }, content: '\u2581' };
    body = {
      normalizer: spacePrefix ? { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: '\u2581' }, replaceSpaces] } : replaceSpaces,
      pre_tokenizer: null,
      decoder: {
        type: 'Sequence',
        decoders: [
          { type: 'Replace', pattern: { String: '\u2581' }, content: ' ' },
          { type: 'ByteFallback' },
          { type: 'Fuse' },
          ...(spacePrefix ? [{ type: 'Strip', content: ' ', start: 1, stop: 0 }] : []),
        ],
      },
      model: bpeModel(vocab, sentencePieceMerges(tokens, scores, types), { ignoreMerges: false, byteFallback: true, unk: unk === null ? null : tokens[unk] }),
    };
  } else {
    throw invalidModel(`${m.source}: tokenizer.ggml.model "${model}" is not supported (Keel reads gpt2 and llama vocabularies)`);
  }
  const addBos = m.bool('tokenizer.ggml.add_bos_token', addBosDefault);
  const addEos = m.bool('tokenizer.ggml.add_eos_token', false);
  const tokenOf = (id: number | null) => (id === null ? undefined : tokens[id]);
  const special = (id: number | null, what: string) => {
    if (id === null) throw invalidModel(`${m.source}: tokenizer.ggml.add_${what}_token is set but there is no tokenizer.ggml.${what}_token_id`);
    return { id, token: tokens[id] };
  };
  const config: Record<string, unknown> = {
    bos_token: tokenOf(ids.bos),
    eos_token: tokenOf(ids.eos[0] ?? null),
    unk_token: tokenOf(unk),
    pad_token: tokenOf(ids.pad),
    clean_up_tokenization_spaces: false,
  };
  if (m.has('tokenizer.chat_template')) config.chat_template = m.string('tokenizer.chat_template');
  const tokenizer = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: addedTokens,
    ...body,
    post_processor: postProcessor(addBos ? special(ids.bos, 'bos') : null, addEos ? special(ids.eos[0] ?? null, 'eos') : null),
  };
  return { tokenizer: { json: tokenizer, source: `the vocabulary of ${m.source}` }, config, configSource: `the metadata of ${m.source}`, chatTemplateFile: null };
}

function bpeModel(vocab: Record<string, number>, merges: [string, string][], options: { ignoreMerges: boolean; byteFallback: boolean; unk: string | null }): unknown {
  return {
    type: 'BPE',
    dropout: null,
    unk_token: options.unk,
    continuing_subword_prefix: null,
    end_of_word_suffix: null,
    fuse_unk: options.byteFallback,
    byte_fallback: options.byteFallback,
    ignore_merges: options.ignoreMerges,
    vocab,
    merges,
  };
}

/** A merge as GGUF stores it, "left right": split at the first space after the first character, as llama.cpp does. */
function splitMerge(merge: string): [string, string] {
  const at = merge.indexOf(' ', 1);
  return at < 0 ? [merge, ''] : [merge.slice(0, at), merge.slice(at + 1)];
}

/**
 * SentencePiece BPE merges the adjacent pair whose union is the best-scored token; as BPE merges,
 * every split of every token into two tokens, ranked by the token's score (then by the halves'
 * ids). Control, unknown and byte tokens take no part: they are never the union of a merge.
 */
function sentencePieceMerges(tokens: string[], scores: number[], types: number[]): [string, string][] {
  const mergeable = (id: number) => types[id] === NORMAL || types[id] === USER_DEFINED || types[id] === UNUSED;
  const idOf = new Map<string, number>();
  tokens.forEach((t, i) => {
    if (mergeable(i) && !idOf.has(t)) idOf.set(t, i);
  });
  const merges: { left: string; right: string; score: number; leftId: number; rightId: number }[] = [];
  for (const [token, id] of idOf) {
    const chars = [...token];
    for (let cut = 1; cut < chars.length; cut++) {
      const left = chars.slice(0, cut).join('');
      const right = chars.slice(cut).join('');
      const leftId = idOf.get(left);
      const rightId = idOf.get(right);
      if (leftId !== undefined && rightId !== undefined) merges.push({ left, right, score: scores[id], leftId, rightId });
    }
  }
  merges.sort((a, b) => b.score - a.score || a.leftId - b.leftId || a.rightId - b.rightId);
  return merges.map((x) => [x.left, x.right]);
}

/** BOS/EOS added around each sequence, as tokenizer.json's TemplateProcessing says it. */
function postProcessor(bos: { id: number; token: string } | null, eos: { id: number; token: string } | null): unknown {
  if (bos === null && eos === null) return null;
  const around = [bos, eos].filter((t) => t !== null);
  const special = (t: { token: string }) => ({ SpecialToken: { id: t.token, type_id: 0 } });
  const wrap = (id: string) => [...(bos ? [special(bos)] : []), { Sequence: { id, type_id: 0 } }, ...(eos ? [special(eos)] : [])];
  const specialTokens = Object.fromEntries(around.map((t) => [t.token, { id: t.token, ids: [t.id], tokens: [t.token] }]));
  return { type: 'TemplateProcessing', single: wrap('A'), pair: [...wrap('A'), ...wrap('B')], special_tokens: specialTokens };
}
