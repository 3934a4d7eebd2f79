import { randomUUID } from 'node:crypto';
import type { ParsedDelta } from '../tool-calls/parsed-output-stream.ts';

export type ItemStatus = 'in_progress' | 'completed' | 'incomplete';

export type OutputItem =
  | { type: 'message'; id: string; status: ItemStatus; role: 'assistant'; content: { type: 'output_text'; text: string; annotations: []; logprobs: [] }[] }
  | { type: 'reasoning'; id: string; status: ItemStatus; summary: []; content: { type: 'reasoning_text'; text: string }[] }
  | { type: 'function_call'; id: string; status: ItemStatus; call_id: string; name: string; arguments: string };

/** A streamed event, less its sequence number. */
export type ResponseEvent = { type: string } & Record<string, unknown>;

export function itemId(prefix: string): string {
  return `${prefix}_${randomUUID().replaceAll('-', '')}`;
}

/**
 * A response's output items, built from what the model's output reads as (content, reasoning,
 * tool calls, in the order they come): each run of content is a message item, each run of
 * reasoning a reasoning item, each call a function_call item. While streaming, `emit` gets the
 * events the Responses API documents for each step: an item is added, its text or arguments grow
 * by deltas, and it is done once the next item starts or the output ends.
 */
export class ResponseOutput {
  readonly items: OutputItem[] = [];
  private open: OutputItem | null = null;
  private readonly callItems: OutputItem[] = [];
  private readonly emit: (event: ResponseEvent) => void;

  constructor(emit: (event: ResponseEvent) => void = () => undefined) {
    this.emit = emit;
  }

  add(delta: ParsedDelta): void {
    if (delta.reasoning !== '') this.appendText('reasoning', delta.reasoning);
    if (delta.content !== '') this.appendText('message', delta.content);
    for (const call of delta.toolCalls) {
      if (call.id !== undefined) {
        const item: OutputItem = { type: 'function_call', id: itemId('fc'), status: 'in_progress', call_id: call.id, name: call.function.name ?? '', arguments: '' };
        this.start(item);
        this.callItems[call.index] = item;
      }
      const item = this.callItems[call.index];
      if (item?.type !== 'function_call' || call.function.arguments === '') continue;
      item.arguments += call.function.arguments;
      this.emit({ type: 'response.function_call_arguments.delta', item_id: item.id, output_index: this.items.indexOf(item), delta: call.function.arguments });
    }
  }

  /** Closes the last item: `incomplete` when the output was cut (max_output_tokens). */
  finish(status: 'completed' | 'incomplete'): void {
    this.close(status);
    for (const item of this.items) if (item.status === 'in_progress') item.status = status;
  }

  private appendText(kind: 'message' | 'reasoning', text: string): void {
    if (this.open?.type !== kind) {
      this.start(
        kind === 'message'
          ? { type: 'message', id: itemId('msg'), status: 'in_progress', role: 'assistant', content: [] }
          : { type: 'reasoning', id: itemId('rs'), status: 'in_progress', summary: [], content: [] },
      );
      const part = kind === 'message' ? { type: 'output_text' as const, text: '', annotations: [] as [], logprobs: [] as [] } : { type: 'reasoning_text' as const, text: '' };
      this.emit({ type: 'response.content_part.added', ...this.at(), content_index: 0, part: { ...part } });
      (this.open as { content: object[] }).content.push(part);
    }
    const item = this.open as Extract<OutputItem, { type: 'message' | 'reasoning' }>;
    item.content[0].text += text;
    this.emit({ type: kind === 'message' ? 'response.output_text.delta' : 'response.reasoning_text.delta', ...this.at(), content_index: 0, delta: text, ...(kind === 'message' ? { logprobs: [] } : {}) });
  }

  private start(item: OutputItem): void {
    this.close('completed');
    this.items.push(item);
    this.open = item;
    this.emit({ type: 'response.output_item.added', output_index: this.items.length - 1, item: structuredClone(item) });
  }

  private close(status: 'completed' | 'incomplete'): void {
    const item = this.open;
    if (item === null) return;
    this.open = null;
    item.status = status;
    const at = { item_id: item.id, output_index: this.items.indexOf(item) };
    if (item.type === 'function_call') {
      this.emit({ type: 'response.function_call_arguments.done', ...at, name: item.name, arguments: item.arguments });
    } else {
      const part = item.content[0];
      this.emit({ type: item.type === 'message' ? 'response.output_text.done' : 'response.reasoning_text.done', ...at, content_index: 0, text: part.text, ...(item.type === 'message' ? { logprobs: [] } : {}) });
      this.emit({ type: 'response.content_part.done', ...at, content_index: 0, part: { ...part } });
    }
    this.emit({ type: 'response.output_item.done', output_index: at.output_index, item: structuredClone(item) });
  }

  private at(): { item_id: string; output_index: number } {
    const item = this.open as OutputItem;
    return { item_id: item.id, output_index: this.items.indexOf(item) };
  }
}
