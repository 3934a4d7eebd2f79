import type { Backend, Tensor } from '../backend/backend.ts';
import type { Checkpoint } from '../checkpoint/checkpoint.ts';
import { invalidModel } from '../errors.ts';
import { Linear } from '../layers/linear.ts';
import { ComposedLayer, type Layer } from '../layers/parameters.ts';
import { ConfigFields } from './hf-config.ts';

/** Medusa heads as their authors publish them (FasterDecoding/Medusa): config.json's medusa_num_heads and medusa_num_layers. */
export interface MedusaConfig {
  numHeads: number;
  /** Residual blocks before each head's LM head. */
  numLayers: number;
}

export function parseMedusaConfig(json: Record<string, unknown>, source: string): MedusaConfig {
  const fields = new ConfigFields(json, source);
  if (json.medusa_num_heads === undefined) throw invalidModel(`${source} has no medusa_num_heads: it is not a Medusa heads config (FasterDecoding/Medusa's format)`);
  return { numHeads: fields.positiveInt('medusa_num_heads'), numLayers: fields.nonNegativeInt('medusa_num_layers', 1) };
}

/**
 * Medusa heads (Cai et al., 2024): head k maps the target's last hidden state h (the final norm's
 * output, the LM head's input) at a position to logits of the token k + 2 positions on:
 * numLayers residual blocks h ← h + SiLU(W h + b), then an LM head [vocab, hidden]. The authors'
 * checkpoint (medusa_lm_head.*) names head k's block j `k.j.linear.{weight,bias}` and its LM head
 * `k.<numLayers>.weight` (an nn.Sequential per head); a `medusa_head.` prefix is accepted too.
 */
export class MedusaHeads extends ComposedLayer {
  readonly config: MedusaConfig;
  readonly hiddenSize: number;
  readonly vocabSize: number;
  private readonly blocks: Linear[][];
  private readonly lmHeads: Linear[];

  constructor(config: MedusaConfig, hiddenSize: number, vocabSize: number, prefix: string) {
    super();
    this.config = config;
    this.hiddenSize = hiddenSize;
    this.vocabSize = vocabSize;
    this.blocks = Array.from({ length: config.numHeads }, (_, k) =>
      Array.from({ length: config.numLayers }, (_, j) => Linear.single(`${prefix}${k}.${j}.linear.weight`, hiddenSize, hiddenSize, 'replicated', true)),
    );
    this.lmHeads = Array.from({ length: config.numHeads }, (_, k) => Linear.single(`${prefix}${k}.${config.numLayers}.weight`, vocabSize, hiddenSize, 'column'));
  }

  /**
   * The heads of a checkpoint, named with or without the `medusa_head.` prefix, checked against
   * the target's hidden size and vocabulary before anything is read.
   */
  static forCheckpoint(config: MedusaConfig, ckpt: Checkpoint, target: { hiddenSize: number; vocabSize: number }): MedusaHeads {
    const prefix = ckpt.has('medusa_head.0.0.linear.weight') || ckpt.has(`medusa_head.0.${config.numLayers}.weight`) ? 'medusa_head.' : '';
    const lmHead = `${prefix}0.${config.numLayers}.weight`;
    if (!ckpt.has(lmHead)) {
      throw invalidModel(`${ckpt.dir}: no tensor ${lmHead} (head 0's LM head after its ${config.numLayers} residual blocks); the checkpoint holds ${ckpt.tensorNames.slice(0, 6).join(', ')}…`);
    }
    const [vocab, hidden] = ckpt.info(lmHead).shape;
    if (vocab !== target.vocabSize || hidden !== target.hiddenSize) {
      throw invalidModel(`${ckpt.dir}: Medusa head 0's LM head is [${vocab}, ${hidden}] but the target's is [${target.vocabSize}, ${target.hiddenSize}]: the heads were trained for another model`);
    }
    return new MedusaHeads(config, target.hiddenSize, target.vocabSize, prefix);
  }

  protected get sublayers(): Layer[] {
    return [...this.blocks.flat(), ...this.lmHeads];
  }

  /** Each head's logits [rows, vocab] from hidden states [rows, hidden] (left as they are). */
  forward(b: Backend, hidden: Tensor): Tensor[] {
    return this.lmHeads.map((lmHead, k) => {
      let h = hidden;
      for (const block of this.blocks[k]) {
        const y = block.forward(b, h);
        b.silu(y);
        b.addInto(y, h, null);
        h = y;
      }
      return lmHead.forward(b, h);
    });
  }
}
