//! The control plane: REST API under `/api/v1` (users, roles, tenants, clusters, nodes, tasks,
//! file versions, statistics, audit), its database, and the scheduler. Nodes reach it through
//! the agent protocol in [`protocol`].

pub mod protocol;
