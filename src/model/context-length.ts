import type { ModelConfig } from './model-config.ts';

/**
 * The longest sequence a model supports. RoPE scaling that stretches positions (linear, dynamic
 * NTK, YaRN) extends the trained context by its factor, as vLLM derives it; llama3 checkpoints
 * already declare their extended length in max_position_embeddings.
 */
export function modelContextLength(config: ModelConfig): number {
  const scaling = config.ropeScaling;
  switch (scaling.type) {
    case 'linear':
    case 'dynamic':
      return Math.floor(config.maxPositionEmbeddings * scaling.factor);
    case 'yarn':
      return Math.max(config.maxPositionEmbeddings, Math.floor(scaling.originalMaxPositionEmbeddings * scaling.factor));
    case 'default':
    case 'llama3':
      return config.maxPositionEmbeddings;
  }
}
