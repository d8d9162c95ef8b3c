// One task: its facts, each node's progress, bytes from peers against upstream, and its log,
// all updating while it runs; stop, copy and delete.
import { useEffect, useRef, useState } from 'preact/hooks';
import { ApiError, asApiError, can, canOn, del, get, post, query, type Me } from '../api';
import { BytesSplit } from '../components/bytes_split';
import { Badge, Button, ErrorNote, Facts, Loading, Page, Progress, Table } from '../components/ui';
import { bytes, duration, rate, time } from '../format';
import { useAction, useLoad } from '../hooks';
import { Link, navigate } from '../router';
import { TaskTable } from './tasks';
import { active, scheduleText, sourceText, type LogEntry, type NodeTask, type Task } from '../tasks_api';

const LIVE_MS = 2000;

export function TaskPage(props: { me: Me; id?: number }) {
  const id = props.id!;
  const [live, setLive] = useState(true);
  const task = useLoad(() => get<Task>(`/tasks/${id}`), [id], live ? LIVE_MS : undefined);
  const nodes = useLoad(() => get<NodeTask[]>(`/tasks/${id}/nodes`), [id], live ? LIVE_MS : undefined);
  const t = task.data;
  const isCron = t?.schedule.kind === 'cron';
  const runs = useLoad(
    () => (isCron ? get<Task[]>(`/tasks${query({ parent_id: id, limit: 50 })}`) : Promise.resolve([])),
    [id, isCron],
    isCron && live ? 5000 : undefined,
  );
  const act = useAction();
  // Changing a task needs tasks:write on every cluster it reaches.
  const writer = !!t && can(props.me, 'tasks:write') && t.scope_clusters.every((c) => canOn(props.me, 'tasks:write', c));

  // Poll while the task can change; one last load after it settled.
  useEffect(() => {
    if (t && !active(t) && !(isCron && t.state === 'scheduled')) {
      setLive(false);
      nodes.reload();
    }
  }, [t?.state]);

  const stop = () => act.run(async () => (await post<Task>(`/tasks/${id}/stop`), setLive(true), task.reload(), nodes.reload()));
  const copy = async () => {
    const c = await act.run(() => post<Task>(`/tasks/${id}/copy`));
    if (c) navigate(`/tasks/${c.id}`);
  };
  const remove = async () => {
    const running = t && active(t) ? ' It is stopped first.' : '';
    if (!confirm(`Delete task #${id}${t ? ` (${t.name})` : ''}? Its per-node records and log go with it.${running}`)) return;
    const ok = await act.run(async () => (await del(`/tasks/${id}`), true));
    if (ok) navigate('/tasks');
  };

  return (
    <Page
      title={t ? `Task #${t.id} ${t.name}` : `Task #${id}`}
      actions={
        writer &&
        t && (
          <>
            {active(t) && (
              <Button kind="danger" busy={act.busy} onClick={stop}>
                Stop
              </Button>
            )}
            <Button busy={act.busy} onClick={copy}>
              Copy
            </Button>
            <Button kind="danger" busy={act.busy} onClick={remove}>
              Delete
            </Button>
          </>
        )
      }
    >
      <ErrorNote error={act.error ?? task.error} />
      <Loading loading={task.loading && !t} />
      {t && (
        <>
          <Facts
            items={[
              ['State', <Badge state={t.state} />],
              ['Source', <span class="mono">{sourceText(t.source)}</span>],
              ['Kind', t.source.kind],
              ['When', scheduleText(t.schedule)],
              ...(t.next_run_at ? [['Next run', time(t.next_run_at)] as [string, string]] : []),
              ['Bandwidth per node', rate(t.bandwidth)],
              ['Created', `${time(t.created_at)} by ${t.created_by}`],
              ['Started', time(t.started_at)],
              ['Finished', time(t.finished_at)],
              ['Duration', duration(t.duration_ms)],
              ...(t.parent_id ? [['Run of', <Link href={`/tasks/${t.parent_id}`}>task #{t.parent_id}</Link>] as [string, preact.ComponentChildren]] : []),
              ...(t.copied_from ? [['Copy of', <Link href={`/tasks/${t.copied_from}`}>task #{t.copied_from}</Link>] as [string, preact.ComponentChildren]] : []),
            ]}
          />
          {t.error && (
            <p class="error" role="status">
              {t.error}
            </p>
          )}
          <div class="grid">
            <div class="card" aria-label="Progress">
              <h2>Progress</h2>
              <Progress value={t.progress.bytes_done} max={t.progress.bytes_total} label="Task progress" />
              <p class="muted" data-testid="task-bytes">
                {bytes(t.progress.bytes_done)} of {bytes(t.progress.bytes_total)} on {t.progress.nodes_total} node
                {t.progress.nodes_total === 1 ? '' : 's'}
                {Object.entries(t.progress.nodes)
                  .map(([s, n]) => ` · ${n} ${s}`)
                  .join('')}
              </p>
            </div>
            <div class="card">
              <h2>Where the bytes came from</h2>
              <BytesSplit peer={t.progress.bytes_peer} upstream={t.progress.bytes_upstream} />
            </div>
          </div>

          <h2>Nodes</h2>
          <ErrorNote error={nodes.error} />
          <Loading loading={nodes.loading && !nodes.data} empty={nodes.data?.length === 0} what="nodes assigned" />
          {nodes.data && nodes.data.length > 0 && (
            <Table label="Task nodes" head={['Node', 'State', 'Progress', 'Blobs', 'From peers', 'From upstream', 'Time', 'Error']}>
              {nodes.data.map((n) => (
                <tr key={n.node_id} data-node={n.node_name}>
                  <td>
                    {can(props.me, 'nodes:read') ? <Link href={`/nodes/${n.node_id}`}>{n.node_name}</Link> : n.node_name}
                  </td>
                  <td>
                    <Badge state={n.state} />
                  </td>
                  <td>
                    <Progress value={n.bytes_done} max={n.bytes_total} label={`${n.node_name} progress`} />
                    <span class="muted">
                      {bytes(n.bytes_done)} / {bytes(n.bytes_total)}
                    </span>
                  </td>
                  <td class="num">
                    {n.blobs_done}/{n.blobs_total}
                  </td>
                  <td class="num">{bytes(n.bytes_peer)}</td>
                  <td class="num">{bytes(n.bytes_upstream)}</td>
                  <td class="num">{n.started_at ? duration((n.finished_at ?? Date.now()) - n.started_at) : '–'}</td>
                  <td class="wrap">{n.error ?? ''}</td>
                </tr>
              ))}
            </Table>
          )}

          {isCron && (
            <>
              <h2>Runs</h2>
              <ErrorNote error={runs.error} />
              <Loading loading={runs.loading && !runs.data} empty={runs.data?.length === 0} what="runs" />
              {runs.data && runs.data.length > 0 && <TaskTable tasks={runs.data} label="Runs" />}
            </>
          )}

          <h2>Log</h2>
          <TaskLog id={id} live={live} />
        </>
      )}
    </Page>
  );
}

/** The task's log, fetched incrementally (`after=`) while the task runs, one call at a time. */
function TaskLog(props: { id: number; live: boolean }) {
  const [lines, setLines] = useState<LogEntry[]>([]);
  const [error, setError] = useState<ApiError | undefined>(undefined);
  const last = useRef(0);
  const pulling = useRef(false);
  const box = useRef<HTMLDivElement>(null);
  useEffect(() => {
    let stopped = false;
    const pull = async () => {
      if (pulling.current) return;
      pulling.current = true;
      try {
        for (;;) {
          const more = await get<LogEntry[]>(`/tasks/${props.id}/logs${query({ after: last.current || undefined, limit: 500 })}`);
          if (stopped) break;
          const fresh = more.filter((l) => l.id > last.current);
          if (fresh.length) {
            last.current = fresh[fresh.length - 1].id;
            setLines((l) => [...l, ...fresh].slice(-2000));
          }
          setError(undefined);
          if (more.length < 500) break;
        }
      } catch (e) {
        if (!stopped) setError(asApiError(e));
      } finally {
        pulling.current = false;
      }
    };
    pull();
    const t = props.live ? setInterval(pull, LIVE_MS) : undefined;
    return () => {
      stopped = true;
      if (t) clearInterval(t);
    };
  }, [props.live]);
  useEffect(() => {
    const b = box.current;
    if (b && b.scrollHeight - b.scrollTop - b.clientHeight < 80) b.scrollTop = b.scrollHeight;
  }, [lines.length]);
  return (
    <>
      <ErrorNote error={error} />
      {lines.length === 0 ? (
        <p class="muted">No log lines yet.</p>
      ) : (
        <div class="log" ref={box} role="log" aria-label="Task log" tabIndex={0}>
          {lines.map((l) => (
            <div key={l.id} class={`lvl-${l.level}`}>
              {time(l.at)} {l.level.padEnd(5)} {l.node_name ? `[${l.node_name}] ` : ''}
              {l.message}
            </div>
          ))}
        </div>
      )}
    </>
  );
}
