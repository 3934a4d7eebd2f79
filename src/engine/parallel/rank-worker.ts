import { workerData, type MessagePort } from 'node:worker_threads';
import type { KvCache } from '../../backend/backend.ts';
import { CpuBackend } from '../../backend/cpu/cpu-backend.ts';
import { reportFailure } from '../../parallel/failure-board.ts';
import { SharedMemoryCommunicator } from '../../parallel/shared-memory-communicator.ts';
import { openModelFiles } from '../../checkpoint/model-files.ts';
import { createModel, modelArchitectureOf } from '../../models/registry.ts';
import { loadModelWeights, streamingOf } from '../load-engine.ts';
import type { FromRank, RankSettings, ToRank } from './rank-messages.ts';

// One rank of a parallel run on the CPU backend (a worker thread): loads its shard of the model,
// then runs, in order, each step the engine sends, on its shard. Any failure is written where the
// other ranks look (failure-board.ts) before the thread ends, so none of them waits for it.

const settings = workerData.settings as RankSettings & { port: MessagePort };
const { config, rank, failures, port } = settings;
const post = (message: FromRank) => port.postMessage(message);

function fail(error: unknown): never {
  const message = (error as Error).message ?? String(error);
  reportFailure(failures, rank, message);
  post({ type: 'failed', message });
  process.exit(1);
}

try {
  const backend = new CpuBackend({
    tensor: new SharedMemoryCommunicator(settings.tensor, settings.tensorRank, failures),
    pipeline: new SharedMemoryCommunicator(settings.pipeline, settings.stage, failures),
  });
  const files = openModelFiles(settings.modelPath);
  const architecture = modelArchitectureOf(files);
  const model = createModel(architecture, settings.maxModelLen, streamingOf(config));
  loadModelWeights(model, files, architecture, { ...config, showProgress: false }, backend, {
    rank: settings.tensorRank,
    size: config.tensorParallelSize,
    expertParallel: config.enableExpertParallel,
  });
  let cache: KvCache | null = null;
  const requireCache = () => {
    if (cache === null) throw new Error(`rank ${rank} was sent a step before its KV cache`);
    return cache;
  };
  port.on('message', (message: ToRank) => {
    try {
      if (message.type === 'create-cache') {
        cache = backend.createKvCache({ numBlocks: message.numBlocks, blockSize: message.blockSize, layers: model.kvLayers, dtype: message.dtype });
      } else if (message.type === 'copy-slots') {
        backend.copySlots(requireCache(), message.src, message.dst);
      } else {
        const kv = requireCache();
        if (message.blockCopies.src.length > 0) backend.copyBlocks(kv, message.blockCopies.src, message.blockCopies.dst);
        const logits = model.forward(backend, backend.beginStep(message.batch), kv);
        backend.sampleRows(logits, message.draws).read();
      }
    } catch (error) {
      fail(error);
    }
  });
  post({ type: 'loaded' });
} catch (error) {
  fail(error);
}
