// A confirmation dialog for destructive actions.
import type { ComponentChildren } from 'preact';
import { useAction } from '../hooks';
import { Button, Dialog, ErrorNote } from './ui';

/** A confirmation dialog for a destructive action; the action's error stays in the dialog. */
export function Confirm(props: {
  title: string;
  open: boolean;
  confirm: string;
  onClose: () => void;
  onConfirm: () => Promise<unknown>;
  children: ComponentChildren;
}) {
  const act = useAction();
  const close = () => {
    act.clear();
    props.onClose();
  };
  return (
    <Dialog title={props.title} open={props.open} onClose={close}>
      {props.children}
      <ErrorNote error={act.error} />
      <div class="actions dialog-actions">
        <Button
          kind="danger"
          busy={act.busy}
          onClick={async () => {
            const done = await act.run(async () => {
              await props.onConfirm();
              return true;
            });
            if (done) props.onClose();
          }}
        >
          {props.confirm}
        </Button>
        <Button onClick={close}>Cancel</Button>
      </div>
    </Dialog>
  );
}
