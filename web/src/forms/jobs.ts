// The job calls the generate and history pages share. Jobs are read as text and parsed keeping
// seeds exact (the server picks 63-bit seeds; JSON.parse would round them), and request bodies
// are written the same way, so that a tweak or a rerun sends the very seed the job used.
import { api, must, type Schemas } from '../api/client';
import { bigIntJson, parseKeepingSeeds } from './schema';

export type Job = Schemas['JobOut'];
export type Quote = Schemas['QuoteOut'];

export async function getJob(id: string): Promise<Job> {
  const text = await must(api.GET('/v1/jobs/{job_id}', { params: { path: { job_id: id } }, parseAs: 'text' }));
  return parseKeepingSeeds(text as unknown as string) as Job;
}

export async function listJobs(state?: string, limit = 100): Promise<Job[]> {
  const text = await must(
    api.GET('/v1/jobs', {
      params: { query: { limit, ...(state ? { state: state as Schemas['JobState'] } : {}) } },
      parseAs: 'text',
    }),
  );
  return (parseKeepingSeeds(text as unknown as string) as Schemas['JobList']).jobs;
}

function idempotencyKey(): string {
  return typeof crypto.randomUUID === 'function'
    ? crypto.randomUUID()
    : Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, '0')).join('');
}

/** POST /v1/jobs with an Idempotency-Key: a retried click cannot queue (and charge) twice. */
export async function submitJob(tool: string, inputs: Record<string, unknown>): Promise<Job> {
  const text = await must(
    api.POST('/v1/jobs', {
      body: { tool, inputs },
      headers: { 'Idempotency-Key': idempotencyKey() },
      bodySerializer: bigIntJson,
      parseAs: 'text',
    }),
  );
  return parseKeepingSeeds(text as unknown as string) as Job;
}

export function quote(tool: string, inputs: Record<string, unknown>): Promise<Quote> {
  return must(api.POST('/v1/quotes', { body: { tool, inputs }, bodySerializer: bigIntJson }));
}

export const isImage = (contentType: string) => contentType.startsWith('image/');
