import { createHash } from 'node:crypto';

/**
 * Content hash of one full KV block, chained through the hash of the block before it. A block's
 * K/V depend on every earlier token, not only its own, so two blocks may share their cache entry
 * only when their whole prefixes match: the chain makes equal hashes mean equal prefixes.
 */
export function hashBlock(parentHash: string | null, tokenIds: ArrayLike<number>): string {
  const tokens = Buffer.alloc(tokenIds.length * 4);
  for (let i = 0; i < tokenIds.length; i++) tokens.writeInt32LE(tokenIds[i], i * 4);
  const hash = createHash('sha256');
  // A leading tag keeps a first block apart from a chained one whose token bytes happen to spell
  // out a parent hash.
  hash.update(parentHash === null ? 'first:' : `after:${parentHash}:`);
  hash.update(tokens);
  return hash.digest('hex');
}

/**
 * The parent of a sequence's first block: null without a salt; with one, a hash of the salt, so
 * that the same tokens under different salts chain to different block hashes everywhere.
 */
export function chainStart(salt: string | null): string | null {
  return salt === null ? null : createHash('sha256').update(`salt:${salt}`).digest('hex');
}
