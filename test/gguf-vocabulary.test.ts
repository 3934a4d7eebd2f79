import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CpuBackend } from '../src/backend/cpu/cpu-backend.ts';
import { openModelFiles } from '../src/checkpoint/model-files.ts';
import { loadModel } from '../src/engine/load-engine.ts';
import { LLM } from '../src/engine/llm.ts';
import type { WeightUploader } from '../src/layers/parameters.ts';
import { loadWeights } from '../src/models/load-weights.ts';
import { createModel, readModelArchitecture } from '../src/models/registry.ts';
import type { GgufMatrixType } from './helpers/gguf-from-checkpoint.ts';
import { ggufBesideDequantized, MIXED_CONFIG, MIXED_PROMPTS } from './helpers/mixed-format-gguf.ts';
import { lastTokenLogits } from './helpers/prompt-logits.ts';

/*
 * A GGUF file's token embedding and LM head (output.weight, or the embedding itself when the file
 * has none) stay in the file's quantized blocks, repacked as the linear layers are: the embedding
 * gathers and dequantizes the rows it looks up, the LM head runs the quantized linear path. On the
 * CPU backend that is bit-identical to the model with those matrices dequantized to float32.
 */

/** A vocabulary matrix uploaded to the backend. */
interface VocabularyUpload {
  format: string;
  groupSize: number;
  mins: boolean;
  table: boolean;
}

const CASES: { what: string; tied: boolean; types: Record<string, GgufMatrixType>; expected: VocabularyUpload[] }[] = [
  {
    // As llama.cpp's Q4_K_M writes Llama-3.1-8B: token_embd Q4_K, output Q6_K.
    what: 'Q4_K embedding, Q6_K LM head',
    tied: false,
    types: { token_embd: 'Q4_K', output: 'Q6_K' },
    expected: [
      { format: 'int4', groupSize: 32, mins: true, table: true },
      { format: 'int8', groupSize: 16, mins: false, table: true },
    ],
  },
  {
    what: 'Q8_0 embedding tied to the LM head (no output.weight)',
    tied: true,
    types: { token_embd: 'Q8_0' },
    expected: [{ format: 'int8', groupSize: 32, mins: false, table: true }],
  },
  {
    what: 'Q4_0 embedding tied to the LM head (no output.weight)',
    tied: true,
    types: { token_embd: 'Q4_0' },
    expected: [{ format: 'int4', groupSize: 32, mins: false, table: true }],
  },
];

/** The case's file (linear layers Q8_0) beside its dequantized safetensors directory. */
function caseFiles(t: Parameters<typeof ggufBesideDequantized>[0], c: (typeof CASES)[number]) {
  return ggufBesideDequantized(t, { ...MIXED_CONFIG, tie_word_embeddings: c.tied }, (name) => c.types[name] ?? 'Q8_0');
}

for (const c of CASES) {
  test(`${c.what}: loaded quantized as a table, the logits and greedy generation equal the dequantized safetensors run bit for bit`, async (t) => {
    const { gguf, dequantized } = caseFiles(t, c);

    const architecture = readModelArchitecture(gguf);
    assert.equal(architecture.config.tieWordEmbeddings, c.tied);
    const backend = new CpuBackend();
    const vocabulary: VocabularyUpload[] = [];
    const uploader: WeightUploader = {
      loadWeight: (w, options) => {
        assert.ok(!(w.shape.length === 2 && w.shape[0] === MIXED_CONFIG.vocab_size), `a vocabulary matrix [${w.shape.join(', ')}] loaded 16-bit`);
        return backend.loadWeight(w, options);
      },
      loadQuantizedWeight: (w, options) => {
        if (w.rows === MIXED_CONFIG.vocab_size) vocabulary.push({ format: w.format, groupSize: w.groupSize, mins: w.mins !== null, table: options?.table === true });
        return backend.loadQuantizedWeight(w, options);
      },
      loadSparseWeight: (w) => backend.loadSparseWeight(w),
      loadMxfp4Weight: (w) => backend.loadMxfp4Weight(w),
      loadQuantizedExperts: (w, count) => backend.loadQuantizedExperts(w, count),
      uploadRopeTable: (table) => backend.uploadRopeTable(table),
    };
    const ckpt = openModelFiles(gguf).openCheckpoint();
    try {
      loadWeights(createModel(architecture, architecture.config.contextLength), ckpt, uploader);
    } finally {
      ckpt.close();
    }
    assert.deepEqual(vocabulary, c.expected);

    const fromGguf = await loadModel({ model: gguf, backend: 'cpu', showProgress: false });
    const fromDequantized = await loadModel({ model: dequantized, backend: 'cpu', showProgress: false });
    const [actual, expected] = [lastTokenLogits(fromGguf.backend, fromGguf.model, MIXED_PROMPTS), lastTokenLogits(fromDequantized.backend, fromDequantized.model, MIXED_PROMPTS)];
    actual.forEach((row, i) => assert.deepEqual(row, expected[i], `prompt ${i}`));

    const params = { temperature: 0, ignoreEos: true, maxTokens: 12, logprobs: 3 };
    const generate = async (model: string) => {
      const llm = await LLM.load({ model, backend: 'cpu', showProgress: false, numKvBlocks: 32 });
      try {
        return (await llm.generate(MIXED_PROMPTS, params)).map((o) => o.outputs[0]);
      } finally {
        await llm.close();
      }
    };
    const [greedy, reference] = [await generate(gguf), await generate(dequantized)];
    assert.deepEqual(greedy.map((o) => o.tokenIds), reference.map((o) => o.tokenIds), 'tokens');
    assert.deepEqual(greedy.map((o) => o.logprobs), reference.map((o) => o.logprobs), 'logprobs');
  });
}

test('under tensor parallelism a GGUF file\'s quantized vocabulary matrices load 16-bit (vocab-parallel shards) and generate as on one device', async (t) => {
  const { gguf } = caseFiles(t, CASES[0]);
  const params = { temperature: 0, ignoreEos: true, maxTokens: 8 };
  const generate = async (tensorParallelSize: number) => {
    const llm = await LLM.load({ model: gguf, backend: 'cpu', showProgress: false, numKvBlocks: 32, tensorParallelSize });
    try {
      return (await llm.generate(MIXED_PROMPTS, params)).map((o) => o.outputs[0].tokenIds);
    } finally {
      await llm.close();
    }
  };
  // Under TP every quantized tensor is read dequantized to bfloat16: greedy tokens, not logits, are compared.
  assert.deepEqual(await generate(2), await generate(1));
});
