import type { Activation, Backend, StepInputs, Tensor } from '../backend/backend.ts';
import { Linear, type LinearPart } from './linear.ts';
import { evenPart } from './shard.ts';
import { loadLayers, parametersOf, type Layer, type TensorParallelShard, type ParameterSpec, type WeightSource, type WeightUploader } from './parameters.ts';

/**
 * Checkpoint names of a gated MLP: separate gate and up tensors, one fused gate-then-up tensor
 * (Phi-3), or up alone, its own gate (Arcee's ungated relu²(u), which is relu(u) · u).
 */
export type GatedMlpNames = { gate: string; up: string; down: string } | { gateUp: string; down: string } | { up: string; down: string };

export interface GatedMlpOptions {
  /** An MoE's shared expert: gate/up stacked into one weight whatever their formats, as the `moe` op reads `weights` (Linear's oneMatmul). */
  sharedExpert?: boolean;
  /** gate, up and down carry biases (`*.bias` beside each weight: Llama's `mlp_bias`). */
  bias?: boolean;
}

/**
 * down(act(gate(x)) * up(x)), gate and up run as one matmul fused with the activation; gate and
 * up in different formats, or with biases, run as matmuls, then the activation. Without a gate,
 * down(act(up(x)) * up(x)): the activation op reads up's output twice.
 */
export class GatedMlp implements Layer {
  readonly sharedExpert: boolean;
  private readonly gateUp: Linear;
  private readonly down: Linear;
  private readonly activation: Activation;
  private readonly bias: boolean;
  /** No gate projection: up is its own gate. */
  private readonly upIsGate: boolean;

  constructor(names: GatedMlpNames, hiddenSize: number, intermediateSize: number, activation: Activation, options: GatedMlpOptions = {}) {
    const parts: LinearPart[] =
      'gateUp' in names
        ? [{ name: names.gateUp, rows: 2 * intermediateSize }]
        : 'gate' in names
          ? [
              { name: names.gate, rows: intermediateSize },
              { name: names.up, rows: intermediateSize },
            ]
          : [{ name: names.up, rows: intermediateSize }];
    // A shard holds the same part of the gate rows and of the up rows (of a fused tensor's two halves too).
    const shardRows = (index: number, shard: TensorParallelShard) => {
      const part = evenPart(intermediateSize, shard, `the intermediate size of ${names.down}`);
      return 'gateUp' in names ? [part, { start: intermediateSize + part.start, count: part.count }] : [part];
    };
    this.sharedExpert = options.sharedExpert ?? false;
    this.bias = options.bias ?? false;
    this.upIsGate = !('gateUp' in names) && !('gate' in names);
    if (this.sharedExpert && (this.bias || this.upIsGate)) throw new Error(`${names.down}: a shared expert runs inside the moe op, which takes gate and up weights without biases`);
    this.gateUp = new Linear({ parts, inFeatures: hiddenSize, bias: this.bias, shard: 'column', shardRows, oneMatmul: this.sharedExpert });
    this.down = Linear.single(names.down, hiddenSize, intermediateSize, 'row', this.bias);
    this.activation = activation;
  }

  parameters(): ParameterSpec[] {
    return parametersOf([this.gateUp, this.down]);
  }

  load(source: WeightSource, uploader: WeightUploader): void {
    loadLayers([this.gateUp, this.down], source, uploader);
  }

  loraTargets(): Linear[] {
    return [this.gateUp, this.down];
  }

  /** The loaded weights, gate-then-up [2n, hidden] and down [hidden, n], with the activation between them (a `sharedExpert`'s). */
  get weights(): { gateUp: Tensor; down: Tensor; activation: Activation } {
    return { gateUp: this.gateUp.weight, down: this.down.weight, activation: this.activation };
  }

  /**
   * With LoRA on gate/up this step, gate and up in different formats, or biases, their product
   * (taking the deltas and biases) comes before the activation: two ops instead of the fused one,
   * rounded alike.
   */
  forward(b: Backend, x: Tensor, step: StepInputs): Tensor {
    if (this.upIsGate) {
      const up = this.gateUp.forwardWithLora(b, x, step);
      return b.allReduce(this.down.forwardWithLora(b, b.gatedActivation(b.concatColumns([up, up]), this.activation), step));
    }
    const h = this.gateUp.loraActive(step) || this.gateUp.split || this.bias
      ? b.gatedActivation(this.gateUp.forwardWithLora(b, x, step), this.activation)
      : b.gatedLinear(x, this.gateUp.weight, this.activation);
    return b.allReduce(this.down.forwardWithLora(b, h, step));
  }
}
