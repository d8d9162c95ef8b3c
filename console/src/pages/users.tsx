// Users and their role bindings: list, create, disable/enable, reset password, delete; a user's
// page lists their bindings and binds roles on every cluster or on chosen ones. Only what the
// manager would accept is offered: roles whose permissions the signed-in user holds, and
// changes to users who hold no permission beyond theirs (components/permissions.tsx).
import { useState } from 'preact/hooks';
import { can, del, get, patch, post, type Me } from '../api';
import { Confirm } from '../components/confirm';
import { clusterName, tenantName, useClusters, useRoles, useTenants, type ClusterName, type Role, type Tenant } from '../components/lookups';
import { isSuperAdminRole, mayBind, mayBindOn, mayChangeUser, mayOffer } from '../components/permissions';
import { Badge, Button, Dialog, ErrorNote, Facts, Field, FormEnd, Loading, Page, Table } from '../components/ui';
import { ago, time } from '../format';
import { useAction, useLoad, type Loaded } from '../hooks';
import { Link, navigate } from '../router';

interface Binding {
  id: number;
  role_id: number;
  role: string;
  clusters: number[];
}

interface User {
  id: number;
  name: string;
  tenant_id: number;
  disabled: boolean;
  created_at: number;
  bindings: Binding[];
}

const SUPER_ADMIN_ROLE = 'super-admin';

const isSuper = (u: User) => u.bindings.some((b) => b.role === SUPER_ADMIN_ROLE);

/** Why the signed-in user may not change `u` (shown in place of the controls). */
function protectedWhy(u: User): string {
  return isSuper(u)
    ? 'You cannot change this user: only super administrators change super administrators.'
    : 'You cannot change this user: they hold permissions you do not hold, or on clusters where you do not hold them.';
}

function bindingScope(b: Binding, clusters: ClusterName[] | undefined): string {
  if (!b.clusters.length) return 'all clusters';
  return b.clusters.map((id) => clusterName(clusters, id)).join(', ');
}

function UserState(props: { user: User }) {
  return <Badge state={props.user.disabled ? 'disabled' : 'active'} />;
}

export function UsersPage(props: { me: Me; id?: number; url?: URL }) {
  const { me } = props;
  const write = can(me, 'users:write');
  const users = useLoad(() => get<User[]>('/users'), []);
  const tenants = useTenants(me, me.super_admin);
  const clusters = useClusters(me);
  const roles = useRoles(me);
  const [creating, setCreating] = useState(false);
  const [notice, setNotice] = useState<string | undefined>(undefined);

  const head = ['Name', ...(me.super_admin ? ['Tenant'] : []), 'State', 'Roles', 'Created', ...(write ? [''] : [])];
  return (
    <Page
      title="Users"
      actions={
        write && (
          <Button
            kind="primary"
            onClick={() => {
              setNotice(undefined);
              setCreating(true);
            }}
          >
            New user
          </Button>
        )
      }
    >
      {notice && (
        <p class="notice" role="status">
          {notice}
        </p>
      )}
      <ErrorNote error={users.error} />
      <ErrorNote error={tenants.error} />
      <ErrorNote error={clusters.error} />
      <ErrorNote error={roles.error} />
      <Loading loading={users.loading} empty={!users.error && !users.data?.length} what="users" />
      {users.data && users.data.length > 0 && (
        <Table label="Users" head={head}>
          {users.data.map((u) => (
            <tr key={u.id} data-testid={`user-${u.id}`}>
              <td>
                <Link href={`/users/${u.id}`}>{u.name}</Link>
                {u.id === me.id && <span class="muted"> (you)</span>}
              </td>
              {me.super_admin && <td>{tenantName(tenants.data, u.tenant_id)}</td>}
              <td>
                <UserState user={u} />
              </td>
              <td class="wrap wide">
                {u.bindings.length ? (
                  u.bindings.map((b, i) => (
                    <span key={b.id}>
                      {i > 0 && '; '}
                      <strong>{b.role}</strong> <span class="muted">on {bindingScope(b, clusters.data)}</span>
                    </span>
                  ))
                ) : (
                  <span class="muted">no roles</span>
                )}
              </td>
              <td title={time(u.created_at)}>{ago(u.created_at)}</td>
              {write && (
                <td>
                  {roles.loading ? null : mayChangeUser(me, u.bindings, roles.data) ? (
                    <UserActions me={me} user={u} onChanged={users.reload} onDeleted={users.reload} />
                  ) : (
                    <span class="muted" title={protectedWhy(u)} data-testid="user-protected">
                      protected
                    </span>
                  )}
                </td>
              )}
            </tr>
          ))}
        </Table>
      )}
      {write && (
        <Dialog title="Create user" open={creating} onClose={() => setCreating(false)}>
          <CreateUser
            me={me}
            tenants={tenants.data ?? []}
            roles={roles}
            onCancel={() => setCreating(false)}
            onCreated={(u) => {
              setCreating(false);
              setNotice(`User ${u.name} created.`);
              users.reload();
            }}
          />
        </Dialog>
      )}
    </Page>
  );
}

function CreateUser(props: { me: Me; tenants: Tenant[]; roles: Loaded<Role[]>; onCancel: () => void; onCreated: (u: User) => void }) {
  const { me, roles } = props;
  const [name, setName] = useState('');
  const [password, setPassword] = useState('');
  const [tenant, setTenant] = useState(String(me.tenant_id));
  const [role, setRole] = useState('');
  const act = useAction();
  const tenantId = Number(tenant);
  // The role is bound on every cluster here: only roles the user may grant that widely.
  const ofTenant = (roles.data ?? []).filter((r) => (r.tenant_id === null || r.tenant_id === tenantId) && mayOffer(me, r));
  const choosable = ofTenant.filter((r) => mayBind(me, r, []));
  return (
    <form
      aria-label="Create user"
      onSubmit={async (e) => {
        e.preventDefault();
        const u = await act.run(() =>
          post<User>('/users', {
            name,
            password,
            tenant_id: me.super_admin ? tenantId : undefined,
            bindings: role ? [{ role_id: Number(role), clusters: [] }] : [],
          }),
        );
        if (u) props.onCreated(u);
      }}
    >
      <Field label="User name">
        <input name="name" autocomplete="off" required maxLength={100} value={name} onInput={(e) => setName(e.currentTarget.value)} />
      </Field>
      <NewPasswordField label="Password" value={password} onInput={setPassword} />
      {me.super_admin && props.tenants.length > 0 && (
        <Field label="Tenant">
          <select
            name="tenant_id"
            value={tenant}
            onChange={(e) => {
              setTenant(e.currentTarget.value);
              setRole('');
            }}
          >
            {props.tenants.map((t) => (
              <option key={t.id} value={String(t.id)}>
                {t.name}
              </option>
            ))}
          </select>
        </Field>
      )}
      {can(me, 'roles:read') && (
        <Field
          label="Role"
          hint={
            choosable.length < ofTenant.length
              ? "Given on every cluster; roles you hold on some clusters only can be bound on chosen clusters on the user's page."
              : "Given on every cluster; more bindings can be added on the user's page."
          }
        >
          <select name="role" value={role} onChange={(e) => setRole(e.currentTarget.value)}>
            <option value="">No role</option>
            <RoleOptions roles={choosable} />
          </select>
        </Field>
      )}
      <FormEnd error={act.error ?? roles.error} submit="Create user" busy={act.busy} onCancel={props.onCancel} />
    </form>
  );
}

/** Role choices, built-in and custom ones apart. */
function RoleOptions(props: { roles: Role[] }) {
  const groups: [string, Role[]][] = [
    ['Built-in roles', props.roles.filter((r) => r.builtin)],
    ['Custom roles', props.roles.filter((r) => !r.builtin)],
  ];
  return (
    <>
      {groups
        .filter(([, roles]) => roles.length > 0)
        .map(([label, roles]) => (
          <optgroup key={label} label={label}>
            {roles.map((r) => (
              <option key={r.id} value={String(r.id)}>
                {r.name}
              </option>
            ))}
          </optgroup>
        ))}
    </>
  );
}

/**
 * Disable or enable, reset the password, delete (for users:write holders, on users who hold no
 * permission beyond theirs: see `mayChangeUser`).
 */
function UserActions(props: { me: Me; user: User; onChanged: () => void; onDeleted: () => void }) {
  const { me, user } = props;
  const [dialog, setDialog] = useState<'disable' | 'reset' | 'delete' | null>(null);
  const enable = useAction();
  const self = user.id === me.id;
  return (
    <div class="row-actions">
      {!self &&
        (user.disabled ? (
          <Button
            aria-label={`Enable ${user.name}`}
            busy={enable.busy}
            onClick={async () => {
              const ok = await enable.run(() => patch(`/users/${user.id}`, { disabled: false }));
              if (ok) props.onChanged();
            }}
          >
            Enable
          </Button>
        ) : (
          <Button aria-label={`Disable ${user.name}`} onClick={() => setDialog('disable')}>
            Disable
          </Button>
        ))}
      <Button aria-label={`Reset password of ${user.name}`} onClick={() => setDialog('reset')}>
        Reset password
      </Button>
      {!self && (
        <Button kind="danger" aria-label={`Delete ${user.name}`} onClick={() => setDialog('delete')}>
          Delete
        </Button>
      )}
      <ErrorNote error={enable.error} />

      <Confirm
        title="Disable user"
        open={dialog === 'disable'}
        confirm="Disable user"
        onClose={() => setDialog(null)}
        onConfirm={async () => {
          await patch(`/users/${user.id}`, { disabled: true });
          props.onChanged();
        }}
      >
        <p>
          Disable {user.name}? Signing in is refused, and their sessions and access tokens are revoked (enabling them again
          does not bring those back).
        </p>
      </Confirm>
      <Confirm
        title="Delete user"
        open={dialog === 'delete'}
        confirm="Delete user"
        onClose={() => setDialog(null)}
        onConfirm={async () => {
          await del(`/users/${user.id}`);
          props.onDeleted();
        }}
      >
        <p>Delete {user.name}? Their role bindings and access tokens go with them. This cannot be undone.</p>
      </Confirm>
      <Dialog title={`Reset the password of ${user.name}`} open={dialog === 'reset'} onClose={() => setDialog(null)}>
        <ResetPassword
          user={user}
          self={self}
          onDone={() => {
            setDialog(null);
            props.onChanged();
          }}
          onCancel={() => setDialog(null)}
        />
      </Dialog>
    </div>
  );
}

function ResetPassword(props: { user: User; self: boolean; onDone: () => void; onCancel: () => void }) {
  const [password, setPassword] = useState('');
  const act = useAction();
  return (
    <form
      aria-label="Reset password"
      onSubmit={async (e) => {
        e.preventDefault();
        const ok = await act.run(() => patch(`/users/${props.user.id}`, { password }));
        if (ok) props.onDone();
      }}
    >
      <p>
        {props.self
          ? 'This ends all of your sessions and access tokens, this one included: you will sign in again.'
          : `This ends all of ${props.user.name}'s sessions and access tokens.`}
      </p>
      <NewPasswordField label="New password" value={password} onInput={setPassword} />
      <FormEnd error={act.error} submit="Set password" busy={act.busy} onCancel={props.onCancel} />
    </form>
  );
}

export function UserPage(props: { me: Me; id?: number; url?: URL }) {
  const { me } = props;
  const id = props.id ?? 0;
  const write = can(me, 'users:write');
  const user = useLoad(() => get<User>(`/users/${id}`), [id]);
  const u = user.data;
  const tenants = useTenants(me);
  const clusters = useClusters(me);
  const roles = useRoles(me, u?.tenant_id);
  const [removing, setRemoving] = useState<Binding | null>(null);
  // Removing a binding, like any change to the user, needs every permission the user holds.
  const change = write && !!u && !roles.loading && mayChangeUser(me, u.bindings, roles.data);

  return (
    <Page
      title={u ? `User ${u.name}` : 'User'}
      actions={change && <UserActions me={me} user={u} onChanged={user.reload} onDeleted={() => navigate('/users')} />}
    >
      <p>
        <Link href="/users">← All users</Link>
      </p>
      <ErrorNote error={user.error} />
      <ErrorNote error={tenants.error} />
      <ErrorNote error={clusters.error} />
      <ErrorNote error={roles.error} />
      <Loading loading={user.loading && !u} />
      {u && (
        <>
          {write && !roles.loading && !change && (
            <p class="notice" data-testid="user-protected">
              {protectedWhy(u)}
            </p>
          )}
          <Facts
            items={[
              ['Name', u.name],
              ['Tenant', tenantName(tenants.data, u.tenant_id)],
              ['State', <UserState user={u} />],
              ['Super administrator', isSuper(u) ? 'yes' : 'no'],
              ['Created', time(u.created_at)],
            ]}
          />
          <h2>Role bindings</h2>
          {u.bindings.length === 0 ? (
            <p class="muted">No roles: this user may only manage their own access tokens.</p>
          ) : (
            <Table label="Role bindings" head={['Role', 'Clusters', ...(change ? [''] : [])]}>
              {u.bindings.map((b) => (
                <tr key={b.id} data-testid={`binding-${b.id}`}>
                  <td>
                    <strong>{b.role}</strong>
                  </td>
                  <td class="wrap mid">{bindingScope(b, clusters.data)}</td>
                  {change && (
                    <td>
                      <Button kind="danger" aria-label={`Remove binding ${b.role}`} onClick={() => setRemoving(b)}>
                        Remove
                      </Button>
                    </td>
                  )}
                </tr>
              ))}
            </Table>
          )}
          {write && (
            <AddBinding
              me={me}
              user={u}
              roles={roles.data ?? []}
              clusters={(clusters.data ?? []).filter((c) => c.tenant_id === u.tenant_id)}
              onAdded={user.reload}
            />
          )}
          {change && (
            <Confirm
              title="Remove role binding"
              open={removing !== null}
              confirm="Remove binding"
              onClose={() => setRemoving(null)}
              onConfirm={async () => {
                if (!removing) return;
                await del(`/bindings/${removing.id}`);
                user.reload();
              }}
            >
              <p>
                Remove the role {removing?.role} on {removing ? bindingScope(removing, clusters.data) : ''} from {u.name}?
              </p>
            </Confirm>
          )}
        </>
      )}
    </Page>
  );
}

/**
 * Binds a role the signed-in user may grant: on every cluster only when they hold its cluster
 * permissions on every cluster; on chosen clusters (not the super-admin role, which holds
 * everywhere) only where they hold them.
 */
function AddBinding(props: { me: Me; user: User; roles: Role[]; clusters: ClusterName[]; onAdded: () => void }) {
  const { me, user } = props;
  const [roleId, setRoleId] = useState('');
  const [scope, setScope] = useState<'all' | 'chosen'>('all');
  const [chosen, setChosen] = useState<number[]>([]);
  const act = useAction();
  const choosable = props.roles.filter((r) => (r.tenant_id === null || r.tenant_id === user.tenant_id) && mayOffer(me, r));
  const role = choosable.find((r) => String(r.id) === roleId);
  const everywhere = !role || mayBind(me, role, []);
  const onChosen = !role || !isSuperAdminRole(role);
  const where = role && !everywhere ? 'chosen' : scope;
  const clusters = where === 'chosen' ? chosen.filter((c) => !role || mayBindOn(me, role, c)) : [];
  return (
    <form
      class="card stack"
      aria-label="Add role binding"
      onSubmit={async (e) => {
        e.preventDefault();
        const ok = await act.run(() => post(`/users/${user.id}/bindings`, { role_id: Number(roleId), clusters }));
        if (ok) {
          setRoleId('');
          setScope('all');
          setChosen([]);
          props.onAdded();
        }
      }}
    >
      <h2 class="card-title">Add a role binding</h2>
      {!can(me, 'roles:read') && <p class="muted">Choosing a role needs the permission roles:read.</p>}
      <Field label="Role">
        <select
          name="role"
          required
          value={roleId}
          onChange={(e) => {
            const r = choosable.find((x) => String(x.id) === e.currentTarget.value);
            setRoleId(e.currentTarget.value);
            if (r && isSuperAdminRole(r)) setScope('all');
          }}
        >
          <option value="">Choose a role…</option>
          <RoleOptions roles={choosable} />
        </select>
      </Field>
      <fieldset>
        <legend>Clusters</legend>
        <div class="checks">
          <label title={everywhere ? undefined : 'You do not hold the role’s cluster permissions on every cluster'}>
            <input
              type="radio"
              name="scope"
              value="all"
              checked={where === 'all'}
              disabled={!everywhere}
              onChange={() => setScope('all')}
            />
            All clusters
          </label>
          {onChosen && (
            <label>
              <input type="radio" name="scope" value="chosen" checked={where === 'chosen'} onChange={() => setScope('chosen')} />
              Chosen clusters
            </label>
          )}
        </div>
        {where === 'chosen' &&
          (props.clusters.length ? (
            <div class="checks chosen-clusters" role="group" aria-label="Clusters to bind">
              {props.clusters.map((c) => {
                const allowed = !role || mayBindOn(me, role, c.id);
                return (
                  <label key={c.id} title={allowed ? undefined : 'You do not hold the role’s cluster permissions on this cluster'}>
                    <input
                      type="checkbox"
                      name="clusters"
                      value={String(c.id)}
                      disabled={!allowed}
                      checked={allowed && chosen.includes(c.id)}
                      onChange={(e) =>
                        setChosen(e.currentTarget.checked ? [...chosen, c.id] : chosen.filter((x) => x !== c.id))
                      }
                    />
                    {c.name}
                  </label>
                );
              })}
            </div>
          ) : (
            <p class="muted">
              {can(me, 'clusters:read') ? 'The tenant has no clusters yet.' : 'Listing clusters needs clusters:read.'}
            </p>
          ))}
        <p class="hint muted">
          {role && !onChosen
            ? 'The super-admin role holds on every cluster of every tenant.'
            : 'Cluster permissions (clusters, nodes, tasks) hold only on the chosen clusters; the role’s other permissions hold tenant-wide.'}
          {role && !everywhere && ' You hold some of this role’s cluster permissions on some clusters only: bind it on those.'}
        </p>
      </fieldset>
      <ErrorNote error={act.error} />
      <Button type="submit" kind="primary" busy={act.busy} disabled={!role || (where === 'chosen' && clusters.length === 0)}>
        Add binding
      </Button>
    </form>
  );
}

/** A password being set: at least 8 characters, never filled in by the browser's saved one. */
function NewPasswordField(props: { label: string; value: string; onInput: (v: string) => void }) {
  return (
    <Field label={props.label} hint="At least 8 characters.">
      <input
        name="password"
        type="password"
        autocomplete="new-password"
        required
        minLength={8}
        value={props.value}
        onInput={(e) => props.onInput(e.currentTarget.value)}
      />
    </Field>
  );
}
