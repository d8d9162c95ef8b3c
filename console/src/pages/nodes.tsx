// Nodes: every registered node with its health (live, refreshed every 5 s), filtered by cluster
// and health in the URL; a node's page shows its facts and its recent tasks.
import { useState } from 'preact/hooks';
import { can, canOn, del, get, query, type Me } from '../api';
import { Confirm } from '../components/confirm';
import { clusterName, useClusters, type ClusterName } from '../components/lookups';
import { joinCommand } from '../components/secret';
import { Badge, Button, ErrorNote, Facts, Field, Loading, Page, Progress, Table } from '../components/ui';
import { ago, bytes, percent, time } from '../format';
import { useLoad } from '../hooks';
import { Link, navigate, setQuery } from '../router';
import { sourceText, type NodeTask, type Task } from '../tasks_api';

export interface Node {
  id: number;
  cluster_id: number;
  name: string;
  peer_id: string;
  address: string;
  version: string;
  role: string;
  zone: string;
  health: 'healthy' | 'degraded' | 'offline' | string;
  member: boolean;
  ready: boolean;
  disk_total: number;
  disk_free: number;
  peers: number;
  downloads: number;
  load: number;
  registered_at: number;
  last_seen: number;
}

interface NodeDetail extends Node {
  tasks: NodeTask[];
}

export const HEALTHS = ['healthy', 'degraded', 'offline'];

/** How long ago the node was last heard from, and why it is not healthy. */
function healthTitle(n: Node): string {
  const why: string[] = [];
  if (!n.ready) why.push('not ready');
  if (n.disk_total > 0 && n.disk_free * 20 < n.disk_total) why.push('disk more than 95% full');
  if (Date.now() - n.last_seen > 25_000) why.push(`last heartbeat ${ago(n.last_seen)}`);
  return why.length ? why.join(', ') : 'heartbeats on time';
}

function diskUsed(n: Node): number {
  return Math.max(0, n.disk_total - n.disk_free);
}

/** A table of nodes (the nodes page and a cluster's page). */
export function NodesTable(props: { nodes: Node[]; clusters?: ClusterName[]; label?: string; showCluster?: boolean }) {
  const showCluster = props.showCluster ?? true;
  const head = [
    'Name',
    ...(showCluster ? ['Cluster'] : []),
    'Health',
    'Zone',
    'Role',
    'Version',
    'Disk used',
    'Disk free',
    'Peers',
    'Downloads',
    'Last heartbeat',
  ];
  return (
    <Table label={props.label ?? 'Nodes'} head={head}>
      {props.nodes.map((n) => (
        <tr key={n.id} data-testid={`node-${n.id}`}>
          <td>
            <Link href={`/nodes/${n.id}`}>{n.name}</Link>
          </td>
          {showCluster && (
            <td>
              <Link href={`/clusters/${n.cluster_id}`}>
                {clusterName(props.clusters, n.cluster_id)}
              </Link>
            </td>
          )}
          <td>
            <Badge state={n.health} title={healthTitle(n)} />
            {!n.member && (
              <span class="muted" title="The cluster's member list does not hold it: it gets no work">
                {' '}
                not a member
              </span>
            )}
          </td>
          <td>{n.zone}</td>
          <td>{n.role === 'seed' ? <strong>seed</strong> : n.role}</td>
          <td>{n.version}</td>
          <td class="num" title={n.disk_total ? `${percent(diskUsed(n) / n.disk_total)} of ${bytes(n.disk_total)}` : undefined}>
            {n.disk_total ? bytes(diskUsed(n)) : '–'}
          </td>
          <td class="num">{n.disk_total ? bytes(n.disk_free) : '–'}</td>
          <td class="num">{n.peers}</td>
          <td class="num">{n.downloads}</td>
          <td title={time(n.last_seen)}>{ago(n.last_seen)}</td>
        </tr>
      ))}
    </Table>
  );
}

/** Counts by health, e.g. "3 healthy · 1 offline". */
export function HealthSummary(props: { counts: Record<string, number> }) {
  const parts = HEALTHS.filter((h) => props.counts[h]);
  if (!parts.length) return <span class="muted">no nodes</span>;
  return (
    <span class="health-summary">
      {parts.map((h) => (
        <span key={h}>
          {props.counts[h]} <Badge state={h} />
        </span>
      ))}
    </span>
  );
}

function countHealth(nodes: Node[]): Record<string, number> {
  const c: Record<string, number> = {};
  for (const n of nodes) c[n.health] = (c[n.health] ?? 0) + 1;
  return c;
}

export function NodesPage(props: { me: Me; id?: number; url?: URL }) {
  const { me } = props;
  const url = props.url ?? new URL(location.href);
  const cluster = url.searchParams.get('cluster') ?? '';
  const health = url.searchParams.get('health') ?? '';
  const nodes = useLoad(
    () => get<Node[]>(`/nodes${query({ cluster_id: cluster, health })}`),
    [cluster, health],
    5000,
  );
  const clusters = useClusters(me);
  const list = nodes.data ?? [];

  return (
    <Page title="Nodes">
      <form class="filters" aria-label="Filter nodes" onSubmit={(e) => e.preventDefault()}>
        <Field label="Cluster">
          <select name="cluster" value={cluster} onChange={(e) => setQuery({ cluster: e.currentTarget.value })}>
            <option value="">All clusters</option>
            {(clusters.data ?? []).map((c) => (
              <option key={c.id} value={String(c.id)}>
                {c.name}
              </option>
            ))}
            {cluster && !clusters.data?.some((c) => String(c.id) === cluster) && (
              <option value={cluster}>cluster {cluster}</option>
            )}
          </select>
        </Field>
        <Field label="Health">
          <select name="health" value={health} onChange={(e) => setQuery({ health: e.currentTarget.value })}>
            <option value="">Any health</option>
            {HEALTHS.map((h) => (
              <option key={h} value={h}>
                {h}
              </option>
            ))}
          </select>
        </Field>
        {(cluster || health) && (
          <Button onClick={() => setQuery({ cluster: undefined, health: undefined })}>Clear filters</Button>
        )}
      </form>
      <ErrorNote error={nodes.error} />
      <ErrorNote error={clusters.error} />
      <Loading loading={nodes.loading} empty={!nodes.error && list.length === 0} what="nodes" />
      {list.length > 0 && (
        <>
          <p class="muted" aria-live="polite" data-testid="nodes-summary">
            {list.length} {list.length === 1 ? 'node' : 'nodes'}: <HealthSummary counts={countHealth(list)} />
            <span class="refresh-note"> · refreshed every 5 s</span>
          </p>
          <NodesTable nodes={list} clusters={clusters.data} />
        </>
      )}
      {!nodes.loading && !nodes.error && list.length === 0 && !cluster && !health && (
        <p class="muted">
          Nodes join a cluster with its join token: <code>{joinCommand()}</code>.
          {can(me, 'clusters:read') && (
            <>
              {' '}
              Join tokens are shown on the <Link href="/clusters">clusters</Link> page.
            </>
          )}
        </p>
      )}
    </Page>
  );
}

export function NodePage(props: { me: Me; id?: number; url?: URL }) {
  const { me } = props;
  const id = props.id ?? 0;
  const node = useLoad(() => get<NodeDetail>(`/nodes/${id}`), [id], 5000);
  const tasks = useLoad(
    () => (can(me, 'tasks:read') ? get<Task[]>(`/tasks${query({ node_id: id, limit: 50 })}`) : Promise.resolve(undefined)),
    [id],
    5000,
  );
  const clusters = useClusters(me);
  const [removing, setRemoving] = useState(false);
  const n = node.data;

  // The tasks list names each task; the node's own part (state, bytes) comes with the node.
  const parts = new Map((n?.tasks ?? []).map((p) => [p.task_id, p]));
  const rows: { id: number; task?: Task; part?: NodeTask }[] = tasks.data
    ? tasks.data.map((t) => ({ id: t.id, task: t, part: parts.get(t.id) }))
    : (n?.tasks ?? []).map((p) => ({ id: p.task_id, part: p }));

  return (
    <Page
      title={n ? `Node ${n.name}` : 'Node'}
      actions={
        n &&
        canOn(me, 'nodes:write', n.cluster_id) && (
          <Button kind="danger" onClick={() => setRemoving(true)}>
            Remove
          </Button>
        )
      }
    >
      <p>
        <Link href="/nodes">← All nodes</Link>
      </p>
      <ErrorNote error={node.error} />
      <ErrorNote error={clusters.error} />
      <Loading loading={node.loading && !n} />
      {n && (
        <>
          <Facts
            items={[
              ['Health', <Badge state={n.health} title={healthTitle(n)} />],
              ['Cluster', <Link href={`/clusters/${n.cluster_id}`}>{clusterName(clusters.data, n.cluster_id)}</Link>],
              ['Member of its cluster', n.member ? 'yes' : 'no: it gets no work'],
              ['Ready', n.ready ? 'yes' : 'no'],
              ['Role', n.role],
              ['Zone', n.zone],
              ['Version', n.version],
              ['Address', <code>{n.address}</code>],
              ['Peer id', <code>{n.peer_id}</code>],
              [
                'Disk',
                n.disk_total ? (
                  <>
                    {bytes(diskUsed(n))} used of {bytes(n.disk_total)}, {bytes(n.disk_free)} free
                    <Progress value={diskUsed(n)} max={n.disk_total} label="Disk used" />
                  </>
                ) : (
                  '–'
                ),
              ],
              ['Peers', String(n.peers)],
              ['Downloads in flight', String(n.downloads)],
              ['Load', n.load.toFixed(2)],
              ['Registered', time(n.registered_at)],
              ['Last heartbeat', <span title={time(n.last_seen)}>{ago(n.last_seen)}</span>],
            ]}
          />
          <h2>Recent tasks</h2>
          <ErrorNote error={tasks.error} />
          {rows.length === 0 ? (
            <p class="muted">No tasks have reached this node yet.</p>
          ) : (
            <Table label="Recent tasks" head={['Task', 'Source', 'Task state', 'On this node', 'Progress', 'Started', 'Ended', 'Error']}>
              {rows.map((r) => (
                <tr key={r.id} data-testid={`task-${r.id}`}>
                  <td>
                    <Link href={`/tasks/${r.id}`}>{r.task ? r.task.name : `task ${r.id}`}</Link>
                  </td>
                  <td class="wrap wide">{r.task ? <code>{sourceText(r.task.source)}</code> : '–'}</td>
                  <td>{r.task ? <Badge state={r.task.state} /> : '–'}</td>
                  <td>{r.part ? <Badge state={r.part.state} /> : '–'}</td>
                  <td>
                    {r.part ? (
                      <span title={`${bytes(r.part.bytes_peer)} from peers, ${bytes(r.part.bytes_upstream)} from the upstream`}>
                        {bytes(r.part.bytes_done)}
                        {r.part.bytes_total ? ` of ${bytes(r.part.bytes_total)}` : ''}
                      </span>
                    ) : (
                      '–'
                    )}
                  </td>
                  <td title={time(r.part?.started_at)}>{r.part?.started_at ? ago(r.part.started_at) : '–'}</td>
                  <td title={time(r.part?.finished_at)}>{r.part?.finished_at ? ago(r.part.finished_at) : '–'}</td>
                  <td class="wrap wide">{r.part?.error ?? ''}</td>
                </tr>
              ))}
            </Table>
          )}
          {canOn(me, 'nodes:write', n.cluster_id) && (
            <Confirm
              title="Remove node"
              open={removing}
              confirm="Remove node"
              onClose={() => setRemoving(false)}
              onConfirm={async () => {
                await del(`/nodes/${n.id}`);
                navigate('/nodes');
              }}
            >
              <p>
                Remove {n.name}? Its running assignments stop and its node token stops working; its part in past tasks stays on
                record. If its agent still runs and its cluster still lists it, it registers again with the join token.
              </p>
            </Confirm>
          )}
        </>
      )}
    </Page>
  );
}
