import type { ServerResponse } from 'node:http';
import type { FastifyReply } from 'fastify';

/**
 * A server-sent-events response as OpenAI streams it: `data: {json}\n\n` events (named by an
 * `event:` line on the Responses API), then `data: [DONE]` (not on the Responses API). The reply leaves fastify's hands (hijack); writes wait for a slow client to
 * drain, and stop quietly once the client has gone (its request is aborted elsewhere). A client
 * that stops reading altogether is cut by the server's ResponseStallWatch, which ends the wait.
 */
export class SseWriter {
  private readonly response: ServerResponse;
  private corked = false;

  constructor(reply: FastifyReply) {
    reply.hijack();
    this.response = reply.raw;
    // A write racing a disconnect errors; the disconnect itself is handled by the request's signal.
    this.response.on('error', () => undefined);
    this.response.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
    this.response.flushHeaders();
  }

  get closed(): boolean {
    return this.response.destroyed || this.response.writableEnded;
  }

  /** One event; an error after the stream has started is sent as OpenAI's error object, which the SDK throws. */
  async send(data: object, event?: string): Promise<void> {
    if (this.closed) return;
    this.corkForThisTick();
    if (this.response.write(`${event === undefined ? '' : `event: ${event}\n`}data: ${JSON.stringify(data)}\n\n`)) return;
    await new Promise<void>((resolve) => {
      const done = () => {
        this.response.off('drain', done);
        this.response.off('close', done);
        resolve();
      };
      this.response.on('drain', done);
      this.response.on('close', done);
    });
  }

  /**
   * Holds the socket's writes until the promise jobs now running are done: the events a response
   * sends at once (its opening chunks; its last chunk, usage and [DONE]) leave in one system call.
   * The socket, not the response: Node 22's ServerResponse.cork() buffers chunked writes apart and
   * its end() sends the terminating chunk ahead of them, so the stream lost its last events.
   */
  private corkForThisTick(): void {
    const socket = this.response.socket;
    if (this.corked || socket === null) return;
    this.corked = true;
    socket.cork();
    process.nextTick(() => {
      this.corked = false;
      socket.uncork();
    });
  }

  /** Ends the stream; `done` sends chat and completions' closing `data: [DONE]`. */
  end(done = true): void {
    if (!this.closed) this.response.end(done ? 'data: [DONE]\n\n' : undefined);
  }
}
