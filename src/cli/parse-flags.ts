import { parseArgs, type ParseArgsConfig } from 'node:util';

/**
 * node's parseArgs for the command `command` (e.g. "keel generate"), strict: an unknown flag is an
 * error that names the nearest flag the command has and where its flags are listed.
 */
export function parseFlags<T extends Omit<ParseArgsConfig, 'strict'>>(command: string, config: T): ReturnType<typeof parseArgs<T & { strict: true }>> {
  try {
    const args = config.allowPositionals || config.args === undefined ? config.args : listValues(config.args, config.options ?? {});
    return parseArgs({ ...config, args, strict: true } as T & { strict: true });
  } catch (error) {
    const unknown = /^Unknown option '([^']+)'/.exec((error as Error).message)?.[1];
    if (unknown === undefined) throw error;
    const flags = Object.keys(config.options ?? {}).map((name) => `--${name}`);
    // Still parseArgs' error (its code makes main.ts exit 2, as for any usage error), in fewer words.
    (error as Error).message = `unknown option ${unknown}${didYouMean(unknown, flags)}: see ${command} --help`;
    throw error;
  }
}

/** Flags that list their values after one flag, as vLLM's (nargs='+') do: `--lora-modules a=x b=y`. */
const LIST_FLAGS: ReadonlySet<string> = new Set(['--lora-modules']);

/**
 * The words after a LIST_FLAGS flag, up to the next flag, become repeats of it. Without positionals
 * such words were an error before, so no command line changes meaning.
 */
function listValues(args: readonly string[], options: NonNullable<ParseArgsConfig['options']>): string[] {
  const out: string[] = [];
  let listing: string | null = null;
  for (const arg of args) {
    if (arg.startsWith('-')) {
      listing = LIST_FLAGS.has(arg) && options[arg.slice(2)]?.multiple === true ? arg : null;
      out.push(arg);
    } else if (listing !== null && out[out.length - 1] !== listing) {
      out.push(listing, arg);
    } else out.push(arg);
  }
  return out;
}

/** " (did you mean X?)" for the candidate nearest to `given`, or "" when none is near. */
export function didYouMean(given: string, candidates: readonly string[]): string {
  // `--top_p` means `--top-p`: underscores and case are the commonest slips.
  const normalize = (s: string) => s.toLowerCase().replaceAll('_', '-');
  const typed = normalize(given);
  // A shortened name ("--temp") means the one name it starts.
  const extended = candidates.filter((c) => typed.replace(/^-+/, '').length >= 3 && normalize(c).startsWith(typed));
  if (extended.length === 1) return ` (did you mean ${extended[0]}?)`;
  let best: string | null = null;
  let bestDistance = Infinity;
  for (const candidate of candidates) {
    const distance = editDistance(typed, normalize(candidate));
    if (distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  // A third of the name may be wrong, and two letters of any name.
  return best !== null && bestDistance <= Math.max(2, Math.floor(best.length / 3)) ? ` (did you mean ${best}?)` : '';
}

/** Levenshtein distance: insertions, deletions and substitutions, one each. */
function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    previous = current;
  }
  return previous[b.length];
}
