import { invalidArgument } from '../errors.ts';
import type { StructuredOutput } from '../sampling/structured-output.ts';
import type { GrammarVocabulary } from '../tokenizer/grammar-vocabulary.ts';
import { checkStructuredOutput, describeSpec } from './grammar-check.ts';
import { grammarInput, grammarKey } from './grammar-input.ts';
import { jsonSchemaGrammar } from './json-schema-grammar.ts';
import { structuralTagJson } from './structural-tag.ts';
import { TokenConstraint } from './token-constraint.ts';
import { XGrammarModule, type CompiledHandle, type CompilerHandle } from './xgrammar-module.ts';

export interface GrammarCompilerOptions {
  vocabulary: GrammarVocabulary;
  /** Columns of the model's logits (config.json's vocab_size), which may exceed the tokenizer's. */
  vocabSize: number;
  /** The tokens that end a completion (EOS): allowed once the grammar is complete. */
  stopTokenIds: number[];
  /** Compiled grammars kept, least recently used dropped first. */
  cacheSize: number;
}

/** The instance compiles and matches run in, with the model's vocabulary loaded into it. */
interface CompilerState {
  module: XGrammarModule;
  compiler: CompilerHandle;
}

/** A structured output compiled against the model's vocabulary: each completion gets a constraint from it. */
export class CompiledGrammar {
  private readonly module: XGrammarModule;
  private readonly handle: CompiledHandle;
  private readonly options: GrammarCompilerOptions;
  private readonly stopMask: Int32Array;

  constructor(module: XGrammarModule, handle: CompiledHandle, options: GrammarCompilerOptions, stopMask: Int32Array) {
    this.module = module;
    this.handle = handle;
    this.options = options;
    this.stopMask = stopMask;
  }

  /** A fresh constraint at the grammar's start (it keeps the compiled grammar alive on its own). */
  newConstraint(): TokenConstraint {
    const stops = this.module.intVector(this.options.stopTokenIds);
    try {
      const matcher = new this.module.binding.GrammarMatcher(this.handle, stops, false, -1);
      return new TokenConstraint(this.module, matcher, this.options.vocabSize, this.stopMask);
    } finally {
      stops.delete();
    }
  }

  dispose(): void {
    this.handle.delete();
  }
}

/**
 * Compiles structured outputs with xgrammar against the model's vocabulary, once per distinct
 * one (an LRU cache of `cacheSize`): the token masks of each grammar state are precomputed here, so
 * compiling a large schema against a large vocabulary takes a while (tens of milliseconds and
 * more) while each step's mask is then cheap. xgrammar's own cache is off: a compile that aborts
 * inside it would leave it locked for good.
 */
export class GrammarCompiler {
  private readonly options: GrammarCompilerOptions;
  private state: Promise<CompilerState>;
  private readonly cache = new Map<string, CompiledGrammar>();
  private readonly stopMask: Int32Array;

  private constructor(options: GrammarCompilerOptions) {
    this.options = options;
    this.state = GrammarCompiler.start(options);
    this.stopMask = new Int32Array(Math.ceil(options.vocabSize / 32));
    for (const id of options.stopTokenIds) if (id >= 0 && id < options.vocabSize) this.stopMask[id >>> 5] |= 1 << (id & 31);
  }

  /** Loads xgrammar and the vocabulary (the vocabulary's preprocessing takes a moment for 100k+ tokens). */
  static async create(options: GrammarCompilerOptions): Promise<GrammarCompiler> {
    const compiler = new GrammarCompiler(options);
    await compiler.state;
    return compiler;
  }

  private static async start(options: GrammarCompilerOptions): Promise<CompilerState> {
    const module = await XGrammarModule.load();
    const { binding } = module;
    const tokens = binding.vecStringFromJSArray(options.vocabulary.tokens);
    const stops = module.intVector(options.stopTokenIds);
    try {
      const info = new binding.TokenizerInfo(tokens, options.vocabulary.encoding.toUpperCase(), options.vocabSize, stops, options.vocabulary.prependSpace);
      const compiler = new binding.GrammarCompiler(info, 1, false);
      info.delete();
      return { module, compiler };
    } finally {
      tokens.delete();
      stops.delete();
    }
  }

  /** The compiled grammar of `spec`; an invalid-argument error naming the problem when it has none. */
  async compile(spec: StructuredOutput): Promise<CompiledGrammar> {
    const key = grammarKey(spec);
    const cached = this.cache.get(key);
    if (cached !== undefined) {
      this.cache.delete(key);
      this.cache.set(key, cached);
      return cached;
    }
    // Parsed apart first: what xgrammar refuses aborts a disposable instance, not this one.
    await checkStructuredOutput(spec);
    const state = this.state;
    const { module, compiler } = await state;
    const input = grammarInput(spec);
    const handle = await module.capture(
      async () => {
        if (input.kind === 'structural_tag') return compiler.CompileStructuralTag(await structuralTagJson(module, input.format));
        const text = input.kind === 'ebnf' ? input.text : await jsonSchemaGrammar(module, input.schema, input.strict);
        const grammar = await module.api.Grammar.fromEBNF(text);
        try {
          return compiler.CompileGrammar(grammar.handle);
        } finally {
          grammar.handle.delete();
        }
      },
      (reason) => invalidArgument(`${describeSpec(spec)} cannot be compiled: ${reason}`),
      () => {
        // Constraints made by the aborted instance keep it alive; new compiles start afresh.
        if (this.state === state) this.state = GrammarCompiler.start(this.options);
      },
    );
    const compiled = new CompiledGrammar(module, handle, this.options, this.stopMask);
    this.cache.set(key, compiled);
    if (this.cache.size > this.options.cacheSize) {
      const [oldestKey, oldest] = this.cache.entries().next().value as [string, CompiledGrammar];
      this.cache.delete(oldestKey);
      oldest.dispose();
    }
    return compiled;
  }
}
