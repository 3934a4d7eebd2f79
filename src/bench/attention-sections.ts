/** The groups of figures `keel bench attention` times, each of which `--only` can pick. */
export const ATTENTION_SECTIONS = ['prefill', 'decode', 'mla-decode', 'mla-prefill'] as const;
export type AttentionSection = (typeof ATTENTION_SECTIONS)[number];
