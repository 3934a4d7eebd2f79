import { invalidArgument } from '../errors.ts';
import { LLM, type Prompt } from '../engine/llm.ts';
import type { RequestOutput } from '../engine/outputs.ts';
import { completionLogprobs } from '../server/openai-logprobs.ts';
import { requireTokenizer } from './require-tokenizer.ts';
import { ENGINE_FLAGS, ENGINE_FLAGS_HELP, engineConfigFromFlags } from './engine-flags.ts';
import { SAMPLING_FLAGS, SAMPLING_FLAGS_HELP, idList, samplingParamsFromFlags } from './sampling-flags.ts';
import { parseFlags } from './parse-flags.ts';
import { STRUCTURED_OUTPUT_FLAGS, STRUCTURED_OUTPUT_FLAGS_HELP, structuredOutputFromFlags } from './structured-output-flags.ts';

export const GENERATE_HELP = `Usage: keel generate [options] (--prompt TEXT | --prompt-ids 1,2,3)...

Generates completions for every prompt, all in one batch.

  --prompt TEXT                  a text prompt (repeatable)
  --prompt-ids 1,2,3             a prompt given as token ids (repeatable)
  --lora NAME                    run every prompt with this LoRA adapter (one of --lora-modules)
  --json                         one JSON line per prompt, in order, keyed as the HTTP API's completions:
                                 {"text": ..., "token_ids": [...], "finish_reason": ..., "logprobs": {"tokens": ...}}

${SAMPLING_FLAGS_HELP}

${STRUCTURED_OUTPUT_FLAGS_HELP}

${ENGINE_FLAGS_HELP}`;

export async function generateCommand(argv: string[]): Promise<void> {
  const { values } = parseFlags('keel generate', {
    args: argv,
    options: {
      ...ENGINE_FLAGS,
      ...SAMPLING_FLAGS,
      ...STRUCTURED_OUTPUT_FLAGS,
      prompt: { type: 'string', multiple: true },
      'prompt-ids': { type: 'string', multiple: true },
      lora: { type: 'string' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(GENERATE_HELP);
    return;
  }
  // --prompt and --prompt-ids keep their command-line order when mixed.
  const prompts: Prompt[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--prompt') prompts.push(argv[++i]);
    else if (argv[i].startsWith('--prompt=')) prompts.push(argv[i].slice('--prompt='.length));
    else if (argv[i] === '--prompt-ids') prompts.push(idList('--prompt-ids', argv[++i]));
    else if (argv[i].startsWith('--prompt-ids=')) prompts.push(idList('--prompt-ids', argv[i].slice('--prompt-ids='.length)));
  }
  if (prompts.length === 0) throw invalidArgument('give at least one --prompt or --prompt-ids (see keel generate --help)');

  const structuredOutput = structuredOutputFromFlags(values);
  const params = { ...samplingParamsFromFlags(values), ...(structuredOutput ? { structuredOutput } : {}) };
  const llm = await LLM.load(engineConfigFromFlags(values));
  const options = values.lora === undefined ? {} : { lora: values.lora };
  try {
    if (prompts.some((p) => typeof p === 'string')) requireTokenizer(llm, 'a text --prompt cannot be tokenized', 'give token ids with --prompt-ids');
    if (values.json) {
      const outputs = await llm.generate(prompts, params, options);
      for (const output of outputs) console.log(JSON.stringify(toJsonLine(output)));
    } else if (prompts.length === 1 && (params.n ?? 1) === 1 && typeof prompts[0] === 'string') {
      // The prompt is echoed once the request is accepted, so a rejected one prints only the error.
      let echoed = false;
      for await (const update of llm.stream(prompts[0], params, options)) {
        if (!echoed) process.stdout.write(prompts[0]);
        echoed = true;
        for (const delta of update.deltas) process.stdout.write(delta.text);
      }
      process.stdout.write('\n');
    } else {
      const outputs = await llm.generate(prompts, params, options);
      outputs.forEach((output, i) => {
        for (const completion of output.outputs) {
          console.log(`--- prompt ${i}${output.outputs.length > 1 ? `, completion ${completion.index}` : ''} (${completion.finishReason})`);
          console.log((output.prompt ?? '') + (completion.text || completion.tokenIds.join(' ')));
        }
      });
    }
  } finally {
    await llm.close();
  }
}

function toJsonLine(output: RequestOutput) {
  const completion = (c: RequestOutput['outputs'][number]) => ({
    token_ids: c.tokenIds,
    text: c.text,
    finish_reason: c.finishReason,
    stop_reason: c.stopReason,
    ...(c.logprobs ? { logprobs: completionLogprobs(c.logprobs, 0).logprobs } : {}),
  });
  const [first, ...rest] = output.outputs;
  return {
    ...completion(first),
    prompt_token_ids: output.promptTokenIds,
    ...(rest.length > 0 ? { outputs: output.outputs.map(completion) } : {}),
  };
}
