import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseQuantizationConfig } from './quantization-config.ts';

const parse = (quantization_config: unknown) => parseQuantizationConfig({ model_type: 'llama', quantization_config }, 'config.json');

test('a config without quantization_config is 16-bit', () => {
  assert.equal(parseQuantizationConfig({ model_type: 'llama' }, 'config.json'), null);
  assert.equal(parse(null), null);
});

test('GPTQ reads bits, group size (-1: one group per row) and the v1/v2 zero convention', () => {
  assert.deepEqual(parse({ quant_method: 'gptq', bits: 4, group_size: 128, desc_act: true, sym: true }), { method: 'gptq', bits: 4, groupSize: 128, zerosMinusOne: true });
  assert.deepEqual(parse({ quant_method: 'gptq', bits: 8, group_size: -1, checkpoint_format: 'gptq_v2' }), { method: 'gptq', bits: 8, groupSize: null, zerosMinusOne: false });
  assert.throws(() => parse({ quant_method: 'gptq', bits: 3, group_size: 128 }), /GPTQ with 3 bits is not supported \(Keel reads 4 and 8\)/);
  assert.throws(() => parse({ quant_method: 'gptq', bits: 4, group_size: 128, checkpoint_format: 'marlin' }), /checkpoint_format "marlin" is not supported/);
});

test('AWQ reads the GEMM layout only', () => {
  assert.deepEqual(parse({ quant_method: 'awq', bits: 4, group_size: 128, zero_point: true, version: 'GEMM' }), { method: 'awq', groupSize: 128 });
  assert.throws(() => parse({ quant_method: 'awq', bits: 4, group_size: 128, version: 'gemv' }), /AWQ version "gemv" is not supported \(Keel reads the GEMM layout\)/);
  assert.throws(() => parse({ quant_method: 'awq', bits: 4, group_size: 128, zero_point: false }), /without zero points/);
});

test('compressed-tensors reads pack-quantized and float-quantized schemes per config group', () => {
  const group = (weights: object) => ({ quant_method: 'compressed-tensors', format: weights && 'type' in weights && weights.type === 'float' ? 'float-quantized' : 'pack-quantized', config_groups: { group_0: { targets: ['Linear'], weights } }, ignore: ['lm_head'] });
  const int4 = parse(group({ num_bits: 4, type: 'int', symmetric: true, strategy: 'group', group_size: 128 }));
  assert.deepEqual(int4, {
    method: 'compressed-tensors',
    format: 'pack-quantized',
    schemes: [{ targets: ['Linear'], type: 'int', bits: 4, strategy: 'group', groupSize: 128, blockStructure: null, symmetric: true }],
  });
  const fp8 = parse(group({ num_bits: 8, type: 'float', strategy: 'block', block_structure: [128, 128] }));
  assert.equal(fp8?.method === 'compressed-tensors' && fp8.schemes[0].blockStructure?.join('x'), '128x128');
  assert.throws(() => parse({ ...group({ num_bits: 4, type: 'int', strategy: 'group', group_size: 128 }), format: 'marlin-24' }), /compressed-tensors format "marlin-24" is not supported/);
  assert.throws(() => parse(group({ num_bits: 4, type: 'int', strategy: 'tensor' })), /strategy "tensor" is not supported for int weights/);
  assert.throws(() => parse(group({ num_bits: 2, type: 'int', strategy: 'group', group_size: 128 })), /2-bit integers are not supported/);
  assert.throws(() => parse({ ...group({ num_bits: 8, type: 'int', strategy: 'channel' }), quantization_status: 'frozen' }), /quantization_status "frozen"/);
});

test('quant_method fp8 reads block scales or one scale per tensor', () => {
  assert.deepEqual(parse({ quant_method: 'fp8', activation_scheme: 'dynamic', fmt: 'e4m3', weight_block_size: [128, 128] }), { method: 'fp8', blockSize: [128, 128] });
  assert.deepEqual(parse({ quant_method: 'fp8', activation_scheme: 'static' }), { method: 'fp8', blockSize: null });
  assert.throws(() => parse({ quant_method: 'fp8', fmt: 'e5m2' }), /fp8 fmt "e5m2" is not supported/);
});

test('bitsandbytes reads 4-bit nf4/fp4 and 8-bit LLM.int8(), and refuses the variants Keel cannot run', () => {
  const four = { quant_method: 'bitsandbytes', load_in_4bit: true, load_in_8bit: false, bnb_4bit_quant_type: 'nf4', bnb_4bit_use_double_quant: true, bnb_4bit_compute_dtype: 'bfloat16', bnb_4bit_quant_storage: 'uint8' };
  assert.deepEqual(parse(four), { method: 'bitsandbytes', bits: 4, quantType: 'nf4', threshold: 0 });
  assert.deepEqual(parse({ ...four, bnb_4bit_quant_type: 'fp4' }), { method: 'bitsandbytes', bits: 4, quantType: 'fp4', threshold: 0 });
  const eight = { quant_method: 'bitsandbytes', load_in_4bit: false, load_in_8bit: true, llm_int8_threshold: 6.0, llm_int8_has_fp16_weight: false };
  assert.deepEqual(parse(eight), { method: 'bitsandbytes', bits: 8, quantType: 'nf4', threshold: 6 });
  assert.throws(() => parse({ ...eight, llm_int8_has_fp16_weight: true }), /llm_int8_has_fp16_weight true \(16-bit weights kept for training\) is not supported/);
  assert.throws(() => parse({ ...eight, llm_int8_threshold: -1 }), /llm_int8_threshold must be a number >= 0/);
  assert.throws(() => parse({ ...four, bnb_4bit_quant_storage: 'bfloat16' }), /bnb_4bit_quant_storage "bfloat16" is not supported \(Keel reads uint8, two codes a byte\)/);
  assert.throws(() => parse({ ...four, bnb_4bit_quant_type: 'af4' }), /bnb_4bit_quant_type "af4" is not supported/);
  assert.throws(() => parse({ quant_method: 'bitsandbytes' }), /exactly one of load_in_4bit and load_in_8bit/);
});

test('quant_method mxfp4 (gpt-oss) needs no other field', () => {
  assert.deepEqual(parse({ quant_method: 'mxfp4', modules_to_not_convert: ['model.layers.*.self_attn', 'lm_head'] }), { method: 'mxfp4' });
});

test('any other method gets one error naming it and what Keel reads', () => {
  for (const method of ['gguf', 'hqq', 'eetq', undefined]) {
    assert.throws(() => parse({ quant_method: method }), new RegExp(`quant_method ${JSON.stringify(method) ?? 'undefined'} is not supported; Keel reads gptq, awq, compressed-tensors \\(pack-quantized, float-quantized\\), fp8, mxfp4, bitsandbytes \\(4-bit nf4/fp4, 8-bit LLM\\.int8\\(\\)\\) and aqlm \\(1x16, 2x8\\) checkpoints, or quantizes 16-bit ones at load \\(--quantization fp8\\|int8\\|int4\\|mxfp4\\|nf4\\|llm-int8\\)`));
  }
});

test('AQLM reads 1x16 and 2x8 codebooks over groups of 8 input columns, and refuses every other variant by name', () => {
  const aqlm = { quant_method: 'aqlm', in_group_size: 8, out_group_size: 1, num_codebooks: 1, nbits_per_codebook: 16, linear_weights_not_to_quantize: ['lm_head.weight'] };
  assert.deepEqual(parse(aqlm), { method: 'aqlm', format: 'aqlm-1x16' });
  assert.deepEqual(parse({ ...aqlm, num_codebooks: 2, nbits_per_codebook: 8 }), { method: 'aqlm', format: 'aqlm-2x8' });
  assert.deepEqual(parse({ quant_method: 'aqlm' }), { method: 'aqlm', format: 'aqlm-1x16' }, "transformers' AqlmConfig defaults");
  assert.throws(() => parse({ ...aqlm, out_group_size: 2 }), /AQLM out_group_size 2 \(codebook vectors spanning 2 output rows\) is not supported; Keel reads out_group_size 1/);
  assert.throws(() => parse({ ...aqlm, in_group_size: 16 }), /AQLM in_group_size 16 is not supported; Keel reads vectors of 8 input columns/);
  assert.throws(() => parse({ ...aqlm, num_codebooks: 1, nbits_per_codebook: 8 }), /AQLM with 1 codebook\(s\) of 8 bits \(1x8\) is not supported; Keel reads 1x16 and 2x8/);
  assert.throws(() => parse({ ...aqlm, num_codebooks: 4, nbits_per_codebook: 8 }), /\(4x8\) is not supported/);
});
