// Users and credits: the user list, creating a user (their API key shown once), and for the
// chosen user their balance, their ledger and a credit grant. A grant carries an Idempotency-Key
// made when the form is filled in, so a double click or a retry after a lost answer grants once;
// a new key is made after each grant that succeeded.
import { useState } from 'preact/hooks';
import { api, must, type Schemas } from '../api/client';
import { credits, Loading, Notice } from '../ui';
import { LoadError, Scroller, useAction, usePoll } from './common';
import { newIdempotencyKey } from './format';

type User = Schemas['UserOut'];

export function Users() {
  const [users, error, reload] = usePoll(() => must(api.GET('/v1/admin/users')), 10_000);
  const [chosen, setChosen] = useState<string | null>(null);
  const [filter, setFilter] = useState('');
  const shown = (users ?? []).filter(
    (u) => !filter || u.name.toLowerCase().includes(filter.toLowerCase()) || u.id.startsWith(filter),
  );
  const user = users?.find((u) => u.id === chosen) ?? null;
  return (
    <div data-testid="admin-users">
      <CreateUser onCreated={(id) => { reload(); setChosen(id); }} />
      <h2>Users</h2>
      <LoadError error={error} />
      <label for="user-filter">Find a user</label>
      <input id="user-filter" type="search" value={filter} onInput={(e) => setFilter((e.target as HTMLInputElement).value)} />
      {!users ? (
        !error && <Loading what="Loading the users" />
      ) : (
        <Scroller label="Users">
          <table>
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Role</th>
                <th scope="col">Since</th>
                <th scope="col">Account</th>
              </tr>
            </thead>
            <tbody>
              {shown.map((u) => (
                <tr key={u.id}>
                  <td>
                    {u.name}
                    <div class="hint">
                      <code>{u.id}</code>
                    </div>
                  </td>
                  <td>{u.role}</td>
                  <td>{new Date(u.created_at).toLocaleDateString()}</td>
                  <td>
                    <button type="button" class="secondary" aria-pressed={u.id === chosen} onClick={() => setChosen(u.id)}>
                      Open<span class="visually-hidden"> the account of {u.name}</span>
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </Scroller>
      )}
      {user && <UserAccount key={user.id} user={user} />}
    </div>
  );
}

function CreateUser({ onCreated }: { onCreated: (id: string) => void }) {
  const [name, setName] = useState('');
  const [role, setRole] = useState<'user' | 'admin'>('user');
  const [made, setMade] = useState<Schemas['UserCreated'] | null>(null);
  const action = useAction();
  async function create(event: Event) {
    event.preventDefault();
    const out = await action.run(() => must(api.POST('/v1/admin/users', { body: { name, role } })));
    if (out) {
      setMade(out);
      setName('');
      onCreated(out.id);
    }
  }
  return (
    <details class="card">
      <summary>Create a user</summary>
      <form onSubmit={create} class="admin-form">
        <div>
          <label for="new-user-name">Name</label>
          <input id="new-user-name" value={name} required onInput={(e) => setName((e.target as HTMLInputElement).value)} />
        </div>
        <div>
          <label for="new-user-role">Role</label>
          <select id="new-user-role" value={role} onChange={(e) => setRole((e.target as HTMLSelectElement).value as 'user' | 'admin')}>
            <option value="user">user</option>
            <option value="admin">admin</option>
          </select>
        </div>
        <p class="row">
          <button type="submit" disabled={action.busy || !name.trim()}>
            Create user
          </button>
        </p>
        <LoadError error={action.error} />
      </form>
      {made && (
        <div class="admin-once" role="status">
          <p>
            Created <strong>{made.name}</strong>. Their API key is shown this once:
          </p>
          <pre data-testid="new-user-key">{made.api_key}</pre>
        </div>
      )}
    </details>
  );
}

function UserAccount({ user }: { user: User }) {
  const ident = user.id;
  const [data, error, reload] = usePoll(
    async () => {
      const [account, ledger] = await Promise.all([
        must(api.GET('/v1/admin/users/{user}/account', { params: { path: { user: ident } } })),
        must(api.GET('/v1/admin/users/{user}/ledger', { params: { path: { user: ident }, query: { limit: 20 } } })),
      ]);
      return { account, ledger };
    },
    5000,
    [ident],
  );
  return (
    <section class="card" aria-labelledby="account-h" data-testid="user-account">
      <h2 id="account-h">Account of {user.name}</h2>
      <LoadError error={error} />
      {!data ? (
        !error && <Loading what="Loading the account" />
      ) : (
        <>
          <p>
            Balance <strong data-testid="user-balance">{credits(data.account.balance)}</strong>, held{' '}
            {credits(data.account.held)}, available <strong data-testid="user-available">{credits(data.account.available)}</strong>
          </p>
          <Grant user={user} onGranted={reload} />
          <h3>Ledger (latest {data.ledger.entries.length})</h3>
          {data.ledger.entries.length === 0 ? (
            <p class="muted">No entries yet.</p>
          ) : (
            <Scroller label="Ledger">
              <table data-testid="user-ledger">
                <thead>
                  <tr>
                    <th scope="col">When</th>
                    <th scope="col">Kind</th>
                    <th scope="col">Amount</th>
                    <th scope="col">Balance after</th>
                    <th scope="col">Reason</th>
                  </tr>
                </thead>
                <tbody>
                  {data.ledger.entries.map((e) => (
                    <tr key={e.id}>
                      <td>{new Date(e.created_at).toLocaleString()}</td>
                      <td>{e.kind}</td>
                      <td>{e.amount > 0 ? `+${credits(e.amount)}` : credits(e.amount)}</td>
                      <td>{credits(e.balance_after)}</td>
                      <td>
                        {e.reason}
                        <div class="hint">
                          {e.ref_type} {e.ref_id}
                        </div>
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </Scroller>
          )}
        </>
      )}
    </section>
  );
}

function Grant({ user, onGranted }: { user: User; onGranted: () => void }) {
  const [amount, setAmount] = useState('');
  const [reason, setReason] = useState('');
  const [key, setKey] = useState(newIdempotencyKey);
  const [granted, setGranted] = useState<string | null>(null);
  const action = useAction();
  async function grant(event: Event) {
    event.preventDefault();
    setGranted(null);
    const out = await action.run(() =>
      must(
        api.POST('/v1/admin/users/{user}/credits', {
          params: { path: { user: user.id }, header: { 'Idempotency-Key': key } },
          body: { amount: Number(amount), reason },
        }),
      ),
    );
    if (out) {
      setGranted(`Granted ${credits(out.entry.amount)} to ${user.name}; balance now ${credits(out.balance)}.`);
      setAmount('');
      setReason('');
      setKey(newIdempotencyKey());
      onGranted();
    }
  }
  // a changed form is a different grant: it gets a key of its own
  const edit = (set: (v: string) => void) => (e: Event) => {
    set((e.target as HTMLInputElement).value);
    setKey(newIdempotencyKey());
  };
  return (
    <form onSubmit={grant} class="admin-form" aria-label={`Credit grant for ${user.name}`}>
      <div>
        <label for="grant-amount">Credits to grant</label>
        <input id="grant-amount" type="number" step={1} required value={amount} onInput={edit(setAmount)} />
        <span class="hint">Negative takes credits back.</span>
      </div>
      <div>
        <label for="grant-reason">Reason</label>
        <input id="grant-reason" required value={reason} onInput={edit(setReason)} />
      </div>
      <p class="row">
        <button type="submit" disabled={action.busy || !amount || !Number.isInteger(Number(amount)) || !reason.trim()}>
          Grant credits
        </button>
      </p>
      <LoadError error={action.error} />
      {granted && <Notice kind="ok">{granted}</Notice>}
    </form>
  );
}
