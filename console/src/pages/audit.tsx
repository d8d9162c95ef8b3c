// Audit log: every change made through the API (GET /audit), newest first, with filters kept in
// the URL and paging backwards by entry id.
import { useEffect, useState } from 'preact/hooks';
import { get, query, type Me } from '../api';
import { tenantName, useTenants } from '../components/lookups';
import { Button, ErrorNote, Field, Loading, Page, Table } from '../components/ui';
import { ago, time } from '../format';
import { useLoad } from '../hooks';
import { Link, navigate, setQuery, useLocation } from '../router';

interface AuditEntry {
  id: number;
  at: number;
  tenant_id: number | null;
  actor: string;
  action: string;
  object: string;
  detail: string;
  result: string;
  status: number;
}

const PAGE_SIZE = 50;
const RESULTS = ['ok', 'denied', 'unauthenticated', 'rejected', 'error'];
const RESULT_CLASS: Record<string, string> = { ok: 'ok', denied: 'bad', unauthenticated: 'warn', rejected: 'warn', error: 'bad' };
const RANGES: { value: string; label: string; ms: number }[] = [
  { value: '1h', label: 'Last hour', ms: 3_600_000 },
  { value: '24h', label: 'Last 24 hours', ms: 86_400_000 },
  { value: '7d', label: 'Last 7 days', ms: 7 * 86_400_000 },
  { value: '30d', label: 'Last 30 days', ms: 30 * 86_400_000 },
];
/** Suggestions for the action filter (it matches any part of `METHOD /api/v1/route`). */
const ACTIONS = [
  'POST',
  'PUT',
  'PATCH',
  'DELETE',
  '/tasks',
  '/clusters',
  '/nodes',
  '/users',
  '/roles',
  '/bindings',
  '/tokens',
  '/files',
  '/tenants',
  '/auth/login',
  '/agent/register',
];
/** Console pages of the objects an entry may name. */
const PAGES = /^\/api\/v1\/(tasks|clusters|nodes|users)\/(\d+)\/?/;
/** Details that start by naming an object with a console page, e.g. `task 7`. */
const DETAIL = /^(task|cluster|node|user) (\d+)\b/;

export function AuditPage(props: { me: Me; id?: number; url?: URL }) {
  const url = useLocation();
  const q = url.searchParams;
  const actor = q.get('actor') ?? '';
  const action = q.get('action') ?? '';
  const result = q.get('result') ?? '';
  const range = q.get('range') ?? '';
  const before = q.get('before') ?? '';
  const [auto, setAuto] = useState(false);
  const superAdmin = props.me.super_admin;
  const tenants = useTenants(props.me, superAdmin);
  // Only the newest page refreshes itself: older pages do not change.
  const live = auto && !before;

  const entries = useLoad(
    () => {
      const r = RANGES.find((x) => x.value === range);
      return get<AuditEntry[]>(
        `/audit${query({ actor, action, result, since: r ? Date.now() - r.ms : undefined, before, limit: PAGE_SIZE })}`,
      );
    },
    [actor, action, result, range, before, live],
    live ? 5_000 : undefined,
  );

  // The text fields apply on submit; their drafts follow the URL (back, links, Clear).
  const [actorDraft, setActorDraft] = useState(actor);
  const [actionDraft, setActionDraft] = useState(action);
  useEffect(() => setActorDraft(actor), [actor]);
  useEffect(() => setActionDraft(action), [action]);

  const apply = (change: Record<string, string | undefined>) => setQuery({ ...change, before: undefined });
  const list = entries.data ?? [];
  // Without audit:read there is nothing to filter: only the manager's answer is shown.
  const denied = entries.error?.status === 403 && !entries.data;
  const filtered = !!(actor || action || result || range);
  const withQuery = (change: Record<string, string | undefined>) => {
    const u = new URL(url.href);
    for (const [k, v] of Object.entries(change)) {
      if (v) u.searchParams.set(k, v);
      else u.searchParams.delete(k);
    }
    if (!('before' in change)) u.searchParams.delete('before');
    return u.pathname + u.search;
  };
  const pageOf = (b: string | undefined) => withQuery({ before: b });

  return (
    <Page
      title="Audit log"
      actions={
        <>
          {!denied && (
            <label class="auto-refresh">
              <input type="checkbox" checked={auto} disabled={!!before} onChange={(e) => setAuto(e.currentTarget.checked)} />
              Auto-refresh
            </label>
          )}
          <Button onClick={entries.reload} busy={entries.loading && !!entries.data}>
            Refresh
          </Button>
        </>
      }
    >
      {!denied && (
        <form
          class="filters audit-filters"
          aria-label="Audit filters"
          onSubmit={(e) => {
            e.preventDefault();
            apply({ actor: actorDraft.trim(), action: actionDraft.trim() });
          }}
        >
          <Field label="Actor">
            <input
              type="search"
              value={actorDraft}
              placeholder="exact name, e.g. admin"
              onInput={(e) => setActorDraft(e.currentTarget.value)}
            />
          </Field>
          <Field label="Action">
            <input
              type="search"
              list="audit-actions"
              value={actionDraft}
              placeholder="part of it, e.g. /tasks"
              onInput={(e) => setActionDraft(e.currentTarget.value)}
            />
            <datalist id="audit-actions">
              {ACTIONS.map((a) => (
                <option key={a} value={a} />
              ))}
            </datalist>
          </Field>
          <Field label="Result">
            <select value={result} onChange={(e) => apply({ result: e.currentTarget.value })}>
              <option value="">Any</option>
              {RESULTS.map((r) => (
                <option key={r} value={r}>
                  {r}
                </option>
              ))}
            </select>
          </Field>
          <Field label="Time range">
            <select value={range} onChange={(e) => apply({ range: e.currentTarget.value })}>
              <option value="">Any time</option>
              {RANGES.map((r) => (
                <option key={r.value} value={r.value}>
                  {r.label}
                </option>
              ))}
            </select>
          </Field>
          <div class="filter-buttons">
            <Button type="submit" kind="primary">
              Apply
            </Button>
            <Button
              disabled={!filtered && !before && !actorDraft && !actionDraft}
              onClick={() => {
                setActorDraft('');
                setActionDraft('');
                setQuery({ actor: undefined, action: undefined, result: undefined, range: undefined, before: undefined });
              }}
            >
              Clear
            </Button>
          </div>
        </form>
      )}
      <ErrorNote error={entries.error} />
      <ErrorNote error={tenants.error} />
      {before && (
        <p class="muted" data-testid="audit-page">
          Entries older than #{before}. <Link href={pageOf(undefined)}>Back to the newest</Link>
        </p>
      )}
      <Loading loading={entries.loading && !entries.data} />
      {entries.data && list.length === 0 && (
        <p class="muted" data-testid="audit-empty">
          {filtered || before ? 'No entries match.' : 'No entries yet.'}
        </p>
      )}
      {list.length > 0 && (
        <Table
          label="Audit log"
          head={[
            'Time',
            'Actor',
            'Action',
            'Object',
            'Detail',
            'Result',
            <span class="num">Status</span>,
            ...(superAdmin ? ['Tenant'] : []),
          ]}
        >
          {list.map((e) => (
            <tr key={e.id} data-audit-id={e.id}>
              <td title={ago(e.at)}>
                <time dateTime={new Date(e.at).toISOString()}>{time(e.at)}</time>
              </td>
              <td>
                <Link href={withQuery({ actor: e.actor })} title={`Only ${e.actor}'s entries`}>
                  {e.actor}
                </Link>
              </td>
              <td>
                <code title={e.action}>{e.action.replace(' /api/v1/', ' /')}</code>
              </td>
              <td>
                <ObjectCell path={e.object} action={e.action} />
              </td>
              <td class="wrap detail">
                <Detail text={e.detail} />
              </td>
              <td>
                <span class={`badge ${RESULT_CLASS[e.result] ?? ''}`} data-result={e.result}>
                  {e.result}
                </span>
              </td>
              <td class="num">{e.status}</td>
              {superAdmin && <td>{e.tenant_id === null ? '–' : tenantName(tenants.data, e.tenant_id)}</td>}
            </tr>
          ))}
        </Table>
      )}
      {(list.length === PAGE_SIZE || before) && (
        <div class="pager" role="group" aria-label="Audit pages">
          {before && (
            <Button onClick={() => navigate(pageOf(undefined))}>Newest</Button>
          )}
          {list.length === PAGE_SIZE && (
            <Button onClick={() => navigate(pageOf(String(list[list.length - 1].id)))}>Older</Button>
          )}
        </div>
      )}
    </Page>
  );
}

/**
 * The concrete path when it names an object (not when it is the route itself), linked to the
 * object's console page where it has one.
 */
function ObjectCell(props: { path: string; action: string }) {
  const route = props.action.slice(props.action.indexOf(' ') + 1);
  if (props.path === route) return <span class="muted">–</span>;
  const m = props.path.match(PAGES);
  const text = <code>{props.path.replace(/^\/api\/v1/, '')}</code>;
  if (!m) return text;
  return <Link href={`/${m[1]}/${m[2]}`}>{text}</Link>;
}

/** A detail such as `task 7` or `cluster 1 (edge-eu)`, its object linked. */
function Detail(props: { text: string }) {
  const m = props.text.match(DETAIL);
  if (!m) return <>{props.text}</>;
  return (
    <>
      <Link href={`/${m[1]}s/${m[2]}`}>
        {m[1]} {m[2]}
      </Link>
      {props.text.slice(m[0].length)}
    </>
  );
}
