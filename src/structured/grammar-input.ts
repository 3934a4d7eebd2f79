import type { StructuralTagFormat, StructuredOutput } from '../sampling/structured-output.ts';

/**
 * A structured output as xgrammar takes it: a JSON schema, a structural tag (regexes and choices
 * too: xgrammar's web build compiles regexes only inside one, and a choice is an "or" of constant
 * strings, which needs no escaping), or an EBNF grammar.
 */
export type GrammarInput =
  | { kind: 'json_schema'; schema: string; strict: boolean }
  | { kind: 'structural_tag'; format: StructuralTagFormat }
  | { kind: 'ebnf'; text: string };

export function grammarInput(spec: StructuredOutput): GrammarInput {
  switch (spec.type) {
    case 'json_schema':
      // Strict: no property or item the schema does not name (OpenAI's strict mode, vLLM's default).
      return { kind: 'json_schema', schema: JSON.stringify(spec.schema), strict: true };
    case 'json_object':
      return { kind: 'json_schema', schema: '{"type":"object"}', strict: false };
    case 'regex':
      return { kind: 'structural_tag', format: { type: 'regex', pattern: spec.pattern } };
    case 'choice':
      return { kind: 'structural_tag', format: { type: 'or', elements: spec.choices.map((value) => ({ type: 'const_string', value })) } };
    case 'grammar':
      return { kind: 'ebnf', text: spec.grammar };
    case 'structural_tag':
      return { kind: 'structural_tag', format: spec.format };
  }
}

/** One key per distinct structured output, for caching what it compiles to. */
export function grammarKey(spec: StructuredOutput): string {
  return JSON.stringify(grammarInput(spec));
}
