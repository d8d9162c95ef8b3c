-- The manager's schema. Times are Unix milliseconds; lists and specs are JSON text, so one set
-- of queries serves SQLite and PostgreSQL.

CREATE TABLE tenants (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    -- Cap on the sum of the bandwidth limits of the tenant's running tasks (bytes/s); NULL = none.
    bandwidth_budget BIGINT,
    -- What a task that would exceed the budget does: 'wait' or 'refuse'.
    budget_policy TEXT NOT NULL DEFAULT 'wait',
    created_at BIGINT NOT NULL
);

CREATE TABLE users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id BIGINT NOT NULL REFERENCES tenants(id),
    name TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL
);

CREATE TABLE roles (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    -- NULL for the built-in roles, which every tenant shares.
    tenant_id BIGINT REFERENCES tenants(id),
    name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    permissions TEXT NOT NULL,
    builtin INTEGER NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX roles_name ON roles (COALESCE(tenant_id, 0), name);

CREATE TABLE role_bindings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role_id BIGINT NOT NULL REFERENCES roles(id) ON DELETE CASCADE,
    -- JSON array of cluster ids the binding covers; [] = every cluster of the tenant.
    clusters TEXT NOT NULL DEFAULT '[]',
    created_at BIGINT NOT NULL
);
CREATE INDEX role_bindings_user ON role_bindings (user_id);

CREATE TABLE tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    -- 'session' (from a login) or 'personal' (a personal access token).
    kind TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    -- SHA-256 of the token; the token itself is shown once and never stored.
    hash TEXT NOT NULL UNIQUE,
    -- JSON array of permissions the token is limited to; [] = all of its user's.
    scopes TEXT NOT NULL DEFAULT '[]',
    expires_at BIGINT NOT NULL,
    revoked INTEGER NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT
);
CREATE INDEX tokens_user ON tokens (user_id);

CREATE TABLE audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at BIGINT NOT NULL,
    tenant_id BIGINT,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    object TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    result TEXT NOT NULL,
    status BIGINT NOT NULL
);
CREATE INDEX audit_at ON audit (at);

CREATE TABLE clusters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id BIGINT NOT NULL REFERENCES tenants(id),
    name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    kind TEXT NOT NULL,
    zone TEXT NOT NULL DEFAULT 'default',
    -- ClusterSpec as JSON (may hold a Kubernetes token: never returned by the API).
    spec TEXT NOT NULL,
    -- SHA-256 of the join token.
    token_hash TEXT NOT NULL UNIQUE,
    -- JSON array of the members last discovered, and when / why not.
    members TEXT NOT NULL DEFAULT '[]',
    discovered_at BIGINT,
    discovery_error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE nodes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    cluster_id BIGINT NOT NULL REFERENCES clusters(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    peer_id TEXT NOT NULL DEFAULT '',
    address TEXT NOT NULL DEFAULT '',
    version TEXT NOT NULL DEFAULT '',
    role TEXT NOT NULL DEFAULT 'node',
    zone TEXT NOT NULL DEFAULT '',
    disk_total BIGINT NOT NULL DEFAULT 0,
    disk_free BIGINT NOT NULL DEFAULT 0,
    peers BIGINT NOT NULL DEFAULT 0,
    downloads BIGINT NOT NULL DEFAULT 0,
    load DOUBLE PRECISION NOT NULL DEFAULT 0,
    ready INTEGER NOT NULL DEFAULT FALSE,
    -- Whether the cluster's member list (hosts, Kubernetes nodes, Mesos agents) holds it.
    member INTEGER NOT NULL DEFAULT TRUE,
    -- Removed by an operator: hidden, token void, history kept until it registers again.
    removed INTEGER NOT NULL DEFAULT FALSE,
    token_hash TEXT NOT NULL UNIQUE,
    registered_at BIGINT NOT NULL,
    last_seen BIGINT NOT NULL,
    UNIQUE (cluster_id, name)
);

CREATE TABLE file_versions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id BIGINT NOT NULL REFERENCES tenants(id),
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    url TEXT NOT NULL,
    digest TEXT NOT NULL,
    size BIGINT,
    -- JSON object of free-form metadata.
    metadata TEXT NOT NULL DEFAULT '{}',
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (tenant_id, name, version)
);

CREATE TABLE tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id BIGINT NOT NULL REFERENCES tenants(id),
    name TEXT NOT NULL DEFAULT '',
    -- 'image' or 'file'
    kind TEXT NOT NULL,
    -- The image reference, or the file's URL.
    source TEXT NOT NULL,
    digest TEXT,
    platforms TEXT NOT NULL DEFAULT '[]',
    file_version_id BIGINT REFERENCES file_versions(id) ON DELETE SET NULL,
    -- JSON arrays of cluster ids and node ids.
    clusters TEXT NOT NULL DEFAULT '[]',
    nodes TEXT NOT NULL DEFAULT '[]',
    -- Every cluster the task reaches (its clusters and those of its nodes): who may see it.
    scope_clusters TEXT NOT NULL DEFAULT '[]',
    -- 'now', 'at' or 'cron'
    schedule TEXT NOT NULL,
    run_at BIGINT,
    cron TEXT,
    -- When the scheduler fires it next (at and cron), compared-and-set so it fires once.
    next_run_at BIGINT,
    bandwidth BIGINT,
    -- scheduled, waiting, running, succeeded, failed, stopped
    state TEXT NOT NULL,
    -- For a run of a cron task: the cron task.
    parent_id BIGINT REFERENCES tasks(id) ON DELETE SET NULL,
    copied_from BIGINT,
    error TEXT,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT,
    updated_at BIGINT NOT NULL
);
CREATE INDEX tasks_state ON tasks (state);
CREATE INDEX tasks_next_run ON tasks (next_run_at);

CREATE TABLE task_nodes (
    task_id BIGINT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    node_id BIGINT NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
    state TEXT NOT NULL,
    blobs_total BIGINT NOT NULL DEFAULT 0,
    blobs_done BIGINT NOT NULL DEFAULT 0,
    bytes_total BIGINT NOT NULL DEFAULT 0,
    bytes_done BIGINT NOT NULL DEFAULT 0,
    bytes_peer BIGINT NOT NULL DEFAULT 0,
    bytes_upstream BIGINT NOT NULL DEFAULT 0,
    error TEXT,
    started_at BIGINT,
    finished_at BIGINT,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (task_id, node_id)
);
CREATE INDEX task_nodes_node ON task_nodes (node_id, state);
CREATE INDEX task_nodes_updated ON task_nodes (updated_at);

CREATE TABLE task_logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id BIGINT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    node_id BIGINT,
    at BIGINT NOT NULL,
    level TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX task_logs_task ON task_logs (task_id, id);
