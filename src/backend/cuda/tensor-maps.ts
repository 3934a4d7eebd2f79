import koffi from 'koffi';
import type { CudaDriver, DevicePtr } from './driver-api.ts';

/** cuda.h's CUtensorMap: 16 opaque 64-bit words, at least 64-byte aligned. */
const MAP_BYTES = 128;
const MAP_ALIGN = 64;
/** Pools and layers a process maps at most before the oldest maps are dropped (a map is 128 bytes). */
const MAX_MAPS = 4096;

/** cuTensorMapEncodeTiled's shape of a bf16 tensor: sizes and box innermost first, byte strides of the outer dims. */
export interface TiledMapShape {
  dims: number[];
  strides: number[];
  box: number[];
}

/** TMA's box is at most 256 elements a dimension, and the 128-byte swizzle's rows are 64 bf16 wide. */
const MAX_TMA_BOX_ROWS = 256;
const SWIZZLE_ROW_ELEMENTS = 64;
/** Slots are ints (checkCudaKvLayout): the slot dimension's bound; loads name only slots a block table holds. */
const MAX_SLOTS = 2 ** 31 - 1;

/**
 * A paged K or V pool [slots, numKvHeads, headDim] bf16 as TMA reads it: dims (column, kv head,
 * slot), a box of one kv head's `blockSize` consecutive slots (one cache block) by 64 columns (one
 * 128-byte swizzle panel), so that a tile's blocks land in the tile's swizzled rows as they lie.
 */
export function kvPoolMapShape(numKvHeads: number, headDim: number, blockSize: number): TiledMapShape {
  if (headDim % SWIZZLE_ROW_ELEMENTS !== 0) throw new RangeError(`a TMA pool map needs a head dim that is a multiple of ${SWIZZLE_ROW_ELEMENTS}, not ${headDim}`);
  if (blockSize < 1 || blockSize > MAX_TMA_BOX_ROWS) throw new RangeError(`a TMA box holds 1 to ${MAX_TMA_BOX_ROWS} rows, not a block of ${blockSize}`);
  return { dims: [headDim, numKvHeads, MAX_SLOTS], strides: [headDim * 2, numKvHeads * headDim * 2], box: [SWIZZLE_ROW_ELEMENTS, 1, blockSize] };
}

/**
 * Tensor maps in native memory, encoded once per pool and shape and passed to kernels by address
 * (launch-params.ts's `t`): the driver copies a map into the launch (and into a captured graph),
 * so one buffer serves every launch of a layer.
 */
export class TensorMaps {
  /** Whether maps can be encoded (a Hopper GPU, a driver of CUDA 12.0 or later); zero() serves either way. */
  readonly encodes: boolean;
  private readonly driver: CudaDriver;
  private readonly maps = new Map<string, { buffer: bigint; address: number }>();
  private zeroMap: { buffer: bigint; address: number } | null = null;

  constructor(driver: CudaDriver, hopper: boolean) {
    this.driver = driver;
    this.encodes = hopper && driver.hasTensorMaps;
  }

  /** The map of a bf16 K or V pool at `pool` (kvPoolMapShape), by its native address. */
  kvPool(pool: DevicePtr, numKvHeads: number, headDim: number, blockSize: number): number {
    if (!this.encodes) throw new Error('tensor maps need a Hopper GPU and a driver of CUDA 12.0 or later');
    const key = `${pool}:${numKvHeads}:${headDim}:${blockSize}`;
    const cached = this.maps.get(key);
    if (cached !== undefined) return cached.address;
    const shape = kvPoolMapShape(numKvHeads, headDim, blockSize);
    const map = this.allocate();
    try {
      this.driver.encodeTensorMapBf16(BigInt(map.address), pool, shape.dims, shape.strides, shape.box);
    } catch (err) {
      koffi.free(map.buffer);
      throw err;
    }
    if (this.maps.size >= MAX_MAPS) this.dropOldest();
    this.maps.set(key, map);
    return map.address;
  }

  /** A zeroed map, for the map parameters of a launch that does not use them (the driver still copies 128 bytes). */
  zero(): number {
    this.zeroMap ??= this.allocate();
    return this.zeroMap.address;
  }

  dispose(): void {
    for (const map of this.maps.values()) koffi.free(map.buffer);
    this.maps.clear();
    if (this.zeroMap !== null) koffi.free(this.zeroMap.buffer);
    this.zeroMap = null;
  }

  private allocate(): { buffer: bigint; address: number } {
    const buffer = koffi.alloc('uint8_t', MAP_BYTES + MAP_ALIGN) as bigint;
    const address = Number(buffer) + ((MAP_ALIGN - (Number(buffer) % MAP_ALIGN)) % MAP_ALIGN);
    new Uint8Array(koffi.view(BigInt(address), MAP_BYTES)).fill(0);
    return { buffer, address };
  }

  // Launches already made copied their maps; a graph holds its own copy.
  private dropOldest(): void {
    const [key, map] = this.maps.entries().next().value!;
    koffi.free(map.buffer);
    this.maps.delete(key);
  }
}
