import { useState } from 'preact/hooks';
import { signIn, type Me } from '../api';
import { Button, ErrorNote, Field } from '../components/ui';
import { useAction } from '../hooks';

export function SignIn(props: { notice?: string; onSignedIn: (me: Me) => void }) {
  const [name, setName] = useState('');
  const [password, setPassword] = useState('');
  const act = useAction();
  return (
    <main class="signin">
      <form
        class="card"
        aria-label="Sign in"
        onSubmit={async (e) => {
          e.preventDefault();
          const s = await act.run(() => signIn(name, password));
          if (s) props.onSignedIn(s.user);
        }}
      >
        <h1>shoal</h1>
        <p class="muted">Sign in to the manager.</p>
        {props.notice && (
          <p class="notice" role="status">
            {props.notice}
          </p>
        )}
        <Field label="User name">
          <input name="name" autocomplete="username" required value={name} onInput={(e) => setName(e.currentTarget.value)} autofocus />
        </Field>
        <Field label="Password">
          <input
            name="password"
            type="password"
            autocomplete="current-password"
            required
            value={password}
            onInput={(e) => setPassword(e.currentTarget.value)}
          />
        </Field>
        <ErrorNote error={act.error} />
        <Button type="submit" kind="primary" busy={act.busy}>
          Sign in
        </Button>
      </form>
    </main>
  );
}
