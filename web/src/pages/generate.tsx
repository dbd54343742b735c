// Generate: pick a tool (/generate), fill in a form built from its JSON-Schema inputs
// (/generate/:tool, `?inputs=<json>` pre-fills it), see the quote, run it, watch the progress
// bar fed by the job's server-sent events, and act on the result (download, again, tweak,
// upscale this, open in canvas). The form logic is in forms/; this file wires it to the API.
import { useEffect, useMemo, useRef, useState } from 'preact/hooks';
import type { PageProps } from '../app';
import { api, ApiError, must, type Schemas } from '../api/client';
import { streamEvents } from '../api/sse';
import { LoraHints } from '../forms/loras';
import { ToolFields } from '../forms/fields';
import { getJob, isImage, quote as fetchQuote, submitJob, type Job, type Quote } from '../forms/jobs';
import { DownloadLink, OutputImage } from '../forms/media';
import { applyEvent, FINAL_STATES, initialProgress, percent, type ProgressView } from '../forms/progress';
import {
  fieldsFromTool,
  generateLink,
  initialValues,
  parsePrefill,
  randomSeed,
  toInputs,
  type Field,
  type FormValue,
  type FormValues,
  type ToolInput,
} from '../forms/schema';
import { navigate, query } from '../router';
import { account, refreshBalance } from '../session';
import { credits, ErrorMessage, Loading, PageTitle, RequireSignIn, useLoad } from '../ui';
import './generate.css';

type Tool = Schemas['ToolSummary'];
type ToolDetail = Schemas['ToolDetail'];

const QUOTE_DEBOUNCE_MS = 250;
// An upscale tool's picture input (the built-in upscale-4x's); ToolSummary lists no inputs.
const UPSCALE_INPUT = 'image';

export default function Page({ params }: PageProps) {
  return <RequireSignIn>{params.tool ? <Generator key={params.tool} slug={params.tool} /> : <ToolPicker />}</RequireSignIn>;
}

function loadTools(): Promise<Tool[]> {
  return must(api.GET('/v1/tools'));
}

function ToolPicker() {
  const [tools, error, reload] = useLoad(loadTools);
  const groups = useMemo(() => {
    const by = new Map<string, Tool[]>();
    for (const t of tools ?? []) by.set(t.category, [...(by.get(t.category) ?? []), t]);
    // text to image first: what most people come for
    return [...by.entries()].sort(([a], [b]) => (a === 'text-to-image' ? -1 : b === 'text-to-image' ? 1 : a.localeCompare(b)));
  }, [tools]);
  return (
    <section class="generate">
      <PageTitle>Generate</PageTitle>
      <p>Pick a tool to open its form.</p>
      {error ? (
        <>
          <ErrorMessage error={error} />
          <button type="button" class="secondary" onClick={reload}>
            Try again
          </button>
        </>
      ) : !tools ? (
        <Loading what="Loading the tools" />
      ) : (
        groups.map(([category, list]) => (
          <section key={category} aria-labelledby={`cat-${category}`}>
            <h2 id={`cat-${category}`}>{category.replace(/-/g, ' ').replace(/^./, (c) => c.toUpperCase())}</h2>
            <ul class="grid tool-list">
              {list.map((t) => (
                <li key={t.slug} class={`card${t.available ? '' : ' off'}`}>
                  <h3>
                    {t.available ? <a href={`/generate/${t.slug}`}>{t.name}</a> : t.name}
                  </h3>
                  <p class="muted">{t.description}</p>
                  <p class="hint">
                    {t.price?.estimate != null ? `About ${credits(t.price.estimate)} a run` : 'Priced per run'}
                    {!t.available && ` · unavailable: ${t.unavailable_reason ?? 'not configured'}`}
                  </p>
                </li>
              ))}
            </ul>
          </section>
        ))
      )}
    </section>
  );
}

function loadTool(slug: string): () => Promise<{ tool: ToolDetail; tools: Tool[] }> {
  return async () => {
    const [tool, tools] = await Promise.all([
      must(api.GET('/v1/tools/{slug}', { params: { path: { slug } } })),
      loadTools().catch(() => [] as Tool[]),
    ]);
    return { tool, tools };
  };
}

function Generator({ slug }: { slug: string }) {
  const [loaded, error] = useLoad(loadTool(slug), [slug]);
  if (error)
    return (
      <section class="generate">
        <PageTitle>Generate</PageTitle>
        <ErrorMessage error={error} />
        <p>
          <a href="/generate">All tools</a>
        </p>
      </section>
    );
  if (!loaded) return <Loading what="Loading the tool" />;
  return <ToolRunner tool={loaded.tool} tools={loaded.tools} />;
}

/** Only our own output URLs may be shown as a pre-filled image's thumbnail. */
function previewsFromQuery(prefill: Record<string, unknown> | null): Record<string, string> {
  const url = query.value.get('preview');
  if (!prefill || !url || !/^\/v1\/jobs\/[\w-]+\/outputs\/[\w-]+$/.test(url)) return {};
  const refs = Object.values(prefill).flat().filter((v): v is string => typeof v === 'string' && v.startsWith('output:'));
  return Object.fromEntries(refs.map((r) => [r, url]));
}

function ToolRunner({ tool, tools }: { tool: ToolDetail; tools: Tool[] }) {
  const fields = useMemo(() => fieldsFromTool(tool.input_schema, tool.inputs as unknown as ToolInput[]), [tool]);
  const prefill = useMemo(() => parsePrefill(query.value.get('inputs')), []);
  const previews = useMemo(() => previewsFromQuery(prefill), [prefill]);
  const [values, setValues] = useState<FormValues>(() => initialValues(fields, prefill ?? {}));
  const [showErrors, setShowErrors] = useState(false);
  const [job, setJob] = useState<Job | null>(null);
  const [submitting, setSubmitting] = useState(false);
  const [submitError, setSubmitError] = useState<unknown>(null);
  const formRef = useRef<HTMLFormElement>(null);

  const { inputs, errors } = useMemo(() => toInputs(fields, values), [fields, values]);
  const [quoted, quoteError] = useQuote(tool.slug, inputs, Object.keys(errors).length === 0);
  const change = (name: string, value: FormValue) => setValues((v) => ({ ...v, [name]: value }));

  async function run(runInputs: Record<string, unknown>) {
    setSubmitting(true);
    setSubmitError(null);
    try {
      setJob(await submitJob(tool.slug, runInputs));
      void refreshBalance(); // the hold shows at once
    } catch (e) {
      setSubmitError(e);
    } finally {
      setSubmitting(false);
    }
  }

  function onSubmit(e: Event) {
    e.preventDefault();
    if (Object.keys(errors).length) {
      setShowErrors(true);
      const first = fields.find((f) => errors[f.name]);
      if (first) document.getElementById(`field-${first.name}`)?.focus();
      return;
    }
    void run(inputs);
  }

  function tweak(from: Job) {
    setValues(initialValues(fields, from.inputs));
    formRef.current?.scrollIntoView({ behavior: 'smooth', block: 'start' });
    document.getElementById(`field-${fields[0]?.name}`)?.focus({ preventScroll: true });
  }

  const upscaler = tools.find((t) => t.category === 'upscale' && t.available && t.slug !== tool.slug);
  const prompt = typeof values.prompt === 'string' ? values.prompt : '';
  const hasPrompt = fields.some((f) => f.kind === 'prompt');
  const insufficient = submitError instanceof ApiError && submitError.status === 402;

  return (
    <section class="generate">
      <p class="crumbs">
        <a href="/generate">All tools</a>
      </p>
      <PageTitle>{tool.name}</PageTitle>
      <p class="muted">{tool.description}</p>
      <div class="generate-layout">
        <form ref={formRef} class="card tool-form" onSubmit={onSubmit} noValidate aria-label={`${tool.name} inputs`}>
          <ToolFields
            fields={fields}
            values={values}
            errors={showErrors ? errors : {}}
            onChange={change}
            previews={previews}
            promptExtra={
              hasPrompt && tool.kind === 'comfyui' ? (
                <LoraHints
                  tool={tool.slug}
                  prompt={prompt}
                  onAdd={(w) => change('prompt', prompt.trim() ? `${prompt.trimEnd()}, ${w}` : w)}
                />
              ) : undefined
            }
          />
          <div class="run-bar">
            <p class="quote" aria-live="polite" data-testid="quote">
              <QuoteLine quoted={quoted} error={quoteError} pending={Object.keys(errors).length > 0} fields={fields} errors={errors} />
            </p>
            <p class="hint">Your balance: {credits(account.value?.available)}</p>
            <button type="submit" disabled={submitting || !tool.available}>
              {submitting ? 'Submitting…' : 'Generate'}
            </button>
          </div>
          {submitError ? (
            <>
              <ErrorMessage error={submitError} />
              {insufficient && (
                <p>
                  <a class="button" href="/account#deposit">
                    Add credits
                  </a>
                </p>
              )}
            </>
          ) : null}
        </form>
        <div class="result-column">
          {job ? (
            <JobPanel
              key={job.id}
              job={job}
              onAgain={(j) => void run({ ...j.inputs, ...(fields.some((f) => f.kind === 'seed') ? { seed: randomSeed() } : {}) })}
              onTweak={tweak}
              upscaler={upscaler}
              busy={submitting}
            />
          ) : (
            <p class="card placeholder muted">Your result appears here.</p>
          )}
        </div>
      </div>
    </section>
  );
}

function QuoteLine(props: {
  quoted: Quote | null;
  error: unknown;
  pending: boolean;
  fields: Field[];
  errors: Record<string, string>;
}) {
  if (props.pending) {
    const bad = props.fields.filter((f) => props.errors[f.name]);
    const names = bad.map((f) => f.label.toLowerCase()).join(', ');
    const empty = bad.every((f) => ['required', 'choose an image'].includes(props.errors[f.name]));
    return (
      <span class="hint">
        {empty ? 'Fill in' : 'Check'} the {names} to see the price.
      </span>
    );
  }
  if (props.error) return <span class="field-error">No quote: {props.error instanceof Error ? props.error.message : String(props.error)}</span>;
  if (!props.quoted) return <span class="hint">Pricing…</span>;
  if (!props.quoted.charged) return <>This run is free for you (quote {credits(props.quoted.total)}).</>;
  return (
    <>
      This run costs up to <strong>{credits(props.quoted.total)}</strong>; you are charged only if it completes.
    </>
  );
}

/** POST /v1/quotes for the inputs as they are, once they stop changing for a moment. */
function useQuote(tool: string, inputs: Record<string, unknown>, ready: boolean): [Quote | null, unknown] {
  const [quoted, setQuoted] = useState<Quote | null>(null);
  const [error, setError] = useState<unknown>(null);
  // the seed does not change a price: leave it out of what triggers a new quote
  const { seed: _seed, ...priced } = inputs;
  const key = JSON.stringify(priced, (_k, v) => (typeof v === 'bigint' ? String(v) : v));
  useEffect(() => {
    if (!ready) {
      setError(null);
      return;
    }
    let live = true;
    const timer = setTimeout(() => {
      fetchQuote(tool, inputs).then(
        (q) => {
          if (!live) return;
          setQuoted(q);
          setError(null);
        },
        (e: unknown) => live && setError(e),
      );
    }, QUOTE_DEBOUNCE_MS);
    return () => {
      live = false;
      clearTimeout(timer);
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [tool, key, ready]);
  return [quoted, error];
}

/** The job's progress from its events, then its outputs. */
function useJobProgress(initial: Job): [ProgressView, Job] {
  const [view, setView] = useState<ProgressView>(() => applyEvent(initialProgress, 'state', { state: initial.state }));
  const [job, setJob] = useState<Job>(initial);
  useEffect(() => {
    const abort = new AbortController();
    let final = FINAL_STATES.has(initial.state);
    const finish = async () => {
      try {
        setJob(await getJob(initial.id));
      } catch {
        /* the view already says how it ended */
      }
      void refreshBalance(); // the charge (or the released hold) shows in the header
    };
    if (final) {
      void finish();
      return () => abort.abort();
    }
    void streamEvents(
      `/v1/jobs/${encodeURIComponent(initial.id)}/events`,
      (ev) => {
        let data: Record<string, unknown> = {};
        try {
          data = JSON.parse(ev.data) as Record<string, unknown>;
        } catch {
          return;
        }
        setView((v) => applyEvent(v, ev.event, data));
        if (ev.event === 'state' && FINAL_STATES.has(String(data.state))) {
          final = true;
          void finish();
          return 'stop';
        }
      },
      abort.signal,
    ).then(() => {
      // the stream ended without a final state we saw (a 4xx, retries spent): read the job
      if (!final && !abort.signal.aborted)
        void getJob(initial.id).then((j) => {
          setJob(j);
          setView((v) => applyEvent(v, 'state', { state: j.state, error: j.error }));
          if (FINAL_STATES.has(j.state)) void refreshBalance();
        }, () => undefined);
    });
    return () => abort.abort();
  }, [initial.id]);
  return [view, job];
}

function JobPanel(props: {
  job: Job;
  onAgain: (job: Job) => void;
  onTweak: (job: Job) => void;
  upscaler: Tool | undefined;
  busy: boolean;
}) {
  const [view, job] = useJobProgress(props.job);
  const panel = useRef<HTMLDivElement>(null);
  useEffect(() => {
    // on a narrow screen the result is below the form: bring the progress bar into sight
    const el = panel.current;
    if (el && el.getBoundingClientRect().top > window.innerHeight - 80) el.scrollIntoView({ block: 'start' });
  }, []);
  const [cancelling, setCancelling] = useState(false);
  const [cancelError, setCancelError] = useState<unknown>(null);
  async function cancel() {
    setCancelling(true);
    setCancelError(null);
    try {
      // the cancelled state arrives as an event too; the hold is released, nothing is charged
      await must(api.POST('/v1/jobs/{job_id}/cancel', { params: { path: { job_id: job.id } } }));
    } catch (e) {
      setCancelError(e);
    } finally {
      setCancelling(false);
    }
  }
  const prompt = typeof job.inputs.prompt === 'string' ? job.inputs.prompt : job.tool;
  const images = job.outputs.filter((o) => isImage(o.content_type));
  const others = job.outputs.filter((o) => !isImage(o.content_type));
  return (
    <div ref={panel} class="card job-panel" data-testid="job-panel" data-job-id={job.id}>
      <h2>{view.done ? (view.failed ? 'It did not finish' : 'Result') : 'Generating'}</h2>
      <progress
        aria-label="Generation progress"
        aria-valuetext={view.value === null ? view.text : `${percent(view.value)}: ${view.text}`}
        max={1}
        {...(view.value === null ? {} : { value: view.value })}
      />
      <p class="progress-text" role="status" data-testid="progress-text">
        {view.text}
        {view.value !== null && !view.done && <span class="hint"> · {percent(view.value)}</span>}
      </p>
      {!view.done && (
        <p>
          <button type="button" class="secondary" onClick={() => void cancel()} disabled={cancelling}>
            {cancelling ? 'Cancelling…' : 'Cancel'}
          </button>
        </p>
      )}
      <ErrorMessage error={cancelError} />
      {view.failed && <ErrorMessage error={new Error(job.error ?? view.error ?? `The job ended ${view.state.toLowerCase()}.`)} />}
      {images.length > 0 && (
        <ul class="outputs">
          {images.map((o) => (
            <li key={o.id}>
              <OutputImage url={o.url} alt={`Generated: ${prompt}`} />
              <div class="row actions">
                <DownloadLink url={o.url} filename={o.filename} />
                {props.upscaler && (
                  <button
                    type="button"
                    class="secondary"
                    onClick={() =>
                      navigate(
                        `${generateLink(props.upscaler!.slug, { [UPSCALE_INPUT]: `output:${o.id}` })}&preview=${encodeURIComponent(o.url)}`,
                      )
                    }
                  >
                    Upscale this
                  </button>
                )}
              </div>
            </li>
          ))}
        </ul>
      )}
      {others.map((o) => (
        <p key={o.id}>
          <DownloadLink url={o.url} filename={o.filename} /> {o.filename}
        </p>
      ))}
      {view.done && (
        <div class="row actions">
          <button type="button" onClick={() => props.onAgain(job)} disabled={props.busy}>
            Again
          </button>
          <button type="button" class="secondary" onClick={() => props.onTweak(job)}>
            Tweak
          </button>
          <a class="button secondary" href={`/sandbox?from_job=${encodeURIComponent(job.id)}`}>
            Open in canvas
          </a>
          <a href={`/history/job/${encodeURIComponent(job.id)}`}>Details</a>
        </div>
      )}
    </div>
  );
}
