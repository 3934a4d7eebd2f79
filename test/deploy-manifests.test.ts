import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { engineConfigFromFlags } from '../src/cli/engine-flags.ts';
import { parseFlags } from '../src/cli/parse-flags.ts';
import { SERVE_FLAGS } from '../src/cli/serve.ts';

// deploy/'s Kubernetes manifests, checked offline. kubectl (when installed; CI's runners have it)
// decodes each document without a cluster (`label --local`), as the API server would read its YAML
// (1.1 quirks included: `name: y` is a boolean), and type-checks each object's metadata; it does not
// check the specs' schemas (that needs the cluster's OpenAPI, and the LeaderWorkerSet's CRD). What
// matters to Keel is checked here instead: every `keel serve` argument is a flag keel accepts,
// each pod asks for one GPU per rank it hosts, the probes and Services point at ports that exist,
// the multi-node pods get the variables Keel's bootstrap reads, the inference pool selects Keel's
// pods on the port they serve and is what the route and the objective name.

const kubectl = spawnSync('kubectl', ['version', '--client'], { encoding: 'utf8' });
const skip = kubectl.error ? `kubectl is not installed (${kubectl.error.message})` : false;

type Json = Record<string, any>;

/** The manifest's documents as kubectl decodes them, one `---`-separated document at a time. */
function decode(file: string): Json[] {
  const text = readFileSync(new URL(`../deploy/${file}`, import.meta.url), 'utf8');
  return text
    .split(/^---$/m)
    .filter((doc) => /^kind:/m.test(doc))
    .map((doc) => {
      const out = spawnSync('kubectl', ['label', '--local', '-f', '-', 'keel.test/decoded=true', '-o', 'json'], { input: doc, encoding: 'utf8' });
      assert.equal(out.status, 0, `kubectl could not decode a document of deploy/${file}: ${out.stderr}`);
      return JSON.parse(out.stdout) as Json;
    });
}

/** The GPUs a `keel serve` command line uses, one per rank of each replica, checked to parse as keel's own flags. */
function ranksOf(container: Json): number {
  assert.deepEqual(container.command, ['keel', 'serve']);
  const { values } = parseFlags('keel serve', { args: container.args, options: SERVE_FLAGS });
  const options = engineConfigFromFlags(values);
  return (options.dataParallelSize ?? 1) * (options.tensorParallelSize ?? 1) * (options.pipelineParallelSize ?? 1);
}

function gpus(container: Json): number {
  const { requests, limits } = container.resources;
  assert.equal(requests['nvidia.com/gpu'], limits['nvidia.com/gpu'], 'GPUs are requested as they are limited');
  return Number(limits['nvidia.com/gpu']);
}

function portNamed(container: Json, name: string): number {
  const port = (container.ports as Json[]).find((p) => p.name === name);
  assert.ok(port, `container ${container.name} has a port named ${name}`);
  return port.containerPort;
}

function assertReadyOnHealth(container: Json): void {
  assert.equal(container.readinessProbe.httpGet.path, '/health');
  portNamed(container, container.readinessProbe.httpGet.port);
}

function assertSelects(service: Json, labels: Json, container: Json): void {
  for (const [key, value] of Object.entries(service.spec.selector)) assert.equal(labels[key], value, `the Service selects ${key}=${value}`);
  for (const port of service.spec.ports) portNamed(container, port.targetPort);
}

test('replicas.yaml: a Deployment of keel serve with a GPU per rank, ready on /health, behind a Service', { skip }, () => {
  const [deployment, service] = decode('replicas.yaml');
  assert.equal(deployment.kind, 'Deployment');
  assert.equal(service.kind, 'Service');
  const { template, selector } = deployment.spec;
  for (const [key, value] of Object.entries(selector.matchLabels)) assert.equal(template.metadata.labels[key], value);
  const [container] = template.spec.containers;
  assert.equal(gpus(container), ranksOf(container));
  assertReadyOnHealth(container);
  assertSelects(service, template.metadata.labels, container);
});

test('multi-node.yaml: a LeaderWorkerSet whose nodes together hold a GPU per rank, each told the bootstrap variables', { skip }, () => {
  const [set, service] = decode('multi-node.yaml');
  assert.equal(set.kind, 'LeaderWorkerSet');
  assert.equal(set.apiVersion, 'leaderworkerset.x-k8s.io/v1');
  const { size, leaderTemplate, workerTemplate } = set.spec.leaderWorkerTemplate;
  const [leader] = leaderTemplate.spec.containers;
  const [worker] = workerTemplate.spec.containers;
  for (const container of [leader, worker]) {
    assert.equal(gpus(container) * size, ranksOf(container), 'the nodes together hold one GPU per rank');
    const env = Object.fromEntries((container.env as Json[]).map((e) => [e.name, e.value]));
    assert.deepEqual(
      { MASTER_ADDR: env.MASTER_ADDR, NNODES: env.NNODES, NODE_RANK: env.NODE_RANK },
      { MASTER_ADDR: '$(LWS_LEADER_ADDRESS)', NNODES: '$(LWS_GROUP_SIZE)', NODE_RANK: '$(LWS_WORKER_INDEX)' },
    );
    assert.equal(String(portNamed(leader, 'bootstrap')), env.MASTER_PORT, 'rank 0 serves the bootstrap where the others dial');
  }
  assert.deepEqual(leader.args, worker.args, 'every node runs the same model and sizes');
  assertReadyOnHealth(leader);
  assert.equal(service.kind, 'Service');
  assertSelects(service, { ...leaderTemplate.metadata.labels, 'leaderworkerset.sigs.k8s.io/name': set.metadata.name }, leader);
});

test('inference-pool.yaml: an InferencePool of keel serve pods with data-parallel replicas, its objective and route', { skip }, () => {
  const [deployment, pool, objective, route] = decode('inference-pool.yaml');
  assert.equal(deployment.kind, 'Deployment');
  const { template } = deployment.spec;
  const [container] = template.spec.containers;
  assert.equal(gpus(container), ranksOf(container), 'a GPU per rank of every replica');
  assert.ok(container.args.some((a: string) => a.startsWith('--data-parallel-size=')), 'the pods run replicas of their own');
  assertReadyOnHealth(container);
  assert.equal(pool.apiVersion, 'inference.networking.k8s.io/v1');
  assert.equal(pool.kind, 'InferencePool');
  for (const [key, value] of Object.entries(pool.spec.selector.matchLabels)) assert.equal(template.metadata.labels[key], value, `the pool selects ${key}=${value}`);
  assert.deepEqual(pool.spec.targetPorts, [{ number: portNamed(container, 'http') }]);
  assert.equal(pool.spec.endpointPickerRef.port.number, 9002);
  assert.ok(['FailOpen', 'FailClose'].includes(pool.spec.endpointPickerRef.failureMode));
  assert.equal(objective.apiVersion, 'llm-d.ai/v1alpha2');
  assert.equal(objective.kind, 'InferenceObjective');
  assert.deepEqual(objective.spec.poolRef, { group: 'inference.networking.k8s.io', name: pool.metadata.name });
  assert.equal(route.kind, 'HTTPRoute');
  assert.deepEqual(route.spec.rules[0].backendRefs, [{ group: 'inference.networking.k8s.io', kind: 'InferencePool', name: pool.metadata.name }]);
});
