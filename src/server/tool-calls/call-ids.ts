import { randomBytes, randomUUID } from 'node:crypto';

/** OpenAI's spelling: `call_` and 24 hex digits. */
export function openAiCallId(): string {
  return `call_${randomUUID().replaceAll('-', '').slice(0, 24)}`;
}

const ALPHANUMERIC = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';

/** Mistral's chat templates refuse a tool call id that is not 9 alphanumeric characters. */
export function nineCharCallId(): string {
  return [...randomBytes(9)].map((b) => ALPHANUMERIC[b % ALPHANUMERIC.length]).join('');
}
