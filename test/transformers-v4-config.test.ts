import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { LLM } from '../src/engine/llm.ts';
import { listOracleFixtures } from './helpers/oracle-fixtures.ts';

/**
 * The fixtures are saved by transformers 5 (`rope_parameters`, `dtype`). The same checkpoints
 * described with 4.x keys (`rope_theta` + `rope_scaling`, `torch_dtype`) must give the same tokens;
 * a vision-language wrapper keeps its language model's keys in `text_config`, converted alike.
 */
function toTransformers4Config(config: Record<string, unknown>): Record<string, unknown> {
  const { rope_parameters: rope, dtype, text_config: text, ...rest } = config as { rope_parameters?: Record<string, unknown>; dtype: string; text_config?: Record<string, unknown> };
  return {
    ...rest,
    torch_dtype: dtype,
    ...(rope && toTransformers4Rope(rope)),
    ...(text && { text_config: toTransformers4Config(text) }),
  };
}

function toTransformers4Rope(rope: Record<string, unknown>): Record<string, unknown> {
  const { rope_theta, rope_type, ...scaling } = rope;
  return { rope_theta, rope_scaling: rope_type === 'default' ? null : { type: rope_type, ...scaling } };
}

for (const fixture of listOracleFixtures().filter((f) => /rope|qwen3|bf16/.test(f.name))) {
  test(`${fixture.name}: transformers 4.x config keys give the same greedy tokens`, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'keel-v4-'));
    try {
      cpSync(fixture.dir, dir, { recursive: true });
      const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
      writeFileSync(join(dir, 'config.json'), JSON.stringify(toTransformers4Config(config)));
      const llm = await LLM.load({ model: dir, backend: 'cpu', showProgress: false });
      try {
        const outputs = await llm.generate(fixture.oracle.prompts, { temperature: 0, ignoreEos: true, maxTokens: fixture.oracle.max_new_tokens });
        outputs.forEach((o, i) => assert.deepEqual(o.outputs[0].tokenIds, fixture.oracle.greedy[i], `prompt ${i}`));
      } finally {
        await llm.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}
