import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { writeSafetensors } from '../../test/helpers/model-safetensors-writer.ts';
import { tempDir } from '../../test/helpers/model-temp-dir.ts';
import { assertInvalidModel } from '../../test/helpers/invalid-model.ts';
import { float32ToHostTensor, hostTensorToFloat32 } from '../tensor/host-dtype.ts';
import { openCheckpoint } from './checkpoint.ts';
import { languageModelTensors } from './language-model-tensors.ts';

const tensor = (...values: number[]) => float32ToHostTensor(Float32Array.from(values), 'f32', [values.length]);

/** The layouts vision-language checkpoints are written in, with what lies beside their language model. */
const LAYOUTS = {
  'the Hub and transformers 5 (language_model.model.*)': {
    'language_model.model.embed_tokens.weight': tensor(1, 2),
    'language_model.model.layers.0.self_attn.q_proj.weight': tensor(3),
    'language_model.lm_head.weight': tensor(4, 5),
    'vision_tower.vision_model.embeddings.patch_embedding.weight': tensor(6),
    'multi_modal_projector.linear_1.weight': tensor(7),
  },
  'transformers 4.52+ (model.language_model.*)': {
    'model.language_model.embed_tokens.weight': tensor(1, 2),
    'model.language_model.layers.0.self_attn.q_proj.weight': tensor(3),
    'lm_head.weight': tensor(4, 5),
    'model.vision_tower.vision_model.embeddings.patch_embedding.weight': tensor(6),
    'model.multi_modal_projector.linear_1.weight': tensor(7),
  },
  "Qwen2-VL's and Qwen2.5-VL's (the causal LM's own names, visual.*)": {
    'model.embed_tokens.weight': tensor(1, 2),
    'model.layers.0.self_attn.q_proj.weight': tensor(3),
    'lm_head.weight': tensor(4, 5),
    'visual.patch_embed.proj.weight': tensor(6),
    'visual.merger.mlp.0.weight': tensor(7),
  },
};

for (const [layout, tensors] of Object.entries(LAYOUTS)) {
  test(`a vision-language checkpoint's language model reads under its causal-LM names: ${layout}`, (t) => {
    const dir = tempDir(t);
    writeSafetensors(join(dir, 'model.safetensors'), tensors);
    const ckpt = languageModelTensors(openCheckpoint(dir));
    t.after(() => ckpt.close());
    assert.deepEqual([...ckpt.tensorNames].sort(), ['lm_head.weight', 'model.embed_tokens.weight', 'model.layers.0.self_attn.q_proj.weight']);
    assert.ok(ckpt.has('model.embed_tokens.weight') && !ckpt.has('vision_tower.vision_model.embeddings.patch_embedding.weight'));
    assert.deepEqual(ckpt.info('lm_head.weight'), { dtype: 'F32', shape: [2] });
    assert.deepEqual(Array.from(hostTensorToFloat32(ckpt.read('lm_head.weight'))), [4, 5]);
    assert.deepEqual(Array.from(hostTensorToFloat32(ckpt.read('model.layers.0.self_attn.q_proj.weight'))), [3]);
    assert.deepEqual(Array.from(hostTensorToFloat32(ckpt.readSlice!('model.embed_tokens.weight', { dim: 0, start: 1, count: 1 }))), [2]);
    assert.equal(ckpt.readRaw('model.embed_tokens.weight').shape[0], 2);
    assertInvalidModel(() => ckpt.read('model.norm.weight'), '"model.norm.weight"', dir);
  });
}
