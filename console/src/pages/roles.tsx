// Roles: the built-in roles (read-only) and the tenant's custom roles, each a set of permissions.
import { useState } from 'preact/hooks';
import { can, del, get, post, put, type Me, type Permission } from '../api';
import { Confirm } from '../components/confirm';
import { tenantName, useTenants, type Role } from '../components/lookups';
import { mayPutInRole, PermissionChecks } from '../components/permissions';
import { Button, Dialog, ErrorNote, Field, FormEnd, Loading, Page, Table } from '../components/ui';
import { useAction, useLoad } from '../hooks';

/** The role dialog: view (built-in, or without roles:write), create or edit. */
type Editing = { mode: 'view' | 'edit'; role: Role } | { mode: 'create' };

export function RolesPage(props: { me: Me; id?: number; url?: URL }) {
  const { me } = props;
  const write = can(me, 'roles:write');
  const roles = useLoad(() => get<Role[]>('/roles'), []);
  const perms = useLoad(() => get<Permission[]>('/permissions'), []);
  const tenants = useTenants(me, me.super_admin);
  const [editing, setEditing] = useState<Editing | null>(null);
  const [deleting, setDeleting] = useState<Role | null>(null);
  // Changing a role needs each of its permissions as widely as its bindings may reach.
  const editable = (r: Role) => write && !r.builtin && r.permissions.every((p) => mayPutInRole(me, p, true));

  const head = ['Name', 'Kind', ...(me.super_admin ? ['Tenant'] : []), 'Description', 'Permissions', ''];
  return (
    <Page
      title="Roles"
      actions={
        write && (
          <Button kind="primary" onClick={() => setEditing({ mode: 'create' })}>
            New role
          </Button>
        )
      }
    >
      <p class="muted">
        A role is a set of permissions; a role binding gives it to a user on every cluster of their tenant or on chosen
        clusters. Built-in roles cannot be changed.
      </p>
      <ErrorNote error={roles.error} />
      <ErrorNote error={tenants.error} />
      <ErrorNote error={perms.error} />
      <Loading loading={roles.loading} empty={!roles.error && !roles.data?.length} what="roles" />
      {roles.data && roles.data.length > 0 && (
        <Table label="Roles" head={head}>
          {roles.data.map((r) => (
            <tr key={r.id} data-testid={`role-${r.id}`}>
              <td>
                <strong>{r.name}</strong>
              </td>
              <td>{r.builtin ? 'built-in' : 'custom'}</td>
              {me.super_admin && <td>{r.tenant_id === null ? 'all' : tenantName(tenants.data, r.tenant_id)}</td>}
              <td class="wrap wide">{r.description}</td>
              <td class="wrap wide">
                <code>{r.permissions.join(', ')}</code>
              </td>
              <td>
                <div class="row-actions">
                  {editable(r) ? (
                    <Button aria-label={`Edit ${r.name}`} onClick={() => setEditing({ mode: 'edit', role: r })}>
                      Edit
                    </Button>
                  ) : (
                    <Button aria-label={`View ${r.name}`} onClick={() => setEditing({ mode: 'view', role: r })}>
                      View
                    </Button>
                  )}
                  {write && !r.builtin && (
                    <Button kind="danger" aria-label={`Delete ${r.name}`} onClick={() => setDeleting(r)}>
                      Delete
                    </Button>
                  )}
                </div>
              </td>
            </tr>
          ))}
        </Table>
      )}

      <Dialog
        title={
          editing?.mode === 'create'
            ? 'Create role'
            : editing?.mode === 'edit'
              ? `Edit role ${editing.role.name}`
              : `Role ${editing?.role.name ?? ''}`
        }
        open={editing !== null}
        onClose={() => setEditing(null)}
      >
        {editing && (
          <RoleForm
            me={me}
            editing={editing}
            all={(perms.data ?? []).filter((p) => p !== 'system' || editing.mode === 'view')}
            onDone={() => {
              setEditing(null);
              roles.reload();
            }}
            onCancel={() => setEditing(null)}
          />
        )}
      </Dialog>

      {write && (
        <Confirm
          title="Delete role"
          open={deleting !== null}
          confirm="Delete role"
          onClose={() => setDeleting(null)}
          onConfirm={async () => {
            if (!deleting) return;
            await del(`/roles/${deleting.id}`);
            roles.reload();
          }}
        >
          <p>Delete the role “{deleting?.name}”? Its bindings go with it: users who hold it through them lose its permissions.</p>
        </Confirm>
      )}
    </Page>
  );
}

function RoleForm(props: { me: Me; editing: Editing; all: Permission[]; onDone: () => void; onCancel: () => void }) {
  const { me, editing } = props;
  const role = editing.mode === 'create' ? undefined : editing.role;
  const readOnly = editing.mode === 'view';
  const [name, setName] = useState(role?.name ?? '');
  const [description, setDescription] = useState(role?.description ?? '');
  const [perms, setPerms] = useState<Permission[]>(role?.permissions ?? []);
  const act = useAction();
  // A role holds only permissions in `all`; a built-in one shown read-only lists its own too.
  const all = readOnly ? [...props.all, ...(role?.permissions ?? []).filter((p) => !props.all.includes(p))] : props.all;

  if (readOnly && role) {
    return (
      <div>
        <p>{role.description}</p>
        {!role.builtin && can(me, 'roles:write') && (
          <p class="muted" data-testid="role-not-editable">
            You cannot change this role: it carries permissions you do not hold (cluster permissions: on every cluster).
          </p>
        )}
        <PermissionChecks legend="Permissions" all={all} value={role.permissions} readOnly />
        <div class="actions dialog-actions">
          <Button onClick={props.onCancel}>Close</Button>
        </div>
      </div>
    );
  }
  return (
    <form
      aria-label={role ? 'Edit role' : 'Create role'}
      onSubmit={async (e) => {
        e.preventDefault();
        const body = { name, description, permissions: perms };
        const ok = await act.run(() => (role ? put(`/roles/${role.id}`, body) : post('/roles', body)));
        if (ok) props.onDone();
      }}
    >
      <Field label="Role name">
        <input name="name" required maxLength={100} value={name} onInput={(e) => setName(e.currentTarget.value)} />
      </Field>
      <Field label="Description">
        <textarea name="description" rows={2} maxLength={1000} value={description} onInput={(e) => setDescription(e.currentTarget.value)} />
      </Field>
      <PermissionChecks
        legend="Permissions"
        all={all}
        value={perms}
        onChange={setPerms}
        allowed={(p) => mayPutInRole(me, p, !!role)}
        refused={role ? 'changing a role needs it on every cluster, where you do not hold it' : undefined}
        hint={
          role
            ? 'A role can carry only permissions you hold yourself; cluster permissions (clusters, nodes, tasks) on every cluster, as the role may be bound there.'
            : 'A role can carry only permissions you hold yourself.'
        }
      />
      <FormEnd
        error={act.error}
        submit={role ? 'Save role' : 'Create role'}
        busy={act.busy}
        disabled={perms.length === 0}
        onCancel={props.onCancel}
      />
    </form>
  );
}
