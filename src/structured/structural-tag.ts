import type { StructuralTagFormat } from '../sampling/structured-output.ts';
import { jsonSchemaGrammar } from './json-schema-grammar.ts';
import type { XGrammarModule } from './xgrammar-module.ts';

/**
 * A structural tag as xgrammar compiles it: `{"type": "structural_tag", "format": ...}` as JSON,
 * each JSON-schema content replaced by the grammar of that schema's JSON on one line (", " and
 * ": " between items, strict: json-schema-grammar.ts). xgrammar writes a structural tag's own JSON-schema contents with
 * any amount of whitespace anywhere, in which a sampled model can wander until max_tokens; this
 * way JSON inside a tag comes out as response_format's JSON does. Runs inside the module's
 * `capture` (a schema xgrammar cannot convert aborts it).
 */
export async function structuralTagJson(module: XGrammarModule, format: StructuralTagFormat): Promise<string> {
  return JSON.stringify({ type: 'structural_tag', format: await compactJson(module, format) });
}

async function compactJson(module: XGrammarModule, format: StructuralTagFormat): Promise<StructuralTagFormat> {
  switch (format.type) {
    case 'json_schema':
      return { type: 'grammar', grammar: await jsonSchemaGrammar(module, JSON.stringify(format.json_schema), true) };
    case 'sequence':
    case 'or':
      return { ...format, elements: await Promise.all(format.elements.map((e) => compactJson(module, e))) };
    case 'tag':
      return { ...format, content: await compactJson(module, format.content) };
    case 'tags_with_separator':
      return { ...format, tags: await Promise.all(format.tags.map(async (tag) => ({ ...tag, content: await compactJson(module, tag.content) }))) };
    case 'const_string':
    case 'grammar':
    case 'regex':
      return format;
  }
}
