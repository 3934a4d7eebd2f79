import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/** A file of a fake repository; `lfs` files are stored as the hub stores weights (sha256 ETags). */
export interface FakeFile {
  path: string;
  bytes: Buffer;
  lfs?: boolean;
}

export interface FakeRepo {
  repo: string;
  /** Branches and tags, each naming a commit (40 hex digits). */
  refs: Record<string, string>;
  files: FakeFile[];
  /** A token the hub requires (as a gated repository does); none by default. */
  token?: string;
}

export interface HubRequest {
  method: string;
  path: string;
  range: string | null;
  authorization: string | null;
}

export interface FakeHub {
  url: string;
  requests: HubRequest[];
  close(): Promise<void>;
}

export const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');
const gitBlobId = (bytes: Buffer) => createHash('sha1').update(`blob ${bytes.length}\0`).update(bytes).digest('hex');

/**
 * The parts of the Hugging Face hub's HTTP API that @huggingface/hub uses to download a model, on
 * a loopback port: model info at a revision, the file tree, and files by commit with byte ranges.
 * Answers 404 with the hub's X-Error-Code for unknown repositories, revisions and files.
 */
export async function startFakeHub(repos: FakeRepo[]): Promise<FakeHub> {
  const requests: HubRequest[] = [];
  const server: Server = createServer((request, response) => {
    const url = new URL(request.url ?? '/', 'http://hub');
    const path = decodeURIComponent(url.pathname);
    requests.push({ method: request.method ?? 'GET', path, range: request.headers.range ?? null, authorization: request.headers.authorization ?? null });
    const fail = (status: number, code: string, error: string) => {
      response.writeHead(status, { 'content-type': 'application/json', 'x-error-code': code });
      response.end(JSON.stringify({ error }));
    };
    const repo = repos.find((r) => path.startsWith(`/api/models/${r.repo}/`) || path.startsWith(`/${r.repo}/resolve/`));
    if (repo === undefined) return fail(404, 'RepoNotFound', 'Repository not found');
    if (repo.token !== undefined && request.headers.authorization !== `Bearer ${repo.token}`) return fail(401, 'GatedRepo', 'Access to this model is restricted');
    const commitOf = (revision: string) => repo.refs[revision] ?? (Object.values(repo.refs).includes(revision) ? revision : null);

    const info = new RegExp(`^/api/models/${repo.repo}/revision/(.+)$`).exec(path);
    if (info) {
      const commit = commitOf(info[1]);
      if (commit === null) return fail(404, 'RevisionNotFound', `Revision Not Found for url: ${url}`);
      response.writeHead(200, { 'content-type': 'application/json' });
      return response.end(JSON.stringify({ _id: 'fake', id: repo.repo, sha: commit, private: false, downloads: 0, gated: false }));
    }
    const tree = new RegExp(`^/api/models/${repo.repo}/tree/([^/]+)$`).exec(path);
    if (tree) {
      if (commitOf(tree[1]) === null) return fail(404, 'RevisionNotFound', 'Revision Not Found');
      const entries = repo.files.map((f) => ({
        type: 'file',
        path: f.path,
        size: f.bytes.length,
        oid: gitBlobId(f.bytes),
        ...(f.lfs ? { lfs: { oid: sha256(f.bytes), size: f.bytes.length, pointerSize: 130 } } : {}),
      }));
      response.writeHead(200, { 'content-type': 'application/json' });
      return response.end(JSON.stringify(entries));
    }
    const resolve = new RegExp(`^/${repo.repo}/resolve/([^/]+)/(.+)$`).exec(path);
    const file = resolve && commitOf(resolve[1]) !== null ? repo.files.find((f) => f.path === resolve[2]) : undefined;
    if (!file) return fail(404, 'EntryNotFound', 'Entry not found');
    sendBytes(request, file, (status, headers, body) => {
      response.writeHead(status, headers);
      response.end(body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

/** A file whole, or the byte range the request asks for (206, as the hub's CDN answers). */
function sendBytes(request: IncomingMessage, file: FakeFile, send: (status: number, headers: Record<string, string>, body: Buffer) => void): void {
  const etag = `"${file.lfs ? sha256(file.bytes) : gitBlobId(file.bytes)}"`;
  const range = /^bytes=(\d+)-(\d*)$/.exec(request.headers.range ?? '');
  if (range === null) return send(200, { 'content-length': String(file.bytes.length), etag, 'accept-ranges': 'bytes' }, file.bytes);
  const start = Number(range[1]);
  const end = range[2] === '' ? file.bytes.length - 1 : Math.min(Number(range[2]), file.bytes.length - 1);
  send(206, { 'content-range': `bytes ${start}-${end}/${file.bytes.length}`, etag, 'accept-ranges': 'bytes' }, file.bytes.subarray(start, end + 1));
}
