/**
 * Where each rank of a run of `tensor` × `pipeline` ranks sits (the order vLLM and Megatron use):
 * the tensor-parallel ranks of a stage are consecutive, rank = stage × tensor + tensorRank, so rank
 * 0 (the engine) is the first stage's first tensor rank. A stage's ranks form its tensor group; the
 * ranks of one tensor rank across the stages form a pipeline group, in which a rank's index is its stage.
 */
export interface RankLayout {
  tensor: number;
  pipeline: number;
}

export function worldSize(layout: RankLayout): number {
  return layout.tensor * layout.pipeline;
}

export function placeOf(layout: RankLayout, rank: number): { stage: number; tensorRank: number } {
  if (!(Number.isInteger(rank) && rank >= 0 && rank < worldSize(layout))) throw new Error(`rank ${rank} is outside a run of ${worldSize(layout)} ranks`);
  return { stage: Math.floor(rank / layout.tensor), tensorRank: rank % layout.tensor };
}
