// Clusters: static host lists, Kubernetes label selections and Mesos agents, each with a join
// token its nodes register with. The list creates them; a cluster's page edits, rediscovers,
// rotates the join token and deletes, and shows the cluster's nodes and recent tasks.
import type { ComponentChildren } from 'preact';
import { useState } from 'preact/hooks';
import { can, canEverywhere, canOn, del, get, post, put, query, type Me } from '../api';
import { Confirm } from '../components/confirm';
import { tenantName, useClusters, useTenants, type Tenant } from '../components/lookups';
import { joinCommand, Secret } from '../components/secret';
import { Badge, Button, Dialog, ErrorNote, Facts, Field, FormEnd, Loading, Page, Table } from '../components/ui';
import { ago, time } from '../format';
import { useAction, useLoad } from '../hooks';
import { Link, navigate } from '../router';
import type { Task } from '../tasks_api';
import { HealthSummary, NodesTable, type Node } from './nodes';
import { TaskTable } from './tasks';

type ClusterSpec =
  | { kind: 'static'; hosts: string[] }
  | {
      kind: 'kubernetes';
      api_server?: string | null;
      token?: string | null;
      ca_cert?: string | null;
      label_selector: string;
      insecure_skip_tls_verify: boolean;
    }
  | { kind: 'mesos'; master: string; attribute?: string | null };

type Kind = ClusterSpec['kind'];

interface Member {
  name: string;
  address: string | null;
  zone: string | null;
  ready: boolean;
}

interface Cluster {
  id: number;
  tenant_id: number;
  name: string;
  description: string;
  zone: string;
  spec: ClusterSpec;
  members: Member[];
  discovered_at: number | null;
  discovery_error: string | null;
  nodes: Record<string, number>;
  join_token?: string;
}

/** What the API shows in place of a stored Kubernetes token. */
const REDACTED = '********';

const KIND_LABEL: Record<Kind, string> = {
  static: 'static',
  kubernetes: 'Kubernetes',
  mesos: 'Mesos',
};

/** Where the members come from, in a few words. */
function specText(spec: ClusterSpec): string {
  switch (spec.kind) {
    case 'static':
      return `${spec.hosts.length} ${spec.hosts.length === 1 ? 'host' : 'hosts'}`;
    case 'kubernetes':
      return `${spec.api_server || 'the manager’s own cluster'}${spec.label_selector ? `, nodes with ${spec.label_selector}` : ', every node'}`;
    case 'mesos':
      return `${spec.master}${spec.attribute ? `, agents with ${spec.attribute}` : ''}`;
  }
}

function Discovery(props: { cluster: Cluster }) {
  const c = props.cluster;
  if (c.discovery_error) {
    return (
      <span>
        <Badge state="failed" title={c.discovery_error} /> <span class="muted">{c.discovered_at ? `last success ${ago(c.discovered_at)}` : 'never succeeded'}</span>
      </span>
    );
  }
  return <span title={time(c.discovered_at)}>{c.discovered_at ? ago(c.discovered_at) : c.spec.kind === 'static' ? '–' : 'pending'}</span>;
}

/** The join token, shown once after a creation or a rotation, with the node operator's command. */
function JoinToken(props: { cluster: Cluster; onClose: () => void }) {
  const c = props.cluster;
  return (
    <Dialog title={`Join token of ${c.name}`} open={!!c.join_token} onClose={props.onClose}>
      <div role="status" aria-label="New join token">
        <p>Copy the join token now: it is shown only this once.</p>
        <Secret value={c.join_token ?? ''} label="Join token" />
        <p>
          Put it in a file on each node (readable only by shoal; in Kubernetes, a mounted Secret) and run the node with it:
        </p>
        <pre class="command" data-testid="join-command">
          <code>{joinCommand()}</code>
        </pre>
        <p class="muted">
          Registered nodes keep their own node tokens; the join token is needed again only by nodes that join later. Rotating it
          makes this one stop working.
        </p>
        <div class="actions dialog-actions">
          <Button kind="primary" onClick={props.onClose}>
            Done
          </Button>
        </div>
      </div>
    </Dialog>
  );
}

export function ClustersPage(props: { me: Me; id?: number; url?: URL }) {
  const { me } = props;
  // Creating a cluster needs clusters:write on every cluster of the tenant.
  const write = canEverywhere(me, 'clusters:write');
  const clusters = useLoad(() => get<Cluster[]>('/clusters'), [], 10000);
  const tenants = useTenants(me, me.super_admin);
  const [creating, setCreating] = useState(false);
  const [created, setCreated] = useState<Cluster | null>(null);
  const head = ['Name', 'Kind', ...(me.super_admin ? ['Tenant'] : []), 'Zone', 'Nodes', 'Members', 'Source', 'Last discovery'];

  return (
    <Page
      title="Clusters"
      actions={
        write && (
          <Button kind="primary" onClick={() => setCreating(true)}>
            New cluster
          </Button>
        )
      }
    >
      <ErrorNote error={clusters.error} />
      <ErrorNote error={tenants.error} />
      <Loading loading={clusters.loading} empty={!clusters.error && !clusters.data?.length} what="clusters" />
      {clusters.data && clusters.data.length > 0 && (
        <Table label="Clusters" head={head}>
          {clusters.data.map((c) => (
            <tr key={c.id} data-testid={`cluster-${c.id}`}>
              <td class="wrap mid">
                <Link href={`/clusters/${c.id}`}>{c.name}</Link>
                {c.description && <div class="muted small">{c.description}</div>}
              </td>
              <td>{KIND_LABEL[c.spec.kind]}</td>
              {me.super_admin && <td>{tenantName(tenants.data, c.tenant_id)}</td>}
              <td>
                <span class="zone">{c.zone}</span>
              </td>
              <td>
                <HealthSummary counts={c.nodes} />
              </td>
              <td class="num">{c.members.length}</td>
              <td class="wrap mid">{specText(c.spec)}</td>
              <td>
                <Discovery cluster={c} />
              </td>
            </tr>
          ))}
        </Table>
      )}
      {write && (
        <Dialog title="Create cluster" open={creating} onClose={() => setCreating(false)}>
          <ClusterForm
            me={me}
            tenants={tenants.data ?? []}
            onCancel={() => setCreating(false)}
            onSaved={(c) => {
              setCreating(false);
              setCreated(c);
              clusters.reload();
            }}
          />
        </Dialog>
      )}
      {created && <JoinToken cluster={created} onClose={() => setCreated(null)} />}
    </Page>
  );
}

function ClusterForm(props: { me: Me; tenants: Tenant[]; cluster?: Cluster; onCancel: () => void; onSaved: (c: Cluster) => void }) {
  const { me, cluster } = props;
  const spec = cluster?.spec;
  const k8s = spec?.kind === 'kubernetes' ? spec : undefined;
  const mesos = spec?.kind === 'mesos' ? spec : undefined;
  const storedToken = !!k8s?.token;
  const [name, setName] = useState(cluster?.name ?? '');
  const [description, setDescription] = useState(cluster?.description ?? '');
  const [zone, setZone] = useState(cluster?.zone ?? '');
  const [kind, setKind] = useState<Kind>(spec?.kind ?? 'static');
  const [tenant, setTenant] = useState(String(me.tenant_id));
  const [hosts, setHosts] = useState(spec?.kind === 'static' ? spec.hosts.join('\n') : '');
  const [apiServer, setApiServer] = useState(k8s?.api_server ?? '');
  const [token, setToken] = useState('');
  const [caCert, setCaCert] = useState(k8s?.ca_cert ?? '');
  const [selector, setSelector] = useState(k8s?.label_selector ?? '');
  const [insecure, setInsecure] = useState(k8s?.insecure_skip_tls_verify ?? false);
  const [master, setMaster] = useState(mesos?.master ?? '');
  const [attribute, setAttribute] = useState(mesos?.attribute ?? '');
  const act = useAction();

  const specOf = (): ClusterSpec => {
    switch (kind) {
      case 'static':
        return { kind, hosts: hosts.split(/[\s,]+/).filter(Boolean) };
      case 'kubernetes':
        return {
          kind,
          api_server: apiServer.trim() || null,
          // An empty field keeps a stored token (the API keeps it when sent back redacted).
          token: token.trim() || (storedToken ? REDACTED : null),
          ca_cert: caCert.trim() || null,
          label_selector: selector.trim(),
          insecure_skip_tls_verify: insecure,
        };
      case 'mesos':
        return { kind, master: master.trim(), attribute: attribute.trim() || null };
    }
  };

  return (
    <form
      aria-label={cluster ? 'Edit cluster' : 'Create cluster'}
      onSubmit={async (e) => {
        e.preventDefault();
        const body = {
          name,
          description,
          zone: zone.trim() || undefined,
          spec: specOf(),
          tenant_id: !cluster && me.super_admin ? Number(tenant) : undefined,
        };
        const c = await act.run(() => (cluster ? put<Cluster>(`/clusters/${cluster.id}`, body) : post<Cluster>('/clusters', body)));
        if (c) props.onSaved(c);
      }}
    >
      <div class="row">
        <Field label="Cluster name">
          <input name="name" required maxLength={100} value={name} onInput={(e) => setName(e.currentTarget.value)} />
        </Field>
        <Field label="Zone" hint="The zone its nodes are in (their --zone). Empty: “default”.">
          <input name="zone" maxLength={63} pattern="[A-Za-z0-9._\-]+" placeholder="default" value={zone} onInput={(e) => setZone(e.currentTarget.value)} />
        </Field>
      </div>
      <Field label="Description">
        <textarea name="description" rows={2} maxLength={1000} value={description} onInput={(e) => setDescription(e.currentTarget.value)} />
      </Field>
      {!cluster && me.super_admin && props.tenants.length > 0 && (
        <Field label="Tenant">
          <select name="tenant_id" value={tenant} onChange={(e) => setTenant(e.currentTarget.value)}>
            {props.tenants.map((t) => (
              <option key={t.id} value={String(t.id)}>
                {t.name}
              </option>
            ))}
          </select>
        </Field>
      )}
      <Field label="Kind" hint="Where the members come from.">
        <select name="kind" value={kind} onChange={(e) => setKind(e.currentTarget.value as Kind)}>
          <option value="static">static</option>
          <option value="kubernetes">Kubernetes</option>
          <option value="mesos">Mesos</option>
        </select>
      </Field>
      {kind === 'static' && (
        <Field label="Hosts" hint="One per line: a host name or IP address, without scheme or port. Only listed hosts may join.">
          <textarea name="hosts" rows={4} required value={hosts} onInput={(e) => setHosts(e.currentTarget.value)} class="mono" />
        </Field>
      )}
      {kind === 'kubernetes' && (
        <>
          <Field label="API server URL" hint="e.g. https://10.0.0.1:6443. Empty: the manager's own in-cluster credentials (super administrators only).">
            <input name="api_server" type="url" value={apiServer} onInput={(e) => setApiServer(e.currentTarget.value)} />
          </Field>
          <Field
            label="Bearer token"
            hint={storedToken ? 'A token is stored: leave empty to keep it (give it again if the API server or its trust settings change).' : 'A service account token allowed to list nodes.'}
          >
            <input
              name="token"
              type="password"
              autocomplete="off"
              placeholder={storedToken ? 'unchanged' : ''}
              value={token}
              onInput={(e) => setToken(e.currentTarget.value)}
            />
          </Field>
          <Field label="CA certificate (PEM)" hint="The API server's CA bundle; empty: the system's trusted roots.">
            <textarea name="ca_cert" rows={3} class="mono" value={caCert} onInput={(e) => setCaCert(e.currentTarget.value)} />
          </Field>
          <Field label="Label selector" hint="e.g. shoal.io/node=true; empty: every node.">
            <input name="label_selector" value={selector} onInput={(e) => setSelector(e.currentTarget.value)} />
          </Field>
          <label class="check">
            <input type="checkbox" name="insecure_skip_tls_verify" checked={insecure} onChange={(e) => setInsecure(e.currentTarget.checked)} />
            Skip TLS verification (test clusters only)
          </label>
        </>
      )}
      {kind === 'mesos' && (
        <>
          <Field label="Master URL" hint="e.g. http://mesos-master:5050">
            <input name="master" type="url" required value={master} onInput={(e) => setMaster(e.currentTarget.value)} />
          </Field>
          <Field label="Attribute filter" hint="Optional key=value an agent must carry.">
            <input name="attribute" value={attribute} onInput={(e) => setAttribute(e.currentTarget.value)} />
          </Field>
        </>
      )}
      <FormEnd error={act.error} submit={cluster ? 'Save cluster' : 'Create cluster'} busy={act.busy} onCancel={props.onCancel} />
    </form>
  );
}

export function ClusterPage(props: { me: Me; id?: number; url?: URL }) {
  const { me } = props;
  const id = props.id ?? 0;
  const write = canOn(me, 'clusters:write', id);
  const cluster = useLoad(() => get<Cluster>(`/clusters/${id}`), [id], 10000);
  const nodes = useLoad(
    () => (can(me, 'nodes:read') ? get<Node[]>(`/nodes${query({ cluster_id: id })}`) : Promise.resolve(undefined)),
    [id],
    5000,
  );
  const tasks = useLoad(
    () => (can(me, 'tasks:read') ? get<Task[]>(`/tasks${query({ cluster_id: id, limit: 20 })}`) : Promise.resolve(undefined)),
    [id],
    10000,
  );
  const tenants = useTenants(me, me.super_admin);
  // Names of the clusters the tasks target besides this one.
  const clusters = useClusters(me);
  const [dialog, setDialog] = useState<'edit' | 'rotate' | 'delete' | null>(null);
  const [rotated, setRotated] = useState<Cluster | null>(null);
  const [notice, setNotice] = useState<string | undefined>(undefined);
  const discover = useAction();
  const c = cluster.data;

  return (
    <Page
      title={c ? `Cluster ${c.name}` : 'Cluster'}
      actions={
        c &&
        write && (
          <>
            <Button onClick={() => setDialog('edit')}>Edit</Button>
            <Button
              busy={discover.busy}
              onClick={async () => {
                setNotice(undefined);
                const d = await discover.run(() => post<Cluster>(`/clusters/${id}/discover`));
                if (d) {
                  setNotice(
                    d.discovery_error
                      ? undefined
                      : `Discovery found ${d.members.length} ${d.members.length === 1 ? 'member' : 'members'}.`,
                  );
                  cluster.reload();
                  nodes.reload();
                }
              }}
            >
              Discover now
            </Button>
            <Button onClick={() => setDialog('rotate')}>Rotate join token</Button>
            <Button kind="danger" onClick={() => setDialog('delete')}>
              Delete
            </Button>
          </>
        )
      }
    >
      <p>
        <Link href="/clusters">← All clusters</Link>
      </p>
      <ErrorNote error={cluster.error} />
      <ErrorNote error={tenants.error} />
      <ErrorNote error={clusters.error} />
      <ErrorNote error={discover.error} />
      {notice && (
        <p class="notice" role="status">
          {notice}
        </p>
      )}
      <Loading loading={cluster.loading && !c} />
      {c && (
        <>
          {c.description && <p>{c.description}</p>}
          <Facts
            items={[
              ['Kind', KIND_LABEL[c.spec.kind]],
              ['Zone', c.zone],
              ...(me.super_admin
                ? ([['Tenant', tenantName(tenants.data, c.tenant_id)]] as [string, string][])
                : []),
              ['Nodes', <HealthSummary counts={c.nodes} />],
              ['Members', String(c.members.length)],
              ...specFacts(c.spec),
              ['Last discovery', <Discovery cluster={c} />],
            ]}
          />
          {c.discovery_error && (
            <p class="error" data-testid="discovery-error">
              The last discovery failed: {c.discovery_error}
            </p>
          )}

          <h2>Nodes</h2>
          {nodes.data === undefined && !nodes.loading && !nodes.error ? (
            <p class="muted">Listing nodes needs the permission nodes:read.</p>
          ) : (
            <>
              <ErrorNote error={nodes.error} />
              <Loading loading={nodes.loading} empty={!nodes.error && nodes.data?.length === 0} what="nodes" />
              {nodes.data && nodes.data.length > 0 && (
                <>
                  <NodesTable nodes={nodes.data} label="Nodes of the cluster" showCluster={false} />
                  <p>
                    <Link href={`/nodes${query({ cluster: id })}`}>Open in the node list</Link>
                  </p>
                </>
              )}
              {nodes.data?.length === 0 && (
                <p class="muted">
                  Nodes join with the cluster's join token: <code>{joinCommand()}</code>
                </p>
              )}
            </>
          )}

          <h2>Recent tasks</h2>
          {tasks.data === undefined && !tasks.loading && !tasks.error ? (
            <p class="muted">Listing tasks needs the permission tasks:read.</p>
          ) : (
            <>
              <ErrorNote error={tasks.error} />
              <Loading loading={tasks.loading} empty={!tasks.error && tasks.data?.length === 0} what="tasks" />
              {tasks.data && tasks.data.length > 0 && (
                <TaskTable
                  tasks={tasks.data}
                  label="Recent tasks"
                  clusterName={(cid) => (cid === id ? c.name : (clusters.data?.find((x) => x.id === cid)?.name ?? `#${cid}`))}
                />
              )}
            </>
          )}

          <Members members={c.members} />

          {write && (
            <>
              <Dialog title={`Edit cluster ${c.name}`} open={dialog === 'edit'} onClose={() => setDialog(null)}>
                <ClusterForm
                  me={me}
                  tenants={tenants.data ?? []}
                  cluster={c}
                  onCancel={() => setDialog(null)}
                  onSaved={() => {
                    setDialog(null);
                    cluster.reload();
                    nodes.reload();
                  }}
                />
              </Dialog>
              <Confirm
                title="Rotate join token"
                open={dialog === 'rotate'}
                confirm="Rotate token"
                onClose={() => setDialog(null)}
                onConfirm={async () => {
                  const r = await post<Cluster>(`/clusters/${id}/token`);
                  setRotated(r);
                }}
              >
                <p>
                  Make a new join token for {c.name}? The current one stops working at once; nodes already registered keep
                  working with their own tokens.
                </p>
              </Confirm>
              <Confirm
                title="Delete cluster"
                open={dialog === 'delete'}
                confirm="Delete cluster"
                onClose={() => setDialog(null)}
                onConfirm={async () => {
                  await del(`/clusters/${id}`);
                  navigate('/clusters');
                }}
              >
                <p>
                  Delete the cluster {c.name}? Its {Object.values(c.nodes).reduce((a, b) => a + b, 0)} nodes are removed and their
                  running assignments stop. This cannot be undone.
                </p>
              </Confirm>
            </>
          )}
          {rotated && <JoinToken cluster={rotated} onClose={() => setRotated(null)} />}
        </>
      )}
    </Page>
  );
}

function specFacts(spec: ClusterSpec): [string, ComponentChildren][] {
  switch (spec.kind) {
    case 'static':
      return [['Hosts', <span class="mono">{spec.hosts.join(', ')}</span>]];
    case 'kubernetes':
      return [
        ['API server', spec.api_server ? <code>{spec.api_server}</code> : 'the manager’s own credentials'],
        ['Label selector', spec.label_selector ? <code>{spec.label_selector}</code> : 'every node'],
        ['Bearer token', spec.token ? 'stored' : 'none'],
        ['CA certificate', spec.ca_cert ? 'given' : 'system roots'],
        ...(spec.insecure_skip_tls_verify ? ([['TLS', 'not verified']] as [string, string][]) : []),
      ];
    case 'mesos':
      return [
        ['Master', <code>{spec.master}</code>],
        ['Attribute filter', spec.attribute ? <code>{spec.attribute}</code> : 'none'],
      ];
  }
}

const MEMBERS_SHOWN = 200;

function Members(props: { members: Member[] }) {
  const [all, setAll] = useState(false);
  const shown = all ? props.members : props.members.slice(0, MEMBERS_SHOWN);
  return (
    <>
      <h2>Members</h2>
      <p class="muted">The hosts the last discovery found; only they may join.</p>
      {props.members.length === 0 ? (
        <p class="muted">No members found yet.</p>
      ) : (
        <>
          <Table label="Members" head={['Name', 'Address', 'Zone', 'Ready']}>
            {shown.map((m) => (
              <tr key={m.name}>
                <td>{m.name}</td>
                <td>{m.address ?? '–'}</td>
                <td>{m.zone ?? '–'}</td>
                <td>{m.ready ? 'yes' : 'no'}</td>
              </tr>
            ))}
          </Table>
          {shown.length < props.members.length && (
            <Button onClick={() => setAll(true)}>Show all {props.members.length} members</Button>
          )}
        </>
      )}
    </>
  );
}
