// The console's shell: sign-in, the navigation (only what the user may read), and the pages.
import type { ComponentChildren } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { can, currentSession, get, onSessionEnded, setSession, signOut, type Me, type Permission } from './api';
import { Link, matchRoute, navigate, useLocation, type Route } from './router';
import { SignIn } from './pages/signin';
import { TasksPage } from './pages/tasks';
import { TaskPage } from './pages/task';
import { NewTaskPage } from './pages/task_new';
import { ClustersPage, ClusterPage } from './pages/clusters';
import { NodesPage, NodePage } from './pages/nodes';
import { UsersPage, UserPage } from './pages/users';
import { RolesPage } from './pages/roles';
import { TokensPage } from './pages/tokens';
import { AnalysisPage } from './pages/analysis';
import { AuditPage } from './pages/audit';

interface NavItem {
  href: string;
  label: string;
  needs?: Permission;
}

const NAV: { group: string; items: NavItem[] }[] = [
  { group: 'Tasks', items: [{ href: '/tasks', label: 'Tasks', needs: 'tasks:read' }] },
  {
    group: 'Targets',
    items: [
      { href: '/clusters', label: 'Clusters', needs: 'clusters:read' },
      { href: '/nodes', label: 'Nodes', needs: 'nodes:read' },
    ],
  },
  {
    group: 'Permissions',
    items: [
      { href: '/users', label: 'Users', needs: 'users:read' },
      { href: '/roles', label: 'Roles', needs: 'roles:read' },
      { href: '/tokens', label: 'Access tokens' },
    ],
  },
  {
    group: 'System',
    items: [
      { href: '/analysis', label: 'Analysis', needs: 'stats:read' },
      { href: '/audit', label: 'Audit log', needs: 'audit:read' },
    ],
  },
];

function routes(me: Me): Route[] {
  const id = (m: RegExpMatchArray) => Number(m[1]);
  return [
    { pattern: /^\/tasks\/?$/, render: (_, url) => <TasksPage me={me} url={url} /> },
    { pattern: /^\/tasks\/new\/?$/, render: (_, url) => <NewTaskPage me={me} url={url} /> },
    { pattern: /^\/tasks\/(\d+)\/?$/, render: (m) => <TaskPage key={m[1]} me={me} id={id(m)} /> },
    { pattern: /^\/clusters\/?$/, render: () => <ClustersPage me={me} /> },
    { pattern: /^\/clusters\/(\d+)\/?$/, render: (m) => <ClusterPage key={m[1]} me={me} id={id(m)} /> },
    { pattern: /^\/nodes\/?$/, render: (_, url) => <NodesPage me={me} url={url} /> },
    { pattern: /^\/nodes\/(\d+)\/?$/, render: (m) => <NodePage key={m[1]} me={me} id={id(m)} /> },
    { pattern: /^\/users\/?$/, render: () => <UsersPage me={me} /> },
    { pattern: /^\/users\/(\d+)\/?$/, render: (m) => <UserPage key={m[1]} me={me} id={id(m)} /> },
    { pattern: /^\/roles\/?$/, render: () => <RolesPage me={me} /> },
    { pattern: /^\/tokens\/?$/, render: () => <TokensPage me={me} /> },
    { pattern: /^\/analysis\/?$/, render: () => <AnalysisPage me={me} /> },
    { pattern: /^\/audit\/?$/, render: (_, url) => <AuditPage me={me} url={url} /> },
  ];
}

/** Where a user lands: the first page they may read. */
function home(me: Me): string {
  for (const g of NAV) for (const i of g.items) if (!i.needs || can(me, i.needs)) return i.href;
  return '/tokens';
}

export function App() {
  const url = useLocation();
  const [me, setMe] = useState<Me | null>(currentSession()?.user ?? null);
  const [notice, setNotice] = useState<string | undefined>(undefined);
  const [menuOpen, setMenuOpen] = useState(false);

  useEffect(
    () =>
      onSessionEnded((why) => {
        setMe(null);
        setNotice(why);
      }),
    [],
  );

  // The stored session's user is refreshed (permissions may have changed since sign-in). The
  // manager decides when a session ends: any call it answers with 401 signs the user out here
  // (live pages poll, so an expired session is noticed within seconds).
  useEffect(() => {
    const s = currentSession();
    if (!s) return;
    let cancelled = false;
    get<Me>('/auth/me').then(
      (m) => {
        if (cancelled || currentSession()?.token !== s.token) return;
        setSession({ ...s, user: m });
        setMe(m);
      },
      () => undefined,
    );
    return () => {
      cancelled = true;
    };
  }, [me?.id]);

  // A new page: the menu folds, and keyboard focus moves to the page (not lost with the menu).
  useEffect(() => {
    setMenuOpen(false);
    document.getElementById('main')?.focus({ preventScroll: true });
  }, [url.pathname]);

  if (!me) {
    return (
      <SignIn
        notice={notice}
        onSignedIn={(m) => {
          setNotice(undefined);
          setMe(m);
          // Signed in on a page's address (a bookmark, or after the session ended): stay there.
          if (url.pathname === '/' || url.pathname === '/login') navigate(home(m), true);
        }}
      />
    );
  }
  if (url.pathname === '/' || url.pathname === '/login') return <Redirect to={home(me)} />;
  const page = matchRoute(routes(me), url) ?? <NotFound />;

  return (
    <div class="shell">
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header class="top">
        <button
          type="button"
          class="icon menu-toggle"
          aria-label="Menu"
          aria-expanded={menuOpen}
          aria-controls="nav"
          onClick={() => setMenuOpen(!menuOpen)}
        >
          ☰
        </button>
        <Link href={home(me)} class="brand">
          shoal
        </Link>
        <span class="spacer" />
        <span class="who" data-testid="user">
          {me.name}
          {me.super_admin ? ' (super administrator)' : ''}
        </span>
        <button
          type="button"
          class="btn plain"
          onClick={async () => {
            // Signed out here even when the manager cannot be told (it expires the session).
            await signOut().catch(() => undefined);
            setMe(null);
            setNotice('You are signed out.');
            navigate('/', true);
          }}
        >
          Sign out
        </button>
      </header>
      <nav id="nav" class={menuOpen ? 'open' : ''} aria-label="Main">
        {NAV.map((g) => {
          const items = g.items.filter((i) => !i.needs || can(me, i.needs));
          if (!items.length) return null;
          return (
            <div class="nav-group" key={g.group}>
              <span class="nav-title">{g.group}</span>
              {items.map((i) => (
                <Link
                  key={i.href}
                  href={i.href}
                  aria-current={url.pathname === i.href || url.pathname.startsWith(`${i.href}/`) ? 'page' : undefined}
                >
                  {i.label}
                </Link>
              ))}
            </div>
          );
        })}
      </nav>
      <main id="main" tabIndex={-1}>
        {page}
      </main>
    </div>
  );
}

function Redirect(props: { to: string }) {
  useEffect(() => navigate(props.to, true), [props.to]);
  return null;
}

function NotFound(): ComponentChildren {
  return (
    <section class="page">
      <h1>Not found</h1>
      <p>
        There is no such page. <Link href="/">Go to the start page</Link>.
      </p>
    </section>
  );
}
