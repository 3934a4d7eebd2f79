// A node:test reporter for the end of a run: each failing test, its file and the first line of its
// error, after everything else (no line number: under tsx the runner's lines are the transpiled
// file's). The TAP reporter beside it prints failures where they
// happen, thousands of lines up; a log cut to its last lines (CI's) still names them here.
export default async function* failedTests(source) {
  const failed = [];
  for await (const event of source) {
    if (event.type === 'test:fail' && event.data.details?.type !== 'suite') failed.push(event.data);
  }
  if (failed.length === 0) return;
  yield `\n# failed tests (${failed.length}):\n`;
  for (const test of failed) {
    const error = test.details?.error;
    const message = String(error?.cause?.message ?? error?.message ?? error ?? '').split('\n')[0];
    yield `#   ${test.file ?? '?'}: ${test.name}: ${message}\n`;
  }
}
