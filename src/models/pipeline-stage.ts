import { invalidArgument } from '../errors.ts';

/**
 * Which consecutive layers of a model one pipeline stage holds (docs/parallelism.md): the first
 * stage also holds the embedding, the last the final norm and LM head. The stages of one model
 * cover its layers in order, without gaps.
 */
export interface PipelineStage {
  index: number;
  count: number;
  /** Layers [firstLayer, endLayer). */
  firstLayer: number;
  endLayer: number;
}

/** The whole model on one stage. */
export function wholeModel(numLayers: number): PipelineStage {
  return { index: 0, count: 1, firstLayer: 0, endLayer: numLayers };
}

/**
 * Stage `index` of `count`: each holds ⌊L / count⌋ layers, and the first L mod count one more (the
 * last stage already carries the LM head, the largest single matrix of a small model).
 */
export function pipelineStage(numLayers: number, index: number, count: number): PipelineStage {
  if (!(Number.isInteger(count) && count >= 1 && Number.isInteger(index) && index >= 0 && index < count)) {
    throw new Error(`pipeline stage ${index} of ${count} does not exist`);
  }
  if (numLayers < count) throw invalidArgument(`pipeline-parallel size ${count} exceeds the model's ${numLayers} layers: each stage needs at least one`);
  const base = Math.floor(numLayers / count);
  const extra = numLayers % count;
  const firstLayer = index * base + Math.min(index, extra);
  return { index, count, firstLayer, endLayer: firstLayer + base + (index < extra ? 1 : 0) };
}

export const isFirstStage = (stage: PipelineStage): boolean => stage.index === 0;
export const isLastStage = (stage: PipelineStage): boolean => stage.index === stage.count - 1;
