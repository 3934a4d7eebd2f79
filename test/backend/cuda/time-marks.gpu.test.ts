import { test } from 'node:test';
import { CudaBackend } from '../../../src/backend/cuda/cuda-backend.ts';
import { checkTimeMarks } from '../../helpers/time-marks.ts';

test('CUDA time marks are events on the stream that time the work queued between them, within the readable window', () => {
  const backend = new CudaBackend();
  try {
    checkTimeMarks(backend);
  } finally {
    backend.dispose();
  }
});
