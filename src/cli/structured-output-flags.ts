import { readFileSync } from 'node:fs';
import type { ParseArgsConfig } from 'node:util';
import { invalidArgument } from '../errors.ts';
import type { StructuredOutput } from '../sampling/structured-output.ts';

export const STRUCTURED_OUTPUT_FLAGS = {
  'json-schema': { type: 'string' },
  'json-object': { type: 'boolean' },
  regex: { type: 'string' },
  choice: { type: 'string', multiple: true },
  grammar: { type: 'string' },
} as const satisfies ParseArgsConfig['options'];

export const STRUCTURED_OUTPUT_FLAGS_HELP = `Structured output (at most one; docs/structured-output.md):
  --json-schema FILE             output JSON valid under the JSON schema in FILE
  --json-object                  output a JSON object
  --regex PATTERN                output text the regular expression matches in full
  --choice TEXT                  output exactly one of the choices (repeat the flag for each)
  --grammar FILE                 output text the EBNF grammar in FILE derives (root rule: root)`;

interface StructuredOutputFlagValues {
  'json-schema'?: string;
  'json-object'?: boolean;
  regex?: string;
  choice?: string[];
  grammar?: string;
}

/** The structured output the flags ask for (its schema or grammar read from its file); null for none. */
export function structuredOutputFromFlags(values: StructuredOutputFlagValues): StructuredOutput | null {
  const given = (Object.keys(STRUCTURED_OUTPUT_FLAGS) as (keyof StructuredOutputFlagValues)[]).filter((flag) => values[flag] !== undefined && values[flag] !== false);
  if (given.length > 1) throw invalidArgument(`give at most one of ${given.map((f) => `--${f}`).join(', ')}`);
  if (values['json-schema'] !== undefined) {
    const file = values['json-schema'];
    const text = readFlagFile('--json-schema', file);
    let schema: unknown;
    try {
      schema = JSON.parse(text);
    } catch (error) {
      throw invalidArgument(`--json-schema ${file} is not JSON: ${(error as Error).message}`);
    }
    if (typeof schema !== 'boolean' && (typeof schema !== 'object' || schema === null || Array.isArray(schema))) {
      throw invalidArgument(`--json-schema ${file} must hold a JSON schema: an object or a boolean`);
    }
    return { type: 'json_schema', schema: schema as Record<string, unknown> | boolean };
  }
  if (values['json-object']) return { type: 'json_object' };
  if (values.regex !== undefined) return { type: 'regex', pattern: values.regex };
  if (values.choice !== undefined) return { type: 'choice', choices: values.choice };
  if (values.grammar !== undefined) return { type: 'grammar', grammar: readFlagFile('--grammar', values.grammar) };
  return null;
}

function readFlagFile(flag: string, file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (error) {
    throw invalidArgument(`${flag} ${file} cannot be read: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
}
