// The task list: filters in the URL, live state.
import { can, get, query, type Me } from '../api';
import { Badge, ErrorNote, Loading, Page, Progress, Table, Field } from '../components/ui';
import { ago, bytes, duration } from '../format';
import { useLoad } from '../hooks';
import { Link, setQuery } from '../router';
import { useClusters } from '../components/lookups';
import { TASK_STATES, sourceText, type Task } from '../tasks_api';

export function TasksPage(props: { me: Me; url?: URL }) {
  const q = props.url?.searchParams ?? new URLSearchParams();
  const state = q.get('state') ?? '';
  const kind = q.get('kind') ?? '';
  const cluster = q.get('cluster_id') ?? '';
  const tasks = useLoad(
    () => get<Task[]>(`/tasks${query({ state, kind, cluster_id: cluster, limit: 200 })}`),
    [state, kind, cluster],
    3000,
  );
  const clusters = useClusters(props.me);
  const clusterName = (id: number) => clusters.data?.find((c) => c.id === id)?.name ?? `#${id}`;

  return (
    <Page
      title="Tasks"
      actions={
        can(props.me, 'tasks:write') && (
          <Link class="btn primary" href="/tasks/new">
            New task
          </Link>
        )
      }
    >
      <form class="filters" aria-label="Filter tasks" onSubmit={(e) => e.preventDefault()}>
        <Field label="State">
          <select value={state} onChange={(e) => setQuery({ state: e.currentTarget.value })}>
            <option value="">any</option>
            {TASK_STATES.map((s) => (
              <option key={s} value={s}>
                {s}
              </option>
            ))}
          </select>
        </Field>
        <Field label="Kind">
          <select value={kind} onChange={(e) => setQuery({ kind: e.currentTarget.value })}>
            <option value="">any</option>
            <option value="image">image</option>
            <option value="file">file</option>
          </select>
        </Field>
        {clusters.data && clusters.data.length > 0 && (
          <Field label="Cluster">
            <select value={cluster} onChange={(e) => setQuery({ cluster_id: e.currentTarget.value })}>
              <option value="">any</option>
              {clusters.data.map((c) => (
                <option key={c.id} value={String(c.id)}>
                  {c.name}
                </option>
              ))}
            </select>
          </Field>
        )}
      </form>
      <ErrorNote error={tasks.error ?? clusters.error} />
      <Loading loading={tasks.loading} empty={tasks.data?.length === 0} what="tasks" />
      {tasks.data && tasks.data.length > 0 && <TaskTable tasks={tasks.data} clusterName={clusterName} />}
    </Page>
  );
}

/** Tasks as a table (the task list, a cron task's runs, a cluster's recent tasks). */
export function TaskTable(props: { tasks: Task[]; clusterName?: (id: number) => string; label?: string }) {
  return (
    <Table
      label={props.label ?? 'Tasks'}
      head={['Task', 'State', 'Source', 'Targets', 'Nodes done', 'Progress', 'Created', 'Duration']}
    >
      {props.tasks.map((t) => {
        const p = t.progress;
        const done = (p.nodes.succeeded ?? 0) + (p.nodes.failed ?? 0) + (p.nodes.stopped ?? 0);
        const targets = [
          ...t.clusters.map((c) => `cluster ${props.clusterName ? props.clusterName(c) : `#${c}`}`),
          ...(t.nodes.length ? [`${t.nodes.length} node${t.nodes.length === 1 ? '' : 's'}`] : []),
        ].join(', ');
        return (
          <tr key={t.id} data-task-id={t.id}>
            <td>
              <Link href={`/tasks/${t.id}`}>
                #{t.id} {t.name}
              </Link>
            </td>
            <td>
              <Badge state={t.state} title={t.error ?? undefined} />
            </td>
            <td class="wrap mono">{sourceText(t.source)}</td>
            <td class="wrap">{targets || '–'}</td>
            <td class="num">
              {done}/{p.nodes_total}
            </td>
            <td>
              <Progress value={p.bytes_done} max={p.bytes_total} label={`Task ${t.id} progress`} />
              <span class="muted">
                {bytes(p.bytes_done)} / {bytes(p.bytes_total)}
              </span>
            </td>
            <td title={new Date(t.created_at).toLocaleString()}>{ago(t.created_at)}</td>
            <td class="num">{duration(t.duration_ms)}</td>
          </tr>
        );
      })}
    </Table>
  );
}
