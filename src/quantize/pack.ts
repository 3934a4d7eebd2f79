import type { SafetensorsTensor } from '../checkpoint/safetensors-writer.ts';
import { float32ToHostTensor } from '../tensor/host-dtype.ts';
import { AQLM_GROUP, aqlmLayout, describeQuantized, isAqlm, type QuantizedWeight } from '../tensor/quantized-weight.ts';
import type { GroupQuantized } from './group-quantizer.ts';

/** The 4-bit field AutoAWQ's GEMM packing puts output column 8c + o in: columns 0, 2, 4, 6, 1, 3, 5, 7 fill fields 0..7. */
const AWQ_FIELD_OF_COLUMN = [0, 4, 1, 5, 2, 6, 3, 7];

/**
 * A layer in the GPTQ layout (AutoGPTQ's `checkpoint_format: gptq`, which transformers, vLLM and
 * Keel read), W [out, in] with pack = 32 / bits codes a word:
 * `qweight` I32 [in / pack, out] (input i of output j in word [i / pack, j], field i % pack),
 * `qzeros` I32 [groups, out / pack] (zero − 1, packed along the outputs), `scales` F16 [groups, out],
 * `g_idx` I32 [in] (each input column's group).
 */
export function packGptq(q: GroupQuantized): Record<'qweight' | 'qzeros' | 'scales' | 'g_idx', SafetensorsTensor> {
  const { rows: out, cols: inDim, bits } = q;
  const pack = 32 / bits;
  if (inDim % pack !== 0 || out % pack !== 0) throw new Error(`GPTQ packing needs both dimensions of [${out}, ${inDim}] to be multiples of ${pack}`);
  const groups = q.scales.length / out;
  const mask = 2 ** bits - 1;
  const qweight = new Uint32Array((inDim / pack) * out);
  for (let j = 0; j < out; j++) {
    for (let i = 0; i < inDim; i++) qweight[Math.floor(i / pack) * out + j] |= q.codes[j * inDim + i] << (bits * (i % pack));
  }
  const qzeros = new Uint32Array(groups * (out / pack));
  for (let g = 0; g < groups; g++) {
    for (let j = 0; j < out; j++) qzeros[g * (out / pack) + Math.floor(j / pack)] |= ((q.zeros[j * groups + g] - 1) & mask) << (bits * (j % pack));
  }
  return {
    qweight: int32Tensor(qweight, [inDim / pack, out]),
    qzeros: int32Tensor(qzeros, [groups, out / pack]),
    scales: f16Tensor(transposeScales(q), [groups, out]),
    g_idx: int32Tensor(new Uint32Array(q.groupOf.buffer, q.groupOf.byteOffset, q.groupOf.length), [inDim]),
  };
}

/**
 * A 4-bit layer in AutoAWQ's GEMM layout, W [out, in]: `qweight` I32 [in, out / 8] (output j of
 * input i in word [i, j / 8], field AWQ_FIELD_OF_COLUMN[j % 8]), `qzeros` I32 [groups, out / 8]
 * packed alike, `scales` F16 [groups, out].
 */
export function packAwqGemm(q: GroupQuantized): Record<'qweight' | 'qzeros' | 'scales', SafetensorsTensor> {
  const { rows: out, cols: inDim } = q;
  if (q.bits !== 4) throw new Error('the AWQ GEMM layout is 4-bit');
  if (out % 8 !== 0) throw new Error(`AWQ packing needs the output dimension ${out} to be a multiple of 8`);
  const groups = q.scales.length / out;
  const shift = (j: number) => 4 * AWQ_FIELD_OF_COLUMN[j % 8];
  const qweight = new Uint32Array(inDim * (out / 8));
  for (let i = 0; i < inDim; i++) {
    for (let j = 0; j < out; j++) qweight[i * (out / 8) + Math.floor(j / 8)] |= q.codes[j * inDim + i] << shift(j);
  }
  const qzeros = new Uint32Array(groups * (out / 8));
  for (let g = 0; g < groups; g++) for (let j = 0; j < out; j++) qzeros[g * (out / 8) + Math.floor(j / 8)] |= q.zeros[j * groups + g] << shift(j);
  return { qweight: int32Tensor(qweight, [inDim, out / 8]), qzeros: int32Tensor(qzeros, [groups, out / 8]), scales: f16Tensor(transposeScales(q), [groups, out]) };
}

/**
 * A layer in compressed-tensors' pack-quantized layout (llm-compressor's int4/int8 weight-only
 * checkpoints, `format: pack-quantized`), W [out, in] with pack = 32 / bits codes a word:
 * `weight_packed` I32 [out, ceil(in / pack)] (input i of output j in word [j, i / pack], field
 * i % pack, stored as the signed value plus 2^(bits − 1): the code itself, whose zero GPTQ's
 * symmetric grid puts at 2^(bits − 1)), `weight_scale` F16 [out, groups], and for an asymmetric
 * grid `weight_zero_point` I32 [ceil(out / pack), groups] (output j's zero in word [j / pack, g],
 * field j % pack, offset alike); `weight_g_idx` I32 [in] when act-order moved columns between
 * groups; `weight_shape` I64 [2] = [out, in].
 */
export function packCompressedTensors(q: GroupQuantized, symmetric: boolean): Record<string, SafetensorsTensor> {
  const { rows: out, cols: inDim, bits } = q;
  const pack = 32 / bits;
  const groups = q.scales.length / out;
  const wordsPerRow = Math.ceil(inDim / pack);
  const packed = new Uint32Array(out * wordsPerRow);
  for (let j = 0; j < out; j++) {
    for (let i = 0; i < inDim; i++) packed[j * wordsPerRow + Math.floor(i / pack)] |= q.codes[j * inDim + i] << (bits * (i % pack));
  }
  const tensors: Record<string, SafetensorsTensor> = {
    weight_packed: int32Tensor(packed, [out, wordsPerRow]),
    weight_scale: f16Tensor(q.scales, [out, groups]),
    weight_shape: { dtype: 'I64', shape: [2], data: new Uint8Array(BigInt64Array.of(BigInt(out), BigInt(inDim)).buffer) },
  };
  if (!symmetric) {
    const zeros = new Uint32Array(Math.ceil(out / pack) * groups);
    for (let j = 0; j < out; j++) for (let g = 0; g < groups; g++) zeros[Math.floor(j / pack) * groups + g] |= q.zeros[j * groups + g] << (bits * (j % pack));
    tensors.weight_zero_point = int32Tensor(zeros, [Math.ceil(out / pack), groups]);
  }
  if (q.groupOf.some((g, i) => g !== Math.floor(i / q.groupSize))) {
    tensors.weight_g_idx = int32Tensor(new Uint32Array(q.groupOf.buffer, q.groupOf.byteOffset, q.groupOf.length), [inDim]);
  }
  return tensors;
}

/**
 * An AQLM layer (one codebook set) as the aqlm library's QuantizedLinear saves it, W [out, in]
 * with M codebooks of 2^B vectors: `codes` [out, in / 8, M] (I16 for B = 16, I8 for B = 8: codes
 * stored signed, c − 2^B above 2^(B−1), whose little-endian bytes are Keel's code words as they
 * are), `codebooks` F16 [M, 2^B, 1, 8], `scales` F16 [out, 1, 1, 1].
 */
export function packAqlm(w: QuantizedWeight): Record<'codes' | 'codebooks' | 'scales', SafetensorsTensor> {
  if (!isAqlm(w.format) || w.codebooks === null || w.codebooks.partRows.length !== 1) throw new Error(`packAqlm takes an AQLM weight with one codebook set, not ${describeQuantized(w)}`);
  const { codebooks, bits, size } = aqlmLayout(w.format);
  return {
    codes: { dtype: bits === 16 ? 'I16' : 'I8', shape: [w.rows, w.cols / AQLM_GROUP, codebooks], data: w.codes.slice() },
    codebooks: f16Tensor(w.codebooks.values, [codebooks, size, 1, AQLM_GROUP]),
    scales: f16Tensor(w.scales, [w.rows, 1, 1, 1]),
  };
}

/** [rows, groups] -> [groups, rows]. */
function transposeScales(q: GroupQuantized): Float32Array {
  const groups = q.scales.length / q.rows;
  const out = new Float32Array(q.scales.length);
  for (let j = 0; j < q.rows; j++) for (let g = 0; g < groups; g++) out[g * q.rows + j] = q.scales[j * groups + g];
  return out;
}

function int32Tensor(words: Uint32Array, shape: number[]): SafetensorsTensor {
  return { dtype: 'I32', shape, data: new Uint8Array(words.buffer, words.byteOffset, words.byteLength) };
}

function f16Tensor(values: Float32Array, shape: number[]): SafetensorsTensor {
  return { dtype: 'F16', shape, data: float32ToHostTensor(values, 'f16', shape).data };
}
