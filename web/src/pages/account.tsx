// The account: balance, the ledger, API keys (shown once), linked wallets, and deposits sent
// from the connected wallet and watched until they are credited.
import './account.css';
import { useEffect, useRef, useState } from 'preact/hooks';
import type { PageProps } from '../app';
import { api, must, storedApiKey, type Schemas } from '../api/client';
import { account, loadSession, me, refreshBalance, signOut } from '../session';
import { credits, ErrorMessage, Loading, Notice, PageTitle, RequireSignIn, useLoad } from '../ui';
import { walletDiscovery, type DiscoveredWallet } from '../wallet/eip6963';
import { shortAddress, WalletButtons } from '../wallet/picker';
import { LINK_STATEMENT, signWithWallet } from '../wallet/siwe';
import {
  connect,
  creditsFor,
  depositTransaction,
  ensureChain,
  formatUnits,
  parseUnits,
  sendTransaction,
  WalletError,
} from '../wallet/wallet';

type Entry = Schemas['EntryOut'];
type Key = Schemas['KeyOut'];
type NewKey = Schemas['KeyCreatedOut'];
type Chain = Schemas['ChainOut'];
type Deposit = Schemas['DepositOut'];

const LEDGER_PAGE = 20;
// Deposits wait for blocks (seconds to minutes); this is often enough to look live.
const DEPOSIT_POLL_MS = 1500;

function when(iso: string | null | undefined): string {
  if (!iso) return '—';
  const zoned = /(?:Z|[+-]\d{2}:?\d{2})$/i.test(iso) ? iso : `${iso}Z`;
  return new Date(zoned).toLocaleString();
}

function signed(n: number): string {
  return n > 0 ? `+${credits(n)}` : n < 0 ? `−${credits(-n)}` : credits(0);
}

export default function Page(_: PageProps) {
  return (
    <RequireSignIn>
      <Account />
    </RequireSignIn>
  );
}

function Account() {
  // Bumped when credits arrive, so the ledger shows the new entry without a reload.
  const [ledgerTick, setLedgerTick] = useState(0);
  const onCredited = () => {
    void refreshBalance();
    setLedgerTick((t) => t + 1);
  };
  return (
    <section class="account">
      <PageTitle>Account</PageTitle>
      <Balance />
      <Deposits onCredited={onCredited} />
      <Ledger tick={ledgerTick} />
      <Keys />
      <Wallets />
    </section>
  );
}

// -- balance --------------------------------------------------------------------------------------
function Balance() {
  useEffect(() => void refreshBalance(), []);
  const a = account.value;
  if (!a) return <Loading what="Loading the balance" />;
  return (
    <div class="card balance-card">
      <h2 id="balance-title">Balance</h2>
      <dl class="balance-figures">
        <div>
          <dt>Available</dt>
          <dd data-testid="available">{credits(a.available)}</dd>
        </div>
        <div>
          <dt>Held by running work</dt>
          <dd data-testid="held">{credits(a.held)}</dd>
        </div>
        <div>
          <dt>Total</dt>
          <dd>{credits(a.balance)}</dd>
        </div>
      </dl>
      <p class="hint">
        $1 buys {credits(a.credits_per_usd)}. <a href="#deposit">Deposit</a> to add credits.
      </p>
    </div>
  );
}

// -- ledger ---------------------------------------------------------------------------------------
function Ledger({ tick }: { tick: number }) {
  const [entries, setEntries] = useState<Entry[]>([]);
  const [next, setNext] = useState<number | null>(null);
  const [busy, setBusy] = useState(true);
  const [error, setError] = useState<unknown>(null);

  async function load(before: number | null) {
    setBusy(true);
    setError(null);
    try {
      const query = before === null ? { limit: LEDGER_PAGE } : { limit: LEDGER_PAGE, before };
      const page = await must(api.GET('/v1/account/ledger', { params: { query } }));
      setEntries((old) => (before === null ? page.entries : [...old, ...page.entries]));
      setNext(page.next_before ?? null);
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  }
  useEffect(() => void load(null), [tick]);

  return (
    <div class="card">
      <h2>Ledger</h2>
      <ErrorMessage error={error} />
      {entries.length === 0 && !busy && !error && <p class="muted">No entries yet.</p>}
      {entries.length > 0 && (
        <div class="table-wrap" tabIndex={0} role="region" aria-label="Ledger">
          <table data-testid="ledger">
            <caption class="visually-hidden">Ledger entries, newest first</caption>
            <thead>
              <tr>
                <th scope="col">When</th>
                <th scope="col">What</th>
                <th scope="col" class="num">Amount</th>
                <th scope="col" class="num">Held</th>
                <th scope="col" class="num">Balance after</th>
              </tr>
            </thead>
            <tbody>
              {entries.map((e) => (
                <tr key={e.id}>
                  <td>{when(e.created_at)}</td>
                  <td>
                    <span class="badge">{e.kind}</span> {e.reason}
                  </td>
                  <td class={`num ${e.amount < 0 ? 'spent' : ''}`}>{signed(e.amount)}</td>
                  <td class="num">{e.held_change ? signed(e.held_change) : ''}</td>
                  <td class="num">{credits(e.balance_after)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {busy && <Loading what="Loading the ledger" />}
      {next !== null && !busy && (
        <p>
          <button type="button" class="secondary" onClick={() => void load(next)}>
            Older entries
          </button>
        </p>
      )}
    </div>
  );
}

// -- API keys -------------------------------------------------------------------------------------
function Keys() {
  const [keys, error, reload] = useLoad(() => must(api.GET('/v1/account/keys')));
  const [name, setName] = useState('');
  const [created, setCreated] = useState<NewKey | null>(null);
  const [copied, setCopied] = useState<string | null>(null);
  const [confirming, setConfirming] = useState<string | null>(null);
  const [actionError, setActionError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);

  async function create(event: Event) {
    event.preventDefault();
    setBusy(true);
    setActionError(null);
    setCopied(null);
    try {
      setCreated(await must(api.POST('/v1/account/keys', { body: { name: name.trim() } })));
      setName('');
      reload();
    } catch (e) {
      setActionError(e);
    } finally {
      setBusy(false);
    }
  }

  async function copy(secret: string) {
    try {
      await navigator.clipboard.writeText(secret);
      setCopied('Copied to the clipboard.');
    } catch {
      setCopied('The browser refused to copy: select the key and copy it by hand.');
    }
  }

  async function revoke(key: Key) {
    setBusy(true);
    setActionError(null);
    try {
      await must(api.DELETE('/v1/account/keys/{key_id}', { params: { path: { key_id: key.id } } }));
      setConfirming(null);
      if (created?.id === key.id) setCreated(null);
      // The key this page signed in with stops working: signing out says so plainly.
      if (storedApiKey()?.startsWith(key.prefix)) await signOut();
      else reload();
    } catch (e) {
      setActionError(e);
    } finally {
      setBusy(false);
    }
  }

  const current = storedApiKey();
  return (
    <div class="card">
      <h2>API keys</h2>
      <p class="hint">For programs and the command line: send it as <code>Authorization: Bearer …</code>.</p>
      <form class="row key-form" onSubmit={create}>
        <label for="key-name">Key name</label>
        <input
          id="key-name"
          value={name}
          maxLength={100}
          placeholder="e.g. laptop"
          onInput={(e) => setName((e.target as HTMLInputElement).value)}
          required
        />
        <button type="submit" disabled={busy || !name.trim()}>
          Create key
        </button>
      </form>
      {created && (
        <div class="message ok new-key" role="status">
          <p>
            The key <strong>{created.name}</strong> is shown only this once: copy it now.
          </p>
          <p class="row">
            <code class="secret" data-testid="new-api-key">
              {created.api_key}
            </code>
            <button type="button" class="secondary" onClick={() => void copy(created.api_key)}>
              Copy
            </button>
            <button type="button" class="link" onClick={() => setCreated(null)}>
              Done
            </button>
          </p>
          {copied && <p>{copied}</p>}
        </div>
      )}
      <ErrorMessage error={actionError} />
      <ErrorMessage error={error} />
      {keys && keys.length === 0 && <p class="muted">No API keys.</p>}
      {keys && keys.length > 0 && (
        <div class="table-wrap" tabIndex={0} role="region" aria-label="API keys">
          <table data-testid="api-keys">
            <caption class="visually-hidden">Your API keys</caption>
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Starts with</th>
                <th scope="col">Created</th>
                <th scope="col">State</th>
              </tr>
            </thead>
            <tbody>
              {[...keys].reverse().map((k) => (
                <tr key={k.id}>
                  <td>
                    {k.name}
                    {current?.startsWith(k.prefix) && <span class="badge">this browser</span>}
                  </td>
                  <td>
                    <code>{k.prefix}…</code>
                  </td>
                  <td>{when(k.created_at)}</td>
                  <td>
                    {k.revoked_at ? (
                      <span class="badge bad">revoked {when(k.revoked_at)}</span>
                    ) : confirming === k.id ? (
                      <span class="row confirm">
                        <span>Programs using it stop working at once.</span>
                        <button type="button" class="danger" disabled={busy} onClick={() => void revoke(k)}>
                          Yes, revoke {k.name}
                        </button>
                        <button type="button" class="secondary" onClick={() => setConfirming(null)}>
                          Cancel
                        </button>
                      </span>
                    ) : (
                      <button type="button" class="secondary" aria-label={`Revoke ${k.name}`} onClick={() => setConfirming(k.id)}>
                        Revoke
                      </button>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </div>
  );
}

// -- wallets --------------------------------------------------------------------------------------
function Wallets() {
  const [discovery] = useState(walletDiscovery);
  const [linked, error, reload] = useLoad(() => must(api.GET('/v1/account/wallets')));
  const [step, setStep] = useState<string | null>(null);
  const [confirming, setConfirming] = useState<string | null>(null);
  const [actionError, setActionError] = useState<unknown>(null);

  async function link(wallet: DiscoveredWallet) {
    setActionError(null);
    setStep(`Waiting for ${wallet.info.name} to sign…`);
    try {
      const s = await signWithWallet(wallet.provider, LINK_STATEMENT);
      await must(api.POST('/v1/account/wallets', { body: { message: s.message, signature: s.signature } }));
      reload();
      await loadSession(); // me.wallets, which the deposit form checks
    } catch (e) {
      setActionError(e);
    } finally {
      setStep(null);
    }
  }

  async function unlink(address: string) {
    setActionError(null);
    try {
      await must(api.DELETE('/v1/account/wallets/{address}', { params: { path: { address } } }));
      setConfirming(null);
      reload();
      await loadSession();
    } catch (e) {
      setActionError(e);
    }
  }

  const wallets = discovery.wallets.value;
  return (
    <div class="card">
      <h2>Wallets</h2>
      <p class="hint">A linked wallet signs you in, and deposits sent from it are credited to this account.</p>
      <ErrorMessage error={error} />
      {linked && linked.length === 0 && <p class="muted">No wallet is linked.</p>}
      {linked && linked.length > 0 && (
        <ul class="linked-wallets" data-testid="linked-wallets">
          {linked.map((w) => (
            <li key={w.address} class="row">
              <span class="address">{w.address}</span>
              <span class="hint">linked {when(w.linked_at)}</span>
              {confirming === w.address ? (
                <>
                  <button type="button" class="danger" onClick={() => void unlink(w.address)}>
                    Yes, unlink {shortAddress(w.address)}
                  </button>
                  <button type="button" class="secondary" onClick={() => setConfirming(null)}>
                    Cancel
                  </button>
                </>
              ) : (
                <button
                  type="button"
                  class="secondary"
                  aria-label={`Unlink ${w.address}`}
                  onClick={() => setConfirming(w.address)}
                >
                  Unlink
                </button>
              )}
            </li>
          ))}
        </ul>
      )}
      {wallets.length > 0 ? (
        <WalletButtons wallets={wallets} busy={step !== null} onPick={(w) => void link(w)} label={(n) => `Link ${n}`} />
      ) : (
        <p class="muted">Install a wallet extension to link a wallet.</p>
      )}
      {step && (
        <p class="loading" role="status">
          {step}
        </p>
      )}
      <ErrorMessage error={actionError} />
    </div>
  );
}

// -- deposits -------------------------------------------------------------------------------------
function stateBadge(state: string): string {
  if (state === 'credited') return 'badge ok';
  if (state === 'pending') return 'badge warn';
  return 'badge bad';
}

function Deposits({ onCredited }: { onCredited: () => void }) {
  const [discovery] = useState(walletDiscovery);
  const [options, optionsError] = useLoad(() => must(api.GET('/v1/deposits/options')));
  const [deposits, setDeposits] = useState<Deposit[] | null>(null);
  const [listError, setListError] = useState<unknown>(null);
  const [chainId, setChainId] = useState<number | null>(null);
  const [symbol, setSymbol] = useState<string | null>(null);
  const [amount, setAmount] = useState('');
  const [walletId, setWalletId] = useState<string | null>(null);
  const [txHash, setTxHash] = useState('');
  const [step, setStep] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);
  // States seen so far, by deposit id: a change to "credited" is what refreshes the balance.
  const seen = useRef(new Map<string, string>());

  async function loadDeposits() {
    try {
      const list = (await must(api.GET('/v1/account/deposits', { params: { query: { limit: 20 } } }))).deposits;
      let credited = false;
      for (const d of list) {
        const before = seen.current.get(d.id);
        if (before !== undefined && before !== 'credited' && d.state === 'credited') credited = true;
        seen.current.set(d.id, d.state);
      }
      setDeposits(list);
      setListError(null);
      if (credited) onCredited();
    } catch (e) {
      setListError(e);
    }
  }
  useEffect(() => void loadDeposits(), []);

  const pending = deposits?.some((d) => d.state === 'pending') ?? false;
  useEffect(() => {
    if (!pending) return;
    const timer = setInterval(() => void loadDeposits(), DEPOSIT_POLL_MS);
    return () => clearInterval(timer);
  }, [pending]);

  const chains = options?.chains ?? [];
  const chain: Chain | undefined = chains.find((c) => c.chain_id === chainId) ?? chains[0];
  const asset = chain?.assets.find((a) => a.symbol === symbol) ?? chain?.assets[0];
  const units = asset ? parseUnits(amount, asset.decimals) : null;
  const wallets = discovery.wallets.value;
  const wallet = wallets.find((w) => w.info.uuid === walletId) ?? wallets[0];

  function decimalsOf(d: Deposit): number | null {
    const c = chains.find((x) => x.chain_id === d.chain_id);
    const a = c?.assets.find((x) => (x.contract ?? null)?.toLowerCase() === (d.token ?? null)?.toLowerCase());
    return a ? a.decimals : null;
  }

  async function report(chain_id: number, tx_hash: string) {
    const rows = (await must(api.POST('/v1/account/deposits', { body: { chain_id, tx_hash } }))).deposits;
    for (const d of rows) if (!seen.current.has(d.id)) seen.current.set(d.id, 'reported');
    await loadDeposits();
  }

  async function send(event: Event) {
    event.preventDefault();
    if (!chain || !asset || !wallet || units === null || units <= 0n) return;
    setError(null);
    try {
      setStep(`Connecting ${wallet.info.name}…`);
      const from = await connect(wallet.provider);
      // Credited to the sender's owner: a wallet not linked here would credit nobody (or someone else).
      const mine = me.value?.wallets ?? [];
      if (!mine.includes(from.toLowerCase())) {
        throw new WalletError(
          `The wallet's account ${shortAddress(from)} is not linked to this account: link it under Wallets first, or its deposit cannot be credited to you.`,
        );
      }
      setStep(`Switching ${wallet.info.name} to ${chain.name}…`);
      await ensureChain(wallet.provider, [chain.chain_id]);
      setStep(`Confirm the transfer in ${wallet.info.name}…`);
      const hash = await sendTransaction(wallet.provider, depositTransaction(from, chain.treasury, units, asset.contract ?? null));
      setStep('Reporting the transaction…');
      await report(chain.chain_id, hash);
      setAmount('');
    } catch (e) {
      setError(e);
    } finally {
      setStep(null);
    }
  }

  async function reportByHand(event: Event) {
    event.preventDefault();
    if (!chain) return;
    setError(null);
    try {
      await report(chain.chain_id, txHash.trim());
      setTxHash('');
    } catch (e) {
      setError(e);
    }
  }

  return (
    <div class="card" id="deposit">
      <h2>Deposit</h2>
      <ErrorMessage error={optionsError} />
      {options && chains.length === 0 && <Notice>Deposits are not accepted on this server.</Notice>}
      {chain && asset && (
        <>
          <form class="deposit-form" onSubmit={send}>
            <div class="fields">
              <div>
                <label for="deposit-chain">Chain</label>
                <select
                  id="deposit-chain"
                  value={String(chain.chain_id)}
                  onChange={(e) => {
                    setChainId(Number((e.target as HTMLSelectElement).value));
                    setSymbol(null);
                  }}
                >
                  {chains.map((c) => (
                    <option key={c.chain_id} value={String(c.chain_id)}>
                      {c.name} ({c.chain_id})
                    </option>
                  ))}
                </select>
              </div>
              <div>
                <label for="deposit-asset">Asset</label>
                <select id="deposit-asset" value={asset.symbol} onChange={(e) => setSymbol((e.target as HTMLSelectElement).value)}>
                  {chain.assets.map((a) => (
                    <option key={a.symbol} value={a.symbol}>
                      {a.symbol}
                    </option>
                  ))}
                </select>
              </div>
              <div>
                <label for="deposit-amount">Amount ({asset.symbol})</label>
                <input
                  id="deposit-amount"
                  inputMode="decimal"
                  autoComplete="off"
                  value={amount}
                  placeholder="0.1"
                  aria-describedby="deposit-preview"
                  onInput={(e) => setAmount((e.target as HTMLInputElement).value)}
                />
              </div>
              {wallets.length > 1 && (
                <div>
                  <label for="deposit-wallet">From wallet</label>
                  <select id="deposit-wallet" value={wallet?.info.uuid} onChange={(e) => setWalletId((e.target as HTMLSelectElement).value)}>
                    {wallets.map((w) => (
                      <option key={w.info.uuid} value={w.info.uuid}>
                        {w.info.name}
                      </option>
                    ))}
                  </select>
                </div>
              )}
            </div>
            <p id="deposit-preview" class="preview" aria-live="polite" data-testid="deposit-preview">
              {amount.trim() === ''
                ? `1 ${asset.symbol} = ${credits(asset.credits_per_unit)}`
                : units === null
                  ? `Not an amount of ${asset.symbol} (at most ${asset.decimals} decimals).`
                  : `${formatUnits(units, asset.decimals)} ${asset.symbol} = ${credits(Number(creditsFor(units, asset.decimals, asset.credits_per_unit)))}`}
            </p>
            <p class="hint">
              To <span class="address">{chain.treasury}</span>; credited after {chain.confirmations} confirmation
              {chain.confirmations === 1 ? '' : 's'}, to the account its sending wallet is linked to.
            </p>
            {wallets.length > 0 ? (
              <button type="submit" disabled={step !== null || units === null || units <= 0n}>
                Send from wallet
              </button>
            ) : (
              <Notice>No wallet was found in this browser: send from any linked wallet, then report the transaction below.</Notice>
            )}
            {step && (
              <p class="loading" role="status">
                {step}
              </p>
            )}
          </form>
          <ErrorMessage error={error} />
          <details class="by-hand">
            <summary>Sent it another way? Report the transaction</summary>
            <form class="row" onSubmit={reportByHand}>
              <label for="deposit-tx">Transaction hash</label>
              <input
                id="deposit-tx"
                value={txHash}
                pattern="0x[0-9a-fA-F]{64}"
                placeholder="0x…"
                onInput={(e) => setTxHash((e.target as HTMLInputElement).value)}
                required
              />
              <button type="submit" class="secondary">
                Report
              </button>
            </form>
          </details>
        </>
      )}
      <ErrorMessage error={listError} />
      {deposits && deposits.length > 0 && (
        <div class="table-wrap" tabIndex={0} role="region" aria-label="Deposits">
          <table data-testid="deposits">
            <caption class="visually-hidden">Your deposits, newest first</caption>
            <thead>
              <tr>
                <th scope="col">When</th>
                <th scope="col" class="num">Amount</th>
                <th scope="col">State</th>
                <th scope="col" class="num">Credits</th>
                <th scope="col">Transaction</th>
              </tr>
            </thead>
            <tbody>
              {deposits.map((d) => {
                const decimals = decimalsOf(d);
                return (
                  <tr key={d.id}>
                    <td>{when(d.created_at)}</td>
                    <td>
                      {decimals === null ? `${d.amount} base units` : formatUnits(BigInt(d.amount), decimals)} {d.symbol ?? ''}
                    </td>
                    <td>
                      <span class={stateBadge(d.state)}>{d.state}</span> <span class="reason">{d.reason}</span>
                    </td>
                    <td class="num">{credits(d.credits)}</td>
                    <td>
                      <code title={d.tx_hash}>{shortAddress(d.tx_hash)}</code>
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      )}
    </div>
  );
}
