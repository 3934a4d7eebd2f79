import type { StructuredOutput } from '../sampling/structured-output.ts';

/**
 * A structured output as xgrammar takes it: a JSON schema, a structural tag (regexes and choices:
 * xgrammar's web build compiles regexes only inside one, and a choice is an "or" of constant
 * strings, which needs no escaping), or an EBNF grammar.
 */
export type GrammarInput =
  | { kind: 'json_schema'; schema: string; strict: boolean }
  | { kind: 'structural_tag'; json: string }
  | { kind: 'ebnf'; text: string };

export function grammarInput(spec: StructuredOutput): GrammarInput {
  switch (spec.type) {
    case 'json_schema':
      // Strict: no property or item the schema does not name (OpenAI's strict mode, vLLM's default).
      return { kind: 'json_schema', schema: JSON.stringify(spec.schema), strict: true };
    case 'json_object':
      return { kind: 'json_schema', schema: '{"type":"object"}', strict: false };
    case 'regex':
      return structuralTag({ type: 'regex', pattern: spec.pattern });
    case 'choice':
      return structuralTag({ type: 'or', elements: spec.choices.map((value) => ({ type: 'const_string', value })) });
    case 'grammar':
      return { kind: 'ebnf', text: spec.grammar };
  }
}

function structuralTag(format: object): GrammarInput {
  return { kind: 'structural_tag', json: JSON.stringify({ type: 'structural_tag', format }) };
}

/** One key per distinct structured output, for caching what it compiles to. */
export function grammarKey(spec: StructuredOutput): string {
  return JSON.stringify(grammarInput(spec));
}
