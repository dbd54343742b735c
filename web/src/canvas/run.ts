// Running (part of) the canvas as a pipeline: validate, quote, create the run, then follow its
// events and fill in each node's status and outputs. The caller gets plain callbacks, so that
// the page decides how to show them.
import { api, must, type Schemas } from '../api/client';
import { streamEvents } from '../api/sse';
import { costTotals } from './model';
import type { PipelineWire } from './types';

export interface NodeStatus {
  state: string; // queued | pending | running | completed | failed | skipped | cancelled
  progress: number; // 0..1
  images: string[]; // output URLs (/v1/jobs/{id}/outputs/{oid})
  text?: string;
  error?: string;
}

export interface RunCallbacks {
  quoted(costs: Record<string, number>, total: number, charged: boolean): void;
  started(runId: string): void;
  status(step: string, patch: Partial<NodeStatus>): void;
  finished(state: string, error: string | null): void;
}

type RunOut = Schemas['RunOut'];

/** Statuses from the run as GET /v1/runs/{id} has it: outputs and errors included. */
export function statusesOf(run: RunOut): Record<string, NodeStatus> {
  const out: Record<string, NodeStatus> = {};
  for (const step of run.steps) {
    const jobs = step.jobs;
    const images = jobs.flatMap((j) => j.outputs.filter((o) => o.content_type.startsWith('image/')).map((o) => o.url));
    // value outputs (text); images are references ("output:<id>") shown from the job outputs
    const texts = Object.values(step.outputs ?? {}).filter(
      (v): v is string => typeof v === 'string' && !v.startsWith('output:') && !v.startsWith('upload:'),
    );
    const state = step.state.toLowerCase();
    const progress = jobs.length ? jobs.reduce((a, j) => a + j.progress, 0) / jobs.length : 0;
    out[step.id] = {
      state,
      progress: state === 'completed' ? 1 : progress,
      images,
      ...(texts.length ? { text: texts.join('\n') } : {}),
      ...(step.error ? { error: step.error } : {}),
    };
  }
  return out;
}

const TERMINAL = new Set(['completed', 'failed', 'cancelled']);

export async function runPipeline(wire: PipelineWire, cb: RunCallbacks, signal: AbortSignal): Promise<void> {
  const pipeline = wire as unknown as Record<string, unknown>;
  await must(api.POST('/v1/pipelines/validate', { body: { pipeline } }));
  const quote = await must(api.POST('/v1/quotes', { body: { pipeline } }));
  const { byNode, total } = costTotals(quote.steps ?? []);
  cb.quoted(byNode, quote.total ?? total, quote.charged);
  const run = await must(
    api.POST('/v1/runs', {
      body: { pipeline },
      // a fresh key per click: a retried request answers the same run instead of a second one
      params: { header: { 'Idempotency-Key': crypto.randomUUID() } },
    }),
  );
  cb.started(run.id);
  for (const [step, s] of Object.entries(statusesOf(run))) cb.status(step, s);
  const refresh = async () => {
    const now = await must(api.GET('/v1/runs/{run_id}', { params: { path: { run_id: run.id } } }));
    for (const [step, s] of Object.entries(statusesOf(now))) cb.status(step, s);
    return now;
  };
  let final: { state: string; error: string | null } | null = null;
  // A step's own events say when it ended; its jobs' events (sampled, and possibly later) only
  // move its progress, never its state back from an end.
  const ended = new Set<string>();
  await streamEvents(
    `/v1/runs/${encodeURIComponent(run.id)}/events`,
    (ev) => {
      let data: Record<string, unknown>;
      try {
        data = JSON.parse(ev.data) as Record<string, unknown>;
      } catch {
        return;
      }
      // the API's states are upper case (COMPLETED); the canvas shows them in lower case
      const state = String(data.state ?? '').toLowerCase();
      if (ev.event === 'step' && typeof data.step === 'string') {
        cb.status(data.step, {
          state,
          ...(typeof data.error === 'string' ? { error: data.error } : {}),
        });
        if (TERMINAL.has(state) || state === 'skipped') ended.add(data.step);
        if (state === 'completed') void refresh().catch(() => undefined);
      } else if (ev.event === 'job' && typeof data.step === 'string') {
        const progress = typeof data.progress === 'number' ? data.progress : 0;
        if (ended.has(data.step)) return;
        cb.status(data.step, { state: state === 'completed' ? 'running' : state, progress });
      } else if (ev.event === 'state' && TERMINAL.has(state)) {
        final = { state, error: typeof data.error === 'string' ? data.error : null };
        return 'stop';
      }
    },
    signal,
  );
  const last = await refresh().catch(() => null);
  const f = final as { state: string; error: string | null } | null;
  cb.finished(f?.state ?? last?.state.toLowerCase() ?? 'unknown', f?.error ?? last?.error ?? null);
}
