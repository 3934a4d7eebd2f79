import { existsSync, statSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { readJsonFile } from '../checkpoint/json-file.ts';
import { isGgufPath } from '../checkpoint/model-files.ts';
import { parseQuantizationConfig } from '../checkpoint/quantization/quantization-config.ts';
import { KeelError, invalidModel } from '../errors.ts';
import { cachedSnapshot, DEFAULT_REVISION, hubCacheDir, hubOffline, missingModelFiles, type RepoRevision } from './hf-cache.ts';
import { downloadSnapshot } from './hub-download.ts';

/** A model on this machine: its directory or GGUF file, and the name it goes by. */
export interface LocatedModel {
  path: string;
  /** The repo id as given (ORG/NAME[@REVISION]), or the directory's or file's name (without .gguf). */
  name: string;
}

const LAYOUT = 'a Hugging Face model directory (config.json, model.safetensors or its index and shards, tokenizer.json), a .gguf file or a repo id ORG/NAME[@REVISION]';
/** A repo id as the hub spells them: ORG/NAME, then @ and a branch, tag or commit. */
const REPO_ID = /^([A-Za-z0-9][\w.-]*\/[\w.-]+)(?:@(\S+))?$/;

/**
 * Where the model `model` names is, from a directory, a GGUF file or a Hugging Face repo id: a
 * directory or .gguf file as it is; a repo id in the Hugging Face cache (HF_HUB_CACHE, HF_HOME) without the network when it is
 * there or HF_HUB_OFFLINE=1, else downloaded into it from the hub (HF_ENDPOINT, HF_TOKEN).
 */
export async function locateModel(model: string, options: { showProgress: boolean; env?: NodeJS.ProcessEnv }): Promise<LocatedModel> {
  const env = options.env ?? process.env;
  const repoId = REPO_ID.exec(model);
  let located: LocatedModel;
  if (existsSync(model)) {
    if (!statSync(model).isDirectory()) {
      if (isGgufPath(model)) return { path: model, name: basename(model).replace(/\.gguf$/i, '') };
      throw invalidModel(`${model} is a file: give ${LAYOUT}`);
    }
    if (!existsSync(join(model, 'config.json'))) throw invalidModel(`${model} has no config.json: give ${LAYOUT}`);
    located = { path: model, name: basename(resolve(model)) };
  } else if (isGgufPath(model)) {
    throw invalidModel(`GGUF file not found: ${model}`);
  } else if (repoId === null) {
    throw invalidModel(`model directory not found: ${model} (give ${LAYOUT})`);
  } else {
    const ref = { repo: repoId[1], revision: repoId[2] ?? DEFAULT_REVISION };
    located = { path: await fromHub(ref, options.showProgress, env), name: model };
  }
  checkQuantization(located.path);
  return located;
}

async function fromHub(ref: RepoRevision, showProgress: boolean, env: NodeJS.ProcessEnv): Promise<string> {
  const cacheDir = hubCacheDir(env);
  const cached = cachedSnapshot(cacheDir, ref);
  const missing = cached === null ? null : missingModelFiles(cached);
  if (cached !== null && missing?.length === 0) return cached;
  if (hubOffline(env)) {
    const what = `${ref.repo}@${ref.revision}`;
    if (cached !== null) throw invalidModel(`${what} in the Hugging Face cache (${cached}) lacks ${missing!.join(', ')}, and HF_HUB_OFFLINE forbids downloading it: unset HF_HUB_OFFLINE`);
    throw new KeelError('not_found', `${what} is not in the Hugging Face cache (${cacheDir}), and HF_HUB_OFFLINE forbids downloading it: unset HF_HUB_OFFLINE, or point HF_HUB_CACHE or HF_HOME at the cache that holds it`);
  }
  const snapshot = await downloadSnapshot(ref, { cacheDir, hubUrl: env.HF_ENDPOINT?.replace(/\/+$/, '') || undefined, accessToken: env.HF_TOKEN || undefined, showProgress });
  const stillMissing = missingModelFiles(snapshot);
  if (stillMissing.length > 0) throw invalidModel(`${ref.repo}@${ref.revision} was downloaded to ${snapshot} but lacks ${stillMissing.join(', ')}`);
  return snapshot;
}

/** A checkpoint quantized in a format Keel does not read is refused before anything loads, by its method. */
function checkQuantization(dir: string): void {
  const path = join(dir, 'config.json');
  const config = readJsonFile(path);
  if (typeof config === 'object' && config !== null && !Array.isArray(config)) parseQuantizationConfig(config as Record<string, unknown>, path);
}
