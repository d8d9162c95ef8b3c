//! Permissions, the built-in roles, and the caller's effective rights.
//!
//! A role is a set of [`Permission`]s; a role binding gives a user a role for every cluster of
//! their tenant or for named clusters. Cluster-scoped permissions (clusters, nodes, tasks) hold
//! only on the bound clusters; the others hold tenant-wide whatever the binding's scope. The
//! super administrator's role carries [`Permission::System`]: every permission in every tenant.
//! A personal access token may narrow its user's permissions further (its scopes).

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::error::ApiError;

/// One permission.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(try_from = "String", into = "String")]
pub enum Permission {
    /// Everything, in every tenant (super administrators).
    System,
    /// List and read users.
    UsersRead,
    /// Create, disable, delete users, reset passwords, bind roles.
    UsersWrite,
    /// List and read roles.
    RolesRead,
    /// Create, change, delete custom roles.
    RolesWrite,
    /// List and read clusters.
    ClustersRead,
    /// Create, change, delete clusters, rotate join tokens.
    ClustersWrite,
    /// List and read nodes.
    NodesRead,
    /// Remove nodes.
    NodesWrite,
    /// List and read tasks, their nodes and logs.
    TasksRead,
    /// Create, stop, delete, copy tasks.
    TasksWrite,
    /// List and read file versions.
    FilesRead,
    /// Publish and delete file versions.
    FilesWrite,
    /// Read statistics.
    StatsRead,
    /// Read the audit log.
    AuditRead,
    /// Read the tenant (and its bandwidth budget).
    TenantsRead,
}

impl Permission {
    /// Every permission, in display order.
    pub const ALL: [Permission; 16] = [
        Permission::System,
        Permission::UsersRead,
        Permission::UsersWrite,
        Permission::RolesRead,
        Permission::RolesWrite,
        Permission::ClustersRead,
        Permission::ClustersWrite,
        Permission::NodesRead,
        Permission::NodesWrite,
        Permission::TasksRead,
        Permission::TasksWrite,
        Permission::FilesRead,
        Permission::FilesWrite,
        Permission::StatsRead,
        Permission::AuditRead,
        Permission::TenantsRead,
    ];

    /// The permission's name, e.g. `tasks:write`.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::System => "system",
            Permission::UsersRead => "users:read",
            Permission::UsersWrite => "users:write",
            Permission::RolesRead => "roles:read",
            Permission::RolesWrite => "roles:write",
            Permission::ClustersRead => "clusters:read",
            Permission::ClustersWrite => "clusters:write",
            Permission::NodesRead => "nodes:read",
            Permission::NodesWrite => "nodes:write",
            Permission::TasksRead => "tasks:read",
            Permission::TasksWrite => "tasks:write",
            Permission::FilesRead => "files:read",
            Permission::FilesWrite => "files:write",
            Permission::StatsRead => "stats:read",
            Permission::AuditRead => "audit:read",
            Permission::TenantsRead => "tenants:read",
        }
    }

    /// Whether a binding's cluster scope limits this permission.
    pub fn cluster_scoped(self) -> bool {
        matches!(
            self,
            Permission::ClustersRead
                | Permission::ClustersWrite
                | Permission::NodesRead
                | Permission::NodesWrite
                | Permission::TasksRead
                | Permission::TasksWrite
        )
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Permission {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Permission::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown permission {:?} (known: {})",
                    s.chars().take(40).collect::<String>(),
                    Permission::ALL.map(|p| p.as_str()).join(", ")
                )
            })
    }
}

impl TryFrom<String> for Permission {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Permission> for String {
    fn from(p: Permission) -> String {
        p.as_str().to_string()
    }
}

/// A built-in role: its name, description and permissions.
pub struct BuiltinRole {
    /// The role's name.
    pub name: &'static str,
    /// What it is for.
    pub description: &'static str,
    /// Its permissions.
    pub permissions: &'static [Permission],
}

/// The name of the super administrator's role.
pub const SUPER_ADMIN: &str = "super-admin";

/// The built-in roles, created at the first start.
pub const BUILTIN_ROLES: [BuiltinRole; 3] = [
    BuiltinRole {
        name: SUPER_ADMIN,
        description: "Super administrator: every permission in every tenant",
        permissions: &[Permission::System],
    },
    BuiltinRole {
        name: "cluster-admin",
        description: "Cluster administrator: clusters, their nodes and join tokens; reads tasks",
        permissions: &[
            Permission::ClustersRead,
            Permission::ClustersWrite,
            Permission::NodesRead,
            Permission::NodesWrite,
            Permission::TasksRead,
            Permission::FilesRead,
            Permission::StatsRead,
            Permission::AuditRead,
            Permission::TenantsRead,
        ],
    },
    BuiltinRole {
        name: "task-admin",
        description: "Task administrator: distribution tasks and file versions on the clusters it is bound to",
        permissions: &[
            Permission::TasksRead,
            Permission::TasksWrite,
            Permission::FilesRead,
            Permission::FilesWrite,
            Permission::ClustersRead,
            Permission::NodesRead,
            Permission::StatsRead,
            Permission::TenantsRead,
        ],
    },
];

/// One role binding as it applies to a caller.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The role's permissions.
    pub permissions: BTreeSet<Permission>,
    /// The clusters it covers; `None` = every cluster of the tenant.
    pub clusters: Option<BTreeSet<i64>>,
}

/// Which clusters a permission covers for a caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterScope {
    /// Every cluster (of the tenant, or of every tenant for super administrators).
    All,
    /// These clusters.
    Only(BTreeSet<i64>),
}

impl ClusterScope {
    /// Whether the scope holds `cluster`.
    pub fn covers(&self, cluster: i64) -> bool {
        match self {
            ClusterScope::All => true,
            ClusterScope::Only(set) => set.contains(&cluster),
        }
    }
}

/// Who is calling and what they may do: built from their token, user and role bindings.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The user's id.
    pub user_id: i64,
    /// The user's name (for the audit log).
    pub name: String,
    /// The user's tenant.
    pub tenant_id: i64,
    /// The token used for this call.
    pub token_id: i64,
    /// The user's bindings.
    pub grants: Vec<Grant>,
    /// A personal access token's scopes; `None` = the user's permissions unnarrowed.
    pub token_scopes: Option<BTreeSet<Permission>>,
    /// Whether the call came with a personal access token (not a sign-in session).
    pub personal: bool,
}

impl Caller {
    /// Whether the caller is a super administrator (and the token does not narrow that).
    pub fn is_super(&self) -> bool {
        self.grants
            .iter()
            .any(|g| g.permissions.contains(&Permission::System))
            && self.token_allows(Permission::System)
    }

    fn token_allows(&self, p: Permission) -> bool {
        match &self.token_scopes {
            None => true,
            Some(scopes) => scopes.contains(&p) || scopes.contains(&Permission::System),
        }
    }

    /// Which clusters `p` covers; `None` when the caller lacks it altogether.
    pub fn scope(&self, p: Permission) -> Option<ClusterScope> {
        if !self.token_allows(p) {
            return None;
        }
        let mut only = BTreeSet::new();
        let mut any = false;
        for g in &self.grants {
            if g.permissions.contains(&Permission::System) {
                return Some(ClusterScope::All);
            }
            if !g.permissions.contains(&p) {
                continue;
            }
            any = true;
            match &g.clusters {
                None => return Some(ClusterScope::All),
                Some(set) if !p.cluster_scoped() => {
                    let _ = set;
                    return Some(ClusterScope::All);
                }
                Some(set) => only.extend(set.iter().copied()),
            }
        }
        any.then_some(ClusterScope::Only(only))
    }

    /// Whether the caller holds `p` on at least one cluster (or tenant-wide).
    pub fn has(&self, p: Permission) -> bool {
        self.scope(p).is_some()
    }

    /// Requires `p`.
    ///
    /// # Errors
    /// 403 `DENIED` naming the permission.
    pub fn require(&self, p: Permission) -> Result<ClusterScope, ApiError> {
        self.scope(p)
            .ok_or_else(|| ApiError::denied(format!("this needs the permission {p}")))
    }

    /// Requires `p` on every cluster in `clusters`.
    ///
    /// # Errors
    /// 403 `DENIED` naming the permission.
    pub fn require_on(&self, p: Permission, clusters: &[i64]) -> Result<(), ApiError> {
        let scope = self.require(p)?;
        match clusters.iter().find(|c| !scope.covers(**c)) {
            None => Ok(()),
            Some(c) => Err(ApiError::denied(format!(
                "this needs the permission {p} on cluster {c}"
            ))),
        }
    }

    /// The tenant the caller's lists are limited to; `None` for super administrators.
    pub fn tenant_filter(&self) -> Option<i64> {
        (!self.is_super()).then_some(self.tenant_id)
    }

    /// The tenant a new object goes into: `requested` if given (only super administrators may
    /// name another tenant than their own), else the caller's.
    ///
    /// # Errors
    /// 403 `DENIED` when someone else names another tenant; `what` says what was created.
    pub fn target_tenant(&self, requested: Option<i64>, what: &str) -> Result<i64, ApiError> {
        match requested {
            Some(t) if t != self.tenant_id && !self.is_super() => Err(ApiError::denied(format!(
                "only super administrators create {what} in other tenants"
            ))),
            Some(t) => Ok(t),
            None => Ok(self.tenant_id),
        }
    }

    /// Whether the caller may see objects of `tenant`.
    pub fn sees_tenant(&self, tenant: i64) -> bool {
        self.is_super() || tenant == self.tenant_id
    }

    /// Every permission the caller holds somewhere (for the console).
    pub fn permissions(&self) -> BTreeSet<Permission> {
        if self.is_super() {
            return Permission::ALL.into_iter().collect();
        }
        Permission::ALL
            .into_iter()
            .filter(|p| self.has(*p))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(grants: Vec<Grant>, scopes: Option<&[Permission]>) -> Caller {
        Caller {
            user_id: 1,
            name: "u".into(),
            tenant_id: 1,
            token_id: 1,
            grants,
            token_scopes: scopes.map(|s| s.iter().copied().collect()),
            personal: scopes.is_some(),
        }
    }

    fn grant(perms: &[Permission], clusters: Option<&[i64]>) -> Grant {
        Grant {
            permissions: perms.iter().copied().collect(),
            clusters: clusters.map(|c| c.iter().copied().collect()),
        }
    }

    #[test]
    fn cluster_scopes_limit_only_cluster_permissions() {
        let c = caller(
            vec![grant(
                &[Permission::TasksWrite, Permission::FilesRead],
                Some(&[3, 4]),
            )],
            None,
        );
        assert!(c.require_on(Permission::TasksWrite, &[3, 4]).is_ok());
        let e = c.require_on(Permission::TasksWrite, &[3, 5]).unwrap_err();
        assert_eq!(e.status, 403);
        assert!(e.message.contains("cluster 5"), "{}", e.message);
        assert_eq!(c.scope(Permission::FilesRead), Some(ClusterScope::All));
        assert!(c.require(Permission::UsersWrite).is_err());
        assert!(!c.is_super());
        assert_eq!(c.tenant_filter(), Some(1));
    }

    #[test]
    fn bindings_add_up_and_super_admins_hold_everything() {
        let c = caller(
            vec![
                grant(&[Permission::TasksRead], Some(&[1])),
                grant(&[Permission::TasksRead], Some(&[2])),
            ],
            None,
        );
        assert_eq!(
            c.scope(Permission::TasksRead),
            Some(ClusterScope::Only([1, 2].into()))
        );
        let admin = caller(vec![grant(&[Permission::System], None)], None);
        assert!(admin.is_super());
        assert!(admin.require_on(Permission::ClustersWrite, &[9]).is_ok());
        assert_eq!(admin.tenant_filter(), None);
        assert_eq!(admin.permissions().len(), Permission::ALL.len());
    }

    #[test]
    fn token_scopes_narrow_the_user() {
        let admin = caller(
            vec![grant(&[Permission::System], None)],
            Some(&[Permission::TasksRead]),
        );
        assert!(!admin.is_super());
        assert!(admin.has(Permission::TasksRead));
        assert!(!admin.has(Permission::TasksWrite));
        assert_eq!(admin.tenant_filter(), Some(1));
    }

    #[test]
    fn permission_names_round_trip() {
        for p in Permission::ALL {
            assert_eq!(p.as_str().parse::<Permission>().unwrap(), p);
        }
        assert!("tasks:delete".parse::<Permission>().is_err());
        let json: Vec<Permission> = serde_json::from_str(r#"["tasks:read","system"]"#).unwrap();
        assert_eq!(json, [Permission::TasksRead, Permission::System]);
        assert!(serde_json::from_str::<Vec<Permission>>(r#"["nope"]"#).is_err());
    }
}
