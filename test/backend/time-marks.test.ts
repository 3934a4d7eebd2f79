import { test } from 'node:test';
import { CpuBackend } from '../../src/backend/cpu/cpu-backend.ts';
import { checkTimeMarks } from '../helpers/time-marks.ts';

test('CPU time marks read the host clock around the work between them, within the readable window', () => {
  checkTimeMarks(new CpuBackend());
});
