import { invalidModel } from '../errors.ts';
import { isObject, ropeParameterFields, type ConfigFields } from './hf-config.ts';

/*
 * Multimodal RoPE (M-RoPE) of the Qwen VL and GLM-4.1V / GLM-4.5V language models. Each token
 * carries three position ids (temporal, height, width) and `mrope_section` (in the RoPE dict) tells
 * which id each of the rotary dims / 2 frequencies reads: its angle is that id times the
 * frequency's inverse frequency. A text token's three ids are all its position in the sequence
 * (transformers expands one row of positions to three when no image is in the prompt), so whichever
 * id a frequency reads, it turns by the same angle as in 1-D RoPE with the same inverse
 * frequencies, over the same pairs of dims (GLM-4.1V's interleaved pairs of its leading rotary dims
 * as GLM-4's, GLM-4.5V's rotate_half halves as GLM-4.5's). Keel serves text prompts only, so the
 * rotary these models run is the 1-D one their text families already run, and mrope_section is
 * checked only where transformers' own rotary would fail on it.
 */

/** How a model's rotary lays the sections over the frequencies. */
export interface Mrope {
  /**
   * `chunks` (Qwen2-VL, Qwen2.5-VL, GLM-4.1V, GLM-4.5V): consecutive runs of mrope_section's sizes,
   * reading the temporal, height and width ids in turn; transformers splits the frequencies by
   * those sizes, which must cover them. `interleaved` (Qwen3-VL): frequency i reads id i mod 3
   * within the span sections 1 and 2 give, the temporal id elsewhere; any three sections run.
   */
  layout: 'chunks' | 'interleaved';
  /** mrope_section where the RoPE dict gives none (the rotary module's default). */
  defaultSections: readonly number[];
  /**
   * The text config class reads a RoPE dict's type "mrope" as "default" (Qwen2-VL's and
   * Qwen2.5-VL's name for default frequencies split into sections); absent, transformers' rotary
   * has no "mrope" type, which is then refused as any unknown one.
   */
  mropeTypeIsDefault?: boolean;
}

/** `json` with its RoPE dict's type "mrope" read as "default" where `mrope.mropeTypeIsDefault`. */
export function withMropeTypeAsDefault(json: Record<string, unknown>, mrope: Mrope): Record<string, unknown> {
  if (!mrope.mropeTypeIsDefault) return json;
  const key = json.rope_parameters != null ? 'rope_parameters' : 'rope_scaling';
  const dict = json[key];
  if (!isObject(dict) || (dict.rope_type ?? dict.type) !== 'mrope') return json;
  const plain: Record<string, unknown> = { ...dict, rope_type: 'default' };
  delete plain.type;
  return { ...json, [key]: plain };
}

/**
 * Refuses, naming the key, an `mrope_section` transformers' rotary cannot run with over
 * `rotaryDim` dims: a list of non-negative integers, three of them where interleaved (it reads
 * sections 1 and 2), summing to rotaryDim / 2 in chunks (torch.split of the frequencies).
 */
export function checkMropeSections(fields: ConfigFields, mrope: Mrope, rotaryDim: number): void {
  const params = ropeParameterFields(fields);
  const sections = params.raw('mrope_section') ?? mrope.defaultSections;
  const where = `${params.source}: mrope_section ${JSON.stringify(sections)}${params.raw('mrope_section') == null ? ' (the default)' : ''}`;
  if (!Array.isArray(sections) || !sections.every((s) => Number.isInteger(s) && s >= 0)) throw invalidModel(`${where} must be a list of non-negative integers`);
  if (mrope.layout === 'interleaved' && sections.length !== 3) throw invalidModel(`${where} must give 3 sections (temporal, height, width)`);
  const sum = (sections as number[]).reduce((a, b) => a + b, 0);
  if (mrope.layout === 'chunks' && sum !== rotaryDim / 2) throw invalidModel(`${where} sums to ${sum}; it must split the ${rotaryDim / 2} frequencies of ${rotaryDim} rotary dims`);
}
