import type { Backend, KvCache, SelectiveScanParams, StepInputs, Tensor } from '../backend/backend.ts';
import type { SequenceStateSpec } from '../step/kv-cache-layout.ts';
import { Linear } from './linear.ts';
import { RmsNorm } from './norm.ts';
import { loaded, loadLayers, type Layer, type ParameterSpec, type WeightSource, type WeightUploader } from './parameters.ts';
import { selectedRows } from './row-selection.ts';

export interface Mamba2MixerOptions extends SelectiveScanParams {
  /** This layer's index in the KV cache layout. */
  layer: number;
  /** Checkpoint prefix of the layer's tensors (`model.layers.<i>.mamba`). */
  prefix: string;
  hiddenSize: number;
  /** Width of the causal convolution over x, B and C (`mamba_d_conv`). */
  convKernel: number;
  /** The convolution has a bias (`mamba_conv_bias`). */
  convBias: boolean;
  /** in_proj and out_proj have biases (`mamba_proj_bias`). */
  projectionBias: boolean;
  /** The gated norm's epsilon. */
  eps: number;
}

/**
 * A Mamba-2 mixer (transformers' BambaMixer, which Granite 4.0's GraniteMoeHybridMambaLayer is):
 * `in_proj` to the gate z [I], the convolution's input xBC [I + 2 · G · N] and the time steps dt
 * [H] (I = H · P); a causal depthwise convolution of xBC (with its bias) and silu; the selective
 * scan over a state per sequence (A = −exp(A_log), dt through softplus with `dt_bias`, the D skip),
 * gated by silu(z); an RMSNorm over all I values of the gated output (transformers' norm spans the
 * whole row, groups or not); `out_proj`. It keeps no per-token cache: its KV spec is a per-sequence
 * state (`SequenceStateSpec`), the convolution's last kernel − 1 inputs then [H, P, N].
 *
 * in_proj is read as three matmuls (its z, xBC and dt rows), so each op gets its operand whole.
 * Tensor parallel: the mixer is replicated (the norm reads every head), as OLMo's attention is.
 */
export class Mamba2Mixer implements Layer {
  readonly layer: number;
  private readonly options: Mamba2MixerOptions;
  private readonly z: Linear;
  private readonly xbc: Linear;
  private readonly dt: Linear;
  private readonly norm: RmsNorm;
  private readonly out: Linear;
  private conv: Tensor | null = null;
  private convBias: Tensor | null = null;
  private aLog: Tensor | null = null;
  private dtBias: Tensor | null = null;
  private d: Tensor | null = null;

  constructor(options: Mamba2MixerOptions) {
    const { prefix, hiddenSize, numHeads, numGroups, projectionBias } = options;
    if (numHeads % numGroups !== 0) throw new Error(`${numHeads} Mamba heads do not split evenly over ${numGroups} groups`);
    this.layer = options.layer;
    this.options = options;
    // Each reads its rows of in_proj (load), under in_proj's own name.
    const part = (rows: number) => new Linear({ parts: [{ name: `${prefix}.in_proj.weight`, rows }], inFeatures: hiddenSize, bias: projectionBias, shard: 'replicated' });
    this.z = part(this.innerSize);
    this.xbc = part(this.convChannels);
    this.dt = part(numHeads);
    this.norm = new RmsNorm(`${prefix}.norm.weight`, this.innerSize, options.eps);
    this.out = Linear.single(`${prefix}.out_proj.weight`, hiddenSize, this.innerSize, 'replicated', projectionBias);
  }

  /** I = H · P: z's width, x's, and the scan's output. */
  private get innerSize(): number {
    return this.options.numHeads * this.options.headDim;
  }

  /** The convolution's channels: x, every group's B, every group's C. */
  private get convChannels(): number {
    const { numGroups, stateSize } = this.options;
    return this.innerSize + 2 * numGroups * stateSize;
  }

  /** The convolution's last kernel − 1 inputs and every head's [P, N] state. */
  get kvSpec(): SequenceStateSpec {
    const { numHeads, headDim, stateSize, convKernel } = this.options;
    return { kind: 'state', convElements: (convKernel - 1) * this.convChannels, recurrentElements: numHeads * headDim * stateSize };
  }

  /** It attends to no cached key: its cost per token does not grow with the context. */
  get macsPerKey(): number {
    return 0;
  }

  private get names(): { inProj: string; conv: string; convBias: string; aLog: string; dtBias: string; d: string } {
    const p = this.options.prefix;
    return { inProj: `${p}.in_proj`, conv: `${p}.conv1d.weight`, convBias: `${p}.conv1d.bias`, aLog: `${p}.A_log`, dtBias: `${p}.dt_bias`, d: `${p}.D` };
  }

  parameters(): ParameterSpec[] {
    const { hiddenSize, numHeads, convKernel, convBias, projectionBias } = this.options;
    const names = this.names;
    const inRows = this.innerSize + this.convChannels + numHeads;
    return [
      { name: `${names.inProj}.weight`, shape: [inRows, hiddenSize] },
      ...(projectionBias ? [{ name: `${names.inProj}.bias`, shape: [inRows] }] : []),
      { name: names.conv, shape: [this.convChannels, 1, convKernel] },
      ...(convBias ? [{ name: names.convBias, shape: [this.convChannels] }] : []),
      { name: names.dtBias, shape: [numHeads] },
      { name: names.aLog, shape: [numHeads] },
      { name: names.d, shape: [numHeads] },
      ...this.norm.parameters(),
      ...this.out.parameters(),
    ];
  }

  load(source: WeightSource, uploader: WeightUploader): void {
    const names = this.names;
    // in_proj's rows are [z | xBC | dt] (its bias's too): each part reads its own.
    let first = 0;
    for (const part of [this.z, this.xbc, this.dt]) {
      const start = first;
      const rows = { count: part.outFeatures, row: (r: number) => start + r };
      part.load(selectedRows(source, { [`${names.inProj}.weight`]: rows, [`${names.inProj}.bias`]: rows }), uploader);
      first += part.outFeatures;
    }
    loadLayers([this.norm, this.out], source, uploader);
    const conv = source.read(names.conv);
    // [channels, 1, kernel] depthwise filters, one row per channel.
    this.conv = uploader.loadWeight({ ...conv, shape: [this.convChannels, this.options.convKernel] });
    this.convBias = this.options.convBias ? uploader.loadWeight(source.read(names.convBias)) : null;
    // transformers runs the scan in float32 whatever the model's dtype.
    this.aLog = uploader.loadWeight(source.read(names.aLog), { float32: true });
    this.dtBias = uploader.loadWeight(source.read(names.dtBias), { float32: true });
    this.d = uploader.loadWeight(source.read(names.d), { float32: true });
  }

  /** x [numTokens, hidden] -> [numTokens, hidden]; updates each sequence's state slot. */
  forward(b: Backend, x: Tensor, step: StepInputs, cache: KvCache): Tensor {
    const { layer, options } = this;
    const names = this.names;
    const convBias = options.convBias ? loaded(this.convBias, names.convBias) : null;
    const xbc = b.causalConv1d(this.xbc.forward(b, x), loaded(this.conv, names.conv), convBias, cache, layer, step);
    const { numHeads, headDim, numGroups, stateSize, dtMin, dtMax } = options;
    const params = { numHeads, headDim, numGroups, stateSize, dtMin, dtMax };
    const constants = [loaded(this.aLog, names.aLog), loaded(this.dtBias, names.dtBias), loaded(this.d, names.d)] as const;
    const scanned = b.selectiveScan(xbc, this.dt.forward(b, x), this.z.forward(b, x), ...constants, cache, layer, step, params);
    return this.out.forward(b, this.norm.forward(b, scanned));
  }
}
