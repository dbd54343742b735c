// Sign in: with a wallet (EIP-6963 / EIP-1193, SIWE) or with an API key.
import { useState } from 'preact/hooks';
import type { PageProps } from '../app';
import { navigate, query } from '../router';
import { me, signInWithApiKey, signOut } from '../session';
import { ErrorMessage, PageTitle } from '../ui';

function next(): string {
  const to = query.value.get('next');
  return to && to.startsWith('/') && !to.startsWith('//') ? to : '/generate';
}

export default function SignIn(_: PageProps) {
  const [key, setKey] = useState('');
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);

  async function withKey(event: Event) {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await signInWithApiKey(key);
      navigate(next(), { replace: true });
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  }

  if (me.value) {
    return (
      <section>
        <PageTitle>Signed in</PageTitle>
        <p>
          You are signed in as <strong>{me.value.user.name}</strong>. <a href={next()}>Continue</a> or{' '}
          <button type="button" class="link" onClick={() => void signOut()}>
            sign out
          </button>
          .
        </p>
      </section>
    );
  }
  return (
    <section class="signin">
      <PageTitle>Sign in</PageTitle>
      <form onSubmit={withKey} class="card">
        <h2>With an API key</h2>
        <label for="api-key">API key</label>
        <input
          id="api-key"
          type="password"
          autoComplete="off"
          value={key}
          onInput={(e) => setKey((e.target as HTMLInputElement).value)}
          required
        />
        <p class="row">
          <button type="submit" disabled={busy || !key.trim()}>
            Sign in with API key
          </button>
        </p>
        <ErrorMessage error={error} />
      </form>
    </section>
  );
}
