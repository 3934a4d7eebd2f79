/** Where a top-level member's value lies in the scanned text: [start, end), end null while it is still open. */
export interface MemberSpan {
  start: number;
  end: number | null;
}

type Phase = 'start' | 'key-or-end' | 'key' | 'colon' | 'value' | 'nested' | 'string' | 'primitive' | 'comma-or-end' | 'done' | 'invalid';

const WHITESPACE = new Set([' ', '\t', '\n', '\r']);
const PRIMITIVE = /[\w.+-]/;

/**
 * Reads one JSON object as it streams in, a chunk at a time, and tells where each of its top-level
 * members' values lies, so that a call's name can be read as soon as it closes and its arguments
 * forwarded while they are still being written. It checks the object's outline (keys, colons,
 * commas, balanced brackets outside strings); what lies inside a nested value is left to
 * JSON.parse once the object is complete. It stops at the object's closing brace: the text after
 * it is not consumed.
 */
export class JsonObjectScanner {
  /** Everything consumed so far, from the whitespace before the opening brace. */
  text = '';
  private phase: Phase = 'start';
  private depth = 0;
  private escaped = false;
  private inNestedString = false;
  private tokenStart = 0;
  private key = '';
  private readonly members = new Map<string, MemberSpan>();

  get state(): 'open' | 'done' | 'invalid' {
    return this.phase === 'done' ? 'done' : this.phase === 'invalid' ? 'invalid' : 'open';
  }

  /** The value of the member named `key` (the last one, if repeated), or undefined before it starts. */
  member(key: string): MemberSpan | undefined {
    return this.members.get(key);
  }

  /** Consumes `chunk` up to the object's end (or up to where it stops being valid); returns how many characters it took. */
  push(chunk: string): number {
    const before = this.text.length;
    const full = this.text + chunk;
    let offset = before;
    while (offset < full.length && this.phase !== 'done' && this.phase !== 'invalid') {
      // A primitive ends at the first character that cannot continue it, which the next phase reads again.
      if (this.step(full, offset)) offset++;
    }
    // The character that broke the outline is not consumed: the caller reads it as what follows.
    if (this.phase === 'invalid') offset = Math.max(offset - 1, before);
    this.text = full.slice(0, offset);
    return offset - before;
  }

  /** One character at `offset`; returns false when the character must be read again in the new phase. */
  private step(full: string, offset: number): boolean {
    const c = full[offset];
    switch (this.phase) {
      case 'start':
        if (c === '{') {
          this.depth = 1;
          this.phase = 'key-or-end';
        } else if (!WHITESPACE.has(c)) this.phase = 'invalid';
        return true;
      case 'key-or-end':
        if (c === '"') {
          this.phase = 'key';
          this.tokenStart = offset;
        } else if (c === '}') this.phase = 'done';
        else if (!WHITESPACE.has(c)) this.phase = 'invalid';
        return true;
      case 'key':
        if (this.escaped) this.escaped = false;
        else if (c === '\\') this.escaped = true;
        else if (c === '"') {
          try {
            this.key = JSON.parse(full.slice(this.tokenStart, offset + 1)) as string;
            this.phase = 'colon';
          } catch {
            this.phase = 'invalid';
          }
        }
        return true;
      case 'colon':
        if (c === ':') this.phase = 'value';
        else if (!WHITESPACE.has(c)) this.phase = 'invalid';
        return true;
      case 'value':
        if (WHITESPACE.has(c)) return true;
        this.members.set(this.key, { start: offset, end: null });
        if (c === '{' || c === '[') {
          this.depth = 2;
          this.phase = 'nested';
        } else if (c === '"') this.phase = 'string';
        else if (PRIMITIVE.test(c)) this.phase = 'primitive';
        else this.phase = 'invalid';
        return true;
      case 'nested':
        if (this.escaped) this.escaped = false;
        else if (this.inNestedString) {
          if (c === '\\') this.escaped = true;
          else if (c === '"') this.inNestedString = false;
        } else if (c === '"') this.inNestedString = true;
        else if (c === '{' || c === '[') this.depth++;
        else if (c === '}' || c === ']') {
          this.depth--;
          if (this.depth === 1) this.closeValue(offset + 1);
        }
        return true;
      case 'string':
        if (this.escaped) this.escaped = false;
        else if (c === '\\') this.escaped = true;
        else if (c === '"') this.closeValue(offset + 1);
        return true;
      case 'primitive':
        if (PRIMITIVE.test(c)) return true;
        this.closeValue(offset);
        return false;
      case 'comma-or-end':
        if (c === ',') this.phase = 'key-or-end';
        else if (c === '}') this.phase = 'done';
        else if (!WHITESPACE.has(c)) this.phase = 'invalid';
        return true;
      case 'done':
      case 'invalid':
        return true;
    }
  }

  private closeValue(end: number): void {
    const span = this.members.get(this.key);
    if (span) span.end = end;
    this.phase = 'comma-or-end';
  }
}
