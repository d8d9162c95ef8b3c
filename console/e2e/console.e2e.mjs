// The console end to end in Debian's Chromium, driven by Playwright's library. Run by
// tests/console.rs, which starts the manager, the registry and the nodes, and reads the lines
// this script prints (`CLUSTER id`, `JOIN_TOKEN t`, `TASK id`); it answers `NODES_STARTED` on
// stdin once the nodes it started with the join token run.
//
// Environment: SHOAL_URL, ADMIN_PASSWORD, OPS_PASSWORD, IMAGE (a reference the nodes' upstream
// holds), SCREENSHOT_DIR.
import assert from 'node:assert/strict';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const url = process.env.SHOAL_URL;
const shots = process.env.SCREENSHOT_DIR;
const image = process.env.IMAGE;
const adminPassword = process.env.ADMIN_PASSWORD;
const opsPassword = process.env.OPS_PASSWORD;
for (const [k, v] of Object.entries({ SHOAL_URL: url, SCREENSHOT_DIR: shots, IMAGE: image, ADMIN_PASSWORD: adminPassword, OPS_PASSWORD: opsPassword })) {
  if (!v) throw new Error(`${k} is not set`);
}

const stdin = createInterface({ input: process.stdin });
const answers = stdin[Symbol.asyncIterator]();
/** Prints a line for the Rust test; with `wait`, returns its answer. */
async function tell(line, wait) {
  process.stdout.write(`${line}\n`);
  if (!wait) return undefined;
  const { value, done } = await answers.next();
  if (done) throw new Error(`no answer to ${line}`);
  assert.equal(value.trim(), wait);
  return value;
}

let shot = 0;
async function screenshot(page, name) {
  shot += 1;
  await page.screenshot({ path: join(shots, `${String(shot).padStart(2, '0')}-${name}.png`), fullPage: true });
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});
// Nothing but the manager is ever asked for: a request elsewhere fails the test.
const foreign = [];
const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
context.on('request', (r) => {
  if (!r.url().startsWith(url) && !r.url().startsWith('data:')) foreign.push(r.url());
});
const page = await context.newPage();
const pageErrors = [];
page.on('pageerror', (e) => pageErrors.push(String(e)));
// Console errors (a CSP violation, a failed request) fail the test, but for the refusals this
// test provokes on purpose (a wrong password, a revoked session, a denied call).
page.on('console', (m) => {
  if (m.type() !== 'error') return;
  if (/Failed to load resource: the server responded with a status of 40[13]/.test(m.text())) return;
  pageErrors.push(`console: ${m.text()}`);
});
page.setDefaultTimeout(20_000);

async function signIn(name, password) {
  await page.goto(url);
  await page.getByLabel('User name').fill(name);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('button', { name: 'Sign out' }).waitFor();
}

/** An API call from the page, with the signed-in user's session: { status, body }. */
async function apiAsUser(method, path, body) {
  return page.evaluate(
    async ([method, path, body]) => {
      const s = JSON.parse(sessionStorage.getItem('shoal.session'));
      const headers = { authorization: `Bearer ${s.token}` };
      if (body !== undefined) headers['content-type'] = 'application/json';
      const r = await fetch(`/api/v1${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
      return { status: r.status, body: await r.json() };
    },
    [method, path, body],
  );
}

async function go(path) {
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: path, exact: true }).click();
}

try {
  // Sign in as the first administrator.
  await page.goto(url);
  await page.getByRole('button', { name: 'Sign in' }).waitFor();
  await screenshot(page, 'signin');
  await page.getByLabel('User name').fill('admin');
  await page.getByLabel('Password').fill('wrong password');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('alert').filter({ hasText: 'wrong user name or password' }).waitFor();
  await page.getByLabel('Password').fill(adminPassword);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Tasks', exact: true }).waitFor();

  // Targets: a static cluster of two hosts; its join token is shown once.
  await go('Clusters');
  await page.getByRole('button', { name: 'New cluster' }).click();
  const create = page.getByRole('dialog', { name: 'Create cluster' });
  await create.getByLabel('Cluster name').fill('edge');
  await create.getByLabel('Kind').selectOption('static');
  await create.getByLabel('Hosts').fill('n1\nn2');
  await create.getByRole('button', { name: 'Create cluster' }).click();
  const joinDialog = page.getByRole('dialog', { name: 'Join token of edge' });
  const secret = joinDialog.locator('.secret');
  await secret.waitFor();
  const token = (await secret.textContent()).trim();
  await screenshot(page, 'clusters-join-token');
  const cluster = (await apiAsUser('GET', '/clusters')).body.find((c) => c.name === 'edge');
  await tell(`CLUSTER ${cluster.id}`);
  await tell(`JOIN_TOKEN ${token}`, 'NODES_STARTED');
  await joinDialog.getByRole('button', { name: 'Done' }).click();
  await page.getByRole('table', { name: 'Clusters' }).getByText('edge').waitFor();
  await screenshot(page, 'clusters');

  // The nodes joined: both on the node list, ready and heartbeating. They are healthy unless the
  // host's disk is more than 95% full (the test cannot choose the disk), and then the badge must
  // say that this is why; not ready or a late heartbeat fails the test.
  await go('Nodes');
  const nodeRows = page.getByRole('table', { name: 'Nodes' }).locator('tbody tr');
  const joined = () => {
    const states = [...document.querySelectorAll('table[aria-label="Nodes"] tbody tr [data-state]')];
    return states.length === 2 && states.every((b) => b.title === 'heartbeats on time' || b.title === 'disk more than 95% full');
  };
  try {
    await page.waitForFunction(joined, undefined, { timeout: 60_000 });
  } catch (e) {
    const nodes = (await apiAsUser('GET', '/nodes')).body;
    const shown = await page.locator('table[aria-label="Nodes"] tbody tr [data-state]').evaluateAll((bs) =>
      bs.map((b) => `${b.dataset.state} (${b.title})`),
    );
    throw new Error(`the nodes did not join in 60 s: the page shows ${JSON.stringify(shown)}, the API ${JSON.stringify(nodes)}`, { cause: e });
  }
  assert.equal(await nodeRows.count(), 2);
  for (const badge of await nodeRows.locator('[data-state]').all()) {
    const [state, why] = [await badge.getAttribute('data-state'), await badge.getAttribute('title')];
    assert.equal(state, why === 'heartbeats on time' ? 'healthy' : 'degraded', `badge ${state} titled ${why}`);
    await tell(`NODE_HEALTH ${state} (${why})`);
  }
  await screenshot(page, 'nodes');

  // Tasks: an image to the cluster, now, limited to 200 Mbit/s per node.
  await go('Tasks');
  await page.getByRole('link', { name: 'New task' }).click();
  await page.getByRole('textbox', { name: 'Image', exact: true }).fill(image);
  await page.getByLabel('cluster edge').check();
  // 4 Mbit/s: the image's 3 MiB take seconds, so the page is seen running before it ends.
  await page.getByLabel('Limit per node (Mbit/s)').fill('4');
  await screenshot(page, 'new-task');
  await page.getByRole('button', { name: 'Create task' }).click();
  await page.waitForURL(/\/tasks\/\d+$/);
  const taskId = Number(page.url().split('/').pop());
  await tell(`TASK ${taskId}`);
  // Live: the page shows it running, then reaches `succeeded` without a reload, with both
  // nodes' bars full.
  await page.locator('.facts [data-state="running"]').waitFor();
  await page.locator('.facts [data-state="succeeded"]').waitFor({ timeout: 120_000 });
  const rows = page.getByRole('table', { name: 'Task nodes' }).locator('tbody tr');
  await page.waitForFunction(
    () => document.querySelectorAll('table[aria-label="Task nodes"] tbody [data-state="succeeded"]').length === 2,
  );
  assert.deepEqual((await rows.locator('td:first-child').allTextContents()).sort(), ['n1', 'n2']);
  for (const bar of await page.getByRole('progressbar', { name: /^n\d progress$/ }).all()) {
    assert.equal(await bar.getAttribute('aria-valuenow'), '100');
  }
  assert.match(await page.getByText('Where the bytes came from').locator('..').textContent(), /upstream/);
  await page.getByRole('log', { name: 'Task log' }).waitFor();
  await screenshot(page, 'task');
  // A copy: a new task, whose page follows it live to the end too.
  await page.getByRole('button', { name: 'Copy' }).click();
  await page.waitForURL((u) => /\/tasks\/\d+$/.test(u.pathname) && !u.pathname.endsWith(`/${taskId}`));
  const copyId = Number(page.url().split('/').pop());
  await page.getByText(`task #${taskId}`).waitFor();
  await page.locator('.facts [data-state="succeeded"]').waitFor({ timeout: 120_000 });
  await tell(`COPY ${copyId}`);
  await go('Tasks');
  await page.locator(`tr[data-task-id="${taskId}"] [data-state="succeeded"]`).waitFor();
  await screenshot(page, 'tasks');

  // Analysis: the charts are drawn, and their data holds the task.
  await go('Analysis');
  for (const chart of ['duration', 'success', 'bytes', 'nodes']) {
    const wrap = page.getByTestId(`chart-${chart}`);
    await wrap.locator('canvas').waitFor();
    const box = await wrap.locator('canvas').boundingBox();
    assert.ok(box && box.width > 100 && box.height > 100, `chart ${chart} has no size`);
    // Drawn: a good share of its pixels are painted (axes, grid, the data).
    const painted = await wrap.locator('canvas').evaluate((c) => {
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      let n = 0;
      for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
      return n / (c.width * c.height);
    });
    assert.ok(painted > 0.01, `chart ${chart} is blank (${painted})`);
  }
  const byNodes = page.getByTestId('chart-nodes');
  await byNodes.getByText('Data').click();
  const point = byNodes.locator(`tr[data-task-id="${taskId}"]`);
  await point.waitFor();
  await byNodes.locator(`tr[data-task-id="${copyId}"]`).waitFor();
  // One point for the task: two nodes, and its duration.
  assert.ok((await point.locator('td').allTextContents()).map((c) => c.trim()).includes('2'), 'the point is not at 2 nodes');
  await page.getByTestId('chart-bytes').getByText('Data').click();
  await page.getByTestId('summary-tasks').waitFor();
  assert.match(await page.getByTestId('summary-tasks').textContent(), /2 succeeded, 0 failed/);
  await screenshot(page, 'analysis');

  // Audit: the cluster and the task are in the log.
  await go('Audit log');
  const audit = page.getByRole('table', { name: 'Audit log' });
  await audit.locator('tbody tr').first().waitFor();
  const auditText = await audit.textContent();
  assert.match(auditText, /clusters/);
  assert.match(auditText, /tasks/);
  await screenshot(page, 'audit');

  // Permissions: a task administrator on the cluster.
  await go('Users');
  await page.getByRole('button', { name: 'New user' }).click();
  const newUser = page.getByRole('dialog', { name: 'Create user' });
  await newUser.getByLabel('User name').fill('ops');
  await newUser.getByLabel('Password').fill(opsPassword);
  await newUser.getByRole('button', { name: 'Create user' }).click();
  await page.getByRole('table', { name: 'Users' }).getByRole('link', { name: 'ops', exact: true }).click();
  const bind = page.getByRole('form', { name: 'Add role binding' });
  await bind.getByLabel('Role').selectOption({ label: 'task-admin' });
  await bind.getByLabel('Chosen clusters').check();
  await bind.getByLabel('edge', { exact: true }).check();
  await bind.getByRole('button', { name: 'Add binding' }).click();
  await page.getByRole('table', { name: 'Role bindings' }).getByText('task-admin').waitFor();
  // … who may also read users and roles (so those pages show their lists, without controls).
  await go('Roles');
  await page.getByRole('button', { name: 'New role' }).click();
  const newRole = page.getByRole('dialog', { name: 'Create role' });
  await newRole.getByLabel('Role name').fill('viewer');
  await newRole.getByLabel('users:read').check();
  await newRole.getByLabel('roles:read').check();
  await newRole.getByRole('button', { name: 'Create role' }).click();
  await page.getByRole('table', { name: 'Roles' }).getByText('viewer').waitFor();
  await go('Users');
  await page.getByRole('table', { name: 'Users' }).getByRole('link', { name: 'ops', exact: true }).click();
  await bind.getByLabel('Role').selectOption({ label: 'viewer' });
  await bind.getByLabel('All clusters').check();
  await bind.getByRole('button', { name: 'Add binding' }).click();
  await page.getByRole('table', { name: 'Role bindings' }).getByText('viewer').waitFor();
  await screenshot(page, 'users-ops');
  await go('Users');
  await screenshot(page, 'users');
  await go('Roles');
  await page.getByText('task-admin').first().waitFor();
  await screenshot(page, 'roles');
  await go('Access tokens');
  await screenshot(page, 'tokens');

  // Phone size: the menu folds away, the task page still reads.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.goto(`${url}/tasks/${taskId}`);
  await page.locator('.facts [data-state="succeeded"]').waitFor();
  await screenshot(page, 'task-phone');
  await page.getByRole('button', { name: 'Menu' }).click();
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Tasks', exact: true }).waitFor();
  await screenshot(page, 'menu-phone');
  await page.setViewportSize({ width: 1280, height: 800 });

  // Signed out, then in as the task administrator: tasks yes, permission edits no.
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByRole('status').filter({ hasText: 'signed out' }).waitFor();
  await signIn('ops', opsPassword);
  const nav = page.getByRole('navigation', { name: 'Main' });
  await nav.getByRole('link', { name: 'Tasks', exact: true }).waitFor();
  assert.equal(await page.getByRole('link', { name: 'New task' }).count(), 1);
  assert.equal(await nav.getByRole('link', { name: 'Audit log', exact: true }).count(), 0, 'the audit log is shown to a task administrator');
  // The permission pages list users and roles, and offer no control to change them; the
  // cluster and node pages offer none either.
  const noControls = async (path, table, names) => {
    await page.goto(`${url}${path}`);
    await page.getByRole('heading', { level: 1 }).waitFor();
    if (table) await page.getByRole('table', { name: table }).locator('tbody tr').first().waitFor();
    await page.waitForLoadState('networkidle');
    for (const name of names) {
      assert.equal(await page.getByRole('button', { name }).count(), 0, `${path} shows "${name}" to a task administrator`);
    }
    await screenshot(page, `ops${path.replaceAll('/', '-')}`);
  };
  await noControls('/users', 'Users', ['New user', 'Disable', 'Enable', 'Reset password', 'Delete']);
  assert.equal(await page.getByRole('table', { name: 'Users' }).locator('tbody tr').count(), 2);
  await page.getByRole('table', { name: 'Users' }).getByRole('link', { name: 'admin', exact: true }).click();
  await page.getByRole('table', { name: 'Role bindings' }).waitFor();
  for (const name of ['Remove binding', 'Add binding', 'Disable', 'Delete', 'Reset password']) {
    assert.equal(await page.getByRole('button', { name }).count(), 0, `a user's page shows "${name}" to a task administrator`);
  }
  await noControls('/roles', 'Roles', ['New role', 'Edit', 'Delete']);
  await noControls('/clusters', 'Clusters', ['New cluster']);
  await noControls(`/clusters/${cluster.id}`, null, ['Edit', 'Rotate join token', 'Discover now', 'Delete']);
  const nodeId = (await apiAsUser('GET', '/nodes')).body[0].id;
  await noControls(`/nodes/${nodeId}`, null, ['Remove']);
  // Tasks they may change: stop, copy and delete are there.
  await page.goto(`${url}/tasks/${taskId}`);
  await page.getByRole('button', { name: 'Copy' }).waitFor();
  // And the API refuses them as well.
  const refused = await apiAsUser('POST', '/users', { name: 'eve', password: 'longenough1' });
  assert.equal(refused.status, 403);
  assert.equal(refused.body.code, 'DENIED');

  // A session the manager no longer accepts sends the user back to sign-in.
  await page.evaluate(() => {
    const s = JSON.parse(sessionStorage.getItem('shoal.session'));
    s.token = 'shs_revoked';
    sessionStorage.setItem('shoal.session', JSON.stringify(s));
  });
  await page.goto(`${url}/tasks`);
  await page.getByRole('status').filter({ hasText: 'session' }).waitFor();
  await page.getByRole('button', { name: 'Sign in' }).waitFor();
  await screenshot(page, 'signin-expired');

  assert.deepEqual(foreign, [], 'the console fetched from elsewhere');
  assert.deepEqual(pageErrors, [], 'the console threw');
} catch (e) {
  await screenshot(page, 'failure').catch(() => undefined);
  console.error(e);
  process.exitCode = 1;
} finally {
  stdin.close();
  await browser.close();
}
