// The landing page: what swarmstation is, the live tool catalog with prices, and the way in.
// It is the one page in the entry chunk, so it stays small: no libraries beyond the shell's.
import type { PageProps } from '../app';
import { ErrorMessage, Loading, PageTitle, useLoad } from '../ui';
import { byCategory, categoryName, KIND_NAMES, loadCatalog, priceLabel, priceNote, type Tool, useReloadOnReturn } from './catalog';
import './landing.css';

export default function Landing(_: PageProps) {
  const [catalog, error, reload] = useLoad(loadCatalog);
  useReloadOnReturn(reload);
  return (
    <div class="landing">
      <section class="hero" aria-label="Introduction">
        <PageTitle>swarmstation</PageTitle>
        <p class="lede">Generative AI on your own autoscaled GPU pool.</p>
        <p>
          A self-hosted platform for image and text tools: every job runs on GPU instances that swarmstation
          provisions, routes to and sweeps itself. You pay per use in credits, only for what completes, and you can
          wire tools together into pipelines on a canvas.
        </p>
        <p class="row cta">
          <a class="button" href="/generate">
            Start generating
          </a>
          <a class="button secondary" href="/sandbox">
            Open the sandbox
          </a>
          <a href="/pricing">See pricing</a>
        </p>
      </section>

      <ul class="points" aria-label="What you get">
        <li class="card">
          <h2>Your own GPU pool</h2>
          <p>Instances start when the queue grows and are parked when it empties; models are cached on them.</p>
        </li>
        <li class="card">
          <h2>Pay per use</h2>
          <p>A quote before every job, a hold while it runs, and a charge only when it completes.</p>
        </li>
        <li class="card">
          <h2>Compose pipelines</h2>
          <p>Connect typed ports — a prompt to an image to an upscale — and run the whole graph at once.</p>
        </li>
      </ul>

      <section aria-labelledby="catalog-title">
        <h2 id="catalog-title">Tools</h2>
        {error ? (
          <>
            <ErrorMessage error={new Error(`The tool catalog could not be loaded: ${messageOf(error)}.`)} />
            <button type="button" class="secondary" onClick={reload}>
              Try again
            </button>
          </>
        ) : !catalog ? (
          <Loading what="Loading the tools" />
        ) : catalog.tools.length === 0 ? (
          <p class="muted">No tools are installed yet.</p>
        ) : (
          byCategory(catalog.tools).map(([category, tools]) => (
            <section key={category} class="category" aria-label={categoryName(category)}>
              <h3>{categoryName(category)}</h3>
              <ul class="grid tools">
                {tools.map((tool) => (
                  <ToolCard key={tool.slug} tool={tool} />
                ))}
              </ul>
            </section>
          ))
        )}
      </section>
    </div>
  );
}

function ToolCard({ tool }: { tool: Tool }) {
  const note = priceNote(tool.price);
  return (
    <li class={`card tool${tool.available ? '' : ' off'}`} data-testid={`tool-${tool.slug}`}>
      <h4>{tool.name}</h4>
      <p class="badges">
        <span class="badge">{KIND_NAMES[tool.kind] ?? tool.kind}</span>{' '}
        {tool.available ? <span class="badge ok">available</span> : <span class="badge bad">unavailable</span>}
      </p>
      <p class="desc">{tool.description}</p>
      <p class="price" data-testid={`price-${tool.slug}`}>
        <strong>{priceLabel(tool.price)}</strong>
        {note && <span class="hint"> · {note}</span>}
      </p>
      {tool.available ? (
        <a href={`/generate/${encodeURIComponent(tool.slug)}`} aria-label={`Generate with ${tool.name}`}>
          Generate →
        </a>
      ) : (
        <p class="hint">{tool.unavailable_reason ?? 'Not available on this server.'}</p>
      )}
    </li>
  );
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
