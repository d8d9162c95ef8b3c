// The manager's REST API (`/api/v1`), the console's only way to do anything: everything the
// console does is scriptable with the same calls.

/** An error answered by the manager (`{code, message}`) or by the network. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** Any thrown value as an ApiError (what the pages show). */
export function asApiError(e: unknown): ApiError {
  return e instanceof ApiError ? e : new ApiError(0, 'ERROR', String(e));
}

export type Permission =
  | 'system'
  | 'users:read'
  | 'users:write'
  | 'roles:read'
  | 'roles:write'
  | 'clusters:read'
  | 'clusters:write'
  | 'nodes:read'
  | 'nodes:write'
  | 'tasks:read'
  | 'tasks:write'
  | 'files:read'
  | 'files:write'
  | 'stats:read'
  | 'audit:read'
  | 'tenants:read';

export interface Me {
  id: number;
  name: string;
  tenant_id: number;
  super_admin: boolean;
  permissions: Permission[];
  /** Permissions that hold on these clusters only (the others hold on every cluster). */
  limited_to?: Partial<Record<Permission, number[]>>;
}

export interface Session {
  token: string;
  expires_at: number;
  user: Me;
}

const KEY = 'shoal.session';
let session: Session | null = load();
const expiredListeners = new Set<(why: string) => void>();

function load(): Session | null {
  try {
    // Whether it is still valid is the manager's call (clocks differ): a 401 ends it.
    return JSON.parse(sessionStorage.getItem(KEY) ?? 'null') as Session | null;
  } catch {
    return null;
  }
}

export function currentSession(): Session | null {
  return session;
}

export function setSession(s: Session | null) {
  session = s;
  if (s) sessionStorage.setItem(KEY, JSON.stringify(s));
  else sessionStorage.removeItem(KEY);
}

/** Called when the manager no longer accepts the session (expired or revoked). */
export function onSessionEnded(f: (why: string) => void): () => void {
  expiredListeners.add(f);
  return () => expiredListeners.delete(f);
}

function ended(why: string) {
  setSession(null);
  for (const f of expiredListeners) f(why);
}

/** One API call; resolves to the decoded JSON (or undefined for 204), rejects with ApiError. */
export async function api<T = unknown>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { accept: 'application/json' };
  if (session) headers.authorization = `Bearer ${session.token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  let res: Response;
  try {
    res = await fetch(`/api/v1${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new ApiError(0, 'NETWORK', `the manager cannot be reached (${String(e)})`);
  }
  if (res.status === 204) return undefined as T;
  const text = await res.text();
  let data: unknown = undefined;
  try {
    data = text ? JSON.parse(text) : undefined;
  } catch {
    // Not JSON: reported below when the status is an error.
  }
  if (!res.ok) {
    const err = (data ?? {}) as { code?: string; message?: string };
    if (res.status === 401 && session && !path.startsWith('/auth/login')) {
      ended('Your session has ended. Sign in again.');
    }
    throw new ApiError(res.status, err.code ?? 'HTTP', err.message ?? `${res.status} ${res.statusText}`);
  }
  return data as T;
}

export const get = <T>(path: string) => api<T>('GET', path);
export const post = <T>(path: string, body?: unknown) => api<T>('POST', path, body ?? {});
export const patch = <T>(path: string, body: unknown) => api<T>('PATCH', path, body);
export const put = <T>(path: string, body: unknown) => api<T>('PUT', path, body);
export const del = (path: string) => api<void>('DELETE', path);

/** A query string from the defined values of `q` (with its leading `?`, or empty). */
export function query(q: Record<string, string | number | boolean | undefined | null>): string {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(q)) if (v !== undefined && v !== null && v !== '') p.set(k, String(v));
  const s = p.toString();
  return s ? `?${s}` : '';
}

export async function signIn(name: string, password: string): Promise<Session> {
  const s = await api<Session>('POST', '/auth/login', { name, password });
  setSession(s);
  return s;
}

export async function signOut() {
  try {
    if (session) await api('POST', '/auth/logout', {});
  } finally {
    setSession(null);
  }
}

/** Whether the user holds `p` (somewhere: cluster-scoped permissions may hold on some clusters). */
export function can(me: Me | null | undefined, p: Permission): boolean {
  if (!me) return false;
  return me.super_admin || me.permissions.includes('system') || me.permissions.includes(p);
}

/** Whether the user holds `p` on every cluster (needed to create clusters, say). */
export function canEverywhere(me: Me | null | undefined, p: Permission): boolean {
  return can(me, p) && !(me?.limited_to?.[p] && !me.super_admin);
}

/** Whether the user holds `p` on the cluster `cluster`. */
export function canOn(me: Me | null | undefined, p: Permission, cluster: number): boolean {
  if (!can(me, p)) return false;
  const only = me?.super_admin ? undefined : me?.limited_to?.[p];
  return !only || only.includes(cluster);
}
