import type { Backend, KvCache, SampledTokens, StepInputs } from '../backend/backend.ts';
import type { CausalLM } from '../models/causal-lm.ts';
import type { Draw } from '../sampling/draw.ts';

/** A micro-batch launched on the first stage: its sampled tokens, once its logits came back from the last stage. */
export interface LaunchedMicroBatch {
  sampled: SampledTokens | null;
}

/**
 * The first pipeline stage's side of several micro-batches in flight (docs/parallelism.md), run
 * alike by every rank of that stage (the engine's, and the other tensor ranks'), which sample the
 * logits with the same draws. A launch runs the stage's layers on the micro-batch, then receives
 * and samples the logits of the oldest micro-batches that are due, then sends its residual stream
 * on: with rendezvous sends (the shared-memory communicator's, NCCL's for large messages), every
 * stage receiving before it sends is the order that cannot deadlock, and the ring of stages
 * 0 → 1 → … → P−1 → 0 then holds at most `maxInFlight` micro-batches, one being computed on this
 * stage while the later stages work on the ones sent before it.
 */
export class MicroBatchPipeline {
  /** Sent on, logits not yet received: oldest first. */
  private readonly sent: { step: StepInputs; draws: readonly Draw[]; launched: LaunchedMicroBatch }[] = [];
  private readonly backend: Backend;
  private readonly model: CausalLM;
  private readonly cache: KvCache;
  private readonly maxInFlight: number;

  constructor(backend: Backend, model: CausalLM, cache: KvCache, maxInFlight: number) {
    if (model.stage.index !== 0 || model.stage.count < 2) throw new Error(`micro-batches are launched on the first of several pipeline stages, not on stage ${model.stage.index} of ${model.stage.count}`);
    if (!(Number.isInteger(maxInFlight) && maxInFlight >= 2 && maxInFlight <= model.stage.count)) {
      throw new Error(`between 2 and ${model.stage.count} micro-batches can be in flight over ${model.stage.count} stages (got ${maxInFlight})`);
    }
    if (model.startStage === undefined || model.receiveLogits === undefined) throw new Error('this model does not run as pipeline stages');
    this.backend = backend;
    this.model = model;
    this.cache = cache;
    this.maxInFlight = maxInFlight;
  }

  /** Micro-batches sent on whose logits have not come back yet. */
  get numSent(): number {
    return this.sent.length;
  }

  /**
   * Runs the stage's layers on `step`, receives the logits of the micro-batches due (so that at
   * most maxInFlight − 1 remain sent on, this one included), then sends its stream on. `draws`
   * sample its logits once they come back.
   */
  launch(step: StepInputs, draws: readonly Draw[]): LaunchedMicroBatch {
    const send = this.model.startStage!(this.backend, step, this.cache);
    while (this.sent.length > this.maxInFlight - 2) this.receiveOldest();
    send();
    const launched: LaunchedMicroBatch = { sampled: null };
    this.sent.push({ step, draws, launched });
    return launched;
  }

  /** Receives the logits of the oldest micro-batch sent on and samples them with its draws. */
  receiveOldest(): SampledTokens {
    const oldest = this.sent.shift();
    if (oldest === undefined) throw new Error('no micro-batch is in flight to receive the logits of');
    oldest.launched.sampled = this.backend.sampleRows(this.model.receiveLogits!(this.backend, oldest.step), oldest.draws);
    return oldest.launched.sampled;
  }
}
