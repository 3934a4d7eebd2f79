import { openAiCallId } from './call-ids.ts';
import { callTags } from './call-markup.ts';
import { heldMarkerPrefix, type OutputParse, type ToolCallFormat } from './output-parse.ts';

const START = '<|start|>';
const MESSAGE = '<|message|>';
/** What ends a message's body: <|end|>, or <|call|> / <|return|> when the stop token's text is kept. */
const BODY_ENDS = ['<|end|>', '<|call|>', '<|return|>'];
const CHANNEL = /<\|channel\|>\s*([\w-]+)/;
const RECIPIENT = /\bto=functions\.([\w.-]+)/;

/**
 * OpenAI's harmony format (gpt-oss): the reply is a run of messages, each a header (`<|channel|>`
 * analysis, commentary or final, perhaps `to=functions.NAME` and `<|constrain|>json`), then
 * `<|message|>` and a body up to `<|end|>` (or the stop tokens <|call|> / <|return|>); messages
 * after the first open with `<|start|>assistant`. Final and plain commentary bodies are the
 * content, analysis is reasoning, and a body addressed to `functions.NAME` is that call's arguments.
 */
export const harmonyFormat: ToolCallFormat = {
  name: 'harmony',
  keepsSpecialTokens: true,
  hasChannels: true,
  newCallId: openAiCallId,
  parse(text: string, final: boolean): OutputParse {
    const result: OutputParse = { content: '', reasoning: '', calls: [] };
    const messages = text.split(START);
    for (let i = 0; i < messages.length; i++) {
      const last = i === messages.length - 1;
      const message = last && !final ? messages[i].slice(0, messages[i].length - heldMarkerPrefix(messages[i], [START])) : messages[i];
      const headerEnd = message.indexOf(MESSAGE);
      if (headerEnd < 0) {
        // A message with no header: a model writing plain text. Whether it is one shows at the end.
        if (final || !last) result.content += message.replace(/^assistant/, '');
        continue;
      }
      const header = message.slice(0, headerEnd);
      let body = message.slice(headerEnd + MESSAGE.length);
      const ends = BODY_ENDS.map((m) => body.indexOf(m)).filter((at) => at >= 0);
      const complete = ends.length > 0 || final || !last;
      if (ends.length > 0) body = body.slice(0, Math.min(...ends));
      else if (!complete) body = body.slice(0, body.length - heldMarkerPrefix(body, BODY_ENDS));
      const recipient = RECIPIENT.exec(header);
      if (recipient) result.calls.push({ name: recipient[1], arguments: body, complete });
      else if (CHANNEL.exec(header)?.[1] === 'analysis') result.reasoning += body;
      else result.content += body;
    }
    return result;
  },
  callsOnly(functions) {
    // One call, whatever `parallel` says: its stop token <|call|> ends gpt-oss's turn, so it calls
    // one function per turn. The call comes first, without an analysis message before it.
    return { type: 'or', elements: callTags(functions, (name) => `<|channel|>commentary to=functions.${name} <|constrain|>json${MESSAGE}`, '') };
  },
};
