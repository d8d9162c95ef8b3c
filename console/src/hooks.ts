import { useCallback, useEffect, useRef, useState } from 'preact/hooks';
import { ApiError, asApiError } from './api';

export interface Loaded<T> {
  data: T | undefined;
  error: ApiError | undefined;
  loading: boolean;
  reload: () => void;
}

/**
 * Loads with `f` when `deps` change, and again every `everyMs` while the page is visible
 * (live views). A failed reload keeps the last data and shows the error.
 */
export function useLoad<T>(f: () => Promise<T>, deps: unknown[], everyMs?: number): Loaded<T> {
  const [data, setData] = useState<T | undefined>(undefined);
  const [error, setError] = useState<ApiError | undefined>(undefined);
  const [loading, setLoading] = useState(true);
  // The generation of `deps`: answers to calls made for older deps are dropped.
  const gen = useRef(0);
  // One call at a time: a poll is skipped while the previous call runs (a slow manager is not
  // piled up on, and every answer that arrives is used).
  const busy = useRef(false);
  const fn = useRef(f);
  fn.current = f;
  const run = useCallback((force: boolean) => {
    if (busy.current && !force) return;
    const g = gen.current;
    busy.current = true;
    fn.current()
      .then(
        (d) => {
          if (g !== gen.current) return;
          setData(d);
          setError(undefined);
        },
        (e: unknown) => {
          if (g !== gen.current) return;
          setError(asApiError(e));
        },
      )
      .finally(() => {
        if (g !== gen.current) return;
        busy.current = false;
        setLoading(false);
      });
  }, []);
  useEffect(() => {
    gen.current++;
    busy.current = false;
    setLoading(true);
    setData(undefined);
    run(true);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, deps);
  useEffect(() => () => void gen.current++, []);
  useEffect(() => {
    if (!everyMs) return;
    const t = setInterval(() => {
      if (document.visibilityState === 'visible') run(false);
    }, everyMs);
    return () => clearInterval(t);
  }, [everyMs]);
  return { data, error, loading, reload: () => run(true) };
}

/** Runs an action, keeping its error and whether it is running, for buttons and forms. */
export function useAction() {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<ApiError | undefined>(undefined);
  const run = useCallback(async <T,>(f: () => Promise<T>): Promise<T | undefined> => {
    setBusy(true);
    setError(undefined);
    try {
      return await f();
    } catch (e) {
      setError(asApiError(e));
      return undefined;
    } finally {
      setBusy(false);
    }
  }, []);
  return { busy, error, run, clear: () => setError(undefined) };
}
