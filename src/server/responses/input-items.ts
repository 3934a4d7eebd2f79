import { badRequest } from '../openai-errors.ts';
import { itemId } from './response-output.ts';
import type { ResponsesInputItem } from './responses-schemas.ts';

/** An input item as GET /v1/responses/{id}/input_items lists it: with an id and a status. */
export type ListedItem = Record<string, unknown> & { id: string };

/**
 * A request's input as the API lists it back: each item with its id (the client's, else a new
 * one), messages with their content as parts (a string is one input_text part, or output_text
 * for the assistant's).
 */
export function listedInputItems(input: ResponsesInputItem[]): ListedItem[] {
  return input.map((item): ListedItem => {
    switch (item.type) {
      case 'message': {
        const part = item.role === 'assistant' ? 'output_text' : 'input_text';
        const content = typeof item.content === 'string' ? [{ type: part, text: item.content }] : item.content;
        return { type: 'message', id: item.id ?? itemId('msg'), role: item.role, content, status: item.status ?? 'completed' };
      }
      case 'function_call':
        return { ...item, id: item.id ?? itemId('fc'), status: item.status ?? 'completed' };
      case 'function_call_output':
        return { ...item, id: item.id ?? itemId('fco'), status: item.status ?? 'completed' };
      default:
        return { ...item, id: typeof item.id === 'string' ? item.id : itemId('rs') };
    }
  });
}

/** The query of GET /v1/responses/{id}/input_items. */
export interface InputItemsQuery {
  limit?: string;
  order?: string;
  after?: string;
  before?: string;
}

/**
 * One page of a response's input items, as OpenAI's list endpoints answer: `order` desc (the
 * default: newest first) or asc, at most `limit` (1 to 100, default 20), those after the item
 * `after` and before the item `before` in that order.
 */
export function inputItemsPage(items: ListedItem[], query: InputItemsQuery): object {
  const limit = query.limit === undefined ? 20 : Number(query.limit);
  if (!Number.isInteger(limit) || limit < 1 || limit > 100) throw badRequest(`limit must be an integer from 1 to 100 (got ${JSON.stringify(query.limit)})`, 'limit');
  const order = query.order ?? 'desc';
  if (order !== 'asc' && order !== 'desc') throw badRequest(`order must be "asc" or "desc" (got ${JSON.stringify(order)})`, 'order');
  let ordered = order === 'asc' ? items : [...items].reverse();
  const position = (id: string, param: string) => {
    const at = ordered.findIndex((item) => item.id === id);
    if (at < 0) throw badRequest(`${param}: no input item of this response has the id "${id}"`, param);
    return at;
  };
  if (query.before !== undefined) ordered = ordered.slice(0, position(query.before, 'before'));
  if (query.after !== undefined) ordered = ordered.slice(position(query.after, 'after') + 1);
  const data = ordered.slice(0, limit);
  return { object: 'list', data, first_id: data[0]?.id ?? null, last_id: data.at(-1)?.id ?? null, has_more: ordered.length > limit };
}
