// One request of a drill, following redirects itself: a 307 to a dead leader must be seen and
// counted (as what its target answered), not hidden inside fetch's own redirect handling.

export interface DrillResponse {
  /** The HTTP status of the last hop, or what went wrong before one: ECONNREFUSED, timeout, ... */
  status: number | string;
  body: Buffer;
  headers: Headers | null;
  /** The URL of the last hop. */
  url: string;
}

/** The HTTP status, or for a request that got none, the error's code. */
export function failureCode(err: unknown): string {
  if (err instanceof Error && (err.name === 'TimeoutError' || err.name === 'AbortError')) return 'timeout';
  const cause = (err as { cause?: { code?: unknown; name?: unknown } }).cause;
  if (typeof cause?.code === 'string') return cause.code;
  if (typeof cause?.name === 'string') return cause.name;
  return 'network';
}

export async function drillRequest(
  url: string,
  init: { method: string; body?: Buffer; headers?: Record<string, string> },
  timeoutMs: number,
  maxRedirects = 3,
): Promise<DrillResponse> {
  let target = url;
  for (let hop = 0; ; hop++) {
    let res: Response;
    try {
      res = await fetch(target, {
        method: init.method,
        ...(init.body ? { body: init.body } : {}),
        headers: init.headers ?? {},
        redirect: 'manual',
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (err) {
      return { status: failureCode(err), body: Buffer.alloc(0), headers: null, url: target };
    }
    const location = res.headers.get('location');
    if ((res.status === 307 || res.status === 308) && location && hop < maxRedirects) {
      await res.arrayBuffer().catch(() => undefined);
      target = new URL(location, target).toString();
      continue;
    }
    try {
      const body = Buffer.from(await res.arrayBuffer());
      return { status: res.status, body, headers: res.headers, url: target };
    } catch (err) {
      return { status: failureCode(err), body: Buffer.alloc(0), headers: null, url: target };
    }
  }
}
