/**
 * The backend the server tests run on: the CPU unless KEEL_TEST_BACKEND names another (the GPU host
 * runs this suite with KEEL_TEST_BACKEND=cuda, see scripts/gpu-run.sh).
 */
export const TEST_BACKEND = testBackend(process.env.KEEL_TEST_BACKEND);

function testBackend(name: string | undefined): 'cpu' | 'cuda' {
  if (name === undefined || name === '' || name === 'cpu') return 'cpu';
  if (name === 'cuda') return 'cuda';
  throw new Error(`KEEL_TEST_BACKEND must be cpu or cuda, not ${JSON.stringify(name)}`);
}
