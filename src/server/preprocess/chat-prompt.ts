import { invalidArgument } from '../../errors.ts';
import { openModelFiles } from '../../checkpoint/model-files.ts';
import { requireTokenizerDocuments, Tokenizer, type ChatMessage, type ToolDefinition } from '../../tokenizer/tokenizer.ts';

/**
 * Keel's marks in the text it tokenizes: U+FDD0 around a control token's id, U+FDD1 around a
 * message's special-token string while the template renders. Both are Unicode noncharacters,
 * which the standard sets aside for exactly such internal use; messages may not contain them.
 */
const CONTROL_MARK = '\uFDD0';
const TEXT_MARK = '\uFDD1';
const MARKS = /[\uFDD0\uFDD1]/;
const TEXT_PLACEHOLDER = /\uFDD1(\d+)\uFDD1/g;

/** How many tokens before the ones decoded give their text its context (`decodeAfter`). */
const DECODE_CONTEXT_TOKENS = 6;

/**
 * A turn of a stored conversation, as the engine ran it: its prompt's rendered text and token ids,
 * and the token ids the model generated after them.
 */
export interface PreviousTurn {
  promptText: string;
  promptIds: number[];
  outputIds: number[];
}

interface AddedTokenJson {
  id: number;
  content: string;
  special?: boolean;
}

/**
 * A chat's prompt: the model's chat template over the messages, tokenized. A special-token string
 * a message carries (`<|im_end|>` typed by a user) is tokenized as the text it is, never as the
 * control token, unless special tokens are allowed.
 *
 * How: the messages' special-token strings are swapped for placeholders while the template
 * renders, so every special-token string in the result is the template's own. Those become
 * control placeholders, the message strings are put back, and the text is read by a copy of the
 * tokenizer whose special tokens are spelled as the control placeholders: it splits the text at
 * the template's control tokens exactly where the model's tokenizer would, and reads the messages'
 * strings as plain text. Without such strings the ids are the model tokenizer's own.
 */
export class ChatPromptEncoder {
  private readonly tokenizer: Tokenizer;
  /** The tokenizer with control placeholders for special tokens; null when special strings stay control tokens. */
  private readonly textOnly: Tokenizer | null;
  private readonly specialString: RegExp | null;
  private readonly controlPlaceholder: Map<string, string>;

  private constructor(tokenizer: Tokenizer, textOnly: Tokenizer | null, specials: AddedTokenJson[]) {
    this.tokenizer = tokenizer;
    this.textOnly = textOnly;
    // Longest first, so that a special token containing another is matched whole.
    const contents = specials.map((t) => t.content).sort((a, b) => b.length - a.length);
    this.specialString = contents.length > 0 ? new RegExp(contents.map(escapeRegExp).join('|'), 'g') : null;
    this.controlPlaceholder = new Map(specials.map((t) => [t.content, controlPlaceholder(t.id)]));
  }

  /**
   * Loads the tokenizer of the model at `path` (a directory or a GGUF file); `allowSpecialTokens`
   * keeps messages' special strings as control tokens.
   */
  static load(path: string, allowSpecialTokens: boolean): ChatPromptEncoder {
    const docs = requireTokenizerDocuments(openModelFiles(path));
    const tokenizer = Tokenizer.fromDocuments(docs);
    const json = docs.tokenizer.json as { added_tokens?: AddedTokenJson[] };
    const specials = (json.added_tokens ?? []).filter((t) => t.special === true);
    if (allowSpecialTokens || specials.length === 0) return new ChatPromptEncoder(tokenizer, null, []);
    const masked = {
      ...json,
      added_tokens: (json.added_tokens ?? []).map((t) => (t.special === true ? { ...t, content: controlPlaceholder(t.id) } : t)),
    };
    return new ChatPromptEncoder(tokenizer, new Tokenizer(masked, docs.config, null, docs.tokenizer.source), specials);
  }

  /** The prompt's token ids, with the generation prompt that opens the assistant's turn; `tools` as the template shows them. */
  encode(messages: ChatMessage[], tools?: ToolDefinition[]): number[] {
    return this.tokenize(this.render(messages, tools));
  }

  /**
   * The text a prompt's token ids are read from: the template over the messages (and the
   * generation prompt), with the template's own special-token strings marked as control tokens.
   */
  render(messages: ChatMessage[], tools?: ToolDefinition[]): string {
    if (this.specialString === null) return this.tokenizer.applyChatTemplate(messages, { addGenerationPrompt: true, tools });
    const specialString = this.specialString;
    const typed: string[] = [];
    // Every string a client wrote (contents, tool-call arguments, tool definitions) is masked.
    const mask = (value: string, where: string) => {
      if (MARKS.test(value)) throw invalidArgument(`${where} holds U+FDD0 or U+FDD1, Unicode noncharacters that Keel reserves to mark special tokens`);
      return value.replace(specialString, (s) => `${TEXT_MARK}${typed.push(s) - 1}${TEXT_MARK}`);
    };
    const masked = messages.map((m, i) => mapStrings(m, (value) => mask(value, `messages[${i}]`)));
    const maskedTools = tools?.map((t, i) => mapStrings(t, (value) => mask(value, `tools[${i}]`)));
    const rendered = this.tokenizer.applyChatTemplate(masked, { addGenerationPrompt: true, tools: maskedTools });
    return rendered.replace(specialString, (s) => this.controlPlaceholder.get(s) ?? s).replace(TEXT_PLACEHOLDER, (_, k: string) => typed[Number(k)]);
  }

  /** The token ids of a rendered prompt. */
  tokenize(rendered: string): number[] {
    return this.reader.encode(rendered, { addSpecialTokens: false });
  }

  /**
   * The token ids of a rendered prompt that continues `previous`: where the text starts with the
   * previous prompt's text and then its output, those come as the ids the engine ran them as (the
   * prompt's, then the tokens the model generated), and only the rest is tokenized. A follow-up's
   * prompt so begins with exactly the tokens whose KV the prefix cache holds, where tokenizing the
   * generated text afresh may spell it in other tokens. The output is carried as far as its text
   * matches (a template may render a reply otherwise: tool calls, reasoning left out, trimmed).
   */
  tokenizeContinuing(rendered: string, previous: PreviousTurn): number[] {
    if (!rendered.startsWith(previous.promptText)) return this.tokenize(rendered);
    const rest = rendered.slice(previous.promptText.length);
    const outputText = (count: number) => this.decodeAfter(previous.promptIds, previous.outputIds.slice(0, count));
    let carried = previous.outputIds.length;
    if (!rest.startsWith(outputText(carried))) {
      // The longest run of output tokens whose text the rendered prompt holds (binary search).
      let [low, high] = [0, carried - 1];
      while (low < high) {
        const mid = Math.ceil((low + high) / 2);
        if (rest.startsWith(outputText(mid))) low = mid;
        else high = mid - 1;
      }
      carried = low;
    }
    const after = rest.slice(outputText(carried).length);
    return [...previous.promptIds, ...previous.outputIds.slice(0, carried), ...(after === '' ? [] : this.tokenize(after))];
  }

  /**
   * The text `ids` add after `before` (its last few tokens are context enough: decoders drop or
   * merge at the start of a sequence, as a leading space or a split UTF-8 character).
   */
  private decodeAfter(before: readonly number[], ids: readonly number[]): string {
    const context = before.slice(-DECODE_CONTEXT_TOKENS);
    const head = this.reader.decode(context, { skipSpecialTokens: false });
    return this.reader.decode([...context, ...ids], { skipSpecialTokens: false }).slice(head.length);
  }

  /** Reads rendered prompts: the tokenizer whose special tokens are spelled as control placeholders, if messages' special strings are text. */
  private get reader(): Tokenizer {
    return this.textOnly ?? this.tokenizer;
  }

  /** The model's tokenizer, for plain prompts (whose special-token strings are control tokens). */
  get plain(): Tokenizer {
    return this.tokenizer;
  }
}

/** `value` with every string in it (object keys aside) replaced by `f` of it. */
function mapStrings<T>(value: T, f: (text: string) => string): T {
  if (typeof value === 'string') return f(value) as T;
  if (Array.isArray(value)) return value.map((v: unknown) => mapStrings(v, f)) as T;
  if (typeof value === 'object' && value !== null) return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, mapStrings(v, f)])) as T;
  return value;
}

function controlPlaceholder(id: number): string {
  return `${CONTROL_MARK}${id}${CONTROL_MARK}`;
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
