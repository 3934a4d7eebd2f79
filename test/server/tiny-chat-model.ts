import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TINY_LLAMA_CONFIG, writeTinyCheckpoint } from '../helpers/model-tiny-checkpoint.ts';
import { TINY_SPECIAL_TOKENS, tinyByteLevelTokenizerJson, writeTinyTokenizer } from '../helpers/model-tiny-tokenizer.ts';

/** Renders `role: content` lines, then `assistant:` as the generation prompt. */
export const TINY_CHAT_TEMPLATE =
  "{% for m in messages %}{{ '<|user|>' if m.role == 'user' else '' }}{{ m.role }}: {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}";

const ADDED_TOKENS = tinyByteLevelTokenizerJson().added_tokens as { id: number; content: string }[];
const tokenId = (content: string) => ADDED_TOKENS.find((t) => t.content === content)?.id;

/**
 * A random-weight Llama with the tiny byte-level tokenizer and a chat template: enough for the
 * server to run every endpoint. Its vocabulary is padded past the tokenizer's, as real models' are.
 */
export function writeTinyChatModel(dir: string, overrides: Record<string, unknown> = {}): void {
  writeTinyCheckpoint(dir, {
    ...TINY_LLAMA_CONFIG,
    vocab_size: 288,
    hidden_size: 32,
    intermediate_size: 64,
    max_position_embeddings: 256,
    bos_token_id: tokenId(TINY_SPECIAL_TOKENS.bos),
    eos_token_id: tokenId(TINY_SPECIAL_TOKENS.eos),
    ...overrides,
  });
  writeTinyTokenizer(dir, { chat_template: TINY_CHAT_TEMPLATE });
}

/** A temp model directory for a whole test file; call the returned function to remove it. */
export function tinyChatModelDir(overrides: Record<string, unknown> = {}): { dir: string; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'keel-server-model-'));
  writeTinyChatModel(dir, overrides);
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** A config.json alone, for `--load-format dummy` (random weights, token-id prompts). */
export function writeDummyConfig(dir: string, overrides: Record<string, unknown> = {}): void {
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...TINY_LLAMA_CONFIG, ...overrides }));
}
