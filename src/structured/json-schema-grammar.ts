import type { XGrammarModule } from './xgrammar-module.ts';

/**
 * The character class xgrammar 0.1.27 writes for one character of a string with a length bound
 * (minLength / maxLength): it leaves out `"`, `\` and line breaks but lets the other control
 * characters through (a raw tab), which JSON forbids inside strings, so the output would not parse.
 */
const LOOSE_STRING_CHAR = String.raw`[^\"\\\r\n]`;
/** What it writes for strings without a bound: no control character. */
const STRING_CHAR = String.raw`[^\0-\x1f\"\\]`;

/**
 * The EBNF grammar (root rule `root`) of JSON valid under `schema`, written on one line with ", "
 * and ": " between items; `strict`: no property or item the schema does not name. Runs inside the
 * module's `capture` (xgrammar aborts on a schema it cannot convert).
 */
export async function jsonSchemaGrammar(module: XGrammarModule, schema: string, strict: boolean): Promise<string> {
  const grammar = await module.api.Grammar.fromJSONSchema(schema, false, -1, undefined, strict);
  try {
    return grammar.handle.ToString().replaceAll(LOOSE_STRING_CHAR, STRING_CHAR);
  } finally {
    grammar.handle.delete();
  }
}
