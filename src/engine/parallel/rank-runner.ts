import type { Backend, KvCache, SwapSpace } from '../../backend/backend.ts';
import { openModelFiles } from '../../checkpoint/model-files.ts';
import { isFirstStage, pipelineStage } from '../../models/pipeline-stage.ts';
import { modelArchitectureOf } from '../../models/registry.ts';
import { kvBytesPerBlock, kvCacheGroups, resolveKvCacheDtype, stateBytesPerSlot } from '../../step/kv-cache-layout.ts';
import { queueHostTransfers } from '../host-transfers.ts';
import { createTargetModel, loadModelWeights, offloadLayers, pipelineMicroBatchesOf, streamingOf } from '../load-engine.ts';
import { MicroBatchPipeline } from '../micro-batch-pipeline.ts';
import { stateSlotLayout } from '../state-slots.ts';
import type { RankLoaded, RankPlace, ToRank } from './rank-messages.ts';

/** A rank other than the engine's, loaded: it runs the engine's orders in the order they come. */
export interface RankRunner {
  readonly loaded: RankLoaded;
  handle(message: ToRank): void;
}

/**
 * Loads `place`'s shard of its pipeline stage's layers on `backend` (already joined to its
 * groups): the one code path of every rank besides the engine's, whether it runs in a worker
 * thread (CPU backend) or a worker process (CUDA), whatever carries the messages.
 */
export function loadRank(place: RankPlace, backend: Backend): RankRunner {
  const { config } = place;
  const files = openModelFiles(place.modelPath);
  const architecture = modelArchitectureOf(files);
  const stage = pipelineStage(architecture.config.numLayers, place.stage, config.pipelineParallelSize);
  const model = createTargetModel(architecture, place.maxModelLen, config, stage);
  // Each rank streams its own shard of its stage's offloaded layers, chosen as rank 0 chooses its own.
  const offload = config.cpuOffloadGb > 0 ? offloadLayers(model, backend, config) : null;
  loadModelWeights(model, files, architecture, { ...config, showProgress: false }, backend, {
    rank: place.tensorRank,
    size: config.tensorParallelSize,
    expertParallel: config.enableExpertParallel,
  });
  // The stage's layers' KV groups, as rank 0 groups the whole model's layers (a parallel run has no draft or head).
  const allKvLayers = createTargetModel(architecture, place.maxModelLen, config).kvLayers;
  const groups = kvCacheGroups(allKvLayers, streamingOf(config)).groupOf.slice(stage.firstLayer, stage.firstLayer + model.kvLayers.length);
  const dtype = resolveKvCacheDtype(config.kvCacheDtype);
  const bytesPerBlock = kvBytesPerBlock(model.kvLayers, config.blockSize, backend.kvElementBytes, dtype, groups);
  let cache: KvCache | null = null;
  // With micro-batches in flight the first stage launches each one and receives the logits due in the engine's order; later stages just run theirs in order.
  const microBatches = isFirstStage(stage) ? pipelineMicroBatchesOf(config) : 1;
  let pipeline: MicroBatchPipeline | null = null;
  /** This rank's swap space and host tier, each beside its cache (none: empty), as rank 0 pairs its own. */
  let swaps: [KvCache, SwapSpace][] = [];
  let tier: [KvCache, SwapSpace][] = [];
  const requireCache = () => {
    if (cache === null) throw new Error(`rank ${place.rank} was sent a step before its KV cache`);
    return cache;
  };
  return {
    // Sized in the cache's dtype, as rank 0 sizes its own: an 8-bit cache holds more blocks.
    loaded: {
      kvBlocks: Math.floor((backend.kvCacheBudgetBytes(config) - stateSlotLayout(model.kvLayers, config).total * stateBytesPerSlot(model.kvLayers)) / bytesPerBlock),
      kvBytesPerBlock: bytesPerBlock,
      weightHostBytes: offload?.stream.hostBytes ?? 0,
    },
    handle(message: ToRank): void {
      if (message.type === 'create-cache') {
        const layout = (numBlocks: number) => ({ numBlocks, blockSize: message.blockSize, layers: model.kvLayers, groups, firstLayer: stage.firstLayer, dtype: message.dtype, stateSlots: message.stateSlots });
        const kv = (cache = backend.createKvCache(layout(message.numBlocks)));
        if (microBatches > 1) pipeline = new MicroBatchPipeline(backend, model, kv, microBatches);
        const hostSpace = (numBlocks: number): [KvCache, SwapSpace][] => (numBlocks === 0 ? [] : [[kv, backend.createSwapSpace(layout(numBlocks))]]);
        swaps = hostSpace(message.numSwapBlocks);
        tier = hostSpace(message.numHostCacheBlocks);
      } else if (message.type === 'transfer-blocks') {
        requireCache();
        queueHostTransfers(backend, swaps, tier, message.transfers);
      } else if (message.type === 'copy-slots') {
        backend.copySlots(requireCache(), message.src, message.dst);
      } else if (message.type === 'receive-logits') {
        pipeline?.receiveOldest();
      } else {
        const kv = requireCache();
        if (message.blockCopies.src.length > 0) backend.copyBlocks(kv, message.blockCopies.src, message.blockCopies.dst);
        if (message.stateCopies.src.length > 0) backend.copyStateSlots(kv, message.stateCopies.src, message.stateCopies.dst);
        const step = backend.beginStep(message.batch);
        if (pipeline !== null) pipeline.launch(step, message.draws);
        else if (isFirstStage(stage)) backend.sampleRows(model.forward(backend, step, kv), message.draws).read();
        else model.runStage(backend, step, kv);
      }
    },
  };
}
