import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { invalidArgument, invalidModel } from '../errors.ts';
import type { ModelFiles, TokenizerDocuments } from '../checkpoint/model-documents.ts';
import { openModelFiles } from '../checkpoint/model-files.ts';
import { readChatTemplate, type ChatMessage, type ChatTemplate, type RenderOptions, type SpecialTokenStrings } from './chat-template.ts';
import { vocabularyEncoding, type GrammarVocabulary } from './grammar-vocabulary.ts';

export type { ChatMessage, TemplateToolCall, ToolDefinition } from './chat-template.ts';

/**
 * A model's tokenizer (`tokenizer.json` + `tokenizer_config.json`, or a GGUF file's vocabulary
 * turned into them) over `@huggingface/tokenizers`.
 * The special tokens `encode` adds come from tokenizer.json's post-processor alone: transformers
 * 5 ignores tokenizer_config.json's `add_bos_token` / `add_eos_token` when it loads a
 * tokenizer.json (checked against 5.17 for generic and Llama tokenizer classes).
 * Decoding never applies `clean_up_tokenization_spaces`: streamed text is produced by the
 * incremental detokenizer, which cannot undo a clean-up across token boundaries, so both agree
 * on the plain decode (as vLLM's streamed output does).
 */
export class Tokenizer {
  /** Ids 0..vocabSize-1 may have a token; the model's embedding may be larger. */
  readonly vocabSize: number;
  readonly bosTokenId: number | null;
  readonly eosTokenId: number | null;
  private readonly hf: HfTokenizer;
  private readonly specialIds: ReadonlySet<number>;
  private readonly specialTokens: SpecialTokenStrings;
  private readonly chatTemplate: ChatTemplate | null;
  private readonly encoding: Pick<GrammarVocabulary, 'encoding' | 'prependSpace'>;

  constructor(tokenizerJson: unknown, tokenizerConfig: Record<string, unknown>, chatTemplate: ChatTemplate | null, source: string) {
    const specialTokens: SpecialTokenStrings = {};
    for (const key of ['bos_token', 'eos_token', 'unk_token', 'pad_token'] as const) {
      const content = tokenContent(tokenizerConfig[key]);
      if (content !== null) specialTokens[key] = content;
    }
    const additional = Array.isArray(tokenizerConfig.additional_special_tokens)
      ? tokenizerConfig.additional_special_tokens.map(tokenContent).filter((t): t is string => t !== null)
      : [];
    try {
      this.hf = new HfTokenizer(tokenizerJson as object, { ...tokenizerConfig, ...specialTokens, additional_special_tokens: additional });
    } catch (error) {
      throw invalidModel(`cannot build the tokenizer from ${source}: ${(error as Error).message}`);
    }
    this.specialTokens = specialTokens;
    this.chatTemplate = chatTemplate;
    this.encoding = vocabularyEncoding(tokenizerJson);
    let maxId = -1;
    for (const id of this.hf.get_vocab(true).values()) maxId = Math.max(maxId, id);
    this.vocabSize = maxId + 1;
    this.bosTokenId = this.idOf(specialTokens.bos_token);
    this.eosTokenId = this.idOf(specialTokens.eos_token);
    const specialIds = [...this.hf.get_added_tokens_decoder()].filter(([, t]) => t.special).map(([id]) => id);
    for (const content of additional) {
      const id = this.hf.token_to_id(content);
      if (id !== undefined) specialIds.push(id);
    }
    this.specialIds = new Set(specialIds);
  }

  static fromDocuments(docs: TokenizerDocuments): Tokenizer {
    return new Tokenizer(docs.tokenizer.json, docs.config, readChatTemplate(docs), docs.tokenizer.source);
  }

  /** The tokenizer of the model at `path` (a directory: tokenizer.json required; a GGUF file: its vocabulary). */
  static load(path: string): Tokenizer {
    return Tokenizer.fromDocuments(requireTokenizerDocuments(openModelFiles(path)));
  }

  encode(text: string, options: { addSpecialTokens: boolean }): number[] {
    return this.hf.encode(text, { add_special_tokens: options.addSpecialTokens }).ids;
  }

  /** Ids without a token (a padded embedding can exceed the tokenizer) decode to nothing, as in vLLM. */
  decode(ids: readonly number[], options: { skipSpecialTokens: boolean }): string {
    const known = ids.filter((id) => this.hf.id_to_token(id) !== undefined && !(options.skipSpecialTokens && this.specialIds.has(id)));
    if (known.length === 0) return '';
    return this.hf.decode(known, { skip_special_tokens: false, clean_up_tokenization_spaces: false });
  }

  idToToken(id: number): string {
    const token = this.hf.id_to_token(id);
    if (token === undefined) throw invalidArgument(`token id ${id} is not in the tokenizer's vocabulary (${this.vocabSize} ids)`);
    return token;
  }

  isSpecial(id: number): boolean {
    return this.specialIds.has(id);
  }

  /** The vocabulary as structured output's grammar engine matches it (grammar-vocabulary.ts). */
  grammarVocabulary(): GrammarVocabulary {
    const tokens = Array.from({ length: this.vocabSize }, (_, id) => (this.specialIds.has(id) ? '' : (this.hf.id_to_token(id) ?? '')));
    return { tokens, ...this.encoding };
  }

  /** How `other`'s vocabulary differs from this one (the first token found mapped otherwise), or null when they are the same. */
  vocabularyDifference(other: Tokenizer): string | null {
    const mine = this.hf.get_vocab(true);
    const theirs = other.hf.get_vocab(true);
    for (const [token, id] of mine) {
      const otherId = theirs.get(token);
      if (otherId !== id) return `token ${JSON.stringify(token)} is id ${id} in one and ${otherId === undefined ? 'absent' : `id ${otherId}`} in the other`;
    }
    if (theirs.size !== mine.size) return `one has ${mine.size} tokens, the other ${theirs.size}`;
    return null;
  }

  applyChatTemplate(messages: ChatMessage[], options: RenderOptions): string {
    if (!this.chatTemplate) {
      throw invalidArgument('this model has no chat template (tokenizer_config.json chat_template or chat_template.jinja); send a plain prompt instead');
    }
    return this.chatTemplate.render(messages, { ...options, specialTokens: this.specialTokens });
  }

  /** The chat template's source, or null when the model has none. */
  get chatTemplateSource(): string | null {
    return this.chatTemplate?.source ?? null;
  }

  private idOf(content: string | undefined): number | null {
    return content === undefined ? null : (this.hf.token_to_id(content) ?? null);
  }
}

/** The model's tokenizer, or null when it has none (token-id prompts still work). */
export function loadTokenizerIfPresent(files: ModelFiles): Tokenizer | null {
  const docs = files.tokenizer();
  return docs === null ? null : Tokenizer.fromDocuments(docs);
}

/** The model's tokenizer documents; a model without them is an error saying what is missing. */
export function requireTokenizerDocuments(files: ModelFiles): TokenizerDocuments {
  const docs = files.tokenizer();
  if (docs !== null) return docs;
  if (files.format === 'gguf') throw invalidModel(`${files.path} carries no vocabulary (tokenizer.ggml.*): without one, prompts must be token ids`);
  throw invalidModel(`no tokenizer.json in ${files.path}: Keel needs a fast (tokenizers) tokenizer; without one, prompts must be token ids`);
}

/** tokenizer_config.json spells a special token as a string or as a serialized AddedToken `{content, ...}`. */
function tokenContent(value: unknown): string | null {
  if (typeof value === 'string') return value;
  if (typeof value === 'object' && value !== null && typeof (value as { content?: unknown }).content === 'string') {
    return (value as { content: string }).content;
  }
  return null;
}
