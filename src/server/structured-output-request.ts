import { z } from 'zod';
import type { StructuredOutput } from '../sampling/structured-output.ts';
import { KeelError } from '../errors.ts';
import { checkStructuredOutput } from '../structured/grammar-check.ts';
import { badRequest } from './openai-errors.ts';
import type { RequestField } from './openai-sampling.ts';

/**
 * The request fields that ask for structured output: OpenAI's `response_format`, vLLM's
 * `structured_outputs` and its older `guided_*` fields. Their shapes are checked here; what the
 * schema, regex or grammar says is checked by xgrammar (structured/grammar-check.ts) before the
 * request is queued.
 */

const jsonSchemaValue = z.union([z.record(z.string(), z.unknown()), z.boolean()], { error: 'must be a JSON schema (an object or a boolean)' });
/** vLLM also takes a schema as JSON text. */
const jsonSchemaOrText = z.union([jsonSchemaValue, z.string()], { error: 'must be a JSON schema (an object, a boolean or JSON text)' });
const choices = z.array(z.string().min(1)).min(1, 'must hold at least one choice');

export const responseFormat = z.discriminatedUnion(
  'type',
  [
    z.strictObject({ type: z.literal('text') }),
    z.strictObject({ type: z.literal('json_object') }),
    z.strictObject({
      type: z.literal('json_schema'),
      json_schema: z.strictObject({
        name: z.string().min(1, 'must not be empty'),
        description: z.string().nullish(),
        schema: jsonSchemaValue,
        strict: z.boolean().nullish(),
      }),
    }),
  ],
  { error: 'must have type "text", "json_object" or "json_schema"' },
);

export const structuredOutputsParams = z.strictObject({
  json: jsonSchemaOrText.nullish(),
  regex: z.string().min(1).nullish(),
  choice: choices.nullish(),
  grammar: z.string().min(1).nullish(),
  json_object: z.boolean().nullish(),
});

/** The fields both endpoints take. */
export const structuredOutputFields = {
  response_format: responseFormat.nullish(),
  structured_outputs: structuredOutputsParams.nullish(),
  guided_json: jsonSchemaOrText.nullish(),
  guided_regex: z.string().min(1).nullish(),
  guided_choice: choices.nullish(),
  guided_grammar: z.string().min(1).nullish(),
};

type Fields = { [K in keyof typeof structuredOutputFields]?: z.infer<(typeof structuredOutputFields)[K]> };

/** The request's structured output and the field that asked for it; null for free text. At most one field may ask. */
export function structuredOutputOf(body: Fields): { spec: StructuredOutput; param: string } | null {
  const asked: { spec: StructuredOutput; param: string }[] = [];
  const format = body.response_format;
  if (format?.type === 'json_object') asked.push({ spec: { type: 'json_object' }, param: 'response_format' });
  if (format?.type === 'json_schema') asked.push({ spec: { type: 'json_schema', schema: format.json_schema.schema }, param: 'response_format.json_schema.schema' });
  const so = body.structured_outputs;
  if (so) {
    const inner = [
      so.json !== null && so.json !== undefined ? { spec: jsonSchemaSpec(so.json, 'structured_outputs.json'), param: 'structured_outputs.json' } : null,
      so.regex ? { spec: { type: 'regex', pattern: so.regex } as const, param: 'structured_outputs.regex' } : null,
      so.choice ? { spec: { type: 'choice', choices: so.choice } as const, param: 'structured_outputs.choice' } : null,
      so.grammar ? { spec: { type: 'grammar', grammar: so.grammar } as const, param: 'structured_outputs.grammar' } : null,
      so.json_object ? { spec: { type: 'json_object' } as const, param: 'structured_outputs.json_object' } : null,
    ].filter((x) => x !== null);
    if (inner.length === 0) throw badRequest('structured_outputs must set one of json, regex, choice, grammar or json_object', 'structured_outputs');
    asked.push(...inner);
  }
  if (body.guided_json !== null && body.guided_json !== undefined) asked.push({ spec: jsonSchemaSpec(body.guided_json, 'guided_json'), param: 'guided_json' });
  if (body.guided_regex) asked.push({ spec: { type: 'regex', pattern: body.guided_regex }, param: 'guided_regex' });
  if (body.guided_choice) asked.push({ spec: { type: 'choice', choices: body.guided_choice }, param: 'guided_choice' });
  if (body.guided_grammar) asked.push({ spec: { type: 'grammar', grammar: body.guided_grammar }, param: 'guided_grammar' });
  if (asked.length > 1) {
    throw badRequest(`only one structured output may be asked for, and this request asks for ${asked.length}: ${asked.map((a) => a.param).join(', ')}`, asked[1].param);
  }
  return asked[0] ?? null;
}

function jsonSchemaSpec(value: Record<string, unknown> | boolean | string, param: string): StructuredOutput {
  if (typeof value !== 'string') return { type: 'json_schema', schema: value };
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch (error) {
    throw badRequest(`${param}: the schema is not valid JSON text: ${(error as Error).message}`, param);
  }
  if (typeof parsed !== 'boolean' && (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))) {
    throw badRequest(`${param}: the schema must be a JSON object or a boolean`, param);
  }
  return { type: 'json_schema', schema: parsed as Record<string, unknown> | boolean };
}

/**
 * The request's structured output as a sampling field, once xgrammar has parsed its schema,
 * regex or grammar (a 400 naming the field and the problem otherwise); null for free text.
 */
export async function structuredOutputField(body: Fields): Promise<RequestField | null> {
  const asked = structuredOutputOf(body);
  if (asked === null) return null;
  try {
    await checkStructuredOutput(asked.spec);
  } catch (error) {
    if (error instanceof KeelError && error.kind === 'invalid_argument') throw badRequest(`${asked.param}: ${error.message}`, asked.param);
    throw error;
  }
  return { name: asked.param, field: 'structuredOutput', value: asked.spec };
}
