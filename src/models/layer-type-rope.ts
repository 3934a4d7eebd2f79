import { invalidModel } from '../errors.ts';
import { RotaryEmbedding, type RopeScaling } from '../layers/rotary.ts';
import type { StreamingWindow } from '../step/kv-cache-layout.ts';
import { ConfigFields, layerTypeRopeFields, parseRopeParameters } from './hf-config.ts';

/** One layer type's RoPE: its theta and scaling over the leading `rotaryDim` dims of each head. */
export interface LayerTypeRope {
  ropeTheta: number;
  ropeScaling: RopeScaling;
  rotaryDim: number;
}

/**
 * `rope_parameters` given per layer type alone, as MiMo-V2-Flash's and Laguna's rotary embeddings
 * read them (their configs read no rope_scaling and no top-level rope_theta): each layer type the
 * model has needs its entry with its own rope_theta, rotating int(head_dim × partial_rotary_factor)
 * leading dims, the factor `partialRotaryDefault(rope type)` where the entry leaves it out. A layer
 * type the model lacks is read as the other.
 */
export function parseLayerTypeRopes(
  fields: ConfigFields,
  model: { headDim: number; maxPositionEmbeddings: number; slidingLayers: readonly boolean[]; partialRotaryDefault: (ropeType: string) => number },
): { fullRope: LayerTypeRope; slidingRope: LayerTypeRope } {
  const perLayerType = layerTypeRopeFields(fields);
  if (perLayerType === null) {
    throw invalidModel(`${fields.source}: ${String(fields.raw('model_type'))} reads rope_parameters per layer type ({"full_attention": {...}, "sliding_attention": {...}}), not one RoPE dict`);
  }
  const { headDim, maxPositionEmbeddings, slidingLayers } = model;
  const noTopLevel = new ConfigFields({}, fields.source);
  const parse = (entry: ConfigFields): LayerTypeRope => {
    const ropeTheta = entry.positiveNumber('rope_theta');
    const settings = parseRopeParameters(entry, noTopLevel, maxPositionEmbeddings, ropeTheta, perLayerType.outer);
    const partial = entry.positiveNumber('partial_rotary_factor', model.partialRotaryDefault(settings.ropeScaling.type));
    const rotaryDim = Math.trunc(headDim * partial);
    if (partial > 1 || rotaryDim % 2 !== 0 || rotaryDim === 0) {
      throw invalidModel(`${entry.source}: partial_rotary_factor ${partial} gives ${rotaryDim} rotary dims of head_dim ${headDim}; Keel needs an even number, at most the head`);
    }
    return { ...settings, rotaryDim };
  };
  const full = slidingLayers.includes(false) ? parse(perLayerType.full) : null;
  const sliding = slidingLayers.includes(true) ? parse(perLayerType.sliding) : null;
  return { fullRope: full ?? sliding!, slidingRope: sliding ?? full! };
}

/** The rotary tables of the full and the sliding layers. */
export function layerTypeRopeTables(
  config: { fullRope: LayerTypeRope; slidingRope: LayerTypeRope; maxPositionEmbeddings: number },
  maxPositions: number,
  streaming: StreamingWindow | null,
): { full: RotaryEmbedding; sliding: RotaryEmbedding } {
  const table = (rope: LayerTypeRope) =>
    new RotaryEmbedding({ rotaryDim: rope.rotaryDim, theta: rope.ropeTheta, scaling: rope.ropeScaling, maxPositionEmbeddings: config.maxPositionEmbeddings }, maxPositions, streaming);
  return { full: table(config.fullRope), sliding: table(config.slidingRope) };
}
