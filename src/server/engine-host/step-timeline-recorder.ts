import type { LLM } from '../../engine/llm.ts';
import { StepTimelineFile, stepTimelineLine } from '../../engine/step-timeline-file.ts';

/** How often the lines recorded are written out while serving. */
const FLUSH_INTERVAL_MS = 1000;
/** Lines held at most between writes: a busy engine's are written out before the interval is up. */
const MAX_HELD_LINES = 512;

/**
 * A served engine's step timeline (`keel serve --step-timeline`), recorded in the engine's own
 * thread: each step's line (`fields` added: the replica's index) is held, and written out every
 * second, and when many are held, by one write; `stop` writes what is left and closes the file.
 * A write that fails (a full disk) ends the recording, said on stderr, and never a step or the engine.
 */
export class StepTimelineRecorder {
  private readonly llm: Pick<LLM, 'startStepTimeline' | 'stopStepTimeline'>;
  private readonly path: string;
  private readonly file: StepTimelineFile;
  private held: string[] = [];
  private failed = false;
  private readonly timer: NodeJS.Timeout;

  /** Starts recording into `path`: created afresh, or appended to (`append`: a restarted replica's engine). */
  constructor(llm: Pick<LLM, 'startStepTimeline' | 'stopStepTimeline'>, path: string, fields: Record<string, number>, append: boolean) {
    this.llm = llm;
    this.path = path;
    this.file = new StepTimelineFile(path, append);
    try {
      llm.startStepTimeline((record) => {
        if (this.failed) return;
        this.held.push(stepTimelineLine(record, fields));
        if (this.held.length >= MAX_HELD_LINES) this.flush();
      });
    } catch (error) {
      this.file.close();
      throw error;
    }
    // The timer alone must not keep a thread that has stopped serving alive.
    this.timer = setInterval(() => this.flush(), FLUSH_INTERVAL_MS).unref();
  }

  /** Ends the recording: the steps the engine still held are read, and every line written before the file closes. */
  stop(): void {
    clearInterval(this.timer);
    try {
      this.llm.stopStepTimeline();
    } finally {
      this.flush();
      this.file.close();
    }
  }

  private flush(): void {
    const lines = this.held;
    this.held = [];
    if (this.failed) return;
    try {
      this.file.write(lines);
    } catch (error) {
      this.failed = true;
      clearInterval(this.timer);
      process.stderr.write(`keel: the step timeline stopped: writing ${this.path} failed (${(error as Error).message}); the engine serves on\n`);
    }
  }
}
