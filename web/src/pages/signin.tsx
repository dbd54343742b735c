// Sign in: with a wallet (EIP-6963 / EIP-1193, SIWE) or with an API key.
import { useState } from 'preact/hooks';
import type { PageProps } from '../app';
import { api, must, storeApiKey } from '../api/client';
import { navigate, query } from '../router';
import { loadSession, me, signInWithApiKey, signOut } from '../session';
import { ErrorMessage, Notice, PageTitle } from '../ui';
import { walletDiscovery, type DiscoveredWallet } from '../wallet/eip6963';
import { shortAddress, WalletButtons } from '../wallet/picker';
import { SIGN_IN_STATEMENT, signWithWallet } from '../wallet/siwe';

function next(): string {
  const to = query.value.get('next');
  return to && to.startsWith('/') && !to.startsWith('//') ? to : '/generate';
}

function WithWallet() {
  // Started here, not at import: only the pages that use wallets listen for them.
  const [discovery] = useState(walletDiscovery);
  const wallets = discovery.wallets.value;
  const [error, setError] = useState<unknown>(null);
  const [step, setStep] = useState<string | null>(null);

  async function signIn(wallet: DiscoveredWallet) {
    setError(null);
    setStep(`Waiting for ${wallet.info.name}: approve the connection and sign the message…`);
    try {
      const signed = await signWithWallet(wallet.provider, SIGN_IN_STATEMENT);
      setStep('Checking the signature…');
      await must(api.POST('/v1/auth/siwe', { body: { message: signed.message, signature: signed.signature } }));
      // A stored API key would be sent instead of the new session's cookie: forget it.
      storeApiKey(null);
      await loadSession();
      navigate(next(), { replace: true });
    } catch (e) {
      setError(e);
    } finally {
      setStep(null);
    }
  }

  return (
    <div class="card">
      <h2>Sign in with a wallet</h2>
      {wallets.length > 0 ? (
        <>
          <p class="hint">
            Your wallet signs a message that proves the address is yours; nothing is sent on chain and it costs
            nothing. A wallet signing in for the first time gets a new account.
          </p>
          <WalletButtons wallets={wallets} onPick={(w) => void signIn(w)} busy={step !== null} />
        </>
      ) : (
        <Notice>
          No wallet was found in this browser. Install a wallet extension (for example MetaMask or Rabby) and
          reload this page, or sign in with an API key below.
        </Notice>
      )}
      {step && (
        <p class="loading" role="status">
          {step}
        </p>
      )}
      <ErrorMessage error={error} />
    </div>
  );
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
    const address = me.value.address;
    return (
      <section>
        <PageTitle>Signed in</PageTitle>
        <p>
          You are signed in as <strong>{me.value.user.name}</strong>
          {address && (
            <>
              {' '}
              with the wallet{' '}
              <span class="address" title={address} data-testid="signed-in-address">
                {shortAddress(address)}
              </span>
            </>
          )}
          . <a href={next()}>Continue</a> or{' '}
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
      <WithWallet />
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
