/**
 * The statement a kernel must begin with to be launched with programmatic dependent launch (PDL):
 * common.cuh's macro that waits for the kernel before it in the stream (griddepcontrol.wait) and
 * then lets the one after it launch (griddepcontrol.launch_dependents).
 */
export const PDL_PROLOGUE = 'PDL_PROLOGUE();';

/**
 * The head of a kernel's declaration up to its opening parenthesis, the name in group 1: between
 * `void` and the name, launch bounds or a macro that expands to attributes (sparse-select.cu's
 * cluster dims). kernel-signatures.test.ts reads the parameters after it.
 */
export const KERNEL_DECLARATION = /extern "C" __global__ void (?:(?:__launch_bounds__\([^)]*\)|[A-Z][A-Z0-9_]*) )*(\w+)\(/g;

/** The one kind of statement allowed before PDL_PROLOGUE(): L2 prefetches of weights (common.cuh says why they are safe). */
export const PDL_PREFETCH = 'PDL_PREFETCH(';

/**
 * For every `extern "C" __global__` kernel of a .cu source, whether its body begins with
 * PDL_PROLOGUE() (comments, blank lines and PDL_PREFETCH(...) statements before it allowed). CudaDevice launches a kernel with
 * PDL only where this says true: a kernel that does not wait would read its inputs while the kernel
 * before it still writes them. A kernel written in a shape this does not recognize is absent, so it
 * gets the plain launch (kernel-prologue.test.ts checks that every kernel of the tree is found).
 */
export function kernelPrologues(source: string): Map<string, boolean> {
  const out = new Map<string, boolean>();
  for (const match of source.matchAll(KERNEL_DECLARATION)) {
    const body = bodyStart(source, match.index + match[0].length);
    if (body !== null) out.set(match[1], afterPrefetches(afterComments(source, body)).startsWith(PDL_PROLOGUE));
  }
  return out;
}

/** `rest` past the PDL_PREFETCH(...); statements (and comments) that lead it. */
function afterPrefetches(rest: string): string {
  while (rest.startsWith(PDL_PREFETCH)) {
    const i = pastClosingParen(rest, PDL_PREFETCH.length);
    const end = /^\s*;/.exec(rest.slice(i));
    if (end === null) return rest;
    rest = afterComments(rest, i + end[0].length);
  }
  return rest;
}

/** The index just past the `{` that opens the body, given the index just past the parameter list's `(`. */
function bodyStart(source: string, from: number): number | null {
  const i = pastClosingParen(source, from);
  const brace = /^\s*\{/.exec(source.slice(i));
  return brace === null ? null : i + brace[0].length;
}

/** The index just past the `)` that closes a parenthesis opened just before `from` (the end of `source` if none does). */
function pastClosingParen(source: string, from: number): number {
  let depth = 1;
  let i = from;
  for (; i < source.length && depth > 0; i++) {
    if (source[i] === '(') depth++;
    else if (source[i] === ')') depth--;
  }
  return i;
}

/** The source from `at` on, without the whitespace and comments that lead it. */
function afterComments(source: string, at: number): string {
  let rest = source.slice(at);
  for (;;) {
    const lead = /^(\s+|\/\/[^\n]*|\/\*[\s\S]*?\*\/)/.exec(rest);
    if (lead === null) return rest;
    rest = rest.slice(lead[0].length);
  }
}
