import { deepseekFormat } from './deepseek.ts';
import { glm45Format } from './glm45.ts';
import { harmonyFormat } from './harmony.ts';
import { hermesFormat } from './hermes.ts';
import { llama3JsonFormat } from './llama3-json.ts';
import { mistralFormat } from './mistral.ts';
import { qwen3CoderFormat } from './qwen3-coder.ts';
import { invalidArgument } from '../../errors.ts';
import type { ToolCallFormat } from './output-parse.ts';

/** The formats `--tool-call-parser` names, each with what in a chat template shows that the model writes it. */
const FORMATS: { format: ToolCallFormat; templateSign: RegExp }[] = [
  // Harmony first: its templates mention JSON-ish tool text too.
  { format: harmonyFormat, templateSign: /<\|channel\|>/ },
  { format: deepseekFormat, templateSign: /tool▁calls▁begin/ },
  { format: mistralFormat, templateSign: /\[TOOL_CALLS\]/ },
  // GLM's and Qwen3-Coder's templates show `<tool_call>` too, with their own markup inside.
  { format: glm45Format, templateSign: /<arg_key>/ },
  { format: qwen3CoderFormat, templateSign: /<function=|<parameter=/ },
  { format: hermesFormat, templateSign: /<tool_call>/ },
  // Llama 3.1+ templates tell the model to answer with {"name": ..., "parameters": ...}.
  { format: llama3JsonFormat, templateSign: /<\|python_tag\|>|"parameters": dictionary of argument name/ },
];

export const TOOL_CALL_PARSERS = FORMATS.map((f) => f.format.name);

export function toolCallFormat(name: string): ToolCallFormat | undefined {
  return FORMATS.find((f) => f.format.name === name)?.format;
}

/** The format a chat template tells its model to write tool calls in, if Keel knows it. */
export function formatOfTemplate(template: string): ToolCallFormat | null {
  return FORMATS.find((f) => f.templateSign.test(template))?.format ?? null;
}

/** The format named (`--tool-call-parser`), else the one the chat template shows, else null. */
export function chooseToolCallFormat(named: string | null, template: string | null): ToolCallFormat | null {
  if (named === null) return template === null ? null : formatOfTemplate(template);
  const format = toolCallFormat(named);
  if (!format) throw invalidArgument(`--tool-call-parser ${named} is not one Keel knows: ${TOOL_CALL_PARSERS.join(', ')}`);
  return format;
}
