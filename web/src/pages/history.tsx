// History: your jobs and pipeline runs, newest first, with thumbnails, filtered by tool and state
// (?tool=&state=); /history/job/:id and /history/run/:id show one with its inputs, timings, cost,
// applied LoRAs and outputs, with rerun and tweak. Unfinished ones update live: the lists poll,
// a job's page follows its events.
import { useEffect, useMemo, useState } from 'preact/hooks';
import type { PageProps } from '../app';
import { api, must, type Schemas } from '../api/client';
import { streamEvents } from '../api/sse';
import { getJob, isImage, listJobs, submitJob, type Job } from '../forms/jobs';
import { DownloadLink, OutputImage } from '../forms/media';
import { FINAL_STATES } from '../forms/progress';
import { generateLink } from '../forms/schema';
import { navigate, query } from '../router';
import { refreshBalance } from '../session';
import { credits, ErrorMessage, Loading, PageTitle, RequireSignIn } from '../ui';
import './history.css';

type RunSummary = Schemas['RunSummary'];
type Run = Schemas['RunOut'];
type LedgerEntry = Schemas['LedgerPage']['entries'][number];

const POLL_MS = 1500;
const IDLE_POLL_MS = 5000;
const JOB_STATES = ['QUEUED', 'ASSIGNED', 'RUNNING', 'COMPLETED', 'FAILED', 'CANCELLED'];
const RUN_STATE_OF: Record<string, Schemas['RunState'] | null> = {
  QUEUED: 'PENDING',
  ASSIGNED: null,
  RUNNING: 'RUNNING',
  COMPLETED: 'COMPLETED',
  FAILED: 'FAILED',
  CANCELLED: 'CANCELLED',
};
const RUN_FINAL = new Set(['COMPLETED', 'FAILED', 'CANCELLED']);

export default function Page({ params }: PageProps) {
  return (
    <RequireSignIn>
      {params.kind === 'job' ? (
        <JobDetail key={params.id} id={params.id} />
      ) : params.kind === 'run' ? (
        <RunDetail key={params.id} id={params.id} />
      ) : params.kind ? (
        <ErrorMessage error={new Error(`There is no history of “${params.kind}”: it has jobs and runs.`)} />
      ) : (
        <HistoryList />
      )}
    </RequireSignIn>
  );
}

function badge(state: string): string {
  if (state === 'COMPLETED') return 'badge ok';
  if (state === 'FAILED' || state === 'CANCELLED' || state === 'EXPIRED') return 'badge bad';
  return 'badge warn';
}

function when(iso: string | null | undefined): string {
  if (!iso) return '—';
  return new Date(iso).toLocaleString('en-GB', { dateStyle: 'medium', timeStyle: 'medium' });
}

function promptOf(job: Job): string {
  const p = job.inputs.prompt;
  return typeof p === 'string' && p ? p : job.tool;
}

/** Load `load` now and again every POLL_MS while `live(value)` says something is unfinished;
 * with `idleMs`, also every idleMs after that (the list: a job started elsewhere shows up). */
function usePolled<T>(
  load: () => Promise<T>,
  live: (v: T) => boolean,
  deps: unknown[],
  idleMs?: number,
): [T | undefined, unknown] {
  const [value, setValue] = useState<T | undefined>(undefined);
  const [error, setError] = useState<unknown>(null);
  useEffect(() => {
    let alive = true;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const tick = () =>
      load().then(
        (v) => {
          if (!alive) return;
          setValue(v);
          setError(null);
          if (live(v)) timer = setTimeout(tick, POLL_MS);
          else if (idleMs) timer = setTimeout(tick, idleMs);
        },
        (e: unknown) => {
          if (!alive) return;
          setError(e);
          timer = setTimeout(tick, POLL_MS * 4); // keep trying: the server may be back
        },
      );
    void tick();
    return () => {
      alive = false;
      clearTimeout(timer);
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, deps);
  return [value, error];
}

function HistoryList() {
  const tool = query.value.get('tool') ?? '';
  const state = query.value.get('state') ?? '';
  const [tools, setTools] = useState<string[]>([]);
  useEffect(() => {
    must(api.GET('/v1/tools')).then(
      (ts) => setTools(ts.map((t) => t.slug)),
      () => undefined, // the filter then offers the tools seen in the list
    );
  }, []);
  const [data, error] = usePolled(
    async () => {
      const runState = state ? RUN_STATE_OF[state] : undefined;
      const [jobs, runs] = await Promise.all([
        listJobs(state || undefined),
        // a run has no one tool: a tool filter shows jobs only; ASSIGNED has no run state
        tool || runState === null
          ? Promise.resolve([] as RunSummary[])
          : must(api.GET('/v1/runs', { params: { query: { limit: 50, ...(runState ? { state: runState } : {}) } } })).then((r) => r.runs),
      ]);
      return { jobs: jobs.filter((j) => !tool || j.tool === tool), runs };
    },
    (d) => d.jobs.some((j) => !FINAL_STATES.has(j.state)) || d.runs.some((r) => !RUN_FINAL.has(r.state)),
    [tool, state],
    IDLE_POLL_MS,
  );
  const toolOptions = useMemo(() => [...new Set([...tools, ...(data?.jobs.map((j) => j.tool) ?? []), ...(tool ? [tool] : [])])].sort(), [tools, data, tool]);

  const setFilter = (name: 'tool' | 'state', value: string) => {
    const next = new URLSearchParams(query.value);
    if (value) next.set(name, value);
    else next.delete(name);
    const qs = next.toString();
    navigate(`/history${qs ? `?${qs}` : ''}`, { replace: true });
  };

  return (
    <section class="history">
      <PageTitle>History</PageTitle>
      <form class="row filters" aria-label="Filters" onSubmit={(e) => e.preventDefault()}>
        <div>
          <label for="filter-tool">Tool</label>
          <select id="filter-tool" value={tool} onChange={(e) => setFilter('tool', e.currentTarget.value)}>
            <option value="">All tools</option>
            {toolOptions.map((t) => (
              <option key={t} value={t}>
                {t}
              </option>
            ))}
          </select>
        </div>
        <div>
          <label for="filter-state">State</label>
          <select id="filter-state" value={state} onChange={(e) => setFilter('state', e.currentTarget.value)}>
            <option value="">Any state</option>
            {JOB_STATES.map((s) => (
              <option key={s} value={s}>
                {s.toLowerCase()}
              </option>
            ))}
          </select>
        </div>
      </form>
      <ErrorMessage error={error} />
      {!data ? (
        !error && <Loading what="Loading your history" />
      ) : (
        <>
          <h2>Jobs</h2>
          {data.jobs.length === 0 ? (
            <p class="muted">
              No jobs{tool || state ? ' match these filters' : ' yet'}. <a href="/generate">Generate something</a>.
            </p>
          ) : (
            <ul class="gallery" aria-label="Jobs">
              {data.jobs.map((j) => (
                <JobCard key={j.id} job={j} />
              ))}
            </ul>
          )}
          {!tool && (
            <>
              <h2>Pipeline runs</h2>
              {data.runs.length === 0 ? (
                <p class="muted">No runs{state ? ' in this state' : ' yet'}.</p>
              ) : (
                <div class="table-wrap">
                  <table aria-label="Pipeline runs">
                    <thead>
                      <tr>
                        <th scope="col">Run</th>
                        <th scope="col">State</th>
                        <th scope="col">Steps</th>
                        <th scope="col">Cost</th>
                        <th scope="col">Started</th>
                      </tr>
                    </thead>
                    <tbody>
                      {data.runs.map((r) => (
                        <tr key={r.id}>
                          <td>
                            <a href={`/history/run/${r.id}`}>Run {r.id.slice(0, 8)}</a>
                          </td>
                          <td>
                            <span class={badge(r.state)}>{r.state.toLowerCase()}</span>
                          </td>
                          <td>{r.steps}</td>
                          <td>{RUN_FINAL.has(r.state) ? credits(r.captured) : `up to ${credits(r.quote)}`}</td>
                          <td>{when(r.created_at)}</td>
                        </tr>
                      ))}
                    </tbody>
                  </table>
                </div>
              )}
            </>
          )}
        </>
      )}
    </section>
  );
}

function JobCard({ job }: { job: Job }) {
  const image = job.outputs.find((o) => isImage(o.content_type));
  const prompt = promptOf(job);
  return (
    <li class="card job-card" data-testid="history-job" data-job-id={job.id}>
      <a href={`/history/job/${job.id}`} class="thumb" aria-label={`Details of ${job.tool} job: ${prompt}`}>
        {image ? (
          <OutputImage url={image.url} alt={`Thumbnail: ${prompt}`} />
        ) : (
          <span class="no-thumb">{FINAL_STATES.has(job.state) ? 'No image' : `${Math.round(job.progress * 100)}%`}</span>
        )}
      </a>
      <div class="meta">
        <span class={badge(job.state)}>{job.state.toLowerCase()}</span> <code>{job.tool}</code>
        <p class="prompt" title={prompt}>
          {prompt}
        </p>
        <p class="hint">{when(job.created_at)}</p>
      </div>
    </li>
  );
}

async function jobCost(id: string): Promise<{ charged: number; held: number }> {
  // JobOut carries no cost: the ledger's entries for the job say what was held and captured
  const page = await must(api.GET('/v1/account/ledger', { params: { query: { limit: 500 } } }));
  const mine = page.entries.filter((e: LedgerEntry) => e.ref_type === 'job' && e.ref_id === id);
  return {
    charged: mine.filter((e) => e.kind === 'capture').reduce((n, e) => n - e.amount, 0),
    held: mine.reduce((n, e) => n + e.held_change, 0),
  };
}

function useLiveJob(id: string): [Job | undefined, unknown] {
  const [job, setJob] = useState<Job | undefined>(undefined);
  const [error, setError] = useState<unknown>(null);
  useEffect(() => {
    const abort = new AbortController();
    getJob(id).then(
      (j) => {
        setJob(j);
        if (FINAL_STATES.has(j.state)) return;
        // refetch on each event: the page shows the job, not the event
        void streamEvents(
          `/v1/jobs/${encodeURIComponent(id)}/events`,
          (ev) => {
            let final = false;
            try {
              final = ev.event === 'state' && FINAL_STATES.has(String((JSON.parse(ev.data) as { state?: string }).state));
            } catch {
              /* a frame we cannot read: the refetch tells */
            }
            void getJob(id).then(setJob, () => undefined);
            if (final) {
              void refreshBalance();
              return 'stop';
            }
          },
          abort.signal,
        );
      },
      setError,
    );
    return () => abort.abort();
  }, [id]);
  return [job, error];
}

function JobDetail({ id }: { id: string }) {
  const [job, error] = useLiveJob(id);
  const [cost, setCost] = useState<{ charged: number; held: number } | null>(null);
  const [rerunError, setRerunError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const final = job ? FINAL_STATES.has(job.state) : false;
  useEffect(() => {
    if (!job) return;
    jobCost(id).then(setCost, () => setCost(null));
  }, [id, job?.state]);

  if (error)
    return (
      <section class="history">
        <PageTitle>Job</PageTitle>
        <ErrorMessage error={error} />
        <a href="/history">Back to history</a>
      </section>
    );
  if (!job) return <Loading what="Loading the job" />;
  const prompt = promptOf(job);

  async function rerun() {
    setBusy(true);
    setRerunError(null);
    try {
      const next = await submitJob(job!.tool, job!.inputs);
      void refreshBalance();
      navigate(`/history/job/${next.id}`);
    } catch (e) {
      setRerunError(e);
    } finally {
      setBusy(false);
    }
  }

  const t = job.timings as Record<string, number | undefined>;
  const seconds = (v: number | undefined) => (typeof v === 'number' ? `${v.toFixed(2)} s` : '—');
  return (
    <section class="history detail">
      <p class="crumbs">
        <a href="/history">History</a>
      </p>
      <PageTitle>{`Job ${job.id.slice(0, 8)}`}</PageTitle>
      <p>
        <span class={badge(job.state)} data-testid="job-state">
          {job.state.toLowerCase()}
        </span>{' '}
        <code>{job.tool}</code>
        {!final && <span class="hint"> · {Math.round(job.progress * 100)}% (updating live)</span>}
      </p>
      {!final && <progress aria-label="Job progress" max={1} value={job.progress} />}
      {job.error && <ErrorMessage error={new Error(job.error)} />}
      <div class="row actions">
        <button type="button" onClick={() => void rerun()} disabled={busy}>
          Rerun
        </button>
        <a class="button secondary" href={generateLink(job.tool, job.inputs)}>
          Tweak
        </a>
        <a class="button secondary" href={`/sandbox?from_job=${encodeURIComponent(job.id)}`}>
          Open in canvas
        </a>
      </div>
      <ErrorMessage error={rerunError} />
      {job.outputs.length > 0 && (
        <ul class="detail-outputs" aria-label="Outputs">
          {job.outputs.map((o) => (
            <li key={o.id}>
              {isImage(o.content_type) && <OutputImage url={o.url} alt={`Output: ${prompt}`} />}
              <p class="row">
                <DownloadLink url={o.url} filename={o.filename} /> <span class="hint">{o.filename}</span>
              </p>
            </li>
          ))}
        </ul>
      )}
      <div class="detail-grid">
        <section aria-labelledby="inputs-title">
          <h2 id="inputs-title">Inputs</h2>
          <table data-testid="job-inputs">
            <tbody>
              {Object.entries(job.inputs).map(([k, v]) => (
                <tr key={k}>
                  <th scope="row">{k}</th>
                  <td class="value">{typeof v === 'string' ? v : JSON.stringify(v)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </section>
        <section aria-labelledby="cost-title">
          <h2 id="cost-title">Cost and timings</h2>
          <table>
            <tbody>
              <tr>
                <th scope="row">Cost</th>
                <td data-testid="job-cost">
                  {!cost
                    ? '—'
                    : cost.charged > 0
                      ? `${credits(cost.charged)} charged`
                      : cost.held > 0
                        ? `${credits(cost.held)} held until it finishes`
                        : final
                          ? 'Not charged'
                          : '—'}
                </td>
              </tr>
              <tr>
                <th scope="row">Created</th>
                <td>{when(job.created_at)}</td>
              </tr>
              <tr>
                <th scope="row">Started</th>
                <td>{when(job.started_at)}</td>
              </tr>
              <tr>
                <th scope="row">Finished</th>
                <td>{when(job.finished_at)}</td>
              </tr>
              <tr>
                <th scope="row">Waiting in the queue</th>
                <td>{seconds(t.queue_wait_seconds)}</td>
              </tr>
              <tr>
                <th scope="row">Fetching models</th>
                <td>{seconds(t.model_fetch_seconds)}</td>
              </tr>
              <tr>
                <th scope="row">Running</th>
                <td>{seconds(t.run_seconds)}</td>
              </tr>
              <tr>
                <th scope="row">Total</th>
                <td>{seconds(t.total_seconds)}</td>
              </tr>
              <tr>
                <th scope="row">Attempt</th>
                <td>
                  {job.attempt} of {job.max_attempts}
                </td>
              </tr>
            </tbody>
          </table>
        </section>
        <section aria-labelledby="loras-title">
          <h2 id="loras-title">LoRAs applied</h2>
          {job.applied_loras.length === 0 ? (
            <p class="muted" data-testid="applied-loras">
              None.
            </p>
          ) : (
            <ul data-testid="applied-loras">
              {job.applied_loras.map((l, i) => (
                <li key={i}>
                  <strong>{String(l.slug ?? '?')}</strong>
                  {l.weight !== undefined && ` ×${String(l.weight)}`}
                  {typeof l.matched_text === 'string' && l.matched_text && <span class="hint"> (“{l.matched_text}”)</span>}
                </li>
              ))}
            </ul>
          )}
          {job.warnings.length > 0 && (
            <>
              <h3>Warnings</h3>
              <ul>
                {job.warnings.map((w) => (
                  <li key={w}>{w}</li>
                ))}
              </ul>
            </>
          )}
        </section>
      </div>
    </section>
  );
}

function RunDetail({ id }: { id: string }) {
  const [run, error] = usePolled<Run>(
    () => must(api.GET('/v1/runs/{run_id}', { params: { path: { run_id: id } } })),
    (r) => !RUN_FINAL.has(r.state),
    [id],
  );
  const [rerunError, setRerunError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  if (!run)
    return error ? (
      <section class="history">
        <PageTitle>Run</PageTitle>
        <ErrorMessage error={error} />
        <a href="/history">Back to history</a>
      </section>
    ) : (
      <Loading what="Loading the run" />
    );

  async function rerun() {
    setBusy(true);
    setRerunError(null);
    try {
      const body = run!.pipeline_id
        ? { pipeline_id: run!.pipeline_id, version: run!.pipeline_version, inputs: run!.inputs }
        : { pipeline: run!.pipeline, inputs: run!.inputs };
      const next = await must(api.POST('/v1/runs', { body }));
      void refreshBalance();
      navigate(`/history/run/${next.id}`);
    } catch (e) {
      setRerunError(e);
    } finally {
      setBusy(false);
    }
  }

  const final = RUN_FINAL.has(run.state);
  return (
    <section class="history detail">
      <p class="crumbs">
        <a href="/history">History</a>
      </p>
      <PageTitle>{`Run ${run.id.slice(0, 8)}`}</PageTitle>
      <p>
        <span class={badge(run.state)}>{run.state.toLowerCase()}</span>{' '}
        {final ? `${credits(run.captured)} charged` : `up to ${credits(run.quote)} held`}
        {!final && <span class="hint"> · updating live</span>}
      </p>
      {run.error && <ErrorMessage error={new Error(run.error)} />}
      <div class="row actions">
        <button type="button" onClick={() => void rerun()} disabled={busy}>
          Rerun
        </button>
        <a class="button secondary" href={`/sandbox?from_run=${encodeURIComponent(run.id)}`}>
          Tweak in the canvas
        </a>
      </div>
      <ErrorMessage error={rerunError} />
      <h2>Steps</h2>
      <div class="table-wrap">
        <table>
          <thead>
            <tr>
              <th scope="col">Step</th>
              <th scope="col">Tool</th>
              <th scope="col">State</th>
              <th scope="col">Cost</th>
              <th scope="col">Time</th>
              <th scope="col">Outputs</th>
            </tr>
          </thead>
          <tbody>
            {run.steps.map((s) => (
              <tr key={s.id}>
                <td>{s.id}</td>
                <td>
                  <code>{s.tool}</code>
                </td>
                <td>
                  <span class={badge(s.state)}>{s.state.toLowerCase()}</span>
                  {s.error && <p class="field-error">{s.error}</p>}
                </td>
                <td>{credits(s.cost)}</td>
                <td>{s.seconds != null ? `${s.seconds.toFixed(2)} s` : '—'}</td>
                <td>
                  <ul class="step-outputs">
                    {s.jobs.flatMap((j) =>
                      j.outputs
                        .filter((o) => isImage(o.content_type))
                        .map((o) => (
                          <li key={o.id}>
                            <a href={`/history/job/${j.id}`}>
                              <OutputImage url={o.url} alt={`Step ${s.id} output ${j.item + 1}`} />
                            </a>
                          </li>
                        )),
                    )}
                  </ul>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <h2>Inputs</h2>
      <pre>{JSON.stringify(run.inputs, null, 2)}</pre>
      <p class="hint">
        Created {when(run.created_at)} · started {when(run.started_at)} · finished {when(run.finished_at)} · attempt {run.attempt}
      </p>
    </section>
  );
}
