import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { KeelError } from '../errors.ts';

/**
 * The Node shim over xgrammar's WebAssembly build (`@mlc-ai/web-xgrammar`, pinned in package.json).
 *
 * The package ships one UMD script that Node refuses to import: its package.json says "module"
 * while the script reads `require` and `__filename`. The shim evaluates the script's text as the
 * CommonJS module it is, which also gives a fresh WebAssembly instance per evaluation: an instance
 * whose C++ aborted (xgrammar reports a bad schema or grammar by aborting, after printing the
 * reason to stderr) is dropped, and its reason is captured to become the error's message.
 *
 * Two seams of the script are used, both checked at load: its embind module (`binding`), so that a
 * step's token masks are copied synchronously into the caller's buffer instead of through the
 * package's `async` wrapper, and the stderr printer emscripten binds when the instance starts.
 */

/** An embind object: C++ memory that must be deleted. */
interface EmbindHandle {
  delete(): void;
}

interface IntVector extends EmbindHandle {
  size(): number;
}

export interface MatcherHandle extends EmbindHandle {
  AcceptToken(tokenId: number, verbose: boolean): boolean;
  GetNextTokenBitmask(vocabSize: number): IntVector;
  IsTerminated(): boolean;
  Rollback(numTokens: number): void;
  FindJumpForwardString(): string;
}

export interface CompiledHandle extends EmbindHandle {
  GetTokenizerInfo(): EmbindHandle & { GetVocabSize(): number };
}

export interface GrammarHandle extends EmbindHandle {
  ToString(): string;
}

export interface CompilerHandle extends EmbindHandle {
  CompileGrammar(grammar: GrammarHandle): CompiledHandle;
  CompileStructuralTag(json: string): CompiledHandle;
}

/** The parts of the embind module Keel calls. */
interface Binding {
  vecIntFromJSArray(values: number[]): IntVector;
  vecStringFromJSArray(values: string[]): EmbindHandle;
  vecIntToView(vector: IntVector): Int32Array;
  TokenizerInfo: new (vocab: EmbindHandle, vocabType: string, vocabSize: number, stopTokenIds: IntVector, prependSpace: boolean) => EmbindHandle;
  GrammarCompiler: new (info: EmbindHandle, maxThreads: number, cacheEnabled: boolean) => CompilerHandle;
  GrammarMatcher: new (compiled: CompiledHandle, stopTokenIds: IntVector | undefined, terminateWithoutStopToken: boolean, maxRollbackTokens: number) => MatcherHandle;
}

/** The package's public classes that are used as they are (grammar parsing, structural tags). */
interface PublicApi {
  Grammar: {
    fromEBNF(ebnf: string, rootRule?: string): Promise<{ handle: GrammarHandle }>;
    fromJSONSchema(schema: string, anyWhitespace?: boolean, indent?: number, separators?: [string, string], strictMode?: boolean): Promise<{ handle: GrammarHandle }>;
    fromStructuralTag(tag: object | string): Promise<{ handle: GrammarHandle }>;
    builtinJSONGrammar(): Promise<{ handle: GrammarHandle }>;
  };
}

const BINDING_SEAM = 'let binding = null;';
const require = createRequire(import.meta.url);

/** One xgrammar WebAssembly instance. */
export class XGrammarModule {
  readonly binding: Binding;
  readonly api: PublicApi;
  /** Lines the instance printed to stderr while `capture` runs; null otherwise. */
  private captured: string[] | null = null;
  /** The latest capture, which the next one waits for. */
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(binding: Binding, api: PublicApi) {
    this.binding = binding;
    this.api = api;
  }

  /** Starts a fresh instance (a few milliseconds: the WebAssembly module is compiled from the script's bytes). */
  static async load(): Promise<XGrammarModule> {
    const file = require.resolve('@mlc-ai/web-xgrammar');
    const source = readFileSync(file, 'utf8');
    if (source.split(BINDING_SEAM).length !== 2) {
      throw new KeelError('invalid_model', `${file} is not the @mlc-ai/web-xgrammar build Keel was written against (0.1.27): its embind module cannot be reached`);
    }
    const exported: Record<string, unknown> = {};
    const seamed = source.replace(BINDING_SEAM, `${BINDING_SEAM} exports.__binding = () => binding;`);
    const cjs = { exports: exported };
    new Function('exports', 'require', 'module', '__filename', '__dirname', `${seamed}\n//# sourceURL=${file}`)(exported, require, cjs, file, file.replace(/[\\/][^\\/]*$/, ''));
    const api = exported as unknown as PublicApi & { __binding: () => Binding | null };
    // emscripten binds its stderr printer to console.error as the instance starts: a router bound
    // now keeps sending this instance's lines to `captured` (or on to stderr) for its lifetime.
    let module: XGrammarModule | null = null;
    const original = console.error;
    console.error = (...args: unknown[]) => (module?.captured ? module.captured.push(args.map(String).join(' ')) : original(...args));
    try {
      (await api.Grammar.builtinJSONGrammar()).handle.delete();
    } finally {
      console.error = original;
    }
    const binding = api.__binding();
    if (binding === null) throw new KeelError('invalid_model', `${file} started without its embind module`);
    module = new XGrammarModule(binding, api);
    return module;
  }

  /**
   * Runs `body` once the captures before it have ended (each owns the printed lines while it
   * runs); when xgrammar aborts in it, throws `fail(reason)` with the reason it printed. After an
   * abort the instance is poisoned (its C++ state was unwound by a JavaScript exception): `onAbort`
   * tells the owner to drop it.
   */
  capture<T>(body: () => T | Promise<T>, fail: (reason: string) => Error, onAbort: () => void): Promise<T> {
    const run = async () => {
      this.captured = [];
      try {
        return await body();
      } catch (error) {
        if (!(error instanceof WebAssembly.RuntimeError)) throw error;
        onAbort();
        throw fail(abortReason(this.captured));
      } finally {
        this.captured = null;
      }
    };
    const result = this.queue.then(run);
    this.queue = result.catch(() => undefined);
    return result;
  }

  /** Synchronous `capture`, for what runs inside an engine step. */
  captureSync<T>(body: () => T, fail: (reason: string) => Error, onAbort: () => void): T {
    this.captured = [];
    try {
      return body();
    } catch (error) {
      if (!(error instanceof WebAssembly.RuntimeError)) throw error;
      onAbort();
      throw fail(abortReason(this.captured));
    } finally {
      this.captured = null;
    }
  }

  intVector(values: number[]): IntVector {
    return this.binding.vecIntFromJSArray(values);
  }

  /** The matcher's mask for its next token (bit t of word t >> 5 set: token t allowed) copied into `out`. */
  fillNextTokenBitmask(matcher: MatcherHandle, vocabSize: number, out: Int32Array): void {
    const vector = matcher.GetNextTokenBitmask(vocabSize);
    try {
      out.set(this.binding.vecIntToView(vector));
    } finally {
      vector.delete();
    }
  }
}

/**
 * What xgrammar printed before aborting, without its source location:
 * "[FATAL] /path/json_schema_converter.cc:902: Unsupported type "nope"" -> "Unsupported type "nope"".
 */
function abortReason(lines: string[]): string {
  const fatal = lines.find((line) => line.includes('[FATAL]'));
  if (fatal === undefined) return lines.filter((line) => !line.startsWith('Aborted(')).join(' ').trim() || 'xgrammar rejected it without a reason';
  return fatal.replace(/^.*\[FATAL\]\s*(?:[^\s:]+:\d+:\s*)?/, '').trim();
}
