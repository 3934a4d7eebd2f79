import type { Backend, StepInputs } from '../../src/backend/backend.ts';
import { backendView } from './backend-view.ts';

/** A step a backend posing as one that records graphs was asked to replay. */
export interface Replayed {
  numSeqs: number;
  width: number;
  logitsRows: number;
  owner: object;
}

/** The CPU backend posing as one that records graphs, logging each step it is asked to replay. */
export function recordingBackend(backend: Backend, replayed: Replayed[]): Backend {
  return backendView(backend, {
    recordsGraphs: true,
    replayForward: <T>(step: StepInputs, owner: object, forward: () => T): T => {
      const b = step.batch;
      replayed.push({ numSeqs: b.numSeqs, width: b.maxBlocksPerSeq, logitsRows: b.logitsIndices.length, owner });
      return forward();
    },
  });
}
