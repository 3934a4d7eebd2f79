import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pipelineStage, wholeModel } from './pipeline-stage.ts';

test('stages cover the layers in order without gaps, the first ones taking the remainder', () => {
  for (const [numLayers, count] of [[2, 2], [3, 2], [7, 3], [80, 8], [5, 5]]) {
    const stages = Array.from({ length: count }, (_, i) => pipelineStage(numLayers, i, count));
    assert.equal(stages[0].firstLayer, 0);
    assert.equal(stages[count - 1].endLayer, numLayers);
    stages.slice(1).forEach((s, i) => assert.equal(s.firstLayer, stages[i].endLayer, `${numLayers} layers, stage ${i + 1} follows stage ${i}`));
    const sizes = stages.map((s) => s.endLayer - s.firstLayer);
    assert.ok(Math.max(...sizes) - Math.min(...sizes) <= 1, `${numLayers} layers over ${count}: ${sizes}`);
    assert.deepEqual(sizes, [...sizes].sort((a, b) => b - a), 'larger stages first');
  }
  assert.deepEqual(wholeModel(4), pipelineStage(4, 0, 1));
});

test('more stages than layers is refused, naming both', () => {
  assert.throws(() => pipelineStage(2, 0, 3), /pipeline-parallel size 3 exceeds the model's 2 layers/);
});
