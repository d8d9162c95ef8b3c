// Lookups several pages share: tenant names, cluster names and roles, each loaded once per page
// and only with the permission that reads it (else an empty list). Pages show their `error`.
import { can, get, query, type Me, type Permission } from '../api';
import { useLoad } from '../hooks';
import type { ClusterRef } from '../tasks_api';

export interface Tenant {
  id: number;
  name: string;
}

export interface ClusterName extends ClusterRef {
  tenant_id: number;
}

export interface Role {
  id: number;
  name: string;
  description: string;
  permissions: Permission[];
  builtin: boolean;
  tenant_id: number | null;
}

/**
 * The tenants the user sees (super administrators: all; others: their own), with tenants:read
 * and when `needed` (pages that name tenants only for super administrators say so).
 */
export function useTenants(me: Me, needed = true) {
  return useLoad(
    () => (needed && can(me, 'tenants:read') ? get<Tenant[]>('/tenants') : Promise.resolve([] as Tenant[])),
    [me.id, needed],
  );
}

/** The clusters the user may read (empty without clusters:read). */
export function useClusters(me: Me) {
  return useLoad(
    () => (can(me, 'clusters:read') ? get<ClusterName[]>('/clusters') : Promise.resolve([] as ClusterName[])),
    [me.id],
  );
}

/** The built-in roles and the custom roles of `tenant` (super administrators: of every tenant
 * unless `tenant` is given), with roles:read. */
export function useRoles(me: Me, tenant?: number) {
  return useLoad(
    () =>
      can(me, 'roles:read')
        ? get<Role[]>(`/roles${query({ tenant_id: me.super_admin ? tenant : undefined })}`)
        : Promise.resolve([] as Role[]),
    [me.id, tenant],
  );
}

export function tenantName(tenants: Tenant[] | undefined, id: number): string {
  return tenants?.find((t) => t.id === id)?.name ?? `tenant ${id}`;
}

export function clusterName(clusters: ClusterName[] | undefined, id: number): string {
  return clusters?.find((c) => c.id === id)?.name ?? `cluster ${id}`;
}
