import type { Backend, StepInputs, Tensor, XieluParams } from '../backend/backend.ts';
import { invalidModel } from '../errors.ts';
import { hostTensorToFloat32 } from '../tensor/host-dtype.ts';
import { Linear } from './linear.ts';
import { loaded, loadLayers, parametersOf, type Layer, type ParameterSpec, type WeightSource, type WeightUploader } from './parameters.ts';

/** Checkpoint names of an xIELU MLP: its two projections and the activation module holding its constants. */
export interface XieluMlpNames {
  up: string;
  down: string;
  /** The module of `alpha_p`, `alpha_n`, `beta` and `eps` (`mlp.act_fn`). */
  activation: string;
}

/** XIELUActivation's initial buffers, which a checkpoint saved without them leaves in place. */
const DEFAULT_BETA = 0.5;
const DEFAULT_EPS = -1e-6;

/**
 * Apertus's MLP: down(xielu(up(x))), no gate. The activation has learned constants per layer: one
 * α_p and one α_n (used through a softplus), and `beta` and `eps`, which transformers saves as
 * buffers. The projections shard as a gated MLP's: up by columns, down by rows, the activation
 * elementwise in between.
 */
export class XieluMlp implements Layer {
  private readonly up: Linear;
  private readonly down: Linear;
  private readonly activation: string;
  private params: XieluParams | null = null;

  constructor(names: XieluMlpNames, hiddenSize: number, intermediateSize: number) {
    this.up = Linear.single(names.up, intermediateSize, hiddenSize, 'column');
    this.down = Linear.single(names.down, hiddenSize, intermediateSize, 'row');
    this.activation = names.activation;
  }

  parameters(): ParameterSpec[] {
    const scalars = ['alpha_p', 'alpha_n'].map((name) => ({ name: `${this.activation}.${name}`, shape: [1] }));
    return [...parametersOf([this.up, this.down]), ...scalars];
  }

  load(source: WeightSource, uploader: WeightUploader): void {
    loadLayers([this.up, this.down], source, uploader);
    const scalar = (name: string, fallback?: number): number => {
      const full = `${this.activation}.${name}`;
      const t = fallback === undefined ? source.read(full) : (source.readOptional?.(full) ?? null);
      if (t === null) return fallback!;
      const values = hostTensorToFloat32(t);
      if (values.length !== 1 || !Number.isFinite(values[0])) throw invalidModel(`${full} must hold one finite value (got ${values.length} values)`);
      return values[0];
    };
    const beta = scalar('beta', DEFAULT_BETA);
    this.params = { alphaP: softplus(scalar('alpha_p')), alphaN: beta + softplus(scalar('alpha_n')), beta, eps: scalar('eps', DEFAULT_EPS) };
  }

  loraTargets(): Linear[] {
    return [this.up, this.down];
  }

  forward(b: Backend, x: Tensor, step: StepInputs): Tensor {
    const h = this.up.forwardWithLora(b, x, step);
    b.xielu(h, loaded(this.params, this.activation));
    return b.allReduce(this.down.forwardWithLora(b, h, step));
  }
}

/** torch's softplus (beta 1, threshold 20: the identity above it). */
function softplus(x: number): number {
  return x > 20 ? x : Math.log1p(Math.exp(x));
}
