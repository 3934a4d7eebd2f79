import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const BIN = fileURLToPath(new URL('../bin/keel', import.meta.url));
// A reply long enough to be interrupted: ~1,500 tokens take seconds on the CPU backend.
const FLAGS = '--backend cpu --no-progress --max-tokens 1500 --ignore-eos --temperature 0';
const CTRL_C = '\x03';
const CTRL_D = '\x04';
const hasScript = spawnSync('script', ['--version']).status === 0;

/**
 * `keel chat` on a pseudo-terminal, as a person runs it: util-linux's `script` gives it one and
 * passes on what is written to its stdin as keys (Enter is \r, Ctrl-C the byte 0x03).
 */
class Terminal {
  readonly child: ChildProcessWithoutNullStreams;
  screen = '';
  readonly exited: Promise<number | null>;

  constructor(args: string) {
    this.child = spawn('script', ['-qfec', `${BIN} chat ${args}`, '/dev/null']);
    this.child.stdout.on('data', (chunk: Buffer) => (this.screen += chunk.toString('utf8')));
    this.exited = new Promise((resolve) => this.child.on('exit', resolve));
  }

  type(keys: string): void {
    this.child.stdin.write(keys);
  }

  /** Waits until the screen past `from` matches `pattern`; fails with the screen after 30 s. */
  async waitFor(pattern: RegExp, from = 0): Promise<void> {
    const deadline = Date.now() + 30_000;
    while (!pattern.test(this.screen.slice(from))) {
      if (Date.now() > deadline) assert.fail(`the screen never matched ${pattern}:\n${this.screen.slice(-2000)}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
}

test('Ctrl-C stops the reply in progress and the chat goes on; Ctrl-C at the prompt leaves', { skip: !hasScript && 'util-linux script is not installed' }, async (t) => {
  const terminal = new Terminal(FLAGS);
  t.after(() => terminal.child.kill());
  await terminal.waitFor(/> $/);
  terminal.type('hello\r');
  await terminal.waitFor(/hello\s+[^]{40,}/);
  terminal.type(CTRL_C);
  await terminal.waitFor(/reply stopped[^]*> $/);
  const stoppedAt = terminal.screen.length;
  terminal.type('/help\r');
  await terminal.waitFor(/\/reset[^]*> $/, stoppedAt);
  const helpAt = terminal.screen.length;
  terminal.type('again\r');
  await terminal.waitFor(/again\s+[^]{40,}/, helpAt);
  terminal.type(CTRL_C);
  await terminal.waitFor(/reply stopped[^]*> $/, helpAt);
  terminal.type(CTRL_C);
  assert.equal(await terminal.exited, 0);
  assert.doesNotMatch(terminal.screen, /Error|\n\s+at /, 'no error, no stack trace');
});

test('Ctrl-D at the prompt leaves', { skip: !hasScript && 'util-linux script is not installed' }, async (t) => {
  const terminal = new Terminal(FLAGS);
  t.after(() => terminal.child.kill());
  await terminal.waitFor(/> $/);
  terminal.type(CTRL_D);
  assert.equal(await terminal.exited, 0);
});
