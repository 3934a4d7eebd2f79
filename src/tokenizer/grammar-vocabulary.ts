/**
 * A tokenizer's vocabulary as a grammar engine matches it: every token's string as tokenizer.json
 * spells it, and how those strings encode bytes, so that the engine can tell which bytes each
 * token adds to the text.
 */
export interface GrammarVocabulary {
  /** Token id -> its string in tokenizer.json; '' for special tokens, which never occur inside text. */
  tokens: string[];
  /**
   * `byte_level`: GPT-2's byte-to-character table (ByteLevel decoders); `byte_fallback`:
   * sentencepiece's "▁" for a space and <0xNN> byte tokens; `raw`: the strings are the text.
   */
  encoding: 'byte_level' | 'byte_fallback' | 'raw';
  /** Whether tokenizing prepends a space to the text (sentencepiece's dummy prefix). */
  prependSpace: boolean;
}

interface Component {
  type?: unknown;
  decoders?: unknown;
  normalizers?: unknown;
  pretokenizers?: unknown;
  prepend_scheme?: unknown;
  add_prefix_space?: unknown;
  prepend?: unknown;
}

/** The pieces of a tokenizer.json component (a Sequence's members, or itself). */
function pieces(component: unknown, listKey: 'decoders' | 'normalizers' | 'pretokenizers'): Component[] {
  if (typeof component !== 'object' || component === null) return [];
  const c = component as Component;
  return Array.isArray(c[listKey]) ? (c[listKey] as Component[]) : [c];
}

/** How tokenizer.json's strings encode bytes, from its decoder, normalizer and pre-tokenizer. */
export function vocabularyEncoding(tokenizerJson: unknown): Pick<GrammarVocabulary, 'encoding' | 'prependSpace'> {
  const json = (typeof tokenizerJson === 'object' && tokenizerJson !== null ? tokenizerJson : {}) as Record<string, unknown>;
  const decoders = pieces(json.decoder, 'decoders').map((d) => d.type);
  const metaspace = [...pieces(json.pre_tokenizer, 'pretokenizers'), ...pieces(json.decoder, 'decoders')].find((p) => p.type === 'Metaspace');
  const prepends =
    pieces(json.normalizer, 'normalizers').some((n) => n.type === 'Prepend' && n.prepend === '▁') ||
    (metaspace !== undefined && (metaspace.prepend_scheme === 'always' || metaspace.prepend_scheme === 'first' || metaspace.add_prefix_space === true));
  if (decoders.includes('ByteLevel')) return { encoding: 'byte_level', prependSpace: false };
  if (decoders.includes('ByteFallback') || metaspace !== undefined) return { encoding: 'byte_fallback', prependSpace: prepends };
  return { encoding: 'raw', prependSpace: false };
}
