import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { invalidModel } from '../errors.ts';

/**
 * The Hugging Face cache as huggingface_hub (Python) lays it out, so that Keel finds what Python
 * downloaded and Python finds what Keel did:
 *
 *   $HF_HUB_CACHE/models--ORG--NAME/refs/<revision>          the commit a branch or tag named
 *   $HF_HUB_CACHE/models--ORG--NAME/snapshots/<commit>/<file> a link to ../../blobs/<etag>
 *   $HF_HUB_CACHE/models--ORG--NAME/blobs/<etag>             the file's bytes (sha256 for LFS files)
 */

/** A Hugging Face model repository at a revision (a branch, a tag or a commit). */
export interface RepoRevision {
  /** ORG/NAME. */
  repo: string;
  revision: string;
}

export const DEFAULT_REVISION = 'main';
const COMMIT = /^[0-9a-f]{40}$/;

/** HF_HUB_CACHE, else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub (huggingface_hub's order). */
export function hubCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.HF_HUB_CACHE) return env.HF_HUB_CACHE;
  if (env.HUGGINGFACE_HUB_CACHE) return env.HUGGINGFACE_HUB_CACHE;
  const home = env.HF_HOME ?? join(env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'huggingface');
  return join(home, 'hub');
}

/** HF_HUB_OFFLINE as huggingface_hub reads it: 1, on, yes or true. */
export function hubOffline(env: NodeJS.ProcessEnv = process.env): boolean {
  return ['1', 'on', 'yes', 'true'].includes((env.HF_HUB_OFFLINE ?? '').trim().toLowerCase());
}

export function repoFolder(cacheDir: string, repo: string): string {
  return join(cacheDir, `models--${repo.split('/').join('--')}`);
}

export function isCommit(revision: string): boolean {
  return COMMIT.test(revision);
}

/** The cached snapshot folder of a revision: a commit's own, or the one its ref names; null if the cache has neither. */
export function cachedSnapshot(cacheDir: string, { repo, revision }: RepoRevision): string | null {
  const folder = repoFolder(cacheDir, repo);
  let commit = revision;
  if (!isCommit(revision)) {
    const ref = join(folder, 'refs', revision);
    if (!existsSync(ref)) return null;
    commit = readFileSync(ref, 'utf8').trim();
  }
  const snapshot = join(folder, 'snapshots', commit);
  return existsSync(snapshot) ? snapshot : null;
}

/** The files of a model directory that Keel cannot run without and that are not there (links to missing blobs count as missing). */
export function missingModelFiles(dir: string): string[] {
  if (!existsSync(join(dir, 'config.json'))) return ['config.json'];
  const index = join(dir, 'model.safetensors.index.json');
  if (existsSync(index)) return shardsOf(index).filter((shard) => !existsSync(join(dir, shard)));
  return existsSync(join(dir, 'model.safetensors')) ? [] : ['model.safetensors (or model.safetensors.index.json and its shards)'];
}

/** The shard files a safetensors index names, each once. */
export function shardsOf(indexPath: string): string[] {
  let weightMap: unknown;
  try {
    weightMap = JSON.parse(readFileSync(indexPath, 'utf8')).weight_map;
  } catch (error) {
    throw invalidModel(`cannot read ${indexPath}: ${(error as Error).message}`);
  }
  if (typeof weightMap !== 'object' || weightMap === null) throw invalidModel(`${indexPath} has no "weight_map" object of tensor name -> shard file`);
  return [...new Set(Object.values(weightMap).map(String))];
}
