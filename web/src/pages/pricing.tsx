// Pricing: every tool's live price (GET /v1/catalog), what is charged when (the hold rules of
// domain/credits.py and the README's "Prices and charges"), and the deposit options.
import type { PageProps } from '../app';
import { api, must, type Schemas } from '../api/client';
import { signedIn } from '../session';
import { credits, ErrorMessage, Loading, PageTitle, useLoad } from '../ui';
import { KIND_NAMES, loadCatalog, MODEL_NAMES, priceLabel, priceNote, usdPerCredit, useReloadOnReturn } from './catalog';
import './pricing.css';

type Chain = Schemas['ChainOut'];

export default function Pricing(_: PageProps) {
  const [catalog, error, reload] = useLoad(loadCatalog);
  useReloadOnReturn(reload);
  return (
    <div class="pricing">
      <PageTitle>Pricing</PageTitle>
      <p class="lede">
        Pay per use, in credits.{' '}
        {catalog && (
          <span data-testid="credits-per-usd">
            $1 buys {credits(catalog.credits_per_usd)} (1 credit = ${usdPerCredit(catalog.credits_per_usd)}).
          </span>
        )}{' '}
        Money is always a whole number of credits.
      </p>

      <h2 id="prices">Prices per tool</h2>
      {error ? (
        <>
          <ErrorMessage error={error} />
          <button type="button" class="secondary" onClick={reload}>
            Try again
          </button>
        </>
      ) : !catalog ? (
        <Loading what="Loading the prices" />
      ) : (
        <div class="table-wrap">
          <table aria-labelledby="prices">
            <thead>
              <tr>
                <th scope="col">Tool</th>
                <th scope="col">Price</th>
                <th scope="col" class="wide-only">
                  Model
                </th>
                <th scope="col" class="wide-only">
                  Kind
                </th>
                <th scope="col">Status</th>
              </tr>
            </thead>
            <tbody>
              {catalog.tools.map((tool) => {
                const note = priceNote(tool.price);
                return (
                  <tr key={tool.slug} data-testid={`row-${tool.slug}`}>
                    <th scope="row">
                      <a href={`/generate/${encodeURIComponent(tool.slug)}`}>{tool.name}</a>
                    </th>
                    <td data-testid={`price-${tool.slug}`}>
                      {priceLabel(tool.price)}
                      {note && <div class="hint">{note}</div>}
                    </td>
                    <td class="wide-only">{tool.price ? (MODEL_NAMES[tool.price.model] ?? tool.price.model) : '—'}</td>
                    <td class="wide-only">{KIND_NAMES[tool.kind] ?? tool.kind}</td>
                    <td>
                      {tool.available ? (
                        <span class="badge ok">available</span>
                      ) : (
                        <span class="badge bad" title={tool.unavailable_reason ?? undefined}>
                          unavailable
                        </span>
                      )}
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      )}

      <h2>What is charged, and when</h2>
      <ol class="steps">
        <li>
          <strong>Quote.</strong> Before a job runs you see what it will cost with your inputs: the most it can
          cost, LoRA royalties included.
        </li>
        <li>
          <strong>Hold.</strong> Submitting the job holds the quote from your available balance. If you have less
          available than the quote, the job is refused (402) and nothing is held or queued.
        </li>
        <li>
          <strong>Capture.</strong> When the job completes, its charge is taken from the hold — never more than the
          quote (per image size: of the images made; per GPU second: the seconds it ran) — and the rest is released.
        </li>
        <li>
          <strong>Release.</strong> A job that fails, whatever the cause, costs nothing: the whole hold goes back.
          So does a job cancelled before it started; one cancelled while running pays for its GPU seconds, up to
          the hold.
        </li>
      </ol>
      <p>
        A pipeline holds its total once; each step's charge is captured as it completes, and what is left is
        released when the run ends. LoRA authors earn a share out of the captured charge: you never pay more than
        the quote.
      </p>

      <h2>Price models</h2>
      <dl class="models">
        <dt>Fixed per run</dt>
        <dd>The same credits for every run.</dd>
        <dt>Per image size</dt>
        <dd>Credits per output megapixel (width × height × batch, rounded up once).</dd>
        <dt>Per GPU second, capped</dt>
        <dd>Credits per measured GPU second, at most the cap; the quote is the cap.</dd>
        <dt>Per 1k tokens</dt>
        <dd>Language-model tools: prompt and completion tokens, bounded by the run's token limit.</dd>
        <dt>Fixed per run, from our cost</dt>
        <dd>No price was set: what the tool's recent runs cost us on its pool, with a markup.</dd>
      </dl>

      <h2 id="deposits">Deposit options</h2>
      <Deposits />
    </div>
  );
}

function Deposits() {
  const [options, error] = useLoad(() => must(api.GET('/v1/deposits/options')));
  if (error) return <ErrorMessage error={error} />;
  if (!options) return <Loading what="Loading the deposit options" />;
  const next = signedIn.value ? (
    <p>
      <a href="/account">Deposit from your account</a> (send from a wallet linked to it).
    </p>
  ) : (
    <p>
      <a href="/signin?next=%2Faccount">Sign in</a> to deposit: transfers are credited to the account the sending
      wallet is linked to.
    </p>
  );
  if (options.chains.length === 0)
    return (
      <>
        <p data-testid="no-deposits">
          This server accepts no on-chain deposits; credits come from an operator's grant.
        </p>
        {next}
      </>
    );
  return (
    <>
      <p>Credits can be bought with a transfer on these chains; a deposit is credited once it is confirmed.</p>
      <div class="grid chains">
        {options.chains.map((chain) => (
          <ChainCard key={chain.chain_id} chain={chain} />
        ))}
      </div>
      {next}
    </>
  );
}

function ChainCard({ chain }: { chain: Chain }) {
  return (
    <section class="card" aria-label={chain.name} data-testid={`chain-${chain.chain_id}`}>
      <h3>{chain.name}</h3>
      <p class="hint">
        Chain {chain.chain_id} · credited after {chain.confirmations} confirmation{chain.confirmations === 1 ? '' : 's'}
      </p>
      <p class="hint">
        Treasury: <code class="addr">{chain.treasury}</code>
      </p>
      <ul class="assets">
        {chain.assets.map((asset) => (
          <li key={asset.symbol}>
            <strong>{asset.symbol}</strong> {asset.contract ? '(token)' : '(native)'}: {credits(asset.credits_per_unit)}{' '}
            per {asset.symbol}
          </li>
        ))}
      </ul>
    </section>
  );
}
