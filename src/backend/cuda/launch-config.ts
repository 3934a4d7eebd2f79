import koffi from 'koffi';
import type { Handle } from './driver-api.ts';

// cuLaunchKernelEx's CUlaunchConfig with one CUlaunchAttribute, as CUDA 13's cuda.h declares them
// (CUlaunchAttributeValue_union, CUlaunchAttribute_st, CUlaunchConfig_st; the layout has not
// changed since CUDA 12.0). launch-config.test.ts compiles a C program against the cuda.h of the
// installed toolkit and checks these sizes and offsets against the compiler's.

/** CUlaunchAttributeID: the launch may overlap the kernel before it in the stream (PDL). */
export const CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION = 6;

/**
 * The attribute's value: a 64-byte union whose members include pointers (programmaticEvent's
 * CUevent), so 8-byte aligned; uint64_t[8] gives both. Only the int at offset 0 is used here.
 */
export const CUlaunchAttributeValue = koffi.union('CUlaunchAttributeValue', {
  pad: koffi.array('uint64_t', 8),
  programmaticStreamSerializationAllowed: 'int',
});

/** `char pad[8 - sizeof(CUlaunchAttributeID)]` puts the value at offset 8. */
export const CUlaunchAttribute = koffi.struct('CUlaunchAttribute', {
  id: 'int',
  pad: koffi.array('char', 4),
  value: CUlaunchAttributeValue,
});

export const CUlaunchConfig = koffi.struct('CUlaunchConfig', {
  gridDimX: 'unsigned int',
  gridDimY: 'unsigned int',
  gridDimZ: 'unsigned int',
  blockDimX: 'unsigned int',
  blockDimY: 'unsigned int',
  blockDimZ: 'unsigned int',
  sharedMemBytes: 'unsigned int',
  hStream: 'void *',
  attrs: koffi.pointer(CUlaunchAttribute),
  numAttrs: 'unsigned int',
});

const CONFIG_BYTES = koffi.sizeof(CUlaunchConfig);
const ATTRIBUTE_BYTES = koffi.sizeof(CUlaunchAttribute);
const GRID_OFFSET = koffi.offsetof(CUlaunchConfig, 'gridDimX');
const BLOCK_OFFSET = koffi.offsetof(CUlaunchConfig, 'blockDimX');
const SHARED_OFFSET = koffi.offsetof(CUlaunchConfig, 'sharedMemBytes');
const STREAM_OFFSET = koffi.offsetof(CUlaunchConfig, 'hStream');
const ATTRS_OFFSET = koffi.offsetof(CUlaunchConfig, 'attrs');
const NUM_ATTRS_OFFSET = koffi.offsetof(CUlaunchConfig, 'numAttrs');
const VALUE_OFFSET = koffi.offsetof(CUlaunchAttribute, 'value');

/**
 * cuLaunchKernelEx's `config` for a launch with programmatic stream serialization, in native memory
 * allocated once (as LaunchParams): the driver reads it during the call, so one buffer serves every
 * launch, captured into a graph or not. Only the grid, block, shared bytes and stream change.
 */
export class ProgrammaticLaunchConfig {
  private readonly config: bigint;
  private readonly attribute: bigint;
  private readonly view: DataView;

  constructor() {
    this.config = koffi.alloc('uint8_t', CONFIG_BYTES) as bigint;
    this.attribute = koffi.alloc('uint8_t', ATTRIBUTE_BYTES) as bigint;
    const attribute = new DataView(koffi.view(this.attribute, ATTRIBUTE_BYTES));
    for (let i = 0; i < ATTRIBUTE_BYTES; i++) attribute.setUint8(i, 0);
    attribute.setInt32(koffi.offsetof(CUlaunchAttribute, 'id'), CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION, true);
    attribute.setInt32(VALUE_OFFSET, 1, true);
    this.view = new DataView(koffi.view(this.config, CONFIG_BYTES));
    for (let i = 0; i < CONFIG_BYTES; i++) this.view.setUint8(i, 0);
    this.view.setBigUint64(ATTRS_OFFSET, this.attribute, true);
    this.view.setUint32(NUM_ATTRS_OFFSET, 1, true);
  }

  /** Writes the launch's shape and stream and returns the config pointer for cuLaunchKernelEx. */
  pack(grid: readonly number[], block: readonly number[], sharedBytes: number, stream: Handle): Handle {
    for (let i = 0; i < 3; i++) {
      this.view.setUint32(GRID_OFFSET + 4 * i, grid[i], true);
      this.view.setUint32(BLOCK_OFFSET + 4 * i, block[i], true);
    }
    this.view.setUint32(SHARED_OFFSET, sharedBytes, true);
    this.view.setBigUint64(STREAM_OFFSET, stream, true);
    return this.config;
  }

  dispose(): void {
    koffi.free(this.config);
    koffi.free(this.attribute);
  }
}
