import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tinyChatModelDir } from './tiny-chat-model.ts';

/**
 * A chat template in the style of Qwen 2.5's (Hermes tool calls): the tools listed as JSON in the
 * system turn, an assistant's calls as <tool_call> blocks, tool results as <tool_response> blocks.
 * Written here, shorter than Qwen's, with the same markup.
 */
export const HERMES_CHAT_TEMPLATE = `{%- if tools %}<|im_start|>system
{% if messages[0].role == 'system' %}{{ messages[0].content }}
{% endif %}# Tools
<tools>{% for tool in tools %}{{ '\\n' }}{{ tool | tojson }}{% endfor %}
</tools>
For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags.<|im_end|>
{% endif %}
{%- for m in messages %}
{%- if m.role == 'tool' %}<|im_start|>user
<tool_response>
{{ m.content }}
</tool_response><|im_end|>
{% elif m.role == 'assistant' %}<|im_start|>assistant
{{ m.content }}{% if m.tool_calls %}{% for tc in m.tool_calls %}{{ '\\n' }}<tool_call>
{"name": "{{ tc.function.name }}", "arguments": {{ tc.function.arguments | tojson }}}
</tool_call>{% endfor %}{% endif %}<|im_end|>
{% elif not (m.role == 'system' and tools) %}<|im_start|>{{ m.role }}
{{ m.content }}<|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}`;

/** The tiny random chat model with HERMES_CHAT_TEMPLATE and room for prompts that list tools. */
export function hermesChatModelDir(): { dir: string; remove: () => void } {
  const model = tinyChatModelDir({ max_position_embeddings: 4096 });
  writeFileSync(join(model.dir, 'chat_template.jinja'), HERMES_CHAT_TEMPLATE);
  return model;
}
