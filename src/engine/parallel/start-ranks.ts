import type { Backend } from '../../backend/backend.ts';
import { CpuBackend } from '../../backend/cpu/cpu-backend.ts';
import type { EngineConfig } from '../../config.ts';
import { invalidArgument, KeelError } from '../../errors.ts';
import { multiNodeFromEnv } from '../../parallel/bootstrap.ts';
import { worldSize } from '../../parallel/rank-layout.ts';
import type { Ranks } from './ranks.ts';
import { ThreadRanks } from './thread-ranks.ts';

/**
 * Starts the other ranks of a parallel run and returns them with rank 0's backend, joined to its
 * groups: worker threads beside a CPU backend (`--backend cpu`, or `auto` without a usable GPU),
 * else one worker process per GPU beside a CUDA backend on GPU 0 (docs/parallelism.md).
 */
export async function startRanks(config: EngineConfig, modelPath: string, maxModelLen: number): Promise<{ ranks: Ranks; backend: Backend }> {
  const world = worldSize({ tensor: config.tensorParallelSize, pipeline: config.pipelineParallelSize });
  const what = `tensorParallelSize ${config.tensorParallelSize} × pipelineParallelSize ${config.pipelineParallelSize}`;
  const onCpu = async () => {
    const ranks = ThreadRanks.start(config, modelPath, maxModelLen);
    return { ranks, backend: new CpuBackend(ranks.localGroups) };
  };
  const nodes = multiNodeFromEnv(process.env);
  if (nodes !== null) {
    throw invalidArgument(
      `${what} over ${nodes.nnodes} nodes (NNODES): the ranks' NCCL ids can be served at MASTER_ADDR:MASTER_PORT, but the engine's step orders do not cross nodes yet (docs/parallelism.md); unset NNODES to run on this node`,
    );
  }
  if (config.backend === 'cpu') return onCpu();
  const availability = (await import('../../backend/cuda/availability.ts')).cudaAvailability();
  if (!availability.ok) {
    if (config.backend === 'cuda') throw new KeelError('backend', `the CUDA backend is unavailable: ${availability.reason}`);
    process.stderr.write(`keel: no usable CUDA GPU (${availability.reason}); running the ${world} ranks on the CPU backend\n`);
    return onCpu();
  }
  if (availability.deviceCount < world) {
    throw new KeelError(
      'invalid_argument',
      `${what} needs ${world} GPUs, one per rank, and ${availability.deviceCount} are visible (NCCL refuses two ranks on one GPU; CUDA_VISIBLE_DEVICES chooses which are seen)`,
    );
  }
  const [{ ProcessRanks }, { CudaBackend }] = await Promise.all([import('./process-ranks.ts'), import('../../backend/cuda/cuda-backend.ts')]);
  const ranks = ProcessRanks.start(config, modelPath, maxModelLen);
  try {
    // Joining the groups blocks until every worker process has joined its own.
    const backend = new CudaBackend({ device: 0, parallel: ranks.localGroups });
    ranks.watchCommunicators(backend.communicatorAddresses);
    return { ranks, backend };
  } catch (error) {
    await ranks.close();
    throw error;
  }
}
