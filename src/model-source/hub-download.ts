import { createWriteStream, existsSync, mkdirSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream } from 'node:stream/web';
import { Presets, SingleBar } from 'cli-progress';
import type { ListFileEntry } from '@huggingface/hub';
import { KeelError, invalidModel } from '../errors.ts';
import { repoFolder, shardsOf, type RepoRevision } from './hf-cache.ts';

export interface HubOptions {
  cacheDir: string;
  /** The hub's address (HF_ENDPOINT); undefined is huggingface.co. */
  hubUrl: string | undefined;
  /** HF_TOKEN, for gated and private repositories. */
  accessToken: string | undefined;
  showProgress: boolean;
}

/** Besides the weights, the files Keel reads when the repository has them. */
const MODEL_FILES = ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'chat_template.jinja'];
const INDEX_FILE = 'model.safetensors.index.json';
const SINGLE_FILE = 'model.safetensors';

/**
 * Downloads what Keel needs of a model repository at a revision into the Hugging Face cache, in
 * huggingface_hub's layout (hf-cache.ts), through `@huggingface/hub`: config, tokenizer and
 * generation config, and the safetensors weights (the index and the shards it names), nothing
 * else. A file cut short by an earlier run resumes from its `.incomplete` part. Returns the
 * snapshot folder.
 */
export async function downloadSnapshot(ref: RepoRevision, options: HubOptions): Promise<string> {
  // Loaded here only: a model already on disk needs no hub client (the GPU host carries none).
  const hub = await import('@huggingface/hub');
  const repo = { type: 'model' as const, name: ref.repo };
  const credentials = { hubUrl: options.hubUrl, accessToken: options.accessToken };
  const commit = await asKeelError(ref, options, async () => (await hub.modelInfo({ name: ref.repo, revision: ref.revision, additionalFields: ['sha'], ...credentials })).sha);
  const files = new Map<string, ListFileEntry>();
  await asKeelError(ref, options, async () => {
    for await (const entry of hub.listFiles({ repo, revision: commit, ...credentials })) if (entry.type === 'file') files.set(entry.path, entry);
  });
  const name = `${ref.repo}@${ref.revision === commit ? commit : `${ref.revision} (${commit})`}`;
  if (!files.has('config.json')) throw invalidModel(`${name} has no config.json: Keel runs models in Hugging Face transformers' layout (config.json, safetensors weights, tokenizer.json)`);

  const folder = repoFolder(options.cacheDir, ref.repo);
  const snapshot = join(folder, 'snapshots', commit);
  const fetchFile = async (entry: ListFileEntry, progress: DownloadProgress) => {
    const source = await asKeelError(ref, options, () => hub.downloadFile({ repo, path: entry.path, revision: commit, ...credentials }));
    if (source === null) throw invalidModel(`${name} lists ${entry.path} but serves no such file`);
    await storeFile(folder, snapshot, entry, source, progress);
  };

  let weights: ListFileEntry[];
  if (files.has(INDEX_FILE)) {
    await fetchFile(files.get(INDEX_FILE)!, silentProgress);
    weights = shardsOf(join(snapshot, INDEX_FILE)).map((shard) => {
      const entry = files.get(shard);
      if (entry === undefined) throw invalidModel(`${name}: ${INDEX_FILE} lists the shard ${shard}, which the repository does not have`);
      return entry;
    });
  } else if (files.has(SINGLE_FILE)) {
    weights = [files.get(SINGLE_FILE)!];
  } else {
    const others = [...files.keys()].filter((f) => /\.(safetensors|bin|pt|pth|gguf)$/.test(f));
    throw invalidModel(
      `${name} has no ${SINGLE_FILE} or ${INDEX_FILE}${others.length > 0 ? ` (it has ${others.slice(0, 4).join(', ')}${others.length > 4 ? ', ...' : ''})` : ''}: ` +
        'Keel loads safetensors checkpoints in transformers\' layout; pick a repository that has them',
    );
  }
  const wanted = [...MODEL_FILES.flatMap((f) => files.get(f) ?? []), ...weights];
  const progress = downloadProgress(ref.repo, wanted.reduce((sum, f) => sum + f.size, 0), options.showProgress);
  try {
    for (const entry of wanted) await fetchFile(entry, progress);
  } finally {
    progress.stop();
  }
  if (ref.revision !== commit) {
    mkdirSync(join(folder, 'refs', dirname(ref.revision)), { recursive: true });
    writeFileSync(join(folder, 'refs', ref.revision), commit);
  }
  return snapshot;
}

/**
 * Writes one file as huggingface_hub does: its bytes to blobs/<etag> through blobs/<etag>.incomplete
 * (appended to where an earlier download stopped), then a relative link from the snapshot.
 */
async function storeFile(folder: string, snapshot: string, entry: ListFileEntry, source: Blob, progress: DownloadProgress): Promise<void> {
  // huggingface_hub names a blob by its ETag: the LFS object's sha256, else the git blob id (which
  // the tree of a model repository always gives).
  const blob = join(folder, 'blobs', entry.lfs?.oid ?? entry.oid!);
  if (!existsSync(blob)) {
    mkdirSync(dirname(blob), { recursive: true });
    const partial = `${blob}.incomplete`;
    let have = existsSync(partial) ? statSync(partial).size : 0;
    if (have > entry.size) {
      rmSync(partial);
      have = 0;
    }
    progress.add(have);
    if (have < entry.size) {
      const count = new Transform({
        transform(chunk: Buffer, _encoding, done) {
          progress.add(chunk.length);
          done(null, chunk);
        },
      });
      await pipeline(Readable.fromWeb(source.slice(have).stream() as ReadableStream), count, createWriteStream(partial, { flags: 'a' }));
    }
    const size = statSync(partial).size;
    if (size !== entry.size) throw new KeelError('unavailable', `the download of ${entry.path} ended at ${size} of ${entry.size} bytes: run again to resume it`);
    renameSync(partial, blob);
  } else {
    progress.add(entry.size);
  }
  const pointer = join(snapshot, entry.path);
  if (!existsSync(pointer)) {
    mkdirSync(dirname(pointer), { recursive: true });
    rmSync(pointer, { force: true });
    symlinkSync(relative(dirname(pointer), blob), pointer);
  }
}

/** The hub's answers and a network that fails, as errors that say what to do. */
async function asKeelError<T>(ref: RepoRevision, options: HubOptions, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (error) {
    if (error instanceof KeelError) throw error;
    const hub = options.hubUrl ?? 'https://huggingface.co';
    const status = (error as { statusCode?: number }).statusCode;
    const said = (error as Error).message.replace(/\. URL: .*$/s, '');
    if (status === 401 || status === 403) {
      const token = options.accessToken === undefined ? 'set HF_TOKEN to a token that may read it' : 'the token in HF_TOKEN may not read it';
      throw new KeelError('not_found', `${ref.repo} on ${hub} is gated, private or missing (${said}): ${token}, after accepting its conditions on its page if it has any`);
    }
    if (status === 404 && /revision/i.test(said)) throw new KeelError('not_found', `${ref.repo} has no revision "${ref.revision}" on ${hub}: give a branch, a tag or a commit it has`);
    if (status === 404) throw new KeelError('not_found', `no model ${ref.repo} on ${hub} (${said}), and no directory of that name here`);
    if (error instanceof TypeError && /token/i.test(said)) throw new KeelError('invalid_argument', `HF_TOKEN is not a Hugging Face token: ${said}`);
    if (status === undefined) {
      const cause = (error as { cause?: { code?: string; message?: string } }).cause;
      throw new KeelError(
        'unavailable',
        `no directory ${ref.repo} here, and ${hub} cannot be reached to download it (${cause?.code ?? cause?.message ?? said}): ` +
          'check the network, or set HF_HUB_OFFLINE=1 to use only the Hugging Face cache',
      );
    }
    throw new KeelError('unavailable', `${hub} answered ${status} for ${ref.repo}: ${said}`);
  }
}

interface DownloadProgress {
  add(bytes: number): void;
  stop(): void;
}

const silentProgress: DownloadProgress = { add: () => undefined, stop: () => undefined };

/** Bytes of a download: a bar on a terminal, else a line when it starts (a log needs no bar). */
function downloadProgress(repo: string, totalBytes: number, show: boolean): DownloadProgress {
  if (!show) return silentProgress;
  const mb = (bytes: number) => (bytes / 1e6).toFixed(1);
  if (!process.stderr.isTTY) {
    process.stderr.write(`keel: downloading ${repo} (${mb(totalBytes)} MB) into the Hugging Face cache\n`);
    return silentProgress;
  }
  const bar = new SingleBar(
    { stream: process.stderr, format: `downloading ${repo} [{bar}] {done}/{all} MB {duration}s, eta {eta}s`, hideCursor: true },
    Presets.shades_classic,
  );
  bar.start(totalBytes, 0, { done: mb(0), all: mb(totalBytes) });
  let done = 0;
  return {
    add: (bytes) => {
      done += bytes;
      bar.update(done, { done: mb(done) });
    },
    stop: () => bar.stop(),
  };
}
