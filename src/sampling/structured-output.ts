/**
 * What a completion's text must match, enforced token by token by a grammar (src/structured): the
 * kinds OpenAI's `response_format` and vLLM's `structured_outputs` name.
 * - `json_schema`: JSON valid under the schema (the subset OpenAI's strict mode documents, and
 *   what xgrammar accepts beyond it); properties the schema does not name are not generated.
 * - `json_object`: any JSON object.
 * - `regex`: text the regular expression matches in full.
 * - `choice`: exactly one of the strings.
 * - `grammar`: text the EBNF grammar (xgrammar's dialect, GBNF-compatible, root rule `root`) derives.
 * - `structural_tag`: text of the shape an xgrammar structural tag describes (fixed strings, JSON
 *   under a schema, grammars and regexes, in sequence, as alternatives, repeated between
 *   separators): how a model's tool-call markup is written with each function's parameters inside.
 * JSON is generated on one line, with ", " and ": " between items, inside structural tags too.
 */
export type StructuredOutput =
  | { type: 'json_schema'; schema: Record<string, unknown> | boolean }
  | { type: 'json_object' }
  | { type: 'regex'; pattern: string }
  | { type: 'choice'; choices: string[] }
  | { type: 'grammar'; grammar: string }
  | { type: 'structural_tag'; format: StructuralTagFormat };

/**
 * xgrammar's structural tag formats (web-xgrammar 0.1.27's `StructuralTagFormat`, the subset Keel
 * writes): `tag` is begin, content, end; `tags_with_separator` repeats its tags between separators
 * (at least one with `at_least_one`, exactly one with `stop_after_first`).
 */
export type StructuralTagFormat =
  | { type: 'const_string'; value: string }
  | { type: 'json_schema'; json_schema: Record<string, unknown> | boolean }
  | { type: 'grammar'; grammar: string }
  | { type: 'regex'; pattern: string }
  | { type: 'sequence'; elements: StructuralTagFormat[] }
  | { type: 'or'; elements: StructuralTagFormat[] }
  | TagFormat
  | { type: 'tags_with_separator'; tags: TagFormat[]; separator: string; at_least_one?: boolean; stop_after_first?: boolean };

export interface TagFormat {
  type: 'tag';
  begin: string;
  content: StructuralTagFormat;
  end: string;
}

/** The structured output `value` describes, or a reason it describes none (for the error message). */
export function parseStructuredOutput(value: unknown): StructuredOutput | string {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return 'not an object';
  const record = value as Record<string, unknown>;
  const only = (...keys: string[]) => {
    const extra = Object.keys(record).find((key) => key !== 'type' && !keys.includes(key));
    return extra === undefined ? null : `an unknown field ${JSON.stringify(extra)} for type ${JSON.stringify(record.type)}`;
  };
  switch (record.type) {
    case 'json_schema': {
      const schema = record.schema;
      const isSchema = typeof schema === 'boolean' || (typeof schema === 'object' && schema !== null && !Array.isArray(schema));
      if (!isSchema) return 'json_schema needs a schema that is an object or a boolean';
      return only('schema') ?? { type: 'json_schema', schema: structuredClone(schema) as Record<string, unknown> | boolean };
    }
    case 'json_object':
      return only() ?? { type: 'json_object' };
    case 'regex':
      if (typeof record.pattern !== 'string' || record.pattern.length === 0) return 'regex needs a non-empty pattern string';
      return only('pattern') ?? { type: 'regex', pattern: record.pattern };
    case 'choice': {
      const choices = record.choices;
      if (!Array.isArray(choices) || choices.length === 0 || !choices.every((c) => typeof c === 'string' && c.length > 0)) {
        return 'choice needs a non-empty array of non-empty strings';
      }
      return only('choices') ?? { type: 'choice', choices: [...(choices as string[])] };
    }
    case 'grammar':
      if (typeof record.grammar !== 'string' || record.grammar.trim().length === 0) return 'grammar needs a non-empty EBNF grammar string';
      return only('grammar') ?? { type: 'grammar', grammar: record.grammar };
    case 'structural_tag': {
      const format = record.format;
      if (typeof format !== 'object' || format === null || Array.isArray(format) || typeof (format as { type?: unknown }).type !== 'string') {
        return 'structural_tag needs a format object with a type (xgrammar checks the rest)';
      }
      return only('format') ?? { type: 'structural_tag', format: structuredClone(format) as StructuralTagFormat };
    }
    default:
      return `an unknown type ${JSON.stringify(record.type)}`;
  }
}
