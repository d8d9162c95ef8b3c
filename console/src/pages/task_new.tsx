// One form for an image or file distribution task: what, to which clusters and nodes, when,
// and at what bandwidth.
import { useState } from 'preact/hooks';
import { can, canOn, get, post, type Me } from '../api';
import { Button, ErrorNote, Field, Loading, Page } from '../components/ui';
import { useAction, useLoad } from '../hooks';
import { navigate } from '../router';
import { useClusters, useTenants } from '../components/lookups';
import { listNodes, type FileVersionRef, type Schedule, type Task, type TaskSource } from '../tasks_api';

type When = 'now' | 'at' | 'cron';

export function NewTaskPage(props: { me: Me; url?: URL }) {
  const [kind, setKind] = useState<'image' | 'file'>('image');
  const [name, setName] = useState('');
  const [image, setImage] = useState('');
  const [platforms, setPlatforms] = useState('');
  const [url, setUrl] = useState('');
  const [digest, setDigest] = useState('');
  const [version, setVersion] = useState('');
  const [clusters, setClusters] = useState<number[]>([]);
  const [nodes, setNodes] = useState<number[]>([]);
  const [nodeFilter, setNodeFilter] = useState('');
  const [when, setWhen] = useState<When>('now');
  const [at, setAt] = useState('');
  const [cron, setCron] = useState('');
  const [limit, setLimit] = useState('');
  const act = useAction();

  const [tenant, setTenant] = useState('');
  const tenants = useTenants(props.me, props.me.super_admin);
  const clusterList = useClusters(props.me);
  const nodeList = useLoad(() => (can(props.me, 'nodes:read') ? listNodes() : Promise.resolve([])), []);
  const versions = useLoad(
    () => (can(props.me, 'files:read') ? get<FileVersionRef[]>('/files') : Promise.resolve([])),
    [],
  );

  if (!can(props.me, 'tasks:write')) {
    return (
      <Page title="New task">
        <p class="error">You may not create tasks.</p>
      </Page>
    );
  }

  const toggle = (list: number[], set: (v: number[]) => void, id: number) =>
    set(list.includes(id) ? list.filter((x) => x !== id) : [...list, id]);

  const submit = async (e: Event) => {
    e.preventDefault();
    const source: TaskSource =
      kind === 'image'
        ? {
            kind: 'image',
            image: image.trim(),
            platforms: platforms
              .split(/[,\s]+/)
              .map((p) => p.trim())
              .filter(Boolean),
          }
        : version
          ? { kind: 'file', version_id: Number(version) }
          : { kind: 'file', url: url.trim(), digest: digest.trim() || null };
    let schedule: Schedule = { kind: 'now' };
    if (when === 'at') schedule = { kind: 'at', at: new Date(at).getTime() };
    if (when === 'cron') schedule = { kind: 'cron', cron: cron.trim() };
    const mbit = Number(limit);
    const body = {
      name: name.trim() || undefined,
      source,
      clusters,
      nodes,
      schedule,
      bandwidth: limit && mbit > 0 ? Math.round((mbit * 1e6) / 8) : undefined,
      tenant_id: tenant ? Number(tenant) : undefined,
    };
    const t = await act.run(() => post<Task>('/tasks', body));
    if (t) navigate(`/tasks/${t.id}`);
  };

  // Targets the user may send tasks to, in the task's tenant (super administrators choose it).
  const tenantId = tenant ? Number(tenant) : props.me.tenant_id;
  const targetClusters = (clusterList.data ?? []).filter(
    (c) => c.tenant_id === tenantId && canOn(props.me, 'tasks:write', c.id),
  );
  const allowed = new Set(targetClusters.map((c) => c.id));
  const shownNodes = (nodeList.data ?? []).filter(
    (n) => allowed.has(n.cluster_id) && n.name.toLowerCase().includes(nodeFilter.toLowerCase()),
  );

  return (
    <Page title="New task">
      <form class="card" aria-label="New task" onSubmit={submit}>
        <fieldset>
          <legend>What</legend>
          <div class="row" role="radiogroup" aria-label="Kind">
            <label>
              <input type="radio" name="kind" checked={kind === 'image'} onChange={() => setKind('image')} /> Image
            </label>
            <label>
              <input type="radio" name="kind" checked={kind === 'file'} onChange={() => setKind('file')} /> File
            </label>
          </div>
          {kind === 'image' ? (
            <div class="row">
              <Field label="Image" hint="A reference, e.g. registry.example.com/team/app:1.2 or nginx:1.27">
                <input name="image" required value={image} onInput={(e) => setImage(e.currentTarget.value)} />
              </Field>
              <Field label="Platforms" hint="os/arch[/variant], separated by commas; empty: all">
                <input name="platforms" value={platforms} placeholder="linux/amd64" onInput={(e) => setPlatforms(e.currentTarget.value)} />
              </Field>
            </div>
          ) : (
            <div class="row">
              <ErrorNote error={versions.error} />
              {versions.data && versions.data.length > 0 && (
                <Field label="File version" hint="A published file version, or a URL below">
                  <select value={version} onChange={(e) => setVersion(e.currentTarget.value)}>
                    <option value="">(a URL)</option>
                    {versions.data.map((v) => (
                      <option key={v.id} value={String(v.id)}>
                        {v.name} {v.version}
                      </option>
                    ))}
                  </select>
                </Field>
              )}
              {!version && (
                <>
                  <Field label="URL">
                    <input name="url" type="url" required value={url} onInput={(e) => setUrl(e.currentTarget.value)} />
                  </Field>
                  <Field label="Digest" hint="sha256:…; nodes verify every byte against it">
                    <input name="digest" value={digest} pattern="sha256:[0-9a-f]{64}" onInput={(e) => setDigest(e.currentTarget.value)} />
                  </Field>
                </>
              )}
            </div>
          )}
          <Field label="Name" hint="Optional; taken from the source when empty">
            <input name="name" value={name} onInput={(e) => setName(e.currentTarget.value)} />
          </Field>
        </fieldset>

        <fieldset>
          <legend>Targets</legend>
          {tenants.data && tenants.data.length > 1 && (
            <Field label="Tenant">
              <select
                value={tenant || String(props.me.tenant_id)}
                onChange={(e) => {
                  setTenant(e.currentTarget.value);
                  setClusters([]);
                  setNodes([]);
                }}
              >
                {tenants.data.map((t) => (
                  <option key={t.id} value={String(t.id)}>
                    {t.name}
                  </option>
                ))}
              </select>
            </Field>
          )}
          <ErrorNote error={tenants.error ?? clusterList.error ?? nodeList.error} />
          {clusterList.loading ? (
            <Loading loading />
          ) : targetClusters.length > 0 ? (
            <div class="checks" role="group" aria-label="Clusters">
              {targetClusters.map((c) => (
                <label key={c.id}>
                  <input type="checkbox" checked={clusters.includes(c.id)} onChange={() => toggle(clusters, setClusters, c.id)} />
                  cluster {c.name}
                </label>
              ))}
            </div>
          ) : (
            <p class="muted">No clusters you may send tasks to.</p>
          )}
          {shownNodes.length + nodes.length > 0 && (
            <details>
              <summary>Single nodes ({nodes.length} chosen)</summary>
              <Field label="Find nodes">
                <input type="search" value={nodeFilter} onInput={(e) => setNodeFilter(e.currentTarget.value)} />
              </Field>
              <div class="checks" role="group" aria-label="Nodes">
                {shownNodes.slice(0, 300).map((n) => (
                  <label key={n.id}>
                    <input type="checkbox" checked={nodes.includes(n.id)} onChange={() => toggle(nodes, setNodes, n.id)} />
                    {n.name}
                  </label>
                ))}
              </div>
            </details>
          )}
        </fieldset>

        <fieldset>
          <legend>When</legend>
          <div class="row" role="radiogroup" aria-label="When">
            <label>
              <input type="radio" name="when" checked={when === 'now'} onChange={() => setWhen('now')} /> Now
            </label>
            <label>
              <input type="radio" name="when" checked={when === 'at'} onChange={() => setWhen('at')} /> At a time
            </label>
            <label>
              <input type="radio" name="when" checked={when === 'cron'} onChange={() => setWhen('cron')} /> Repeatedly (cron)
            </label>
          </div>
          {when === 'at' && (
            <Field label="Start at" hint="Your local time">
              <input type="datetime-local" required value={at} onInput={(e) => setAt(e.currentTarget.value)} />
            </Field>
          )}
          {when === 'cron' && (
            <Field label="Cron expression" hint="min hour day month weekday, in UTC; e.g. 0 3 * * * (warm-up at 03:00)">
              <input required value={cron} onInput={(e) => setCron(e.currentTarget.value)} />
            </Field>
          )}
        </fieldset>

        <fieldset>
          <legend>Bandwidth</legend>
          <Field label="Limit per node (Mbit/s)" hint="Empty: no limit besides the tenant's budget">
            <input type="number" min="0.1" step="any" value={limit} onInput={(e) => setLimit(e.currentTarget.value)} />
          </Field>
        </fieldset>

        <ErrorNote error={act.error} />
        <div class="actions">
          <Button type="submit" kind="primary" busy={act.busy} disabled={clusters.length + nodes.length === 0}>
            Create task
          </Button>
          <Button onClick={() => history.back()}>Cancel</Button>
        </div>
      </form>
    </Page>
  );
}
