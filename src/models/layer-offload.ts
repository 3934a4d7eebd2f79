import type { Backend, WeightStream } from '../backend/backend.ts';
import type { WeightUploader } from '../layers/parameters.ts';

/**
 * Decoder layers whose weights stay in host memory and are streamed to the device before use
 * (weight offload, docs/long-context.md). The offloaded layers, in order, are the groups 0, 1, ...
 * of a weight stream, so consecutive offloaded layers alternate between two sets of device
 * buffers: while one runs, the next is copied.
 */
export class LayerOffload {
  readonly stream: WeightStream;
  /** Each offloaded layer's group. */
  private readonly groupOf = new Map<number, number>();
  private readonly uploaders: WeightUploader[];

  constructor(b: Backend, layers: readonly number[]) {
    this.stream = b.createWeightStream();
    [...layers].sort((x, y) => x - y).forEach((layer, group) => this.groupOf.set(layer, group));
    this.uploaders = [...this.groupOf.values()].map((group) => b.weightGroupUploader(this.stream, group));
  }

  /** What layer `index` loads its weights with: its group's uploader, or `resident` for a layer kept on the device. */
  uploaderFor(index: number, resident: WeightUploader): WeightUploader {
    const group = this.groupOf.get(index);
    return group === undefined ? resident : this.uploaders[group];
  }

  /**
   * The layers in order, for a forward pass: the first offloaded layer is fetched at once; each
   * offloaded layer, before it runs, has the next one fetched (into the buffers of the one before
   * it, whose work is queued by then) and waits for its own.
   */
  *inOrder<L>(b: Backend, layers: readonly L[]): Generator<L> {
    const numGroups = this.groupOf.size;
    if (numGroups > 0) b.fetchWeights(this.stream, 0);
    for (const [index, layer] of layers.entries()) {
      const group = this.groupOf.get(index);
      if (group !== undefined) {
        if (group + 1 < numGroups) b.fetchWeights(this.stream, group + 1);
        b.awaitWeights(this.stream, group);
      }
      yield layer;
    }
  }
}
