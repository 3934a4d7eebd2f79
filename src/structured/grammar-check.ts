import { invalidArgument } from '../errors.ts';
import type { StructuredOutput } from '../sampling/structured-output.ts';
import { grammarInput } from './grammar-input.ts';
import { jsonSchemaGrammar } from './json-schema-grammar.ts';
import { structuralTagJson } from './structural-tag.ts';
import { XGrammarModule } from './xgrammar-module.ts';

/** The instance checks parse in; replaced after a check that made it abort. */
let checker: Promise<XGrammarModule> | null = null;

/**
 * Throws an invalid-argument error naming what is wrong with the schema, regex or grammar, as
 * xgrammar reports it, or returns when xgrammar can build its grammar. Only parses (no
 * vocabulary), so it is cheap next to compiling: the server runs it on its preprocessing threads,
 * before a request is queued.
 */
export async function checkStructuredOutput(spec: StructuredOutput): Promise<void> {
  checker ??= XGrammarModule.load();
  const module = await checker;
  const input = grammarInput(spec);
  const { Grammar } = module.api;
  const grammar = await module.capture(
    async () => {
      switch (input.kind) {
        case 'json_schema':
          return Grammar.fromEBNF(await jsonSchemaGrammar(module, input.schema, input.strict));
        case 'structural_tag':
          return Grammar.fromStructuralTag(await structuralTagJson(module, input.format));
        case 'ebnf':
          return Grammar.fromEBNF(input.text);
      }
    },
    (reason) => invalidArgument(`${describeSpec(spec)} is invalid: ${reason}`),
    () => (checker = null),
  );
  grammar.handle.delete();
}

/** "the JSON schema", "the regex"...: what a message about `spec` calls it. */
export function describeSpec(spec: StructuredOutput): string {
  switch (spec.type) {
    case 'json_schema':
      return 'the JSON schema';
    case 'json_object':
      return 'the JSON object format';
    case 'regex':
      return 'the regex';
    case 'choice':
      return 'the choice';
    case 'grammar':
      return 'the grammar';
    case 'structural_tag':
      return 'the structural tag';
  }
}
