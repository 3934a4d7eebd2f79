import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { openCheckpoint } from '../src/checkpoint/checkpoint.ts';
import { DEFAULT_MODEL_DIR } from '../src/engine/load-engine.ts';
import { LLM } from '../src/engine/llm.ts';
import { readModelArchitecture } from '../src/models/registry.ts';
import { pruneCheckpoint } from '../src/prune/prune-checkpoint.ts';
import { hostTensorToFloat32 } from '../src/tensor/host-dtype.ts';
import { tempDir } from './helpers/model-temp-dir.ts';

// tools/train/recover_sparse.py needs torch, transformers, safetensors and tokenizers: the Python
// KEEL_TRAIN_PYTHON names (e.g. the oracle venv of docs/oracle-fixtures.md), else python3 when it has them.
const SCRIPT = fileURLToPath(new URL('../tools/train/recover_sparse.py', import.meta.url));
const python = [process.env.KEEL_TRAIN_PYTHON, 'python3']
  .filter((p): p is string => p !== undefined && (!p.startsWith('/') || existsSync(p)))
  .find((p) => spawnSync(p, ['-c', 'import torch, transformers, safetensors, tokenizers'], { stdio: 'ignore' }).status === 0);
const skip = python === undefined ? 'no Python with torch, transformers, safetensors and tokenizers (set KEEL_TRAIN_PYTHON)' : false;

test('the recovery fine-tune keeps every pruned weight 2:4 with its zeros in place, lowers the held-out loss, and writes a checkpoint keel loads sparse', { skip }, async (t) => {
  const dir = tempDir(t);
  const pruned = join(dir, 'pruned');
  const recovered = join(dir, 'recovered');
  const reports = pruneCheckpoint({ model: DEFAULT_MODEL_DIR, method: 'magnitude', pattern: '2:4', samples: [], output: pruned });
  // Two steps on a small corpus: enough to move the weights and the loss, far from a real fine-tune.
  const run = spawnSync(python!, [SCRIPT, '--model', pruned, '--output', recovered, '--loss', 'kl', '--teacher', DEFAULT_MODEL_DIR,
    '--steps', '2', '--batch-size', '2', '--seq-len', '64', '--lr', '1e-3', '--corpus-mb', '0.5', '--val-windows', '4'],
  { encoding: 'utf8', env: { ...process.env, OMP_NUM_THREADS: '1' } });
  assert.equal(run.status, 0, run.stderr);

  const log = JSON.parse(readFileSync(join(recovered, 'recovery_log.json'), 'utf8')) as { steps: number; held_out_loss_before: number; held_out_loss_after: number };
  assert.equal(log.steps, 2);
  assert.ok(log.held_out_loss_after < log.held_out_loss_before, `held-out loss ${log.held_out_loss_before} -> ${log.held_out_loss_after}`);
  assert.deepEqual(readModelArchitecture(recovered).sparsity, readModelArchitecture(pruned).sparsity, 'the 2:4 declaration survives');

  const before = openCheckpoint(pruned);
  const after = openCheckpoint(recovered);
  try {
    assert.deepEqual([...after.tensorNames].sort(), [...before.tensorNames].sort());
    let moved = 0;
    for (const { name } of reports) {
      assert.equal(after.info(name).dtype, before.info(name).dtype);
      const w0 = hostTensorToFloat32(before.read(name));
      const w1 = hostTensorToFloat32(after.read(name));
      for (let at = 0; at < w1.length; at += 4) {
        for (let i = at; i < at + 4; i++) if (w0[i] === 0) assert.equal(w1[i], 0, `${name}[${i}] was pruned and is ${w1[i]} after the fine-tune`);
        assert.ok([0, 1, 2, 3].filter((i) => w1[at + i] !== 0).length <= 2, `${name}: group at ${at}`);
      }
      if (w1.some((v, i) => v !== w0[i])) moved++;
    }
    assert.equal(moved, reports.length, 'every pruned weight was trained');
  } finally {
    before.close();
    after.close();
  }

  // Keel's loader reads each declared weight compressed and refuses one that is not 2:4.
  const llm = await LLM.load({ model: recovered, backend: 'cpu', showProgress: false });
  try {
    const [output] = await llm.generate(['def add(a, b):'], { temperature: 0, maxTokens: 4, ignoreEos: true });
    assert.equal(output.outputs[0].tokenIds.length, 4);
  } finally {
    await llm.close();
  }
});
