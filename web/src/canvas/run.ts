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
    const texts = Object.values(step.outputs ?? {}).filter((v): v is string => typeof v === 'string');
    const progress = jobs.length ? jobs.reduce((a, j) => a + j.progress, 0) / jobs.length : 0;
    out[step.id] = {
      state: step.state,
      progress: step.state === 'completed' ? 1 : progress,
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
  await streamEvents(
    `/v1/runs/${encodeURIComponent(run.id)}/events`,
    (ev) => {
      let data: Record<string, unknown>;
      try {
        data = JSON.parse(ev.data) as Record<string, unknown>;
      } catch {
        return;
      }
      if (ev.event === 'step' && typeof data.step === 'string') {
        cb.status(data.step, {
          state: String(data.state),
          ...(typeof data.error === 'string' ? { error: data.error } : {}),
        });
        if (data.state === 'completed') void refresh().catch(() => undefined);
      } else if (ev.event === 'job' && typeof data.step === 'string') {
        const state = String(data.state);
        cb.status(data.step, {
          state: state === 'queued' ? 'queued' : state === 'completed' ? 'running' : state,
          progress: typeof data.progress === 'number' ? data.progress : 0,
        });
      } else if (ev.event === 'state' && TERMINAL.has(String(data.state))) {
        final = { state: String(data.state), error: typeof data.error === 'string' ? data.error : null };
        return 'stop';
      }
    },
    signal,
  );
  const ended = await refresh().catch(() => null);
  const f = final as { state: string; error: string | null } | null;
  cb.finished(f?.state ?? ended?.state ?? 'unknown', f?.error ?? ended?.error ?? null);
}
