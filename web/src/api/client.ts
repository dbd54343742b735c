// The typed API client: openapi-fetch over the paths generated from the server's /openapi.json
// (schema.d.ts, `make openapi`). Requests carry the browser session's cookie, or an API key
// when the person signed in with one; writes carry the CSRF token the session cookie needs.
import createClient, { type Middleware } from 'openapi-fetch';
import type { components, paths } from './schema';

export type Schemas = components['schemas'];

const API_KEY_STORAGE = 'swarmstation.api_key';
const CSRF_COOKIE = 'swarm_csrf';
const UNSAFE = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

export function storedApiKey(): string | null {
  try {
    return localStorage.getItem(API_KEY_STORAGE);
  } catch {
    return null;
  }
}

export function storeApiKey(key: string | null): void {
  try {
    if (key) localStorage.setItem(API_KEY_STORAGE, key);
    else localStorage.removeItem(API_KEY_STORAGE);
  } catch {
    /* storage refused (private mode): the key lasts for this page only */
  }
  memoryKey = key;
}

let memoryKey: string | null = null;

export function readCookie(name: string): string | null {
  for (const part of document.cookie.split(';')) {
    const [k, ...v] = part.trim().split('=');
    if (k === name) return decodeURIComponent(v.join('='));
  }
  return null;
}

/** Headers every request of the studio sends: the API key, or the session's CSRF token. */
export function authHeaders(method: string): Record<string, string> {
  const headers: Record<string, string> = {};
  const key = memoryKey ?? storedApiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  else if (UNSAFE.has(method.toUpperCase())) {
    const csrf = readCookie(CSRF_COOKIE);
    if (csrf) headers['X-CSRF-Token'] = csrf;
  }
  return headers;
}

const auth: Middleware = {
  onRequest({ request }) {
    for (const [k, v] of Object.entries(authHeaders(request.method))) request.headers.set(k, v);
    return request;
  },
};

export const api = createClient<paths>({ baseUrl: '', credentials: 'same-origin' });
api.use(auth);

/** The error body every API error has: {detail, code, errors?: [{field, reason}]}. */
export interface ApiErrorBody {
  detail?: unknown;
  code?: string;
  errors?: { field: string; reason: string }[];
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly fields: { field: string; reason: string }[] = [],
  ) {
    super(message);
  }
}

/** The message a person reads for a failed response. */
export function errorMessage(status: number, body: unknown): ApiError {
  const b = (body ?? {}) as ApiErrorBody;
  let text: string;
  if (typeof b.detail === 'string') text = b.detail;
  else if (Array.isArray(b.detail)) text = b.detail.map((d) => (d as { msg?: string }).msg ?? String(d)).join('; ');
  else text = status === 0 ? 'the server could not be reached' : `the server answered ${status}`;
  return new ApiError(status, b.code ?? String(status), text, Array.isArray(b.errors) ? b.errors : []);
}

/** Unwrap an openapi-fetch result: its data, or an ApiError with the server's message. */
export async function must<T>(
  call: Promise<{ data?: T; error?: unknown; response: Response }>,
): Promise<T> {
  let result: { data?: T; error?: unknown; response: Response };
  try {
    result = await call;
  } catch {
    throw new ApiError(0, 'network', 'the server could not be reached');
  }
  if (result.error !== undefined || !result.response.ok) throw errorMessage(result.response.status, result.error);
  return result.data as T;
}
