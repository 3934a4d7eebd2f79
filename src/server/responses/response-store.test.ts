import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ResponseStore } from './response-store.ts';

const entry = (id: string) => ({ response: { id }, conversation: [{ role: 'user' as const, content: id }], inputItems: [], turn: { promptText: id, promptIds: [1], outputIds: [2] }, replica: 0 });

test('the store keeps the most recently stored or read responses, up to its capacity', () => {
  const store = new ResponseStore(2);
  store.put(entry('a'));
  store.put(entry('b'));
  assert.equal(store.get('a')?.conversation[0].content, 'a');
  store.put(entry('c'));
  assert.equal(store.get('b'), undefined, 'b was the least recently used');
  assert.deepEqual([store.get('a')?.response.id, store.get('c')?.response.id], ['a', 'c']);
  assert.equal(store.size, 2);
  assert.equal(store.delete('a'), true);
  assert.equal(store.delete('a'), false);
  assert.equal(store.get('a'), undefined);
});
