import { Template } from '@huggingface/jinja';
import { invalidArgument, invalidModel } from '../errors.ts';
import type { TokenizerDocuments } from '../checkpoint/model-documents.ts';

/**
 * A message as Hugging Face chat templates read it. Tool calls carry their arguments decoded (an
 * object), as transformers passes them and templates' `tojson` expects.
 */
export interface ChatMessage {
  role: string;
  content: string;
  tool_calls?: TemplateToolCall[];
  /** A tool message: the call it answers. */
  tool_call_id?: string;
  name?: string;
}

export interface TemplateToolCall {
  id: string;
  type: 'function';
  function: { name: string; arguments: unknown };
}

/** A tool as templates receive it (`tools`): OpenAI's chat-completions shape. */
export interface ToolDefinition {
  type: 'function';
  function: { name: string; description?: string; parameters?: Record<string, unknown> };
}

export interface RenderOptions {
  addGenerationPrompt: boolean;
  /** The tools the model may call; left undefined for templates when there are none. */
  tools?: ToolDefinition[];
}

/** Special-token strings a template may reference, as transformers passes them (`bos_token`, `eos_token`, ...). */
export type SpecialTokenStrings = Partial<Record<'bos_token' | 'eos_token' | 'unk_token' | 'pad_token', string>>;

/**
 * A Hugging Face chat template (Jinja), rendered with `@huggingface/jinja`, which provides the
 * helpers templates rely on (`raise_exception`, `strftime_now`, `tojson`...).
 */
export class ChatTemplate {
  private readonly template: Template;

  /** `origin` names the file the template came from in a load-time error. */
  constructor(text: string, origin: string) {
    this.source = text;
    try {
      this.template = new Template(text);
    } catch (error) {
      throw invalidModel(`the chat template in ${origin} cannot be parsed: ${(error as Error).message}`);
    }
  }

  /** The template's source, to see which tool-call markup it teaches the model. */
  readonly source: string;

  render(messages: ChatMessage[], options: RenderOptions & { specialTokens: SpecialTokenStrings }): string {
    const tools = options.tools !== undefined && options.tools.length > 0 ? { tools: options.tools } : {};
    try {
      return this.template.render({ ...options.specialTokens, messages, add_generation_prompt: options.addGenerationPrompt, ...tools });
    } catch (error) {
      // Templates reject conversations they cannot format (roles out of order, unknown roles) via
      // raise_exception. The error reaches API clients: it names no path of the server's.
      throw invalidArgument(`the model's chat template rejected the messages: ${(error as Error).message}`);
    }
  }
}

/**
 * The template transformers would use: `chat_template.jinja` beside the tokenizer (transformers 5
 * saves it there), else `chat_template` in tokenizer_config.json: a string, or a list of named
 * templates of which "default" is taken.
 */
export function readChatTemplate(docs: TokenizerDocuments): ChatTemplate | null {
  if (docs.chatTemplateFile !== null) return new ChatTemplate(docs.chatTemplateFile.text, docs.chatTemplateFile.source);
  const configPath = docs.configSource;
  const value = docs.config.chat_template;
  if (value == null) return null;
  if (typeof value === 'string') return new ChatTemplate(value, configPath);
  if (Array.isArray(value)) {
    const named = value.find((t) => typeof t === 'object' && t !== null && t.name === 'default' && typeof t.template === 'string');
    if (named) return new ChatTemplate(named.template, `${configPath} (template "default")`);
    const names = value.map((t) => (typeof t === 'object' && t !== null ? String(t.name) : '?')).join(', ');
    throw invalidModel(`${configPath} lists chat templates (${names}) but none is named "default"`);
  }
  throw invalidModel(`${configPath}: chat_template must be a string or a list of {name, template}`);
}
