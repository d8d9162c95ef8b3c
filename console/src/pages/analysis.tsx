// Analysis: statistics over the tasks that ended in a period (GET /stats): summary figures and
// four charts, each with its exact figures in a table under it.
import type { ComponentChildren } from 'preact';
import { useMemo } from 'preact/hooks';
import { can, get, query, type Me } from '../api';
import { Chart, fade, useColors, type Colors } from '../components/chart';
import { useTenants } from '../components/lookups';
import { Badge, Button, ErrorNote, Field, Loading, Page, Table } from '../components/ui';
import { bytes, duration, percent, time } from '../format';
import { useLoad } from '../hooks';
import { Link, setQuery, useLocation } from '../router';

interface DayStats {
  day: string;
  tasks: number;
  succeeded: number;
  failed: number;
  stopped: number;
  success_rate: number;
  duration_p50_ms: number;
  duration_p90_ms: number;
  duration_p99_ms: number;
  bytes_peer: number;
  bytes_upstream: number;
}

interface TaskStats {
  id: number;
  name: string;
  kind: string;
  state: string;
  started_at: number;
  duration_ms: number;
  nodes: number;
  bytes_peer: number;
  bytes_upstream: number;
}

interface Stats {
  from: number;
  to: number;
  days: DayStats[];
  tasks: TaskStats[];
  total: DayStats;
}

const DAY_MS = 86_400_000;
const PERIODS = [7, 30, 90];
const DEFAULT_DAYS = 30;
/** The manager keeps the newest 5,000 tasks of a period. */
const TASK_CAP = 5000;

/** Share of the bytes that came from peers rather than the upstream (undefined without bytes). */
function offload(peer: number, upstream: number): number | undefined {
  return peer + upstream > 0 ? peer / (peer + upstream) : undefined;
}

/** Every UTC day of the window, `YYYY-MM-DD`, oldest first (the API lists only days with tasks). */
function daysOf(from: number, to: number): string[] {
  const out: string[] = [];
  for (let t = Math.floor(from / DAY_MS) * DAY_MS; t < to && out.length < 400; t += DAY_MS) {
    out.push(new Date(t).toISOString().slice(0, 10));
  }
  return out;
}

export function AnalysisPage(props: { me: Me; id?: number; url?: URL }) {
  const url = useLocation();
  const daysParam = Number(url.searchParams.get('days'));
  const days = PERIODS.includes(daysParam) ? daysParam : DEFAULT_DAYS;
  const tenant = url.searchParams.get('tenant') ?? '';
  const superAdmin = props.me.super_admin;

  const stats = useLoad(
    () => get<Stats>(`/stats${query({ from: Date.now() - days * DAY_MS, tenant_id: superAdmin ? tenant : undefined })}`),
    [days, tenant, superAdmin],
    60_000,
  );
  const tenants = useTenants(props.me, superAdmin);
  const colors = useColors();
  const data = stats.data;
  const empty = !!data && data.tasks.length === 0 && data.total.tasks === 0;

  return (
    <Page
      title="Analysis"
      actions={
        <Button onClick={stats.reload} busy={stats.loading && !!data}>
          Refresh
        </Button>
      }
    >
      <form class="filters" onSubmit={(e) => e.preventDefault()}>
        <Field label="Period">
          <select value={String(days)} onChange={(e) => setQuery({ days: e.currentTarget.value })}>
            {PERIODS.map((d) => (
              <option key={d} value={String(d)}>
                Last {d} days
              </option>
            ))}
          </select>
        </Field>
        {superAdmin && (tenants.data?.length ?? 0) > 1 && (
          <Field label="Tenant">
            <select value={tenant} onChange={(e) => setQuery({ tenant: e.currentTarget.value })}>
              <option value="">All tenants</option>
              {tenants.data!.map((t) => (
                <option key={t.id} value={String(t.id)}>
                  {t.name}
                </option>
              ))}
            </select>
          </Field>
        )}
      </form>
      <p class="muted analysis-note">
        Tasks that started in the period and have ended (recurring schedules count through their runs); only tasks you may read
        are counted. Days are UTC days.
      </p>
      <ErrorNote error={stats.error} />
      <ErrorNote error={tenants.error} />
      <Loading loading={stats.loading && !data} />
      {empty && (
        <div class="card" data-testid="analysis-empty">
          <p>
            <strong>No tasks ended in the last {days} days.</strong>
          </p>
          {can(props.me, 'tasks:read') ? (
            <p class="muted">
              Statistics appear here once tasks finish. <Link href="/tasks">See the tasks</Link>
            </p>
          ) : (
            <p class="muted">
              Statistics count only the tasks you may read, and you do not hold the permission tasks:read.
            </p>
          )}
        </div>
      )}
      {data && !empty && <Figures stats={data} colors={colors} />}
    </Page>
  );
}

function Figures(props: { stats: Stats; colors: Colors }) {
  const { stats, colors } = props;
  const t = stats.total;
  const off = offload(t.bytes_peer, t.bytes_upstream);
  return (
    <>
      <dl class="kpis" aria-label="Summary">
        <Kpi id="tasks" label="Tasks" value={String(t.tasks)}>
          {t.succeeded} succeeded, {t.failed} failed, {t.stopped} stopped
        </Kpi>
        <Kpi id="success" label="Success rate" value={percent(t.tasks ? t.success_rate : undefined)}>
          median duration {duration(t.duration_p50_ms)}
        </Kpi>
        <Kpi id="offload" label="Origin offload" value={percent(off)}>
          share of bytes from peers instead of the upstream
        </Kpi>
        <Kpi id="bytes" label="Bytes distributed" value={bytes(t.bytes_peer + t.bytes_upstream)}>
          {bytes(t.bytes_peer)} from peers, {bytes(t.bytes_upstream)} from the upstream
        </Kpi>
      </dl>
      {stats.tasks.length >= TASK_CAP && (
        <p class="notice">
          More than {TASK_CAP.toLocaleString()} tasks ended in this period: the figures cover the newest{' '}
          {TASK_CAP.toLocaleString()}.
        </p>
      )}
      <div class="charts">
        <DurationChart stats={stats} colors={colors} />
        <SuccessChart stats={stats} colors={colors} />
        <BytesChart stats={stats} colors={colors} />
        <NodesChart stats={stats} colors={colors} />
      </div>
    </>
  );
}

function Kpi(props: { id: string; label: string; value: string; children: ComponentChildren }) {
  return (
    <div class="card kpi" data-testid={`summary-${props.id}`}>
      <dt>{props.label}</dt>
      <dd>
        <span class="kpi-value">{props.value}</span>
        <span class="kpi-note">{props.children}</span>
      </dd>
    </div>
  );
}

/** A chart with its heading, a line saying what it shows, and its figures in a table. */
function ChartCard(props: { name: string; title: string; about: string; chart: ComponentChildren; data: ComponentChildren }) {
  const headingId = `chart-${props.name}-title`;
  return (
    <section class="card chart-card" data-testid={`chart-${props.name}`} aria-labelledby={headingId}>
      <h2 id={headingId}>{props.title}</h2>
      <p class="muted chart-about">{props.about}</p>
      {props.chart}
      <details>
        <summary>Data</summary>
        {props.data}
      </details>
    </section>
  );
}

/** Per-day series over every day of the window (days without tasks are gaps). */
function useDaily(stats: Stats) {
  return useMemo(() => {
    const all = daysOf(stats.from, stats.to);
    const byDay = new Map(stats.days.map((d) => [d.day, d]));
    return { labels: all.map((d) => d.slice(5)), days: all.map((d) => byDay.get(d)) };
  }, [stats]);
}

const durationTick = (v: string | number) => duration(Number(v));
const bytesTick = (v: string | number) => bytes(Number(v));
/** A step of about a fifth of `max` that reads well in binary units (1, 2 or 5 × 2^(10k), or 256/512). */
function bytesStep(max: number): number | undefined {
  if (max <= 0) return undefined;
  const target = max / 5;
  const unit = 1024 ** Math.max(0, Math.floor(Math.log(target) / Math.log(1024)));
  const steps = [1, 2, 5, 10, 20, 50, 100, 200, 256, 512, 1024];
  return unit * (steps.find((s) => unit * s >= target) ?? 1024);
}

/** Day labels kept level: about seven of them, the latest day always labelled. */
function dayAxis(labels: string[]) {
  const n = labels.length;
  const every = n <= 8 ? 1 : n <= 31 ? 5 : Math.ceil(n / 7);
  return {
    offset: true,
    ticks: {
      maxRotation: 0,
      autoSkip: false,
      callback: (_v: string | number, i: number) => ((n - 1 - i) % every === 0 ? labels[i] : null),
    },
  };
}

function DurationChart(props: { stats: Stats; colors: Colors }) {
  const { stats, colors } = props;
  const daily = useDaily(stats);
  const { data, options } = useMemo(() => {
    const line = (label: string, color: string, key: 'duration_p50_ms' | 'duration_p90_ms' | 'duration_p99_ms', dash?: number[]) => ({
      label,
      data: daily.days.map((d) => (d ? d[key] : null)),
      borderColor: color,
      backgroundColor: color,
      borderDash: dash,
      pointRadius: 3,
      spanGaps: true,
      tension: 0.2,
    });
    return {
      data: {
        labels: daily.labels,
        datasets: [
          line('p50', colors.accent, 'duration_p50_ms'),
          line('p90', colors.upstream, 'duration_p90_ms', [6, 3]),
          line('p99', colors.bad, 'duration_p99_ms', [2, 3]),
        ],
      },
      options: {
        interaction: { mode: 'index' as const, intersect: false },
        scales: { x: dayAxis(daily.labels), y: { beginAtZero: true, ticks: { callback: durationTick } } },
        plugins: {
          legend: { labels: { usePointStyle: true, pointStyle: 'line' as const } },
          tooltip: { callbacks: { label: (c: { dataset: { label?: string }; parsed: { y: number | null } }) => `${c.dataset.label}: ${duration(c.parsed.y)}` } },
        },
      },
    };
  }, [daily, colors]);
  return (
    <ChartCard
      name="duration"
      title="Task duration"
      about="Median (p50), p90 and p99 duration of the tasks that started each day."
      chart={<Chart type="line" data={data} options={options} label="Task duration per day: p50, p90 and p99" />}
      data={
        <Table label="Task duration data" head={['Day', <span class="num">Tasks</span>, 'p50', 'p90', 'p99']}>
          {stats.days.map((d) => (
            <tr key={d.day}>
              <td>{d.day}</td>
              <td class="num">{d.tasks}</td>
              <td class="num">{duration(d.duration_p50_ms)}</td>
              <td class="num">{duration(d.duration_p90_ms)}</td>
              <td class="num">{duration(d.duration_p99_ms)}</td>
            </tr>
          ))}
        </Table>
      }
    />
  );
}

function SuccessChart(props: { stats: Stats; colors: Colors }) {
  const { stats, colors } = props;
  const daily = useDaily(stats);
  const { data, options } = useMemo(
    () => ({
      data: {
        labels: daily.labels,
        datasets: [
          {
            label: 'Success rate',
            data: daily.days.map((d) => (d ? d.success_rate : null)),
            backgroundColor: daily.days.map((d) => (d && d.success_rate < 1 ? fade(colors.bad, 0.75) : fade(colors.ok, 0.75))),
            borderColor: daily.days.map((d) => (d && d.success_rate < 1 ? colors.bad : colors.ok)),
            borderWidth: 1,
          },
        ],
      },
      options: {
        scales: { x: dayAxis(daily.labels), y: { min: 0, max: 1, ticks: { callback: (v: string | number) => `${Math.round(Number(v) * 100)}%` } } },
        plugins: {
          legend: { display: false },
          tooltip: {
            callbacks: {
              label: (c: { dataIndex: number }) => {
                const d = daily.days[c.dataIndex];
                return d ? `${percent(d.success_rate)} (${d.succeeded} of ${d.tasks})` : 'no tasks';
              },
            },
          },
        },
      },
    }),
    [daily, colors],
  );
  return (
    <ChartCard
      name="success"
      title="Success rate"
      about="Share of each day's tasks that succeeded (red: not all did)."
      chart={<Chart type="bar" data={data} options={options} label="Success rate per day" />}
      data={
        <Table
          label="Success rate data"
          head={['Day', <span class="num">Tasks</span>, <span class="num">Succeeded</span>, <span class="num">Failed</span>, <span class="num">Stopped</span>, 'Success rate']}
        >
          {stats.days.map((d) => (
            <tr key={d.day}>
              <td>{d.day}</td>
              <td class="num">{d.tasks}</td>
              <td class="num">{d.succeeded}</td>
              <td class="num">{d.failed}</td>
              <td class="num">{d.stopped}</td>
              <td class="num">{percent(d.success_rate)}</td>
            </tr>
          ))}
        </Table>
      }
    />
  );
}

function BytesChart(props: { stats: Stats; colors: Colors }) {
  const { stats, colors } = props;
  const daily = useDaily(stats);
  const { data, options } = useMemo(
    () => ({
      data: {
        labels: daily.labels,
        datasets: [
          { label: 'From peers', data: daily.days.map((d) => d?.bytes_peer ?? 0), backgroundColor: colors.peers, stack: 'bytes' },
          { label: 'From the upstream', data: daily.days.map((d) => d?.bytes_upstream ?? 0), backgroundColor: colors.upstream, stack: 'bytes' },
        ],
      },
      options: {
        interaction: { mode: 'index' as const, intersect: false },
        scales: {
          x: { ...dayAxis(daily.labels), stacked: true },
          y: {
            stacked: true,
            beginAtZero: true,
            ticks: { callback: bytesTick, stepSize: bytesStep(Math.max(0, ...daily.days.map((d) => (d ? d.bytes_peer + d.bytes_upstream : 0)))) },
          },
        },
        plugins: {
          tooltip: {
            callbacks: {
              label: (c: { dataset: { label?: string }; parsed: { y: number | null } }) => `${c.dataset.label}: ${bytes(c.parsed.y)}`,
              footer: (items: { dataIndex: number }[]) => {
                const d = items.length ? daily.days[items[0].dataIndex] : undefined;
                const o = d ? offload(d.bytes_peer, d.bytes_upstream) : undefined;
                return o === undefined ? '' : `Origin offload ${percent(o)}`;
              },
            },
          },
        },
      },
    }),
    [daily, colors],
  );
  return (
    <ChartCard
      name="bytes"
      title="Bytes from peers vs the upstream"
      about="What nodes downloaded each day; the peers' share is load taken off the origin."
      chart={<Chart type="bar" data={data} options={options} label="Bytes from peers and from the upstream per day" />}
      data={
        <Table
          label="Bytes from peers and upstream data"
          head={['Day', <span class="num">From peers</span>, <span class="num">From the upstream</span>, <span class="num">Origin offload</span>]}
        >
          {stats.days.map((d) => (
            <tr key={d.day}>
              <td>{d.day}</td>
              <td class="num" title={`${d.bytes_peer} bytes`}>
                {bytes(d.bytes_peer)}
              </td>
              <td class="num" title={`${d.bytes_upstream} bytes`}>
                {bytes(d.bytes_upstream)}
              </td>
              <td class="num">{percent(offload(d.bytes_peer, d.bytes_upstream))}</td>
            </tr>
          ))}
        </Table>
      }
    />
  );
}

const STATE_SERIES: { state: string; label: string; color: (c: Colors) => string }[] = [
  { state: 'succeeded', label: 'Succeeded', color: (c) => c.ok },
  { state: 'failed', label: 'Failed', color: (c) => c.bad },
  { state: 'stopped', label: 'Stopped', color: (c) => c.muted },
];

function NodesChart(props: { stats: Stats; colors: Colors }) {
  const { stats, colors } = props;
  const { data, options } = useMemo(() => {
    const series = STATE_SERIES.map((s) => ({
      ...s,
      tasks: stats.tasks.filter((t) => (STATE_SERIES.some((x) => x.state === t.state) ? t.state === s.state : s.state === 'stopped')),
    })).filter((s) => s.tasks.length > 0);
    return {
      data: {
        datasets: series.map((s) => ({
          label: s.label,
          data: s.tasks.map((t) => ({ x: t.nodes, y: t.duration_ms })),
          backgroundColor: fade(s.color(colors), 0.7),
          borderColor: s.color(colors),
          pointRadius: 4,
          pointHoverRadius: 6,
        })),
      },
      options: {
        scales: {
          x: { beginAtZero: true, grace: '5%', title: { display: true, text: 'Nodes' }, ticks: { precision: 0 } },
          y: { beginAtZero: true, grace: '5%', title: { display: true, text: 'Duration' }, ticks: { callback: durationTick } },
        },
        plugins: {
          legend: { labels: { usePointStyle: true, pointStyle: 'circle' as const } },
          tooltip: {
            callbacks: {
              label: (c: { datasetIndex: number; dataIndex: number }) => {
                const t = series[c.datasetIndex]?.tasks[c.dataIndex];
                return t ? `#${t.id} ${t.name}: ${duration(t.duration_ms)} on ${t.nodes} node${t.nodes === 1 ? '' : 's'}` : '';
              },
            },
          },
        },
      },
    };
  }, [stats, colors]);
  const rows = useMemo(() => [...stats.tasks].reverse(), [stats]);
  return (
    <ChartCard
      name="nodes"
      title="Distribution time by node count"
      about="One point per task: how long it took against how many nodes it reached."
      chart={<Chart type="scatter" data={data} options={options} label="Distribution time by node count, one point per task" />}
      data={
        <Table
          label="Distribution time by node count data"
          head={['Task', 'Id', 'State', <span class="num">Nodes</span>, <span class="num">Duration</span>, 'Started', <span class="num">From peers</span>, <span class="num">From the upstream</span>]}
        >
          {rows.map((t) => (
            <tr key={t.id} data-task-id={t.id}>
              <td class="wrap task-name">
                <Link href={`/tasks/${t.id}`}>{t.name}</Link>
              </td>
              <td class="num">#{t.id}</td>
              <td>
                <Badge state={t.state} />
              </td>
              <td class="num">{t.nodes}</td>
              <td class="num">{duration(t.duration_ms)}</td>
              <td>{time(t.started_at)}</td>
              <td class="num">{bytes(t.bytes_peer)}</td>
              <td class="num">{bytes(t.bytes_upstream)}</td>
            </tr>
          ))}
        </Table>
      }
    />
  );
}
