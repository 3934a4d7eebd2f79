import type { ChatMessageInput } from '../openai-schemas.ts';
import type { PreviousTurn } from '../preprocess/chat-prompt.ts';
import type { ListedItem } from './input-items.ts';

/** A response kept for later: what GET answers, and the conversation a follow-up continues. */
export interface StoredResponse {
  /** The response object, as it was answered. */
  response: Record<string, unknown> & { id: string };
  /** The conversation through this response's output (its instructions left out: a follow-up gives its own). */
  conversation: ChatMessageInput[];
  /** The request's own input items (not those of the responses it continued), as input_items lists them. */
  inputItems: ListedItem[];
  /** This turn as the engine ran it (prompt text and ids, output ids): a follow-up's prompt starts with those ids. */
  turn: PreviousTurn;
  /** The data-parallel replica that ran it, where a follow-up is sent (its prefix cache holds the turn). */
  replica: number;
}

/**
 * The responses the server keeps, at most `capacity` of them: the least recently stored or read
 * one goes first. In memory only: they are gone when the server restarts.
 */
export class ResponseStore {
  private readonly capacity: number;
  private readonly entries = new Map<string, StoredResponse>();

  constructor(capacity: number) {
    this.capacity = capacity;
  }

  get size(): number {
    return this.entries.size;
  }

  get(id: string): StoredResponse | undefined {
    const entry = this.entries.get(id);
    if (entry) {
      // A Map keeps insertion order: moving it to the end makes it the most recently used.
      this.entries.delete(id);
      this.entries.set(id, entry);
    }
    return entry;
  }

  put(entry: StoredResponse): void {
    this.entries.delete(entry.response.id);
    this.entries.set(entry.response.id, entry);
    while (this.entries.size > this.capacity) this.entries.delete(this.entries.keys().next().value as string);
  }

  delete(id: string): boolean {
    return this.entries.delete(id);
  }
}
