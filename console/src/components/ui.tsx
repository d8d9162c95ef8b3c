// The console's building blocks: pages, tables, badges, progress bars, dialogs and fields.
import type { ComponentChildren, JSX } from 'preact';
import { cloneElement, isValidElement } from 'preact';
import { useEffect, useId, useRef } from 'preact/hooks';
import { ApiError } from '../api';

export function Page(props: { title: ComponentChildren; actions?: ComponentChildren; children: ComponentChildren }) {
  useEffect(() => {
    if (typeof props.title === 'string') document.title = `${props.title} · shoal`;
  }, [props.title]);
  return (
    <section class="page">
      <header class="page-head">
        <h1>{props.title}</h1>
        {props.actions && <div class="actions">{props.actions}</div>}
      </header>
      {props.children}
    </section>
  );
}

export function ErrorNote(props: { error: ApiError | undefined }) {
  if (!props.error) return null;
  return (
    <p class="error" role="alert">
      {props.error.message}
      {props.error.code && props.error.code !== 'HTTP' ? <span class="code"> ({props.error.code})</span> : null}
    </p>
  );
}

export function Loading(props: { loading: boolean; empty?: boolean; what?: string }) {
  if (props.loading) return <p class="muted" aria-busy="true">Loading…</p>;
  if (props.empty) return <p class="muted">No {props.what ?? 'entries'} yet.</p>;
  return null;
}

/** A table that scrolls sideways on narrow screens. */
export function Table(props: { head: ComponentChildren[]; children: ComponentChildren; label?: string }) {
  return (
    <div class="table-wrap">
      <table aria-label={props.label}>
        <thead>
          <tr>
            {props.head.map((h, i) => (
              <th key={i} scope="col">
                {h}
              </th>
            ))}
          </tr>
        </thead>
        <tbody>{props.children}</tbody>
      </table>
    </div>
  );
}

const STATE_CLASS: Record<string, string> = {
  succeeded: 'ok',
  healthy: 'ok',
  ready: 'ok',
  running: 'run',
  starting: 'run',
  waiting: 'wait',
  scheduled: 'wait',
  pending: 'wait',
  degraded: 'warn',
  stopped: 'muted',
  failed: 'bad',
  offline: 'bad',
};

export function Badge(props: { state: string; title?: string }) {
  return (
    <span class={`badge ${STATE_CLASS[props.state] ?? ''}`} data-state={props.state} title={props.title}>
      {props.state}
    </span>
  );
}

/** A progress bar: `value` of `max` (unknown max: indeterminate). */
export function Progress(props: { value: number; max?: number | null; label: string }) {
  const max = props.max ?? 0;
  const pct = max > 0 ? Math.min(100, (props.value / max) * 100) : undefined;
  return (
    <div
      class="progress"
      role="progressbar"
      aria-label={props.label}
      aria-valuemin={0}
      aria-valuemax={100}
      aria-valuenow={pct === undefined ? undefined : Math.round(pct)}
    >
      <div class="bar" style={{ width: pct === undefined ? '100%' : `${pct}%` }} data-indeterminate={pct === undefined} />
    </div>
  );
}

/** A modal dialog (the browser's own <dialog>: focus is kept inside, Escape closes it). */
export function Dialog(props: { title: string; open: boolean; onClose: () => void; children: ComponentChildren }) {
  const ref = useRef<HTMLDialogElement>(null);
  useEffect(() => {
    const d = ref.current;
    if (!d) return;
    if (props.open && !d.open) d.showModal();
    if (!props.open && d.open) d.close();
  }, [props.open]);
  return (
    <dialog ref={ref} onClose={props.onClose} aria-label={props.title}>
      <header class="dialog-head">
        <h2>{props.title}</h2>
        <button type="button" class="icon" aria-label="Close" onClick={props.onClose}>
          ×
        </button>
      </header>
      {props.open && props.children}
    </dialog>
  );
}

/** A labelled input; the hint is the input's description, not part of its name. */
export function Field(props: { label: string; hint?: ComponentChildren; children: ComponentChildren }) {
  const hintId = useId();
  const child =
    props.hint && isValidElement(props.children) ? cloneElement(props.children, { 'aria-describedby': hintId }) : props.children;
  return (
    <div class="field">
      <label>
        <span class="label">{props.label}</span>
        {child}
      </label>
      {props.hint && (
        <span class="hint" id={hintId}>
          {props.hint}
        </span>
      )}
    </div>
  );
}

export function Button(props: JSX.HTMLAttributes<HTMLButtonElement> & { kind?: 'primary' | 'danger' | 'plain'; busy?: boolean; disabled?: boolean; type?: 'button' | 'submit' }) {
  const { kind = 'plain', busy, disabled, type = 'button', children, ...rest } = props;
  return (
    <button {...rest} type={type} class={`btn ${kind}`} disabled={disabled || busy} aria-busy={busy ? 'true' : undefined}>
      {children}
    </button>
  );
}

/** A description list of label → value pairs. */
export function Facts(props: { items: [string, ComponentChildren][] }) {
  return (
    <dl class="facts">
      {props.items.map(([k, v]) => (
        <div key={k}>
          <dt>{k}</dt>
          <dd>{v}</dd>
        </div>
      ))}
    </dl>
  );
}

/** A dialog form's end: its error, the submit button and Cancel. */
export function FormEnd(props: {
  error: ApiError | undefined;
  submit: ComponentChildren;
  busy: boolean;
  disabled?: boolean;
  onCancel: () => void;
}) {
  return (
    <>
      <ErrorNote error={props.error} />
      <div class="actions dialog-actions">
        <Button type="submit" kind="primary" busy={props.busy} disabled={props.disabled}>
          {props.submit}
        </Button>
        <Button onClick={props.onCancel}>Cancel</Button>
      </div>
    </>
  );
}
