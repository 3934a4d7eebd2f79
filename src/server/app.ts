import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import Fastify, { type FastifyInstance } from 'fastify';
import { checkHost, type AllowedHosts } from './allowed-hosts.ts';
import { checkApiKey, checkOrigin, needsApiKey } from './auth.ts';
import { registerChatCompletions } from './chat-completions.ts';
import { answerClientError, refuseOnSocket } from './client-errors.ts';
import { isLingering } from './lingering-close.ts';
import { registerCompletions } from './completions.ts';
import { keepRawBodies } from './json-body.ts';
import { registerModels } from './models.ts';
import { registerMonitoring } from './monitoring.ts';
import { ApiError, shuttingDown } from './openai-errors.ts';
import { registerPlayground } from './playground.ts';
import { reportError } from './report-error.ts';
import { logWhenDone, noteSocketStatus } from './request-log.ts';
import { ResponseStallWatch } from './response-stall-watch.ts';
import type { ServingContext } from './serving-context.ts';
import { registerResponses } from './responses/responses-routes.ts';
import { registerStepTimelineRoutes } from './step-timeline-routes.ts';
import { registerTokenize } from './tokenize.ts';
import { notFoundMessage } from './unsupported-endpoints.ts';

export interface AppOptions {
  apiKey: string | null;
  allowedHosts: AllowedHosts;
  maxBodyBytes: number;
  headerTimeoutMs: number;
  bodyTimeoutMs: number;
  idleTimeoutMs: number;
  maxConnections: number;
  /** The step timeline's file: POST /start_profile and /stop_profile are served (null: not). */
  stepTimeline: string | null;
}

/** A client may name its request (`x-request-id`) with a short token; anything else gets a fresh id. */
const CLIENT_REQUEST_ID = /^[\w.:@/+=-]{1,128}$/;

function requestId(request: IncomingMessage): string {
  const given = request.headers['x-request-id'];
  return typeof given === 'string' && CLIENT_REQUEST_ID.test(given) ? given : randomUUID();
}

/**
 * The HTTP application: socket limits (header, body and idle timeouts, a connection cap), hooks
 * that every request passes (request id, log line, stall watch, Host, drain, Origin, API key),
 * errors in OpenAI's schema (the HTTP parser's included), 404 and 405, and the routes.
 */
export function buildApp(ctx: ServingContext, options: AppOptions): FastifyInstance {
  const app = Fastify({
    logger: false,
    bodyLimit: options.maxBodyBytes,
    genReqId: requestId,
    // Draining is answered by our own hook, in OpenAI's error schema.
    return503OnClosing: false,
    forceCloseConnections: 'idle',
    // The whole request, headers and body: a client trickling its body cannot hold a socket.
    requestTimeout: options.bodyTimeoutMs,
    keepAliveTimeout: options.idleTimeoutMs,
    http: {
      headersTimeout: options.headerTimeoutMs,
      // Node checks those timeouts every 30 s by default, which would let them run that much late.
      connectionsCheckingInterval: Math.max(100, Math.min(1000, options.headerTimeoutMs / 2, options.bodyTimeoutMs / 2)),
    },
    clientErrorHandler: answerClientError,
  });
  // Connections beyond the cap are closed as they arrive, before any byte is read.
  app.server.maxConnections = options.maxConnections;
  keepRawBodies(app);
  const stallWatch = new ResponseStallWatch(options.idleTimeoutMs);
  app.addHook('onClose', async () => stallWatch.stop());

  const methodsByPath = new Map<string, Set<string>>();
  app.addHook('onRoute', (route) => {
    const methods = methodsByPath.get(route.url) ?? new Set<string>();
    for (const method of [route.method].flat()) methods.add(method);
    methodsByPath.set(route.url, methods);
  });

  app.addHook('onRequest', async (request, reply) => {
    reply.raw.setHeader('x-request-id', request.id);
    logWhenDone(ctx.logger, request, reply);
    stallWatch.watch(reply.raw);
    checkHost(request.headers.host, options.allowedHosts);
    if (ctx.inFlight.isDraining) throw shuttingDown();
    checkOrigin(request.headers.origin, request.headers.host, options.allowedHosts);
    // The matched route, not the raw URL: the router decodes %-escapes, so /v%31/models is /v1/models.
    const route = request.routeOptions.url;
    if (options.apiKey !== null && route !== undefined && needsApiKey(route)) checkApiKey(request.headers.authorization, options.apiKey);
  });

  app.setErrorHandler((error, request, reply) => {
    const apiError = reportError(ctx, request, error);
    if (request.raw.complete) return reply.code(apiError.status).headers(apiError.headers).send(apiError.body());
    // Refused before its body was read (too large, a failed check): the client may still be
    // writing it, so the answer goes out on the socket with a lingering close rather than through
    // Node's response, which would close the socket under the client's writes.
    reply.hijack();
    const socket = request.raw.socket;
    if (socket.destroyed || isLingering(socket)) return;
    noteSocketStatus(request, apiError.status);
    refuseOnSocket(socket, apiError, { 'x-request-id': request.id });
  });

  app.setNotFoundHandler((request, reply) => {
    const path = request.url.split('?', 1)[0];
    const allowed = methodsByPath.get(path);
    const apiError = allowed
      ? new ApiError(405, `Method ${request.method} is not allowed on ${path} (allowed: ${[...allowed].join(', ')})`, {
          code: 'method_not_allowed',
          headers: { allow: [...allowed].join(', ') },
        })
      : new ApiError(404, notFoundMessage(request.method, path), { code: 'not_found' });
    return reply.code(apiError.status).headers(apiError.headers).send(apiError.body());
  });

  registerChatCompletions(app, ctx);
  registerCompletions(app, ctx);
  registerResponses(app, ctx);
  registerModels(app, ctx);
  registerTokenize(app, ctx);
  registerMonitoring(app, ctx);
  registerPlayground(app);
  if (options.stepTimeline !== null) registerStepTimelineRoutes(app, ctx, options.stepTimeline);
  return app;
}
