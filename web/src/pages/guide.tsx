// Docs: /guide lists the repository's markdown pages (GET /v1/docs); /guide/:slug shows one
// (GET /v1/docs/{slug}), rendered and sanitised by the server (markdown-it with raw HTML escaped,
// api/docs_pages.py), with a table of contents from its headings. The API reference is the
// server's own Swagger page at /docs: a real link, not a studio route.
import { useEffect, useRef } from 'preact/hooks';
import type { PageProps } from '../app';
import { api, must, type Schemas } from '../api/client';
import { ErrorMessage, Loading, PageTitle, useLoad } from '../ui';
import './guide.css';

type DocPage = Schemas['DocPage'];

export default function Guide({ params }: PageProps) {
  return params.slug ? <DocView slug={params.slug} /> : <DocIndex />;
}

function ApiReference() {
  return (
    <a class="button api-ref" href="/docs">
      API reference
    </a>
  );
}

function DocIndex() {
  const [list, error] = useLoad(() => must(api.GET('/v1/docs')));
  return (
    <div class="guide">
      <PageTitle>Docs</PageTitle>
      <p>
        The guide is the repository's README and docs. Every endpoint, with its request and response shapes, is in
        the API reference.
      </p>
      <p>
        <ApiReference />
      </p>
      <h2>Pages</h2>
      {error ? (
        <ErrorMessage error={error} />
      ) : !list ? (
        <Loading />
      ) : list.docs.length === 0 ? (
        <p class="muted">No documentation pages were found.</p>
      ) : (
        <ul class="doc-list">
          {list.docs.map((doc) => (
            <li key={doc.slug}>
              <a href={`/guide/${encodeURIComponent(doc.slug)}`}>{doc.title}</a>
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}

function DocView({ slug }: { slug: string }) {
  const [doc, error] = useLoad(() => must(api.GET('/v1/docs/{slug}', { params: { path: { slug } } })), [slug]);
  return (
    <div class="guide doc-page">
      <p class="row crumbs">
        <a href="/guide">All docs</a>
        <ApiReference />
      </p>
      {error ? (
        <>
          <PageTitle>Docs</PageTitle>
          <ErrorMessage error={error} />
        </>
      ) : !doc ? (
        <Loading />
      ) : (
        <DocBody doc={doc} />
      )}
    </div>
  );
}

/** Code blocks and tables wider than the page scroll sideways; such a region must take the
 * keyboard's focus so that arrow keys can scroll it (axe: scrollable-region-focusable). */
function focusScrollables(root: HTMLElement): void {
  for (const el of root.querySelectorAll<HTMLElement>('pre, table')) {
    if (el.scrollWidth > el.clientWidth) el.tabIndex = 0;
    else el.removeAttribute('tabindex');
  }
}

function DocBody({ doc }: { doc: DocPage }) {
  const body = useRef<HTMLDivElement>(null);
  const hasTitle = /<h1[\s>]/.test(doc.html);
  useEffect(() => {
    document.title = `${doc.title} · swarmstation`;
    // The page arrived after the browser looked for the #fragment: look again now.
    const id = decodeURIComponent(location.hash.slice(1));
    if (id) document.getElementById(id)?.scrollIntoView();
    const root = body.current;
    if (!root) return;
    focusScrollables(root);
    const onResize = () => focusScrollables(root);
    addEventListener('resize', onResize);
    return () => removeEventListener('resize', onResize);
  }, [doc]);
  return (
    <div class="doc-layout">
      {doc.toc.length > 0 && (
        <nav class="toc" aria-label="On this page">
          {/* Folded on a phone, where it would fill the first screen before the text. */}
          <details open={wideScreen()}>
            <summary>On this page</summary>
            <ul>
              {doc.toc.map((entry) => (
                <li key={entry.id} class={`level-${entry.level}`}>
                  <a href={`#${entry.id}`}>{entry.text}</a>
                </li>
              ))}
            </ul>
          </details>
        </nav>
      )}
      <article class="doc" aria-label={doc.title}>
        {!hasTitle && <PageTitle>{doc.title}</PageTitle>}
        {/* Safe to insert: the server escapes raw HTML and refuses javascript: links. */}
        <div ref={body} dangerouslySetInnerHTML={{ __html: doc.html }} />
      </article>
    </div>
  );
}

const wideScreen = (): boolean => typeof matchMedia !== 'function' || matchMedia('(min-width: 960px)').matches;
