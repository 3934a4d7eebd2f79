import koffi from 'koffi';
import type { Handle } from './driver-api.ts';

/**
 * How a kernel's parameters are laid out, one letter each: `p` pointer, `l` 64-bit integer,
 * `i` 32-bit integer, `f` float, `t` a tensor map passed by value (`const __grid_constant__
 * TensorMap`; the argument is the native address of its 128 bytes, tensor-maps.ts). Must match
 * the kernel's C signature exactly.
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
  private readonly pointerView: DataView;
  /** Parameters whose pointer names a tensor map rather than their value slot, as the last launch left them. */
  private readonly redirected = new Set<number>();

  constructor() {
    this.values = koffi.alloc('uint8_t', MAX_PARAMS * SLOT) as bigint;
    this.pointers = koffi.alloc('uint64_t', MAX_PARAMS) as bigint;
    this.view = new DataView(koffi.view(this.values, MAX_PARAMS * SLOT));
    this.pointerView = new DataView(koffi.view(this.pointers, MAX_PARAMS * 8));
    for (let i = 0; i < MAX_PARAMS; i++) this.pointToSlot(i);
  }

  /** Writes `args` per `signature` and returns the kernelParams pointer for cuLaunchKernel. */
  pack(signature: KernelSignature, args: readonly number[]): Handle {
    if (signature.length !== args.length) throw new Error(`kernel expects ${signature.length} arguments (${signature}), got ${args.length}`);
    if (args.length > MAX_PARAMS) throw new Error(`a kernel launch takes at most ${MAX_PARAMS} arguments here, got ${args.length} (${signature})`);
    for (let i = 0; i < args.length; i++) {
      const at = i * SLOT;
      const v = args[i];
      if (signature[i] === 't') {
        // The driver reads the parameter's 128 bytes where its pointer points: at the map itself.
        this.pointerView.setBigUint64(i * 8, BigInt(v), true);
        this.redirected.add(i);
        continue;
      }
      if (this.redirected.delete(i)) this.pointToSlot(i);
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

  private pointToSlot(i: number): void {
    this.pointerView.setBigUint64(i * 8, this.values + BigInt(i * SLOT), true);
  }

  dispose(): void {
    koffi.free(this.values);
    koffi.free(this.pointers);
  }
}
