import assert from 'node:assert/strict';
import { test } from 'node:test';
import { forkStream, type Rng } from './rng.ts';
import { StopStringMatcher } from './stop-strings.ts';

/** Pushes every piece and collects what a client would see, as the engine does. */
function stream(matcher: StopStringMatcher, pieces: string[]): { shown: string; matched: string | null; emits: string[] } {
  const emits: string[] = [];
  for (const piece of pieces) {
    const result = matcher.push(piece);
    emits.push(result.emit);
    if (result.stopped) return { shown: emits.join(''), matched: result.matched, emits };
  }
  emits.push(matcher.flush());
  return { shown: emits.join(''), matched: null, emits };
}

test('without stop strings all text passes straight through', () => {
  const matcher = new StopStringMatcher([], false);
  assert.deepEqual(matcher.push('Hello'), { emit: 'Hello', stopped: false, matched: null });
  assert.equal(matcher.flush(), '');
});

test('a stop string split across tokens is held back, never partly emitted', () => {
  const matcher = new StopStringMatcher(['STOP'], false);
  assert.deepEqual(matcher.push('Hello ST'), { emit: 'Hello ', stopped: false, matched: null });
  assert.deepEqual(matcher.push('O'), { emit: '', stopped: false, matched: null });
  assert.deepEqual(matcher.push('P and more'), { emit: '', stopped: true, matched: 'STOP' });
});

test('includeStopStr keeps the stop string and drops what follows it', () => {
  const result = stream(new StopStringMatcher(['STOP'], true), ['Hello ST', 'O', 'P and more']);
  assert.deepEqual(result.emits, ['Hello ', '', 'STOP']);
  assert.equal(result.matched, 'STOP');
});

test('a stop string spanning many tokens', () => {
  const result = stream(new StopStringMatcher(['<|end|>'], false), ['Done', '<', '|', 'e', 'nd', '|', '>', 'ignored']);
  assert.equal(result.shown, 'Done');
  assert.equal(result.matched, '<|end|>');
});

test('held-back text is released once it can no longer start a stop string', () => {
  const matcher = new StopStringMatcher(['STOP'], false);
  assert.equal(matcher.push('ST').emit, '');
  assert.equal(matcher.push('AR').emit, 'STAR');
});

test('a repeated prefix holds back only the part that can still match', () => {
  const matcher = new StopStringMatcher(['aab'], false);
  assert.deepEqual(matcher.push('aaa'), { emit: 'a', stopped: false, matched: null });
  assert.deepEqual(matcher.push('b'), { emit: '', stopped: true, matched: 'aab' });
});

test('flush returns held-back text when generation ends otherwise', () => {
  const matcher = new StopStringMatcher(['STOP', '###'], false);
  assert.equal(matcher.push('foo S').emit, 'foo ');
  assert.equal(matcher.push('T').emit, '');
  assert.equal(matcher.flush(), 'ST');
  assert.equal(matcher.flush(), '');
});

test('of several stop strings, the one completed first wins', () => {
  assert.deepEqual(stream(new StopStringMatcher(['world', 'lo w'], false), ['hello world']), {
    shown: 'hel',
    matched: 'lo w',
    emits: ['hel'],
  });
  const sameEnd = stream(new StopStringMatcher(['bc', 'abc'], true), ['xabcd']);
  assert.equal(sameEnd.shown, 'xabc', 'same end: the one starting earlier');
  assert.equal(sameEnd.matched, 'abc');
  const overlapping = stream(new StopStringMatcher(['abcd', 'bc'], false), ['a', 'bcd']);
  assert.equal(overlapping.matched, 'bc');
  assert.equal(overlapping.shown, 'a');
});

test('push after a stop is a bug in the caller', () => {
  const matcher = new StopStringMatcher(['x'], false);
  assert.equal(matcher.push('x').stopped, true);
  assert.throws(() => matcher.push('more'), /after stop string "x" matched/);
});

test('empty stop strings are refused', () => {
  assert.throws(() => new StopStringMatcher(['ok', ''], false), RangeError);
});

/** The definition read plainly: grow the text one character at a time and stop at the first complete stop. */
function referenceStop(text: string, stops: string[], includeStopStr: boolean): { shown: string; matched: string | null } {
  for (let end = 1; end <= text.length; end++) {
    const prefix = text.slice(0, end);
    const hits = stops.filter((stop) => prefix.endsWith(stop)).sort((a, b) => b.length - a.length);
    if (hits.length > 0) {
      const stop = hits[0];
      return { shown: includeStopStr ? prefix : prefix.slice(0, end - stop.length), matched: stop };
    }
  }
  return { shown: text, matched: null };
}

function randomText(rng: Rng, length: number, alphabet: string): string {
  return Array.from({ length }, () => alphabet[Math.floor(rng.nextFloat() * alphabet.length)]).join('');
}

test('the outcome matches the character-by-character reference however the text is split', (t) => {
  const seed = Number(process.env.KEEL_TEST_SEED ?? Math.floor(Math.random() * 2 ** 32));
  t.diagnostic(`seed ${seed}`);
  const rng = forkStream(seed, 0);
  for (let trial = 0; trial < 2000; trial++) {
    const stops = Array.from({ length: 1 + Math.floor(rng.nextFloat() * 3) }, () => randomText(rng, 1 + Math.floor(rng.nextFloat() * 4), 'abc'));
    const text = randomText(rng, Math.floor(rng.nextFloat() * 30), 'abcd');
    const includeStopStr = rng.nextFloat() < 0.5;
    const pieces: string[] = [];
    for (let at = 0; at < text.length; ) {
      const size = 1 + Math.floor(rng.nextFloat() * 5);
      pieces.push(text.slice(at, at + size));
      at += size;
    }
    const { shown, matched } = stream(new StopStringMatcher(stops, includeStopStr), pieces);
    assert.deepEqual({ shown, matched }, referenceStop(text, stops, includeStopStr), `stops ${JSON.stringify(stops)}, pieces ${JSON.stringify(pieces)}`);
  }
});
