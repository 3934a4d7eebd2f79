import { Template } from '@huggingface/jinja';
import { invalidArgument, invalidModel } from '../errors.ts';
import type { TokenizerDocuments } from '../checkpoint/model-files.ts';

export interface ChatMessage {
  role: string;
  content: string;
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
    try {
      this.template = new Template(text);
    } catch (error) {
      throw invalidModel(`the chat template in ${origin} cannot be parsed: ${(error as Error).message}`);
    }
  }

  render(messages: ChatMessage[], options: { addGenerationPrompt: boolean; specialTokens: SpecialTokenStrings }): string {
    try {
      return this.template.render({ ...options.specialTokens, messages, add_generation_prompt: options.addGenerationPrompt });
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
