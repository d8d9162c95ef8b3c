// Access tokens: the signed-in user's personal access tokens (list, create, revoke).
import { useState } from 'preact/hooks';
import { del, get, post, type Me, type Permission } from '../api';
import { Confirm } from '../components/confirm';
import { PermissionChecks } from '../components/permissions';
import { Secret } from '../components/secret';
import { Badge, Button, ErrorNote, Field, Loading, Page, Table } from '../components/ui';
import { ago, time } from '../format';
import { useAction, useLoad } from '../hooks';

interface TokenInfo {
  id: number;
  name: string;
  scopes: Permission[];
  expires_at: number;
  created_at: number;
  last_used_at: number | null;
  revoked: boolean;
  token?: string;
}

function tokenState(t: TokenInfo): string {
  if (t.revoked) return 'revoked';
  if (t.expires_at <= Date.now()) return 'expired';
  return 'active';
}

export function TokensPage(props: { me: Me; id?: number; url?: URL }) {
  const { me } = props;
  const tokens = useLoad(() => get<TokenInfo[]>('/tokens'), []);
  const [name, setName] = useState('');
  const [scopes, setScopes] = useState<Permission[]>([]);
  const [days, setDays] = useState('90');
  const [created, setCreated] = useState<TokenInfo | null>(null);
  const [revoking, setRevoking] = useState<TokenInfo | null>(null);
  const create = useAction();
  const list = [...(tokens.data ?? [])].sort((a, b) => b.id - a.id);

  return (
    <Page title="Access tokens">
      <p class="muted">
        Personal access tokens let scripts and the <code>shoal</code> command line call the manager's API as you. A token holds
        at most your permissions, narrowed to the scopes you tick.
      </p>
      {created?.token && (
        <div class="card stack created" role="status" aria-label="New access token">
          <h2 class="card-title">Token “{created.name}” created</h2>
          <p>Copy it now: it is shown only this once.</p>
          <Secret value={created.token} label="The new access token" />
          <p class="muted">
            The command line takes it from <code>SHOAL_TOKEN</code> (or <code>--token</code>); the API, as a bearer token. With
            the token in <code>SHOAL_TOKEN</code>:
          </p>
          <pre class="command">
            <code>
              shoal task list --manager {location.origin}
              {'\n'}
              curl -H "Authorization: Bearer $SHOAL_TOKEN" {location.origin}/api/v1/auth/me
            </code>
          </pre>
          <Button onClick={() => setCreated(null)}>Done</Button>
        </div>
      )}

      <form
        class="card stack"
        aria-label="Create access token"
        onSubmit={async (e) => {
          e.preventDefault();
          const t = await create.run(() =>
            post<TokenInfo>('/tokens', { name, scopes, expires_in_days: Number(days) || 90 }),
          );
          if (t) {
            setCreated(t);
            setName('');
            setScopes([]);
            setDays('90');
            tokens.reload();
          }
        }}
      >
        <h2 class="card-title">Create a token</h2>
        <div class="row">
          <Field label="Token name" hint="What it is for, e.g. “CI pipeline”.">
            <input name="name" required maxLength={100} value={name} onInput={(e) => setName(e.currentTarget.value)} />
          </Field>
          <Field label="Expires in (days)" hint="1 to 365 days.">
            <input
              name="expires_in_days"
              type="number"
              min={1}
              max={365}
              required
              value={days}
              onInput={(e) => setDays(e.currentTarget.value)}
            />
          </Field>
        </div>
        <PermissionChecks
          legend="Scopes"
          all={me.permissions}
          value={scopes}
          onChange={setScopes}
          hint="None ticked: the token carries all of your permissions."
        />
        <ErrorNote error={create.error} />
        <Button type="submit" kind="primary" busy={create.busy}>
          Create token
        </Button>
      </form>

      <h2>Your tokens</h2>
      <ErrorNote error={tokens.error} />
      <Loading loading={tokens.loading} empty={!tokens.data?.length} what="access tokens" />
      {list.length > 0 && (
        <Table label="Access tokens" head={['Name', 'Scopes', 'State', 'Created', 'Expires', 'Last used', '']}>
          {list.map((t) => {
            const state = tokenState(t);
            return (
              <tr key={t.id} data-testid={`token-${t.id}`}>
                <td>{t.name}</td>
                <td class="wrap wide">{t.scopes.length ? t.scopes.join(', ') : <span class="muted">all of your permissions</span>}</td>
                <td>
                  <Badge state={state} />
                </td>
                <td title={time(t.created_at)}>{ago(t.created_at)}</td>
                <td>{time(t.expires_at)}</td>
                <td title={time(t.last_used_at)}>{ago(t.last_used_at)}</td>
                <td>
                  {state === 'active' && (
                    <Button kind="danger" aria-label={`Revoke ${t.name}`} onClick={() => setRevoking(t)}>
                      Revoke
                    </Button>
                  )}
                </td>
              </tr>
            );
          })}
        </Table>
      )}

      <Confirm
        title="Revoke access token"
        open={revoking !== null}
        confirm="Revoke token"
        onClose={() => setRevoking(null)}
        onConfirm={async () => {
          if (!revoking) return;
          await del(`/tokens/${revoking.id}`);
          tokens.reload();
        }}
      >
        <p>
          Revoke the token “{revoking?.name}”? Whatever uses it stops working at once. This cannot be undone.
        </p>
      </Confirm>
    </Page>
  );
}
