/**
 * One prefill of the same prompts on several backends, and where their numbers part
 * (scripts/compare-backends.ts is the command; docs/cuda-backend.md, "Finding the op that
 * differs"). Each backend loads the model itself, runs every prompt in one step, as the parity
 * suites do, and keeps on the host: the residual stream entering each decoder layer (the
 * HiddenStateTap EAGLE-3 uses), the final norm's output on every token, the last-token logits, and,
 * when asked, the result of every backend op the forward calls, in call order.
 */
import type { Backend, Tensor } from '../src/backend/backend.ts';
import type { EngineOptions } from '../src/config.ts';
import { CpuBackend } from '../src/backend/cpu/cpu-backend.ts';
import { selectBackend } from '../src/backend/select-backend.ts';
import { openModelFiles } from '../src/checkpoint/model-files.ts';
import { loadModelWeights, resolveEngineConfig } from '../src/engine/load-engine.ts';
import type { HiddenStateTap } from '../src/models/causal-lm.ts';
import { createModel, modelArchitectureOf } from '../src/models/registry.ts';
import { withBf16Activations } from '../test/helpers/bf16-activations.ts';
import { promptsPrefill } from '../test/helpers/prompts-prefill.ts';

/** `cpu-bf16`: the CPU backend with weights and activations rounded to bf16 as CUDA stores them: what bf16 alone costs. */
export const BACKEND_NAMES = ['cpu', 'cpu-bf16', 'cuda'] as const;
export type BackendName = (typeof BACKEND_NAMES)[number];

export interface OpRecord {
  /** The backend method, e.g. `mlaAttention`. */
  name: string;
  shape: number[];
  /** Its result on the host; null where the backend cannot read it back. */
  data: Float32Array | null;
}

export interface Trace {
  backend: BackendName;
  /** Each prompt's first token's row in the step. */
  promptStarts: number[];
  numTokens: number;
  /** Per decoder layer, the residual stream entering it [numTokens, hidden]; empty for a model that does not hand it over. */
  layerInputs: Float32Array[];
  /** The final norm's output on every token [numTokens, hidden]. */
  finalRows: Float32Array;
  /** Each prompt's last-token logits [vocab]. */
  logits: Float32Array[];
  /** With `ops`: every op's result in call order; else empty. */
  ops: OpRecord[];
  /**
   * On a CPU backend, each prompt's closest discrete choice over its tokens and layers (MoE expert
   * routing, the lightning indexer's positions; src/backend/cpu/ops/selection-margin.ts), or null
   * where it makes none; empty on CUDA, which does not report them.
   */
  closestChoices: (ClosestChoice | null)[];
}

/** A prompt's closest discrete choice: what chose, at which position of the prompt, and its margin. */
export interface ClosestChoice {
  op: string;
  position: number;
  margin: number;
}

/** Ops that set up a step, load weights or read results rather than compute a forward's values. */
const NOT_TRACED = /^(toHost|beginStep|create|load|upload|dispose|synchronize)/;

function isTensor(value: unknown): value is Tensor {
  return typeof value === 'object' && value !== null && Array.isArray((value as Tensor).shape);
}

/** `backend` recording each op's tensor result (copied to the host as it returns) into `ops`. */
function tracingOps(backend: Backend, ops: OpRecord[]): Backend {
  return new Proxy(backend, {
    get(target, prop, receiver) {
      const member = Reflect.get(target, prop, receiver);
      if (typeof member !== 'function') return member;
      if (typeof prop !== 'string' || NOT_TRACED.test(prop)) return member.bind(target);
      return (...args: unknown[]) => {
        const result = member.apply(target, args);
        if (isTensor(result)) ops.push({ name: prop, shape: [...result.shape], data: readable(target, result) });
        return result;
      };
    },
  });
}

/** A copy of `t` on the host, or null for a tensor the backend's toHost refuses (an integer index tensor). */
function readable(backend: Backend, t: Tensor): Float32Array | null {
  try {
    return backend.toHost(t).slice();
  } catch {
    return null;
  }
}

async function openBackend(name: BackendName): Promise<Backend> {
  if (name === 'cpu-bf16') return withBf16Activations(new CpuBackend(), { weights: true });
  return selectBackend(name);
}

/**
 * Loads the model at `modelDir` on `backendName` and prefills `prompts` in one step (each in its
 * own blocks of `blockSize`), as the parity suites' logits test does. Returns what it recorded
 * and releases the backend. `choicesFrom`: per prompt, the first position whose discrete choices
 * count towards its closest choice (default 0, all).
 */
export async function traceBackend(
  modelDir: string,
  backendName: BackendName,
  prompts: readonly number[][],
  options: { ops: boolean; blockSize?: number; quantization?: EngineOptions['quantization']; choicesFrom?: readonly number[] },
): Promise<Trace> {
  const blockSize = options.blockSize ?? 16;
  const longest = prompts.reduce((n, p) => Math.max(n, p.length), 0);
  const files = openModelFiles(modelDir);
  const architecture = modelArchitectureOf(files);
  if (longest > architecture.config.contextLength) throw new Error(`a prompt of ${longest} tokens is longer than ${modelDir}'s ${architecture.config.contextLength} positions`);
  const model = createModel(architecture, Math.max(longest, Math.min(architecture.config.contextLength, 4096)));
  const config = resolveEngineConfig({ model: modelDir, backend: backendName === 'cuda' ? 'cuda' : 'cpu', showProgress: false, quantization: options.quantization });
  const backend = await openBackend(backendName);
  try {
    loadModelWeights(model, files, architecture, config, backend, { rank: 0, size: 1, expertParallel: false });
    const { batch, numBlocks, stateSlots } = promptsPrefill(prompts, blockSize, model);
    const promptStarts = Array.from(batch.queryStartLoc.subarray(0, prompts.length));
    const numTokens = batch.numTokens;
    const cache = backend.createKvCache({ numBlocks, blockSize, layers: model.kvLayers, stateSlots });
    const closestChoices: (ClosestChoice | null)[] = backend instanceof CpuBackend ? prompts.map(() => null) : [];
    if (backend instanceof CpuBackend) {
      backend.selectionMargins = (op, token, margin) => {
        let prompt = promptStarts.length - 1;
        while (promptStarts[prompt] > token) prompt--;
        const position = token - promptStarts[prompt];
        if (position < (options.choicesFrom?.[prompt] ?? 0)) return;
        const closest = closestChoices[prompt];
        if (closest === null || margin < closest.margin) closestChoices[prompt] = { op, position, margin };
      };
    }
    const ops: OpRecord[] = [];
    const traced = options.ops ? tracingOps(backend, ops) : backend;
    let layerInputs: Float32Array[] = [];
    let finalRows: Float32Array = new Float32Array(0);
    const { firstLayer, endLayer } = model.stage;
    const tap: HiddenStateTap = {
      tokenFinalRows: (hidden) => {
        finalRows = backend.toHost(hidden);
      },
      layerInputs: {
        layers: Array.from({ length: endLayer - firstLayer }, (_, i) => firstLayer + i),
        receive: (states) => {
          layerInputs = states.map((s) => backend.toHost(s));
        },
      },
    };
    const step = traced.beginStep(batch);
    const all = backend.toHost(model.forward(traced, step, cache, tap));
    const vocab = all.length / prompts.length;
    const logits = prompts.map((_, i) => all.slice(i * vocab, (i + 1) * vocab));
    return { backend: backendName, promptStarts, numTokens, layerInputs, finalRows, logits, ops, closestChoices };
  } finally {
    backend.dispose();
  }
}

/** How far one tensor of a backend lies from the reference's. */
export interface Difference {
  /** max |reference| */
  maxRef: number;
  /** max |value - reference| */
  maxAbs: number;
  /** The flat index where maxAbs is. */
  at: number;
}

export function difference(reference: ArrayLike<number>, values: ArrayLike<number>): Difference {
  if (reference.length !== values.length) throw new Error(`cannot compare ${values.length} values with the reference's ${reference.length}`);
  let maxRef = 0;
  let maxAbs = -1;
  let at = 0;
  for (let i = 0; i < reference.length; i++) {
    maxRef = Math.max(maxRef, Math.abs(reference[i]));
    // A NaN on either side counts as an infinite difference.
    const d = Math.abs(values[i] - reference[i]);
    const worse = Number.isNaN(d) ? Infinity : d;
    if (worse > maxAbs) {
      maxAbs = worse;
      at = i;
    }
  }
  return { maxRef, maxAbs: Math.max(maxAbs, 0), at };
}

/** maxAbs relative to the reference's scale (max |reference|, at least 1e-6). */
export function relative(d: Difference): number {
  return d.maxAbs / Math.max(d.maxRef, 1e-6);
}

/** Prompt and position within it of step row `row`. */
export function tokenOf(trace: Trace, row: number): { prompt: number; position: number } {
  let prompt = 0;
  while (prompt + 1 < trace.promptStarts.length && trace.promptStarts[prompt + 1] <= row) prompt++;
  return { prompt, position: row - trace.promptStarts[prompt] };
}

/** One compared tensor: what it is, and each other backend's difference from the reference (null where it has none). */
export interface ComparedRow {
  what: string;
  /** Values per token row, to name the token of a difference; 0 where rows mean nothing. */
  rowWidth: number;
  differences: (Difference | null)[];
}

/**
 * The other traces against `reference`: per decoder layer input, the final rows, each prompt's
 * logits, and (traced) each op where the call sequences agree; `partedAt` is the first op index
 * where a trace ran another op (or shape) than the reference, or null.
 */
export function compareTraces(reference: Trace, others: Trace[]): { rows: ComparedRow[]; ops: ComparedRow[]; partedAt: (number | null)[] } {
  const hidden = reference.finalRows.length / reference.numTokens;
  const rows: ComparedRow[] = [];
  reference.layerInputs.forEach((ref, layer) => {
    rows.push({ what: `input of layer ${layer}`, rowWidth: hidden, differences: others.map((o) => (o.layerInputs[layer] ? difference(ref, o.layerInputs[layer]) : null)) });
  });
  rows.push({ what: 'final norm (every token)', rowWidth: hidden, differences: others.map((o) => difference(reference.finalRows, o.finalRows)) });
  reference.logits.forEach((ref, prompt) => {
    rows.push({ what: `logits of prompt ${prompt} (last token)`, rowWidth: 0, differences: others.map((o) => difference(ref, o.logits[prompt])) });
  });
  const partedAt = others.map((o) => {
    const n = Math.min(reference.ops.length, o.ops.length);
    for (let i = 0; i < n; i++) {
      const [a, b] = [reference.ops[i], o.ops[i]];
      if (a.name !== b.name || a.shape.join() !== b.shape.join()) return i;
    }
    return reference.ops.length === o.ops.length ? null : n;
  });
  const ops = reference.ops.map((op, i): ComparedRow => ({
    what: `#${i} ${op.name} [${op.shape.join(', ')}]`,
    rowWidth: op.shape.length === 2 && op.shape[0] === reference.numTokens ? op.shape[1] : 0,
    differences: others.map((o, k) => {
      const mine = o.ops[i];
      const aligned = partedAt[k] === null || i < partedAt[k]!;
      return aligned && op.data !== null && mine.data !== null ? difference(op.data, mine.data) : null;
    }),
  }));
  return { rows, ops, partedAt };
}
