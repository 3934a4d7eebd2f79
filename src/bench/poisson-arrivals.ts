import { invalidArgument } from '../errors.ts';
import { forkStream } from '../sampling/rng.ts';

/**
 * When each of `count` requests is sent, in ms from the start: a Poisson process of `requestRate`
 * requests per second (exponential gaps, seeded), as `vllm bench serve --request-rate` sends them.
 * An infinite rate sends everything at once. The first request leaves at 0.
 */
export function poissonArrivalTimesMs(count: number, requestRate: number, seed: number): number[] {
  if (!(requestRate > 0)) throw invalidArgument(`--request-rate must be positive or inf (got ${requestRate})`);
  if (requestRate === Infinity) return new Array<number>(count).fill(0);
  const rng = forkStream(seed, 2);
  const meanGapMs = 1000 / requestRate;
  const times: number[] = [];
  let t = 0;
  for (let i = 0; i < count; i++) {
    times.push(t);
    // 1 - u lies in (0, 1], so the logarithm is finite.
    t += -Math.log(1 - rng.nextFloat()) * meanGapMs;
  }
  return times;
}
