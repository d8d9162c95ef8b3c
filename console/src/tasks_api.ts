// The task API's types (src/manager/tasks/types.rs) and the lookups the task pages share.
import { get } from './api';

export type TaskSource =
  | { kind: 'image'; image: string; platforms: string[] }
  | { kind: 'file'; url?: string | null; digest?: string | null; version_id?: number | null };

export type Schedule = { kind: 'now' } | { kind: 'at'; at: number } | { kind: 'cron'; cron: string };

export interface TaskProgress {
  nodes_total: number;
  nodes: Record<string, number>;
  bytes_total: number;
  bytes_done: number;
  bytes_peer: number;
  bytes_upstream: number;
}

export interface Task {
  id: number;
  tenant_id: number;
  name: string;
  source: TaskSource;
  clusters: number[];
  nodes: number[];
  /** Every cluster the task reaches: changing it needs tasks:write on each. */
  scope_clusters: number[];
  schedule: Schedule;
  next_run_at: number | null;
  bandwidth: number | null;
  state: string;
  parent_id: number | null;
  copied_from: number | null;
  error: string | null;
  created_by: string;
  created_at: number;
  started_at: number | null;
  finished_at: number | null;
  duration_ms: number | null;
  progress: TaskProgress;
}

export interface NodeTask {
  task_id: number;
  node_id: number;
  node_name: string;
  state: string;
  blobs_total: number;
  blobs_done: number;
  bytes_total: number;
  bytes_done: number;
  bytes_peer: number;
  bytes_upstream: number;
  error: string | null;
  started_at: number | null;
  finished_at: number | null;
}

export interface LogEntry {
  id: number;
  node_id: number | null;
  node_name: string | null;
  at: number;
  level: string;
  message: string;
}

export interface ClusterRef {
  id: number;
  tenant_id: number;
  name: string;
}

export interface NodeRef {
  id: number;
  name: string;
  cluster_id: number;
  health: string;
}

export interface FileVersionRef {
  id: number;
  name: string;
  version: string;
}

export const TASK_STATES = ['scheduled', 'waiting', 'starting', 'running', 'succeeded', 'failed', 'stopped'];

/** Whether a task can still change (live views poll while it can). */
export function active(t: Task): boolean {
  return !['succeeded', 'failed', 'stopped'].includes(t.state);
}

/** What a task distributes, in one line. */
export function sourceText(s: TaskSource): string {
  if (s.kind === 'image') return s.platforms.length ? `${s.image} (${s.platforms.join(', ')})` : s.image;
  return s.url ?? (s.version_id ? `file version ${s.version_id}` : 'file');
}

export function scheduleText(s: Schedule): string {
  if (s.kind === 'now') return 'now';
  if (s.kind === 'at') return `at ${new Date(s.at).toLocaleString()}`;
  return `cron ${s.cron} (UTC)`;
}

export const listNodes = () => get<NodeRef[]>('/nodes');
