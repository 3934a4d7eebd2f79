import type { StructuralTagFormat, TagFormat } from '../../sampling/structured-output.ts';

/** A function a constrained output may call: its name and the JSON schema its arguments follow. */
export interface CallableFunction {
  name: string;
  parameters: Record<string, unknown> | boolean;
}

/** One tag per function: `begin(name)`, the arguments as JSON under the function's schema, `end`. */
export function callTags(functions: CallableFunction[], begin: (name: string) => string, end: string): TagFormat[] {
  return functions.map((fn) => ({ type: 'tag', begin: begin(fn.name), content: { type: 'json_schema', json_schema: fn.parameters }, end }));
}

/** At least one of `tags`, joined by `separator`; exactly one unless `parallel`. */
export function oneOrMore(tags: TagFormat[], separator: string, parallel: boolean): StructuralTagFormat {
  return { type: 'tags_with_separator', tags, separator, at_least_one: true, stop_after_first: !parallel };
}

/** A function's name as a JSON string (names are letters, digits, `_`, `.` and `-`, but quoted properly all the same). */
export function jsonName(name: string): string {
  return JSON.stringify(name);
}
