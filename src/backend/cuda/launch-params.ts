import koffi from 'koffi';
import type { Handle } from './driver-api.ts';

/**
 * How a kernel's parameters are laid out, one letter each: `p` pointer, `l` 64-bit integer,
 * `i` 32-bit integer, `f` float. Must match the kernel's C signature exactly.
 */
export type KernelSignature = string;

const MAX_PARAMS = 64;
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
    if (signature.length !== args.length) throw new Error(`kernel expects ${signature.length} arguments (${signature}), got ${args.length}`);
    if (args.length > MAX_PARAMS) throw new Error(`a kernel launch takes at most ${MAX_PARAMS} arguments here, got ${args.length} (${signature})`);
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
