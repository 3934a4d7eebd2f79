import type { Activation, Backend, ExpertWeights, MoeWeights, RoutingParams, Tensor } from '../backend/backend.ts';
import { invalidModel } from '../errors.ts';
import { hostTensorToFloat32 } from '../tensor/host-dtype.ts';
import { concatRows, gatherElements } from '../tensor/host-ops.ts';
import type { HostTensor } from '../tensor/host-tensor.ts';
import { gatherMxfp4Rows, isMxfp4, MXFP4_BLOCK, quantizeMxfp4, type Mxfp4Weight } from '../tensor/mxfp4.ts';
import { expertKernelsTake, isQuantized, stackExperts, stackingProblem, type QuantizedWeight } from '../tensor/quantized-weight.ts';
import type { GatedMlp } from './gated-mlp.ts';
import { Linear } from './linear.ts';
import { evenPart, readSlice, shardOf } from './shard.ts';
import { storedShare, storedSize, type StoredSize } from '../tensor/stored-size.ts';
import { loaded, loadLayers, parametersOf, type Layer, type ParameterSpec, type WeightSource, type WeightUploader } from './parameters.ts';

/** How a checkpoint stores the routed experts. */
export type ExpertTensors =
  /**
   * A gate, an up and a down matrix per expert, [n, hidden], [n, hidden] and [hidden, n]:
   * Mixtral's `experts.E.w1/w3/w2`, Qwen's and DeepSeek's `experts.E.gate_proj/up_proj/down_proj`.
   */
  | { layout: 'per-expert'; name: (expert: number, projection: 'gate' | 'up' | 'down') => string }
  /**
   * All experts in one tensor, input-major: gateUp [E, hidden, 2n] and its bias [E, 2n]; down
   * [E, n, hidden] and its bias [E, hidden]. gpt-oss interleaves gate and up in the last dimension
   * (`fused-interleaved`: gate = [..., 0::2], up = [..., 1::2], the bias alike); Llama 4 puts the
   * gate first (`fused-halves`: gate = [..., :n], up = [..., n:]). `fused-output-major` stores them
   * as the device layout does, gateUp [E, 2n, hidden] gate rows then up rows and down [E, hidden, n]
   * (GraniteMoE's `input_linear` / `output_linear`). `fused-halves-either-major` takes each tensor
   * either way, by the shape it has, output-major where both fit, as transformers 5 reads Qwen3-VL-MoE:
   * the Hub's checkpoints are input-major, and its save_pretrained writes them output-major.
   */
  | {
      layout: 'fused-interleaved' | 'fused-halves' | 'fused-output-major' | 'fused-halves-either-major';
      gateUp: string;
      gateUpBias: string | null;
      down: string;
      downBias: string | null;
    };

type FusedExperts = Exclude<ExpertTensors, { layout: 'per-expert' }>;

export interface MoeOptions {
  hiddenSize: number;
  /** Each routed expert's intermediate width n. */
  intermediateSize: number;
  numExperts: number;
  /** Checkpoint name of the router's [numExperts, hidden] weight; `routerBias` adds its `.bias` [numExperts] (gpt-oss). */
  router: string;
  routerBias: boolean;
  /** How tokens choose experts; the selection bias is named by its checkpoint tensor [numExperts]. */
  routing: Omit<RoutingParams, 'selectionBias'> & { selectionBias: string | null };
  /** The selection bias's shape as the checkpoint stores it, where not [numExperts] (ERNIE 4.5's [1, numExperts]). */
  selectionBiasShape?: number[];
  experts: ExpertTensors;
  activation: Activation;
  /**
   * Dense experts every token goes through (Qwen2-MoE, DeepSeek), added to the routed ones; with
   * a `gate` ([1, hidden] linear, Qwen2-MoE) their output is scaled per token by σ(gate · x).
   */
  shared: { mlp: GatedMlp; gate: string | null } | null;
  /** The experts this device holds, the shard axis of expert parallelism (default: all of them). */
  shard?: { first: number; count: number };
}

/**
 * A mixture-of-experts block, in vLLM's fused_moe spirit: every router (softmax, sigmoid with a
 * selection bias, top-k-then-softmax, group-limited) is a RoutingParams value, not a subclass, and
 * the whole block is one backend op (`moe`: router, routing, experts, shared expert), which the CUDA
 * backend runs as one launch for a single token. The layer owns the experts' device format: per-expert or
 * fused checkpoint tensors are stacked at load into [count, 2n, hidden] gate-then-up rows and
 * [count, hidden, n] down rows, the layout the kernels stream, 16-bit or MXFP4 (packed along the
 * input dimension: gpt-oss's stored blocks have their rows moved, nothing decoded, and
 * `--quantization mxfp4` quantizes the stacked 16-bit experts), or int4/int8/fp8 when the source's
 * linear reader gives each per-expert matrix so (GPTQ, compressed-tensors, fp8 checkpoints and
 * `--quantization fp8|int8|int4`: the experts are linear layers like any other).
 */
export class MoeBlock implements Layer {
  private readonly options: MoeOptions;
  private readonly router: Linear;
  private readonly sharedGate: Linear | null;
  /** The experts this device holds (set by the shard loaded, under expert parallelism). */
  private first: number;
  private count: number;
  private selectionBias: Tensor | null = null;
  private experts: ExpertWeights | null = null;
  /** The gate/up and down stacks' sizes on one device (ParameterSpec.stored); null before loading, or for a shard. */
  private stored: { gateUp: StoredSize; down: StoredSize } | null = null;

  constructor(options: MoeOptions) {
    const { numExperts, hiddenSize } = options;
    const shard = options.shard ?? { first: 0, count: numExperts };
    if (!(shard.first >= 0 && shard.count >= 1 && shard.first + shard.count <= numExperts)) {
      throw new Error(`experts ${shard.first}..${shard.first + shard.count - 1} are outside the ${numExperts} experts`);
    }
    if (options.shared !== null && !options.shared.mlp.sharedExpert) throw new Error(`${options.router}: the shared expert's GatedMlp must be made with sharedExpert (the moe op reads its stacked gate/up weight)`);
    this.options = options;
    this.first = shard.first;
    this.count = shard.count;
    // In float32, as transformers computes DeepSeek-V3's router (and so the float32 reference every
    // router): two experts' scores can differ by less than a bf16 rounding of their logits.
    this.router = new Linear({
      parts: [{ name: options.router, rows: numExperts }],
      inFeatures: hiddenSize,
      bias: options.routerBias,
      shard: 'replicated',
      dense: true,
      float32Output: true,
    });
    this.sharedGate = options.shared?.gate
      ? new Linear({ parts: [{ name: options.shared.gate, rows: 1 }], inFeatures: hiddenSize, bias: false, shard: 'replicated', dense: true })
      : null;
  }

  private get denseLayers(): Layer[] {
    const { shared } = this.options;
    return [this.router, ...(shared === null ? [] : [shared.mlp]), ...(this.sharedGate === null ? [] : [this.sharedGate])];
  }

  parameters(): ParameterSpec[] {
    const { numExperts, hiddenSize: hidden, intermediateSize: n, routing, experts } = this.options;
    const access = { kind: 'expert', numExperts, topK: routing.topK } as const;
    // Each matrix holds its share of its stack's stored size: the formats are row-wise, so a stack's rows cost alike.
    const matrix = (name: string, shape: number[], stack: 'gateUp' | 'down'): ParameterSpec => {
      const stored = this.stored && storedShare(this.stored[stack], shape.reduce((a, b) => a * b, 1) / ((stack === 'gateUp' ? 2 : 1) * this.count * n * hidden));
      return { name, shape, access, ...(stored && { stored }) };
    };
    // A fused stack, given output-major [E, rows, cols]: stored so, transposed, or either.
    const stack = (name: string, [e, rows, cols]: number[], which: 'gateUp' | 'down'): ParameterSpec => {
      const orientation = fusedOrientation(experts as FusedExperts);
      const spec = matrix(name, orientation === 'input-major' ? [e, cols, rows] : [e, rows, cols], which);
      return orientation === 'either' ? { ...spec, orShape: [e, cols, rows] } : spec;
    };
    const expertTensors: ParameterSpec[] =
      experts.layout === 'per-expert'
        ? Array.from({ length: this.count }, (_, i) => this.first + i).flatMap((e) => [
            matrix(experts.name(e, 'gate'), [n, hidden], 'gateUp'),
            matrix(experts.name(e, 'up'), [n, hidden], 'gateUp'),
            matrix(experts.name(e, 'down'), [hidden, n], 'down'),
          ])
        : [
            stack(experts.gateUp, [numExperts, 2 * n, hidden], 'gateUp'),
            ...(experts.gateUpBias === null ? [] : [{ name: experts.gateUpBias, shape: [numExperts, 2 * n], access }]),
            stack(experts.down, [numExperts, hidden, n], 'down'),
            ...(experts.downBias === null ? [] : [{ name: experts.downBias, shape: [numExperts, hidden], access }]),
          ];
    const bias = routing.selectionBias === null ? [] : [{ name: routing.selectionBias, shape: this.options.selectionBiasShape ?? [numExperts] }];
    return [...parametersOf(this.denseLayers), ...bias, ...expertTensors];
  }

  load(source: WeightSource, uploader: WeightUploader): void {
    // The shared experts split as any gated MLP does, under expert parallelism too: their parts sum in the all-reduce.
    loadLayers(this.denseLayers, source, uploader);
    const { routing, experts, numExperts, intermediateSize } = this.options;
    const shard = shardOf(source);
    let intermediate = { start: 0, count: intermediateSize };
    if (shard.size > 1 && shard.expertParallel) {
      ({ start: this.first, count: this.count } = evenPart(numExperts, shard, `the experts of ${this.options.router}`));
    } else if (shard.size > 1) {
      intermediate = evenPart(intermediateSize, shard, `the experts' intermediate size (${this.options.router})`);
    }
    // transformers keeps DeepSeek-V3's e_score_correction_bias in float32 whatever the model's dtype.
    if (routing.selectionBias !== null) this.selectionBias = uploader.loadWeight({ ...source.read(routing.selectionBias), shape: [numExperts] }, { float32: true });
    const quantized = experts.layout === 'per-expert' && intermediate.count === intermediateSize ? this.readQuantized(source, experts.name) : null;
    // Under tensor parallelism each device holds every expert's part of the intermediate width;
    // the down projection's bias, like a row-parallel linear's, is added by one of them alone.
    const host =
      quantized ??
      (experts.layout === 'per-expert' ? this.stackPerExpert(source, experts.name, intermediate) : this.unfuse(source, experts, intermediate, shard.expertParallel || shard.rank === 0));
    const matrix = (m: HostTensor | Mxfp4Weight | QuantizedWeight) =>
      isMxfp4(m) ? uploader.loadMxfp4Weight(m) : isQuantized(m) ? uploader.loadQuantizedExperts(m, this.count) : uploader.loadWeight(m);
    this.experts = {
      first: this.first,
      count: this.count,
      gateUp: matrix(host.gateUp),
      down: matrix(host.down),
      gateUpBias: host.gateUpBias === null ? null : uploader.loadWeight(host.gateUpBias),
      downBias: host.downBias === null ? null : uploader.loadWeight(host.downBias),
    };
    if (shard.size === 1) this.stored = { gateUp: storedSize(host.gateUp), down: storedSize(host.down) };
  }

  /** 16-bit experts in the device layout, quantized to MXFP4 when the source asks for it (`--quantization mxfp4`). */
  private atLoad(source: WeightSource, gateUp: HostTensor, down: HostTensor): Pick<HostExperts, 'gateUp' | 'down'> {
    if (source.expertQuantization !== 'mxfp4') return { gateUp, down };
    const hidden = this.options.hiddenSize;
    const n = down.shape[down.shape.length - 1];
    if (hidden % MXFP4_BLOCK !== 0 || n % MXFP4_BLOCK !== 0) {
      throw invalidModel(`--quantization mxfp4 needs a hidden size and expert width that are multiples of ${MXFP4_BLOCK}, not ${hidden} and ${n}`);
    }
    return { gateUp: quantizeMxfp4(hostTensorToFloat32(gateUp), gateUp.shape), down: quantizeMxfp4(hostTensorToFloat32(down), down.shape) };
  }

  /**
   * Each held expert's gate, up and down matrices as the source's linear reader gives them (a
   * quantized checkpoint's per-expert layers repacked in Keel's layout, or `--quantization`'s),
   * stacked expert after expert, when every one is in a format the expert kernels take; null
   * otherwise (a 16-bit source, experts left 16-bit by an ignore list, an expert whose gate and
   * up have different act-order permutations), and the experts load 16-bit (a quantized
   * checkpoint's dequantized). Act-order experts keep their permutations, one per expert.
   */
  private readQuantized(source: WeightSource, name: (expert: number, projection: 'gate' | 'up' | 'down') => string): HostExperts | null {
    if (source.readLinear === undefined) return null;
    const gateUp: QuantizedWeight[] = [];
    const down: QuantizedWeight[] = [];
    for (let e = this.first; e < this.first + this.count; e++) {
      for (const [projection, into] of [['gate', gateUp], ['up', gateUp], ['down', down]] as const) {
        const w = source.readLinear(name(e, projection));
        if (!isQuantized(w) || !expertKernelsTake(w)) return null;
        into.push(w);
      }
      if (stackingProblem(gateUp.slice(-2)) !== null) return null;
    }
    return { gateUp: stackExperts(gateUp, 2), down: stackExperts(down, 1), gateUpBias: null, downBias: null };
  }

  /** Each held expert's gate and up rows and down columns of the intermediate part this device holds. */
  private stackPerExpert(source: WeightSource, name: (expert: number, projection: 'gate' | 'up' | 'down') => string, part: { start: number; count: number }): HostExperts {
    const { hiddenSize: hidden } = this.options;
    const n = part.count;
    const local = Array.from({ length: this.count }, (_, i) => this.first + i);
    const rows = (e: number, projection: 'gate' | 'up') => readSlice(source, name(e, projection), { dim: 0, ...part });
    const gateUp = concatRows(local.flatMap((e) => [rows(e, 'gate'), rows(e, 'up')]));
    const down = concatRows(local.map((e) => readSlice(source, name(e, 'down'), { dim: 1, ...part })));
    return { ...this.atLoad(source, { ...gateUp, shape: [this.count, 2 * n, hidden] }, { ...down, shape: [this.count, hidden, n] }), gateUpBias: null, downBias: null };
  }

  /**
   * A fused checkpoint's held experts in the device layout, with `part` of their intermediate
   * width n: gate/up [count, 2n', hidden] and down [count, hidden, n'] (n' = part.count), the down
   * bias only where `withDownBias`.
   */
  private unfuse(source: WeightSource, names: FusedExperts, part: { start: number; count: number }, withDownBias: boolean): HostExperts {
    const { hiddenSize: hidden, intermediateSize: total } = this.options;
    const [first, count, n] = [this.first, this.count, part.count];
    const fusedColumn = gateUpColumn(names);
    // Row r of the held gate-then-up block: gate row start + r, or up row start + r - n, among the fused columns.
    const column = (r: number) => fusedColumn(r < n ? part.start + r : total + part.start + (r - n), total);
    const biases = this.fusedBiases(source, names, column, n, withDownBias);
    const local = Array.from({ length: count }, (_, i) => first + i);
    const [packedGateUp, packedDown] = [source.readMxfp4?.(names.gateUp) ?? null, source.readMxfp4?.(names.down) ?? null];
    if (packedGateUp !== null && packedDown !== null) {
      // Stored output-major ([E, 2n, hidden] with gate j in row 2j, up j in 2j + 1, for gpt-oss; [E, hidden, n]):
      // gate/up rows move; down keeps its rows and, split, the 32-value blocks of its part of n.
      const gateUpRows = Array.from({ length: 2 * n }, (_, r) => column(r));
      const downRows = Array.from({ length: hidden }, (_, r) => r);
      return { gateUp: gatherMxfp4Rows(packedGateUp, local, gateUpRows), down: gatherMxfp4Rows(packedDown, local, downRows, part), ...biases };
    }
    if (packedGateUp !== null || packedDown !== null) throw invalidModel(`${names.gateUp} and ${names.down} must both be MXFP4 or both 16-bit`);
    // gate_up [E, hidden, 2n] (or output-major [E, 2n, hidden]) -> [count, 2n', hidden], gate rows then up rows.
    const storedGateUp = source.read(names.gateUp);
    const gateUpInputMajor = inputMajor(names, storedGateUp, 2 * total);
    const gateUp = gatherElements(storedGateUp, [count, 2 * n, hidden], (e, row, col) =>
      gateUpInputMajor ? ((first + e) * hidden + col) * 2 * total + column(row) : ((first + e) * 2 * total + column(row)) * hidden + col,
    );
    // down [E, n, hidden] (or output-major [E, hidden, n]) -> [count, hidden, n'].
    const storedDown = source.read(names.down);
    const downInputMajor = inputMajor(names, storedDown, hidden);
    const down = gatherElements(storedDown, [count, hidden, n], (e, row, col) =>
      downInputMajor ? ((first + e) * total + part.start + col) * hidden + row : ((first + e) * hidden + row) * total + part.start + col,
    );
    return { ...(this.quantizedAtLoad(source, gateUp, down) ?? this.atLoad(source, gateUp, down)), ...biases };
  }

  /**
   * Fused experts in the device layout quantized by `--quantization` (`quantizeLinear`) as the
   * per-expert tensors of other checkpoints are by `readLinear`: gate/up [count · 2n, hidden] and
   * down [count · hidden, n], row by row, so exactly as expert after expert. Null without it, or in
   * a format the expert kernels do not take (nf4, llm-int8: the experts stay 16-bit, as the
   * per-expert ones do).
   */
  private quantizedAtLoad(source: WeightSource, gateUp: HostTensor, down: HostTensor): Pick<HostExperts, 'gateUp' | 'down'> | null {
    if (source.quantizeLinear === undefined) return null;
    const [count, twoN, hidden] = gateUp.shape;
    const stacks = { gateUp: source.quantizeLinear({ ...gateUp, shape: [count * twoN, hidden] }), down: source.quantizeLinear({ ...down, shape: [count * hidden, twoN / 2] }) };
    return expertKernelsTake(stacks.gateUp) && expertKernelsTake(stacks.down) ? stacks : null;
  }

  /**
   * A fused checkpoint's expert biases in the device layout: [count, 2n'] gate then up (row r at
   * fused column `column(r)`), and [count, hidden] where `withDownBias`.
   */
  private fusedBiases(source: WeightSource, names: FusedExperts, column: (r: number) => number, n: number, withDownBias: boolean): Pick<HostExperts, 'gateUpBias' | 'downBias'> {
    const { hiddenSize: hidden, intermediateSize: total } = this.options;
    const [first, count] = [this.first, this.count];
    const gateUpBias =
      names.gateUpBias === null ? null : gatherElements(source.read(names.gateUpBias), [count, 2 * n], (e, col) => (first + e) * 2 * total + column(col));
    const downBias =
      names.downBias === null || !withDownBias ? null : gatherElements(source.read(names.downBias), [count, hidden], (e, col) => (first + e) * hidden + col);
    return { gateUpBias, downBias };
  }

  private get routingParams(): RoutingParams {
    const { routing } = this.options;
    return { ...routing, selectionBias: routing.selectionBias === null ? null : loaded(this.selectionBias, routing.selectionBias) };
  }

  /** What the backend's `moe` op reads, once loaded. */
  private get weights(): MoeWeights {
    const { shared, activation, router } = this.options;
    return {
      router: this.router.weight,
      routerBias: this.router.bias,
      routing: this.routingParams,
      experts: loaded(this.experts, `${router} experts`),
      activation,
      shared: shared === null ? null : { ...shared.mlp.weights, gate: this.sharedGate?.weight ?? null },
    };
  }

  /** x [numTokens, hidden] -> [numTokens, hidden]: the routed experts held here plus the shared expert, summed over devices. */
  forward(b: Backend, x: Tensor): Tensor {
    return b.allReduce(b.moe(x, this.weights));
  }

  /**
   * The routed experts held here on x, chosen by the router on `routerInput` [numTokens, hidden]
   * (Gemma 4 routes by one norm of the residual stream and feeds its experts another), summed over
   * devices; a block with shared experts runs `forward`.
   */
  forwardRoutedBy(b: Backend, routerInput: Tensor, x: Tensor): Tensor {
    if (this.options.shared !== null) throw new Error(`${this.options.router}: a block with shared experts routes and runs them on one input (forward)`);
    const { routing, experts, activation } = this.weights;
    return b.allReduce(b.expertMlp(x, b.routeExperts(this.router.forward(b, routerInput), routing), experts, activation));
  }
}

/** The experts as host tensors (16-bit, MXFP4, or int4/int8/fp8 stacked along the rows) in the device layout, before upload. */
interface HostExperts {
  gateUp: HostTensor | Mxfp4Weight | QuantizedWeight;
  down: HostTensor | Mxfp4Weight | QuantizedWeight;
  gateUpBias: HostTensor | null;
  downBias: HostTensor | null;
}

/** Where row r of a gate-then-up block sits among interleaved columns: gate j at 2j, up j at 2j + 1. */
function interleaved(r: number, n: number): number {
  return r < n ? 2 * r : 2 * (r - n) + 1;
}

/** How a fused checkpoint stores its expert stacks: input-major, output-major as the device layout (GraniteMoE), or either. */
function fusedOrientation(names: FusedExperts): 'input-major' | 'output-major' | 'either' {
  if (names.layout === 'fused-output-major') return 'output-major';
  return names.layout === 'fused-halves-either-major' ? 'either' : 'input-major';
}

/** Whether a stored stack ([E, outRows, cols] output-major) is input-major: by its layout, or by its shape where either is taken. */
function inputMajor(names: FusedExperts, stored: HostTensor, outRows: number): boolean {
  const orientation = fusedOrientation(names);
  return orientation === 'either' ? stored.shape[1] !== outRows : orientation === 'input-major';
}

/** Where row r of a gate-then-up block sits among a fused tensor's gate/up columns (rows, output-major). */
function gateUpColumn(names: FusedExperts): (r: number, n: number) => number {
  return names.layout === 'fused-interleaved' ? interleaved : (r) => r;
}

