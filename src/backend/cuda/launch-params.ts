import koffi from 'koffi';
import type { Handle } from './driver-api.ts';

/**
 * How a kernel's parameters are laid out, one letter each: `p` pointer, `l` 64-bit integer,
 * `i` 32-bit integer, `f` float. Must match the kernel's C signature exactly.
 */
export type KernelSignature = string;

const MAX_PARAMS = 32;
const SLOT = 8;

/**
 * cuLaunchKernel's `kernelParams`: an array of pointers, one per parameter, to the parameter's
 * value. Both arrays live in native memory allocated once; the driver copies the values during
 * the launch call, so one buffer serves every launch (and every launch captured into a graph).
 */
export class LaunchParams {
  private readonly values: bigint;
  private readonly pointers: bigint;
  private readonly view: DataView;

  constructor() {
    this.values = koffi.alloc('uint8_t', MAX_PARAMS * SLOT) as bigint;
    this.pointers = koffi.alloc('uint64_t', MAX_PARAMS) as bigint;
    this.view = new DataView(koffi.view(this.values, MAX_PARAMS * SLOT));
    const pointerView = new DataView(koffi.view(this.pointers, MAX_PARAMS * 8));
    for (let i = 0; i < MAX_PARAMS; i++) pointerView.setBigUint64(i * 8, this.values + BigInt(i * SLOT), true);
  }

  /** Writes `args` per `signature` and returns the kernelParams pointer for cuLaunchKernel. */
  pack(signature: KernelSignature, args: readonly number[]): Handle {
    if (signature.length !== args.length || args.length > MAX_PARAMS) {
      throw new Error(`kernel expects ${signature.length} arguments (${signature}), got ${args.length}`);
    }
    for (let i = 0; i < args.length; i++) {
      const at = i * SLOT;
      const v = args[i];
      switch (signature[i]) {
        case 'p':
        case 'l':
          this.view.setUint32(at, v % 0x1_0000_0000, true);
          this.view.setUint32(at + 4, Math.floor(v / 0x1_0000_0000), true);
          break;
        case 'i':
          this.view.setInt32(at, v, true);
          break;
        case 'f':
          this.view.setFloat32(at, v, true);
          break;
        default:
          throw new Error(`unknown kernel parameter kind '${signature[i]}' in ${signature}`);
      }
    }
    return this.pointers;
  }

  dispose(): void {
    koffi.free(this.values);
    koffi.free(this.pointers);
  }
}

const CONFIG_BYTES = 56;
const ATTRIBUTE_BYTES = 72;
const CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION = 6;

/**
 * cuLaunchKernelEx's CUlaunchConfig with one attribute, programmatic stream serialization: the
 * kernel may begin launching before the previous kernel in the stream has finished (every kernel
 * waits for its predecessors in begin_dependent_kernel, common.cuh). Lives in native memory
 * allocated once, rewritten per launch.
 */
export class LaunchConfig {
  private readonly config: bigint;
  private readonly view: DataView;

  constructor(stream: Handle) {
    this.config = koffi.alloc('uint8_t', CONFIG_BYTES + ATTRIBUTE_BYTES) as bigint;
    this.view = new DataView(koffi.view(this.config, CONFIG_BYTES + ATTRIBUTE_BYTES));
    // struct CUlaunchConfig { unsigned grid[3], block[3], sharedMemBytes; CUstream; CUlaunchAttribute *attrs; unsigned numAttrs; }
    this.view.setBigUint64(32, koffi.address(stream), true);
    this.view.setBigUint64(40, this.config + BigInt(CONFIG_BYTES), true);
    this.view.setUint32(48, 1, true);
    // struct CUlaunchAttribute { int id; char pad[4]; union (64 bytes) { int programmaticStreamSerializationAllowed; ... } }
    this.view.setInt32(CONFIG_BYTES, CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION, true);
    this.view.setInt32(CONFIG_BYTES + 8, 1, true);
  }

  /** Writes the launch shape and returns the CUlaunchConfig pointer. */
  pack(grid: readonly number[], block: readonly number[], sharedBytes: number): Handle {
    for (let d = 0; d < 3; d++) {
      this.view.setUint32(4 * d, grid[d], true);
      this.view.setUint32(12 + 4 * d, block[d], true);
    }
    this.view.setUint32(24, sharedBytes, true);
    return this.config;
  }

  dispose(): void {
    koffi.free(this.config);
  }
}
