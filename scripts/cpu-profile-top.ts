// The functions a V8 CPU profile (node --cpu-prof) spent the most time in, by self time and by
// total time (self plus callees), for reading a host profile taken on the GPU host without
// carrying the profile back:
//
//   node scripts/cpu-profile-top.ts PROFILE.cpuprofile [--top 40] [--after compile]
//
// --after NAME keeps only the samples taken after the last one with a function of that name on its
// stack: with `--after compile` (NVRTC's), a benchmark's steady state, without loading and compiling.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

const { values, positionals } = parseArgs({ allowPositionals: true, options: { top: { type: 'string' }, after: { type: 'string' } } });
if (positionals.length !== 1) throw new Error('usage: node scripts/cpu-profile-top.ts PROFILE.cpuprofile [--top N] [--after NAME]');
const top = Number(values.top ?? 40);
const profile = JSON.parse(readFileSync(positionals[0], 'utf8')) as Profile;
const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const parent = new Map<number, number>();
for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
const name = (n: ProfileNode) => `${n.callFrame.functionName || '(anonymous)'} ${n.callFrame.url.replace(/^.*\/(src|scripts|node_modules)\//, '$1/')}:${n.callFrame.lineNumber + 1}`;

const stackHolds = (id: number, functionName: string) => {
  for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) if (byId.get(at)!.callFrame.functionName === functionName) return true;
  return false;
};
const after = values.after;
let first = 0;
if (after !== undefined) profile.samples.forEach((id, i) => {
  if (stackHolds(id, after)) first = i + 1;
});
if (after !== undefined && first === 0) throw new Error(`no sample has ${after} on its stack`);

const self = new Map<string, number>();
const total = new Map<string, number>();
let all = 0;
profile.samples.forEach((id, i) => {
  if (i < first) return;
  const us = profile.timeDeltas[i] ?? 0;
  all += us;
  const leaf = byId.get(id)!;
  self.set(name(leaf), (self.get(name(leaf)) ?? 0) + us);
  // Each function on the sample's stack once, however deep its recursion.
  const seen = new Set<string>();
  for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
    const key = name(byId.get(at)!);
    if (!seen.has(key)) total.set(key, (total.get(key) ?? 0) + us);
    seen.add(key);
  }
});
const print = (title: string, times: Map<string, number>) => {
  console.log(`${title} (of ${(all / 1000).toFixed(1)} ms sampled${after === undefined ? '' : ` after the last ${after}`}):`);
  for (const [key, us] of [...times].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${(us / 1000).toFixed(1).padStart(9)} ms ${((100 * us) / all).toFixed(1).padStart(5)} %  ${key}`);
};
print('self time', self);
print('total time', total);
