import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { EngineOptions } from '../src/config.ts';
import { LLM } from '../src/engine/llm.ts';
import { listOracleFixtures, type OracleFixture } from './helpers/oracle-fixtures.ts';
import { checkGreedy, checkPrefixCacheRerun, fixtureSlides, type ParityOptions } from './helpers/transformers-parity.ts';

// Tensor, expert and pipeline parallel on the CPU backend (ranks in worker threads,
// docs/parallelism.md): every fixture family's greedy continuations equal transformers' (and so
// one device's), every prompt batched, under preemption and from the prefix cache; the logprobs of
// the first tokens equal one device's within the reordering of float sums (exactly, with pipeline
// stages alone: they pass activations, they do not split sums).

const PARITY: ParityOptions = { backend: 'cpu', logitTolerance: 1e-4, greedy: 'exact' };

const RUNS: { fixture: string; parallel: EngineOptions }[] = [
  { fixture: 'llama-gqa', parallel: { tensorParallelSize: 2 } },
  // 4 query heads over 4 devices: the 2 key/value heads are replicated, one per pair of devices.
  { fixture: 'llama-gqa', parallel: { tensorParallelSize: 4 } },
  { fixture: 'qwen3-qknorm', parallel: { tensorParallelSize: 2 } },
  // MLP biases split with their rows (down's added on rank 0 before the all-reduce), LongRoPE rows per rank.
  { fixture: 'llama-longrope-mlp-bias', parallel: { tensorParallelSize: 2 } },
  { fixture: 'qwen3-moe', parallel: { tensorParallelSize: 2 } },
  { fixture: 'qwen3-moe', parallel: { tensorParallelSize: 2, enableExpertParallel: true } },
  { fixture: 'mixtral-moe', parallel: { tensorParallelSize: 2, enableExpertParallel: true } },
  { fixture: 'qwen2-moe', parallel: { tensorParallelSize: 2 } },
  // Fused expert tensors split by intermediate size: gpt-oss's interleaved gate/up with biases, Llama 4's halves.
  { fixture: 'gpt-oss', parallel: { tensorParallelSize: 2 } },
  { fixture: 'llama4-text', parallel: { tensorParallelSize: 2 } },
  { fixture: 'deepseek-v2-lite', parallel: { tensorParallelSize: 2 } },
  { fixture: 'deepseek-v2-lite', parallel: { tensorParallelSize: 2, enableExpertParallel: true } },
  // Two stages of one layer each (the first holds the embedding, the last the tied LM head too).
  { fixture: 'llama-gqa', parallel: { pipelineParallelSize: 2 } },
  { fixture: 'llama-gqa', parallel: { tensorParallelSize: 2, pipelineParallelSize: 2 } },
  { fixture: 'qwen3-qknorm', parallel: { pipelineParallelSize: 2 } },
  { fixture: 'qwen3-qknorm', parallel: { tensorParallelSize: 2, pipelineParallelSize: 2 } },
  // Three layers: two on the first stage, one on the last; and one per stage.
  { fixture: 'qwen3-moe', parallel: { pipelineParallelSize: 2 } },
  { fixture: 'qwen3-moe', parallel: { pipelineParallelSize: 3 } },
  { fixture: 'qwen3-moe', parallel: { tensorParallelSize: 2, pipelineParallelSize: 2, enableExpertParallel: true } },
  // MLA: the dense first layer and a MoE layer on the first stage, a MoE layer on the last.
  { fixture: 'deepseek-v2-lite', parallel: { pipelineParallelSize: 2 } },
  { fixture: 'deepseek-v2-lite', parallel: { tensorParallelSize: 2, pipelineParallelSize: 2 } },
  // DeepSeek-V3.2: the indexer is replicated (every rank makes the same choice), its keys kept per stage.
  { fixture: 'deepseek-v32', parallel: { tensorParallelSize: 2, pipelineParallelSize: 2 } },
  // The final logit softcap runs on the last stage.
  { fixture: 'gemma2-softcap', parallel: { pipelineParallelSize: 2 } },
  // OLMo's q/k norms read every head: attention replicated on each rank, the MLP sharded.
  { fixture: 'olmo2-postnorm', parallel: { tensorParallelSize: 2 } },
  { fixture: 'olmo3-sliding', parallel: { tensorParallelSize: 2, pipelineParallelSize: 2 } },
  // NoPE layers on both stages; Granite's logits scaling on the last stage.
  { fixture: 'smollm3-nope', parallel: { tensorParallelSize: 2, pipelineParallelSize: 2 } },
  { fixture: 'granite-multipliers', parallel: { tensorParallelSize: 2, pipelineParallelSize: 2 } },
  // EXAONE 4's per-head q/k norms shard with their heads; its NoPE global layer on the last stage.
  { fixture: 'exaone4-nope-global', parallel: { tensorParallelSize: 2, pipelineParallelSize: 2 } },
  // Seed-OSS's o_proj bias (attention_out_bias) is added once, on rank 0, before the all-reduce.
  { fixture: 'seed-oss-biases', parallel: { tensorParallelSize: 2 } },
  // Arcee's gateless MLP: each rank's part of up is its own gate.
  { fixture: 'arcee-relu2', parallel: { tensorParallelSize: 2, pipelineParallelSize: 2 } },
  // Gemma 4: each layer type's own kv heads split or replicated (the full layers' one head), per-layer
  // inputs replicated on every rank, the MoE beside the dense MLP split by experts or their width.
  { fixture: 'gemma4-dense', parallel: { tensorParallelSize: 2, pipelineParallelSize: 2 } },
  { fixture: 'gemma4-ple-kv-shared', parallel: { tensorParallelSize: 2 } },
  { fixture: 'gemma4-moe-vl', parallel: { tensorParallelSize: 2, pipelineParallelSize: 2, enableExpertParallel: true } },
  // GLM-4.5: q/k/v biases and q/k norms split with their heads, partial rotary; DeepSeek's MoE block split by experts.
  { fixture: 'glm4-moe', parallel: { tensorParallelSize: 2, enableExpertParallel: true } },
  // GLM-5: layers [full, shared, full]. Two stages: the shared layer reuses its own stage's full layer's
  // choice on every rank; three: stage 0 sends layer 0's choice to stage 1's shared layer.
  { fixture: 'glm-moe-dsa', parallel: { tensorParallelSize: 2, pipelineParallelSize: 2 } },
  { fixture: 'glm-moe-dsa', parallel: { pipelineParallelSize: 3 } },
  // Gated DeltaNet: each rank holds its key heads' queries and keys, their value heads and their part
  // of each sequence's state; the full-attention layers' output gates split with their heads. The
  // stages hold [linear, linear] and [linear, full] layers, each stage's states in its own slots.
  { fixture: 'qwen3.5-hybrid', parallel: { tensorParallelSize: 2, pipelineParallelSize: 2 } },
  // Qwen3-Next's grouped input projections (per key head: q, k, its values and gates).
  { fixture: 'qwen3-next-moe', parallel: { tensorParallelSize: 2, enableExpertParallel: true } },
  // MiniMax-M2: q/k norms over the whole projections, so attention replicated as OLMo's; the experts
  // sharded by intermediate size, each rank routing with the same bias.
  { fixture: 'minimax-m2', parallel: { tensorParallelSize: 2 } },
  // ERNIE 4.5: q/k rows permuted within each head (interleaved RoPE), then split with their heads; o's bias on rank 0.
  { fixture: 'ernie4.5-interleaved-rope', parallel: { tensorParallelSize: 2 } },
  // ERNIE 4.5 MoE: the [1, experts] selection bias on every rank, the experts split between them; a dense layer on the first stage.
  { fixture: 'ernie4.5-moe', parallel: { tensorParallelSize: 2, pipelineParallelSize: 2, enableExpertParallel: true } },
  // Hunyuan MoE: per-head norms after RoPE split with their heads; each layer's own top k, the shared MLP split as a dense one.
  { fixture: 'hunyuan-moe', parallel: { tensorParallelSize: 2 } },
  // OLMoE: q/k norms over the whole projections (attention replicated), the experts split by intermediate size.
  { fixture: 'olmoe', parallel: { tensorParallelSize: 2 } },
  // Granite MoE's output-major fused experts split by intermediate size, or by experts; the shared MLP's
  // fused input_linear split as gate and up halves; the logits scaling on the last stage.
  { fixture: 'granitemoe', parallel: { tensorParallelSize: 2, pipelineParallelSize: 2 } },
  { fixture: 'granitemoeshared', parallel: { tensorParallelSize: 2, enableExpertParallel: true } },
  // Granite 4.0 hybrids: the Mamba-2 mixers replicated on every rank (their norm spans all heads), each stage's
  // states in its own slots; attention and experts split as Granite MoE's.
  { fixture: 'granite4-hybrid', parallel: { tensorParallelSize: 2, pipelineParallelSize: 2, enableExpertParallel: true } },
  { fixture: 'granite4-hybrid-dense-rope', parallel: { tensorParallelSize: 2 } },
  // dots.llm1: the dense layer and a MoE layer on the first stage, the sliding MoE layer on the last.
  { fixture: 'dots1', parallel: { tensorParallelSize: 2, pipelineParallelSize: 2, enableExpertParallel: true } },
  // GLM-4: q/k rows permuted within each head's rotary part (partial, interleaved RoPE), then split with their heads;
  // each rank's gate rows and up rows of the fused gate_up_proj. GLM-4-0414's sandwich norms on both stages.
  { fixture: 'glm-partial-interleaved', parallel: { tensorParallelSize: 2 } },
  { fixture: 'glm4-sandwich-norms', parallel: { tensorParallelSize: 2, pipelineParallelSize: 2 } },
  // Kimi Linear: KDA split by heads (the low-rank f_a / g_a projections replicated, A_log and dt_bias
  // sliced with their heads), its NoPE MLA split as DeepSeek's, the experts by rank; the stages hold
  // [KDA, KDA] and [MLA, KDA] layers.
  { fixture: 'kimi-linear', parallel: { tensorParallelSize: 2, pipelineParallelSize: 2, enableExpertParallel: true } },
  { fixture: 'kimi-linear', parallel: { tensorParallelSize: 2 } },
];

/** Largest |logprob difference| of the first generated tokens' top candidates, parallel against one device. */
const LOGPROB_TOLERANCE = 1e-5;

/** The first tokens' top candidates under `parallel` equal one device's, and their logprobs within `tolerance`, both with `common`. */
async function checkLogprobsMatchOneDevice(fixture: OracleFixture, parallel: EngineOptions, common: EngineOptions, tolerance: number): Promise<void> {
  const params = { temperature: 0, ignoreEos: true, maxTokens: 3, logprobs: 5 };
  const run = async (options: EngineOptions) => {
    const llm = await LLM.load({ model: fixture.dir, backend: 'cpu', showProgress: false, numKvBlocks: 64, ...common, ...options });
    try {
      return await llm.generate(fixture.oracle.prompts, params);
    } finally {
      await llm.close();
    }
  };
  const [single, split] = [await run({}), await run(parallel)];
  let worst = 0;
  single.forEach((output, i) => {
    const [a, b] = [output.outputs[0].logprobs!, split[i].outputs[0].logprobs!];
    assert.equal(a.length, b.length);
    a.forEach((position, p) => {
      assert.deepEqual(b[p].top.map((t) => t.tokenId), position.top.map((t) => t.tokenId), `prompt ${i}, token ${p}: the same top tokens`);
      position.top.forEach((t, k) => (worst = Math.max(worst, Math.abs(t.logprob - b[p].top[k].logprob))));
    });
  });
  assert.ok(worst <= tolerance, `max |Δlogprob| ${worst} > ${tolerance}`);
}

function fixtureNamed(name: string): OracleFixture {
  const fixture = listOracleFixtures().find((f) => f.name === name);
  assert.ok(fixture, `fixture ${name}`);
  return fixture;
}

for (const { fixture: name, parallel } of RUNS) {
  const fixture = fixtureNamed(name);
  const sizes = [`TP ${parallel.tensorParallelSize ?? 1}`, ...(parallel.pipelineParallelSize ? [`PP ${parallel.pipelineParallelSize}`] : [])];
  const label = `${name}, ${sizes.join(' × ')}${parallel.enableExpertParallel ? ' with expert parallel' : ''}`;
  describe(label, () => {
    test('greedy continuation of every prompt, batched, equals transformers\'', async () => {
      await checkGreedy(fixture, PARITY, { ...parallel, backend: 'cpu' }, false);
    });
    test('greedy continuation under forced preemption (8-block pool) equals transformers\'', async () => {
      // A model with sliding layers frees their blocks (KV groups): the same memory holds its batch.
      await checkGreedy(fixture, PARITY, { ...parallel, backend: 'cpu', numKvBlocks: 8 }, !fixtureSlides(fixture, 'some'));
    });
    // A model keeping a recurrent state per sequence hits where every rank kept its part of the state (state checkpoints).
    test('greedy continuation served from the prefix cache equals transformers\'', async () => {
      await checkPrefixCacheRerun(fixture, PARITY, { ...parallel, backend: 'cpu' });
    });
    // Stages alone pass activations whole: nothing is summed in another order.
    const tolerance = (parallel.tensorParallelSize ?? 1) === 1 ? 0 : LOGPROB_TOLERANCE;
    test(`the first tokens' top logprobs equal one device's within ${tolerance}`, async () => {
      await checkLogprobsMatchOneDevice(fixture, parallel, {}, tolerance);
    });
  });
}

// Every rank's KV shard, of every stage, is stored in the dtype asked for: int8 keeps a scale per
// token and kv head, so a rank's heads of a stage's layers quantize as they do on one device.
for (const parallel of [{ tensorParallelSize: 2 }, { tensorParallelSize: 2, pipelineParallelSize: 2 }]) {
  test(`with an int8 KV cache on every rank, llama-gqa at ${JSON.stringify(parallel)} gives one int8 device's first top logprobs within ${LOGPROB_TOLERANCE}`, async () => {
    await checkLogprobsMatchOneDevice(fixtureNamed('llama-gqa'), parallel, { kvCacheDtype: 'int8' }, LOGPROB_TOLERANCE);
  });
}
