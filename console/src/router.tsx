// A small history-API router: the manager serves index.html for every console path.
import type { ComponentChildren, JSX } from 'preact';
import { useEffect, useState } from 'preact/hooks';

export function navigate(to: string, replace = false) {
  if (replace) history.replaceState(null, '', to);
  else history.pushState(null, '', to);
  dispatchEvent(new PopStateEvent('popstate'));
}

/** The current location (path and query), re-rendering on navigation. */
export function useLocation(): URL {
  const [href, setHref] = useState(location.href);
  useEffect(() => {
    const f = () => setHref(location.href);
    addEventListener('popstate', f);
    // A child may have navigated before this listener was added (child effects run first).
    f();
    return () => removeEventListener('popstate', f);
  }, []);
  return new URL(href);
}

/** Sets query parameters of the current location without a new history entry. */
export function setQuery(q: Record<string, string | undefined>) {
  const u = new URL(location.href);
  for (const [k, v] of Object.entries(q)) {
    if (v) u.searchParams.set(k, v);
    else u.searchParams.delete(k);
  }
  navigate(u.pathname + u.search, true);
}

export function Link(props: { href: string; children: ComponentChildren } & JSX.HTMLAttributes<HTMLAnchorElement>) {
  const { href, children, ...rest } = props;
  return (
    <a
      {...rest}
      href={href}
      onClick={(e) => {
        if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
        e.preventDefault();
        navigate(href);
      }}
    >
      {children}
    </a>
  );
}

export interface Route {
  pattern: RegExp;
  render: (m: RegExpMatchArray, url: URL) => ComponentChildren;
}

/** The first route whose pattern matches the path. */
export function matchRoute(routes: Route[], url: URL): ComponentChildren | null {
  for (const r of routes) {
    const m = url.pathname.match(r.pattern);
    if (m) return r.render(m, url);
  }
  return null;
}
