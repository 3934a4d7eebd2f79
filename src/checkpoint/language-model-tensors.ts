import type { Checkpoint } from './checkpoint.ts';

/*
 * A vision-language checkpoint (Gemma3ForConditionalGeneration, Mistral3ForConditionalGeneration,
 * Llama4ForConditionalGeneration, the Qwen VL and GLM-4.1V / GLM-4.5V models) nests its language
 * model under a prefix, beside a vision tower and a projector. The Hub's checkpoints and
 * transformers 5's save_pretrained write `language_model.model.*` and `language_model.lm_head.*`;
 * transformers 4.52+ wrote `model.language_model.*` and a bare `lm_head.*` (as the Hub's Qwen3-VL
 * and GLM-4.xV checkpoints are). The Hub's Qwen2-VL and Qwen2.5-VL checkpoints, and transformers
 * 5's save_pretrained of them, keep the causal LM's own names (`model.embed_tokens`,
 * `model.layers`, `model.norm`, `lm_head`) beside `visual.*`.
 * Every way the language model's tensors are a causal LM's under another name, or its own.
 */
const TEXT_PREFIXES: readonly (readonly [stored: string, text: string])[] = [
  ['language_model.model.', 'model.'],
  ['model.language_model.', 'model.'],
  ['language_model.lm_head.', 'lm_head.'],
  ['lm_head.', 'lm_head.'],
  ['model.embed_tokens.', 'model.embed_tokens.'],
  ['model.layers.', 'model.layers.'],
  ['model.norm.', 'model.norm.'],
];

/** The causal-LM name of a stored tensor of the language model; null for the vision tower's and the projector's. */
export function languageModelTensorName(stored: string): string | null {
  const match = TEXT_PREFIXES.find(([prefix]) => stored.startsWith(prefix));
  return match === undefined ? null : match[1] + stored.slice(match[0].length);
}

/**
 * The language model's tensors of a vision-language checkpoint, named as its text-only causal LM
 * names them (`model.layers.0.self_attn.q_proj.weight`, `lm_head.weight`); the vision tower's and
 * the projector's are not listed. Every reader of `ckpt` is kept, reading under the stored name.
 */
export function languageModelTensors(ckpt: Checkpoint): Checkpoint {
  const storedOf = new Map<string, string>();
  for (const stored of ckpt.tensorNames) {
    const text = languageModelTensorName(stored);
    if (text !== null) storedOf.set(text, stored);
  }
  // A name no tensor has passes through, so that `ckpt`'s own error names the missing tensor.
  const stored = (name: string) => storedOf.get(name) ?? name;
  const view: Checkpoint = {
    get dir() {
      return ckpt.dir;
    },
    tensorNames: [...storedOf.keys()],
    has: (name) => storedOf.has(name),
    info: (name) => ckpt.info(stored(name)),
    read: (name) => ckpt.read(stored(name)),
    readRaw: (name) => ckpt.readRaw(stored(name)),
    close: () => ckpt.close(),
  };
  if (ckpt.readSlice !== undefined) view.readSlice = (name, slice) => ckpt.readSlice!(stored(name), slice);
  if (ckpt.readLinear !== undefined) view.readLinear = (name) => ckpt.readLinear!(stored(name));
  if (ckpt.readMxfp4 !== undefined) view.readMxfp4 = (name) => ckpt.readMxfp4!(stored(name));
  return view;
}
