// The progress bar's text and value through a job's events, as GET /v1/jobs/{id}/events sends them.
import { describe, expect, it } from 'vitest';
import { applyEvent, formatBytes, initialProgress, percent, type ProgressView } from './progress';

const run = (events: [string, Record<string, unknown>][]): ProgressView =>
  events.reduce((view, [event, data]) => applyEvent(view, event, data), initialProgress);

describe('applyEvent', () => {
  it('follows a job from the queue to done (the emulator sends these)', () => {
    const queued = run([['state', { state: 'QUEUED', attempt: 0 }]]);
    expect(queued).toMatchObject({ value: null, text: 'Queued, waiting for a GPU', done: false });
    const assigned = applyEvent(queued, 'state', { state: 'ASSIGNED', instance_id: 'i' });
    expect(assigned.text).toBe('Assigned to a GPU, starting');
    const step = applyEvent(applyEvent(assigned, 'state', { state: 'RUNNING' }), 'progress', {
      progress: 0.228,
      value: 6,
      max: 25,
      stage: 'sampling',
    });
    expect(step).toMatchObject({ value: 0.228, text: 'Sampling: step 6 of 25', state: 'RUNNING' });
    expect(percent(step.value)).toBe('23%');
    const done = applyEvent(step, 'state', { state: 'COMPLETED', outputs: ['o1'] });
    expect(done).toMatchObject({ value: 1, done: true, failed: false, outputs: ['o1'] });
  });

  it('shows a queue position when the server gives one', () => {
    expect(run([['state', { state: 'QUEUED', queue_position: 3 }]]).text).toBe('Queued: 3 in line');
    expect(run([['progress', { stage: 'queue', position: 1 }]]).text).toBe('Queued: next in line');
  });

  it('shows model download bytes', () => {
    const view = run([
      ['state', { state: 'RUNNING' }],
      ['progress', { stage: 'download', value: 512 * 1024 * 1024, max: 2 * 1024 ** 3, progress: 0 }],
    ]);
    expect(view.value).toBe(0.25);
    expect(view.text).toBe('Downloading the model: 512 MB of 2.0 GB');
  });

  it('reports a failure with its reason, and a retry goes back to the queue', () => {
    const failed = run([['state', { state: 'FAILED', error: 'out of memory' }]]);
    expect(failed).toMatchObject({ done: true, failed: true, text: 'Failed: out of memory' });
    const retried = run([
      ['progress', { progress: 0.4, value: 10, max: 25 }],
      ['state', { state: 'QUEUED', trigger: 'RETRY' }],
    ]);
    expect(retried.value).toBe(0.4);
    expect(retried.done).toBe(false);
  });

  it('ignores unknown events', () => {
    expect(applyEvent(initialProgress, 'ping', {})).toBe(initialProgress);
  });
});

describe('formatBytes', () => {
  it('writes sizes readably', () => {
    expect(formatBytes(500)).toBe('500 B');
    expect(formatBytes(10 * 1024 * 1024)).toBe('10 MB');
    expect(formatBytes(6.94 * 1024 ** 3)).toBe('6.9 GB');
  });
});
