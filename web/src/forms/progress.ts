// What the progress bar and its text line say, folded from a job's server-sent events (GET
// /v1/jobs/{id}/events): `state` events (QUEUED, ASSIGNED, RUNNING, then a final one) and
// `progress` events ({progress 0..1, stage, value, max}: sampling steps, or a model download in
// bytes). Pure, so that each event's effect is tested without a server.

export type JobState =
  | 'QUEUED'
  | 'ASSIGNED'
  | 'RUNNING'
  | 'COMPLETED'
  | 'FAILED'
  | 'CANCELLED'
  | 'EXPIRED'
  | string;

export const FINAL_STATES = new Set(['COMPLETED', 'FAILED', 'CANCELLED', 'EXPIRED']);

export interface ProgressView {
  state: JobState;
  /** 0..1 for the bar; null while nothing is measurable (queued, starting): an indeterminate bar */
  value: number | null;
  text: string;
  done: boolean;
  failed: boolean;
  error: string | null;
  outputs: string[];
}

export const initialProgress: ProgressView = {
  state: 'QUEUED',
  value: null,
  text: 'Submitting…',
  done: false,
  failed: false,
  error: null,
  outputs: [],
};

type Data = Record<string, unknown>;

function num(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['kB', 'MB', 'GB', 'TB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

function queuedText(d: Data): string {
  const position = num(d.queue_position) ?? num(d.position);
  if (position === undefined) return 'Queued, waiting for a GPU';
  return position <= 1 ? 'Queued: next in line' : `Queued: ${position} in line`;
}

/** The view after one event. Unknown events and stages leave the bar as it was. */
export function applyEvent(view: ProgressView, event: string, data: Data): ProgressView {
  if (event === 'state') {
    const state = String(data.state ?? view.state);
    switch (state) {
      case 'QUEUED':
        return { ...view, state, value: view.value && view.value > 0 ? view.value : null, text: queuedText(data) };
      case 'ASSIGNED':
        return { ...view, state, text: 'Assigned to a GPU, starting' };
      case 'RUNNING':
        return { ...view, state, text: view.value ? view.text : 'Running: loading the model' };
      case 'COMPLETED':
        return {
          ...view,
          state,
          value: 1,
          text: 'Done',
          done: true,
          outputs: Array.isArray(data.outputs) ? data.outputs.map(String) : view.outputs,
        };
      default: {
        const error = typeof data.error === 'string' ? data.error : typeof data.reason === 'string' ? data.reason : null;
        const failed = FINAL_STATES.has(state);
        return {
          ...view,
          state,
          text: failed ? `${state.charAt(0)}${state.slice(1).toLowerCase()}${error ? `: ${error}` : ''}` : view.text,
          done: failed,
          failed,
          error,
        };
      }
    }
  }
  if (event === 'progress') {
    const stage = typeof data.stage === 'string' ? data.stage : 'sampling';
    const value = num(data.value);
    const max = num(data.max);
    const overall = num(data.progress);
    if (/download|fetch/.test(stage)) {
      const fraction = value !== undefined && max ? value / max : overall;
      const amount = value !== undefined && max ? `${formatBytes(value)} of ${formatBytes(max)}` : '';
      return {
        ...view,
        value: fraction ?? view.value,
        text: `Downloading the model${amount ? `: ${amount}` : ''}`,
      };
    }
    if (stage === 'queue' || stage === 'queued') return { ...view, text: queuedText(data) };
    const text =
      value !== undefined && max !== undefined ? `Sampling: step ${value} of ${max}` : `Running: ${stage}`;
    return { ...view, state: 'RUNNING', value: overall ?? (value !== undefined && max ? value / max : view.value), text };
  }
  return view;
}

/** The bar's percentage text, for its accessible value. */
export function percent(value: number | null): string {
  return value === null ? '' : `${Math.round(value * 100)}%`;
}
