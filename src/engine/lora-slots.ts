import type { Backend } from '../backend/backend.ts';
import type { LoraTarget } from '../layers/parameters.ts';
import type { ServedLora } from './lora-registry.ts';

/**
 * The adapters' places on the device: `numSlots` slots (--max-loras), each holding one adapter's
 * matrices in every adapted linear layer. Before a step runs, each of its adapters gets a slot:
 * the one it holds already, a free one, or the least recently used slot of an adapter the step
 * does not use (LRU paging; the host copies stay in the registry).
 */
export class LoraSlots {
  private readonly backend: Backend;
  private readonly targets: readonly LoraTarget[];
  /** The adapter id in each slot (0 for none) and when it last ran. */
  private readonly holder: number[];
  private readonly lastUsed: number[];
  private clock = 0;

  constructor(backend: Backend, targets: readonly LoraTarget[], numSlots: number) {
    this.backend = backend;
    this.targets = targets;
    this.holder = new Array<number>(numSlots).fill(0);
    this.lastUsed = new Array<number>(numSlots).fill(0);
  }

  get numSlots(): number {
    return this.holder.length;
  }

  /** The slot of each of a step's adapters, by id, their weights put in the slots that lacked them. */
  assign(adapters: readonly ServedLora[]): Map<number, number> {
    const step = new Map<number, ServedLora>(adapters.map((a) => [a.id, a]));
    if (step.size > this.numSlots) throw new Error(`a step with ${step.size} LoRA adapters exceeds the ${this.numSlots} slots: the scheduler admits at most that many`);
    const now = ++this.clock;
    const slots = new Map<number, number>();
    for (const id of step.keys()) {
      const slot = this.holder.indexOf(id);
      if (slot >= 0) slots.set(id, slot);
    }
    for (const [id, served] of step) {
      if (slots.has(id)) continue;
      const slot = this.victim(slots);
      for (const target of this.targets) target.setLoraSlot(this.backend, slot, served.adapter);
      this.holder[slot] = id;
      slots.set(id, slot);
    }
    for (const slot of slots.values()) this.lastUsed[slot] = now;
    return slots;
  }

  /** A free slot, else the least recently used one that no adapter of the step holds. */
  private victim(taken: Map<number, number>): number {
    const inUse = new Set(taken.values());
    let best = -1;
    for (let slot = 0; slot < this.numSlots; slot++) {
      if (inUse.has(slot)) continue;
      if (this.holder[slot] === 0) return slot;
      if (best < 0 || this.lastUsed[slot] < this.lastUsed[best]) best = slot;
    }
    return best;
  }
}
