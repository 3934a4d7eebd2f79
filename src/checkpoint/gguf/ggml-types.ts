/**
 * ggml's tensor element types as GGUF files number them. Quantized types store a row as blocks of
 * `blockElements` values in `blockBytes` bytes; plain types are blocks of one element. Only the
 * types listed here can be read: a tensor of any other id is refused by name, with the list.
 */
export interface GgmlType {
  id: number;
  name: string;
  blockElements: number;
  blockBytes: number;
}

/** Super-block size of the K-quants. */
export const QK_K = 256;

const TYPES: readonly GgmlType[] = [
  { id: 0, name: 'F32', blockElements: 1, blockBytes: 4 },
  { id: 1, name: 'F16', blockElements: 1, blockBytes: 2 },
  { id: 2, name: 'Q4_0', blockElements: 32, blockBytes: 2 + 16 },
  { id: 3, name: 'Q4_1', blockElements: 32, blockBytes: 2 + 2 + 16 },
  { id: 6, name: 'Q5_0', blockElements: 32, blockBytes: 2 + 4 + 16 },
  { id: 7, name: 'Q5_1', blockElements: 32, blockBytes: 2 + 2 + 4 + 16 },
  { id: 8, name: 'Q8_0', blockElements: 32, blockBytes: 2 + 32 },
  { id: 10, name: 'Q2_K', blockElements: QK_K, blockBytes: QK_K / 16 + QK_K / 4 + 2 + 2 },
  { id: 11, name: 'Q3_K', blockElements: QK_K, blockBytes: QK_K / 8 + QK_K / 4 + 12 + 2 },
  { id: 12, name: 'Q4_K', blockElements: QK_K, blockBytes: 2 + 2 + 12 + QK_K / 2 },
  { id: 13, name: 'Q5_K', blockElements: QK_K, blockBytes: 2 + 2 + 12 + QK_K / 8 + QK_K / 2 },
  { id: 14, name: 'Q6_K', blockElements: QK_K, blockBytes: QK_K / 2 + QK_K / 4 + QK_K / 16 + 2 },
  { id: 15, name: 'Q8_K', blockElements: QK_K, blockBytes: 4 + QK_K + 2 * (QK_K / 16) },
  { id: 30, name: 'BF16', blockElements: 1, blockBytes: 2 },
];

/**
 * Names of the ids ggml defines that Keel does not read, so an error can say what a file holds.
 * (4, 5 and 31-33, 36-38 were removed from ggml; files never carry them.)
 */
const OTHER_NAMES: Record<number, string> = {
  9: 'Q8_1', 16: 'IQ2_XXS', 17: 'IQ2_XS', 18: 'IQ3_XXS', 19: 'IQ1_S', 20: 'IQ4_NL', 21: 'IQ3_S',
  22: 'IQ2_S', 23: 'IQ4_XS', 24: 'I8', 25: 'I16', 26: 'I32', 27: 'I64', 28: 'F64', 29: 'IQ1_M', 34: 'TQ1_0', 35: 'TQ2_0',
  39: 'MXFP4',
};

const BY_ID = new Map(TYPES.map((t) => [t.id, t]));

export function ggmlType(id: number): GgmlType | undefined {
  return BY_ID.get(id);
}

/** "Q2_K (id 10)", or "unknown type id 99". */
export function describeGgmlTypeId(id: number): string {
  const name = OTHER_NAMES[id];
  return name === undefined ? `unknown type id ${id}` : `${name} (id ${id})`;
}

export function supportedGgmlTypeNames(): string {
  return TYPES.map((t) => t.name).join(', ');
}
