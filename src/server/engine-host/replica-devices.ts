import { KeelError } from '../../errors.ts';

/**
 * The CUDA_VISIBLE_DEVICES of each data-parallel replica: replica r gets the r-th run of
 * `perReplica` consecutive GPUs of those this process sees (`visible`, this process's own
 * CUDA_VISIBLE_DEVICES, when set; else the `deviceCount` the driver reports), so its engine sees
 * them as GPUs 0..perReplica-1, as a single engine would, and its rank processes inherit them.
 */
export function replicaDevices(visible: string | undefined, deviceCount: number, replicas: number, perReplica: number): string[] {
  const devices = visible === undefined || visible.trim() === '' ? Array.from({ length: deviceCount }, (_, i) => String(i)) : visible.split(',').map((d) => d.trim());
  const needed = replicas * perReplica;
  if (devices.length < needed) {
    throw new KeelError(
      'invalid_argument',
      `dataParallelSize ${replicas} × ${perReplica} GPU${perReplica === 1 ? '' : 's'} per replica (tensorParallelSize × pipelineParallelSize) needs ${needed} GPUs, and ${devices.length} are visible (CUDA_VISIBLE_DEVICES chooses which are seen)`,
    );
  }
  return Array.from({ length: replicas }, (_, r) => devices.slice(r * perReplica, (r + 1) * perReplica).join(','));
}
