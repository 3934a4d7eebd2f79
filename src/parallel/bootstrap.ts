import { connect, createServer } from 'node:net';
import { invalidArgument, KeelError } from '../errors.ts';

/**
 * Where a rank on one of several nodes finds the run, from the environment variables torchrun,
 * vLLM and Kubernetes' LeaderWorkerSet set (docs/parallelism.md): the node of rank 0 serves the
 * run's NCCL unique ids at MASTER_ADDR:MASTER_PORT, and the other nodes fetch them there.
 */
export interface MultiNodeEnv {
  masterAddr: string;
  masterPort: number;
  /** This node, 0 being rank 0's. */
  nodeRank: number;
  nnodes: number;
}

/**
 * The multi-node settings of `env`, or null when it names no other node (none of the variables
 * set, or NNODES=1). NNODES, or else WORLD_SIZE as torchrun's node count when ranks are whole
 * nodes; a missing or malformed value is an error naming it.
 */
export function multiNodeFromEnv(env: Record<string, string | undefined>): MultiNodeEnv | null {
  const given = ['MASTER_ADDR', 'MASTER_PORT', 'NODE_RANK', 'NNODES'].filter((name) => env[name] !== undefined && env[name] !== '');
  if (given.length === 0) return null;
  const int = (name: string, min: number): number => {
    const raw = env[name];
    if (raw === undefined || raw === '') throw invalidArgument(`multi-node runs read ${name} from the environment, and it is not set (${given.join(', ')} are)`);
    const value = Number(raw);
    if (!(Number.isInteger(value) && value >= min)) throw invalidArgument(`${name} must be an integer of at least ${min} (got ${JSON.stringify(raw)})`);
    return value;
  };
  const nnodes = int('NNODES', 1);
  if (nnodes === 1) return null;
  const masterAddr = env.MASTER_ADDR;
  if (masterAddr === undefined || masterAddr === '') throw invalidArgument('multi-node runs read MASTER_ADDR (the host of node 0) from the environment, and it is not set');
  const masterPort = int('MASTER_PORT', 1);
  if (masterPort > 65535) throw invalidArgument(`MASTER_PORT must be a TCP port (got ${masterPort})`);
  const nodeRank = int('NODE_RANK', 0);
  if (nodeRank >= nnodes) throw invalidArgument(`NODE_RANK ${nodeRank} is not below NNODES ${nnodes}`);
  return { masterAddr, masterPort, nodeRank, nnodes };
}

/** The ranks node `nodeRank` of `nnodes` hosts: an equal run of consecutive ranks each (rank-layout.ts places them). */
export function ranksOfNode(worldSize: number, nodeRank: number, nnodes: number): { first: number; count: number } {
  if (worldSize % nnodes !== 0) throw invalidArgument(`${worldSize} ranks do not split evenly over ${nnodes} nodes`);
  const count = worldSize / nnodes;
  return { first: nodeRank * count, count };
}

/** Rank 0's side: serving the run's bytes (its NCCL unique ids) to every other node. */
export interface BootstrapServer {
  /** The port it listens on (MASTER_PORT, or the one the system chose for port 0). */
  port: number;
  /** Resolves once `peers` nodes have fetched the bytes; the server has closed then. */
  served: Promise<void>;
  close(): void;
}

/**
 * Serves `payload` to the first `peers` connections on `port` (every interface: MASTER_ADDR is
 * the address the others dial), each getting its length (4 bytes, big-endian) then the bytes.
 * The ids are not secret from the network NCCL itself runs on; nothing else is served.
 */
export function serveBootstrap(payload: Uint8Array, port: number, peers: number, host = '0.0.0.0'): Promise<BootstrapServer> {
  const framed = Buffer.concat([Buffer.from(Uint32Array.of(0).buffer), payload]);
  framed.writeUInt32BE(payload.length, 0);
  let left = peers;
  let done!: () => void;
  const served = new Promise<void>((resolve) => (done = resolve));
  const server = createServer((socket) => {
    socket.on('error', () => undefined);
    socket.end(framed);
    if (--left === 0) server.close(() => done());
  });
  return new Promise((resolve, reject) => {
    server.once('error', (error) => reject(new KeelError('unavailable', `cannot serve the multi-node bootstrap on port ${port}: ${error.message}`)));
    server.listen(port, host, () => {
      const address = server.address();
      resolve({ port: typeof address === 'object' && address !== null ? address.port : port, served, close: () => server.close() });
    });
  });
}

/**
 * Another node's side: the bytes rank 0 serves at `addr`:`port`, dialling again every
 * `retryMs` until `timeoutMs` have passed (rank 0's node may start later than this one).
 */
export async function fetchBootstrap(addr: string, port: number, options: { timeoutMs: number; retryMs?: number }): Promise<Uint8Array> {
  const deadline = Date.now() + options.timeoutMs;
  for (;;) {
    try {
      return await fetchOnce(addr, port);
    } catch (error) {
      if (Date.now() + (options.retryMs ?? 500) > deadline) {
        throw new KeelError('unavailable', `no multi-node bootstrap at ${addr}:${port} (MASTER_ADDR:MASTER_PORT) after ${options.timeoutMs} ms: ${(error as Error).message}`);
      }
      await new Promise((resolve) => setTimeout(resolve, options.retryMs ?? 500));
    }
  }
}

function fetchOnce(addr: string, port: number): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const socket = connect({ host: addr, port }, () => undefined);
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('error', reject);
    socket.on('end', () => {
      const all = Buffer.concat(chunks);
      if (all.length < 4 || all.readUInt32BE(0) !== all.length - 4) {
        reject(new Error(`the bootstrap at ${addr}:${port} sent ${all.length} bytes, not a whole payload`));
        return;
      }
      resolve(new Uint8Array(all.subarray(4)));
    });
  });
}
