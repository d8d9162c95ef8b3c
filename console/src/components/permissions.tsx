// Permissions: what each allows, a checklist of them, and the rules the manager applies when
// one user hands permissions to another (src/manager/users.rs), so that the console offers
// only what the API accepts. Nobody hands out more than they hold: binding a role needs its
// permissions on the clusters the binding names; changing a user (disable, enable, password,
// delete, unbind) needs every permission the user holds, wherever they hold it.
import type { ComponentChildren } from 'preact';
import { can, canEverywhere, canOn, type Me, type Permission } from '../api';
import type { Role } from './lookups';

/** What each permission allows (as the manager documents it). */
export const PERMISSION_TEXT: Record<Permission, string> = {
  system: 'Everything, in every tenant (super administrators)',
  'users:read': 'List and read users',
  'users:write': 'Create, disable, delete users, reset passwords, bind roles',
  'roles:read': 'List and read roles',
  'roles:write': 'Create, change, delete custom roles',
  'clusters:read': 'List and read clusters',
  'clusters:write': 'Create, change, delete clusters, rotate join tokens',
  'nodes:read': 'List and read nodes',
  'nodes:write': 'Remove nodes',
  'tasks:read': 'List and read tasks, their nodes and logs',
  'tasks:write': 'Create, stop, delete, copy tasks',
  'files:read': 'List and read file versions',
  'files:write': 'Publish and delete file versions',
  'stats:read': 'Read statistics',
  'audit:read': 'Read the audit log',
  'tenants:read': 'Read the tenant (and its bandwidth budget)',
};

/** Permissions a binding may limit to chosen clusters (the others hold tenant-wide). */
export const CLUSTER_SCOPED: ReadonlySet<Permission> = new Set<Permission>([
  'clusters:read',
  'clusters:write',
  'nodes:read',
  'nodes:write',
  'tasks:read',
  'tasks:write',
]);

/** Whether the user holds `p` as widely as a binding on `clusters` (empty: every cluster) reaches. */
export function holdsAsWidely(me: Me, p: Permission, clusters: number[]): boolean {
  if (!CLUSTER_SCOPED.has(p)) return can(me, p);
  return clusters.length ? clusters.every((c) => canOn(me, p, c)) : canEverywhere(me, p);
}

/** Whether the user may bind `role` somewhere (they hold each of its permissions somewhere). */
export function mayOffer(me: Me, role: Role): boolean {
  return role.permissions.every((p) => can(me, p));
}

/** Whether the user may bind `role` on `clusters` (empty: every cluster). */
export function mayBind(me: Me, role: Role, clusters: number[]): boolean {
  if (isSuperAdminRole(role) && clusters.length) return false;
  return role.permissions.every((p) => holdsAsWidely(me, p, clusters));
}

/** Whether the user may bind `role` on the cluster `cluster` (its cluster permissions hold there). */
export function mayBindOn(me: Me, role: Role, cluster: number): boolean {
  return role.permissions.every((p) => !CLUSTER_SCOPED.has(p) || canOn(me, p, cluster));
}

export function isSuperAdminRole(role: Role): boolean {
  return role.permissions.includes('system');
}

/**
 * Whether the user may change (disable, enable, reset the password of, delete, unbind) a user
 * with these bindings. A binding whose role is unknown here (no roles:read) is left to the
 * API, except the super-admin role, known by name.
 */
export function mayChangeUser(
  me: Me,
  bindings: { role_id: number; role: string; clusters: number[] }[],
  roles: Role[] | undefined,
): boolean {
  if (can(me, 'system')) return true;
  return bindings.every((b) => {
    const role = roles?.find((r) => r.id === b.role_id);
    if (!role) return b.role !== 'super-admin';
    return role.permissions.every((p) => holdsAsWidely(me, p, b.clusters));
  });
}

/**
 * Whether a custom role may carry `p`: creating one needs `p` somewhere; changing one (it may
 * already be bound on every cluster) needs cluster permissions on every cluster. `system`
 * belongs to the built-in super-admin role only.
 */
export function mayPutInRole(me: Me, p: Permission, editing: boolean): boolean {
  if (p === 'system') return false;
  return editing && CLUSTER_SCOPED.has(p) ? canEverywhere(me, p) : can(me, p);
}

/** A checklist of permissions; `allowed` says which may be ticked. */
export function PermissionChecks(props: {
  legend: string;
  all: Permission[];
  value: Permission[];
  onChange?: (v: Permission[]) => void;
  allowed?: (p: Permission) => boolean;
  /** Why a permission may not be ticked (default: the user does not hold it). */
  refused?: string;
  readOnly?: boolean;
  hint?: ComponentChildren;
}) {
  return (
    <fieldset>
      <legend>{props.legend}</legend>
      <div class="checks perm-checks">
        {props.all.map((p) => {
          const allowed = !props.allowed || props.allowed(p);
          return (
            <label key={p} title={allowed ? PERMISSION_TEXT[p] : `${PERMISSION_TEXT[p]} (${props.refused ?? 'you do not hold it'})`}>
              <input
                type="checkbox"
                name="permissions"
                value={p}
                checked={props.value.includes(p)}
                disabled={props.readOnly || !allowed}
                onChange={(e) => {
                  const on = e.currentTarget.checked;
                  props.onChange?.(on ? [...props.value.filter((x) => x !== p), p] : props.value.filter((x) => x !== p));
                }}
              />
              <span>
                <code>{p}</code>
                <span class="perm-text">{PERMISSION_TEXT[p] ?? ''}</span>
              </span>
            </label>
          );
        })}
      </div>
      {props.hint && <p class="hint muted">{props.hint}</p>}
    </fieldset>
  );
}
