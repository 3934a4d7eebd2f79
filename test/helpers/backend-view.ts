import type { Backend } from '../../src/backend/backend.ts';

/**
 * `backend` with `members` in place of its own. Every other member runs on `backend` itself, so the
 * state a backend keeps between calls (the latest sampling pass's ids, which mapSampledIds and
 * expandDraftTrees rewrite) stays in one place: a view made with Object.create would take such a
 * write as a property of its own and hide the backend's later ones behind it.
 */
export function backendView(backend: Backend, members: Record<string, unknown>): Backend {
  return new Proxy(backend, {
    get(target, prop) {
      if (Object.hasOwn(members, prop)) return members[prop as string];
      const member: unknown = Reflect.get(target, prop, target);
      return typeof member === 'function' ? member.bind(target) : member;
    },
  });
}
