import { readLoraAdapter } from '../checkpoint/peft-adapter.ts';
import type { LoraAdapter } from '../tensor/lora-adapter.ts';
import { invalidArgument, KeelError } from '../errors.ts';
import type { LoraTarget } from '../layers/parameters.ts';

/**
 * An adapter served under a name. `id` is unique to this load: a name unloaded and loaded again is
 * another adapter, with its own prefix-cache salt and its own slot.
 */
export interface ServedLora {
  readonly id: number;
  readonly name: string;
  readonly adapter: LoraAdapter;
}

let adaptersLoaded = 0;

/**
 * The LoRA adapters the engine serves, by name (`--lora-modules`, and loaded or unloaded at run
 * time). Each is read once, checked against the model's adaptable linear layers, and kept on the
 * host; LoraSlots pages them in and out of the device.
 */
export class LoraRegistry {
  private readonly byName = new Map<string, ServedLora>();
  private readonly targets: readonly LoraTarget[];
  private readonly modules: ReadonlySet<string>;
  private readonly maxRank: number;

  constructor(targets: readonly LoraTarget[], maxRank: number) {
    this.targets = targets;
    this.modules = new Set(targets.flatMap((t) => t.loraModules));
    this.maxRank = maxRank;
  }

  /** Reads the PEFT adapter at `path` and serves it as `name`; a taken name or an adapter that does not fit the model is refused. */
  load(name: string, path: string): ServedLora {
    if (name === '' || name.trim() !== name) throw invalidArgument(`a LoRA adapter's name must be non-empty without surrounding spaces (got ${JSON.stringify(name)})`);
    if (this.byName.has(name)) throw invalidArgument(`a LoRA adapter named ${name} is already loaded; unload it first`);
    const adapter = readLoraAdapter(path, this.maxRank);
    const what = `LoRA adapter ${name} (${path})`;
    for (const module of adapter.modules.keys()) {
      if (!this.modules.has(module)) {
        throw invalidArgument(`${what} adapts ${module}, which is not a layer Keel serves LoRA on (the q/k/v/o and gate/up/down projections of this model's decoder layers)`);
      }
    }
    for (const target of this.targets) target.checkLoraAdapter(adapter, what);
    const served = { id: ++adaptersLoaded, name, adapter };
    this.byName.set(name, served);
    return served;
  }

  /** Stops serving `name`: new requests cannot name it; those running finish with it. */
  unload(name: string): void {
    if (!this.byName.delete(name)) throw new KeelError('not_found', `no LoRA adapter named ${name} is loaded`);
  }

  get(name: string): ServedLora {
    const served = this.byName.get(name);
    if (served === undefined) throw new KeelError('not_found', `no LoRA adapter named ${name} is loaded (loaded: ${[...this.byName.keys()].join(', ') || 'none'})`);
    return served;
  }

  list(): ServedLora[] {
    return [...this.byName.values()];
  }
}
