import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * A copy of a LoRA fixture's base model (`baseDir`) with a word-level tokenizer whose token i reads
 * "t<i>", so that completions' text gives their token ids back. Remove it with `remove`.
 */
export function wordLevelBaseModel(baseDir: string): { dir: string; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'keel-lora-server-'));
  for (const file of ['config.json', 'generation_config.json', 'model.safetensors']) cpSync(join(baseDir, file), join(dir, file));
  const vocab = Object.fromEntries(Array.from({ length: 256 }, (_, i) => [`t${i}`, i]));
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify({ version: '1.0', added_tokens: [], normalizer: null, pre_tokenizer: { type: 'WhitespaceSplit' }, post_processor: null, decoder: null, model: { type: 'WordLevel', vocab, unk_token: 't0' } }));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}
