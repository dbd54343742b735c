// The chat page's model, apart from rendering: a conversation's items (every item of every
// branch, each with its parent) into the thread a person reads, the branches they can switch
// between, plan cards with their decision, run and result, and the progress a run's `run`
// events report. Pure functions, tested in model.test.ts.
import type { Schemas } from '../api/client';

export type UserMessage = Schemas['UserMessageItem'];
export type AgentMessage = Schemas['AgentMessageItem'];
export type PlanItem = Schemas['PlanItem'];
export type ApprovalItem = Schemas['ApprovalItem'];
export type RunItem = Schemas['RunItem'];
export type ResultItem = Schemas['ResultItem'];
export type ErrorItem = Schemas['ErrorItem'];
export type Item = UserMessage | AgentMessage | PlanItem | ApprovalItem | RunItem | ResultItem | ErrorItem;

/** The key of the fork above the first user message. */
export const ROOT = 'root';

export const FINAL_RUN_STATES = new Set(['COMPLETED', 'FAILED', 'CANCELLED']);

/** Items by id, the newest copy winning, in `seq` order (the POST reply and the event stream
 * both deliver an item: it is kept once). */
export function mergeItems(items: readonly Item[], more: readonly Item[]): Item[] {
  const byId = new Map<string, Item>();
  for (const i of items) byId.set(i.id, i);
  for (const i of more) byId.set(i.id, i);
  return [...byId.values()].sort((a, b) => a.seq - b.seq);
}

export function lastSeq(items: readonly Item[]): number {
  return items.reduce((m, i) => Math.max(m, i.seq), 0);
}

/** The nearest user message above each item (ROOT when none): the fork the item belongs to. */
export function forks(items: readonly Item[]): Map<string, string> {
  const byId = new Map(items.map((i) => [i.id, i]));
  const memo = new Map<string, string>();
  const forkOf = (item: Item): string => {
    // up iteratively (a long conversation must not overflow the stack), until a user message
    const chain: Item[] = [];
    const seen = new Set<string>();
    let at: Item = item;
    let found = ROOT;
    for (;;) {
      const cached = memo.get(at.id);
      if (cached !== undefined) {
        found = cached;
        break;
      }
      if (seen.has(at.id)) break; // a cycle cannot come from the server; never loop on one
      seen.add(at.id);
      chain.push(at);
      const parent = at.parent_id ? byId.get(at.parent_id) : undefined;
      if (!parent) break;
      if (parent.type === 'user_message') {
        found = parent.id;
        break;
      }
      at = parent;
    }
    for (const c of chain) memo.set(c.id, found);
    return found;
  };
  for (const i of items) forkOf(i);
  return memo;
}

/** The ids from `id` up to the root. */
export function ancestors(items: readonly Item[], id: string | null | undefined): Set<string> {
  const byId = new Map(items.map((i) => [i.id, i]));
  const out = new Set<string>();
  let at = id ? byId.get(id) : undefined;
  while (at && !out.has(at.id)) {
    out.add(at.id);
    at = at.parent_id ? byId.get(at.parent_id) : undefined;
  }
  return out;
}

/** One turn of the thread: the user's message (null for the opening: the greeting) and what
 * followed it, with the sibling messages it can be switched for. */
export interface Turn {
  fork: string;
  message: UserMessage | null;
  /** The user messages that answer the same point of the conversation, oldest first (this one
   * among them); more than one: the turn has branches. */
  siblings: UserMessage[];
  /** What followed the message (agent messages, plans, approvals, runs, results, errors), by seq. */
  items: Item[];
}

/** Which message a fork shows, when the person chose one: fork key → user message id. */
export type Selection = Readonly<Record<string, string>>;

/** The thread a person reads: from the greeting down, at each fork the message the selection
 * names, else the one on the way to `leafId` (the server's current branch), else the newest. */
export function thread(items: readonly Item[], selection: Selection, leafId: string | null | undefined): Turn[] {
  const forkOf = forks(items);
  const candidates = new Map<string, UserMessage[]>();
  const followers = new Map<string, Item[]>();
  for (const i of items) {
    const f = forkOf.get(i.id) ?? ROOT;
    if (i.type === 'user_message') candidates.set(f, [...(candidates.get(f) ?? []), i]);
    else followers.set(f, [...(followers.get(f) ?? []), i]);
  }
  const onLeafPath = ancestors(items, leafId);
  const bySeq = (a: Item, b: Item) => a.seq - b.seq;
  const turns: Turn[] = [];
  let fork = ROOT;
  let message: UserMessage | null = null;
  let siblings: UserMessage[] = [];
  for (let guard = 0; guard <= items.length; guard++) {
    turns.push({ fork, message, siblings, items: [...(followers.get(message?.id ?? ROOT) ?? [])].sort(bySeq) });
    const key: string = message?.id ?? ROOT;
    const next: UserMessage[] = [...(candidates.get(key) ?? [])].sort(bySeq);
    if (!next.length) break;
    const chosen: UserMessage =
      next.find((m) => m.id === selection[key]) ?? next.find((m) => onLeafPath.has(m.id)) ?? next[next.length - 1];
    fork = key;
    message = chosen;
    siblings = next;
  }
  return turns;
}

/** Where the next message goes: the newest item of the thread's last turn (its parent_id). */
export function nextParent(turns: readonly Turn[]): string | null {
  const last = turns[turns.length - 1];
  if (!last) return null;
  const newest = last.items.reduce<Item | null>((m, i) => (!m || i.seq > m.seq ? i : m), null);
  return newest?.id ?? last.message?.id ?? null;
}

/** The selection after a message was posted (or a sibling chosen): its fork shows it. */
export function select(items: readonly Item[], selection: Selection, message: UserMessage): Selection {
  const fork = forks(mergeItems(items, [message])).get(message.id) ?? ROOT;
  return { ...selection, [fork]: message.id };
}

// -- plans ------------------------------------------------------------------------------------------

export interface StepProgress {
  id: string;
  tool: string;
  state: string;
  progress: number;
}

/** A `run` event: a run the conversation started, as it progresses. */
export interface RunProgress {
  run_id: string;
  plan_id: string | null;
  state: string;
  steps: StepProgress[];
}

export function parseRunProgress(data: unknown): RunProgress | null {
  if (!data || typeof data !== 'object') return null;
  const d = data as Record<string, unknown>;
  if (typeof d.run_id !== 'string' || typeof d.state !== 'string' || !Array.isArray(d.steps)) return null;
  const steps: StepProgress[] = [];
  for (const s of d.steps as unknown[]) {
    if (!s || typeof s !== 'object') continue;
    const x = s as Record<string, unknown>;
    const p = typeof x.progress === 'number' && Number.isFinite(x.progress) ? Math.min(1, Math.max(0, x.progress)) : 0;
    steps.push({ id: String(x.id ?? ''), tool: String(x.tool ?? ''), state: String(x.state ?? ''), progress: p });
  }
  return { run_id: d.run_id, plan_id: typeof d.plan_id === 'string' ? d.plan_id : null, state: d.state, steps };
}

/** The plan as a card shows it: what was decided, its run, its result or error. */
export interface PlanCard {
  plan: PlanItem;
  state: 'proposed' | 'approved' | 'rejected';
  runId: string | null;
  runState: string | null;
  result: ResultItem | null;
  error: ErrorItem | null;
  auto: boolean;
}

/** Every plan's card, by plan id. The plan item itself is not re-sent when it is decided: its
 * approval item (and run item) says what happened. */
export function planCards(items: readonly Item[]): Map<string, PlanCard> {
  const cards = new Map<string, PlanCard>();
  for (const i of items)
    if (i.type === 'plan')
      cards.set(i.id, {
        plan: i,
        state: i.state,
        runId: i.run_id,
        runState: null,
        result: null,
        error: null,
        auto: false,
      });
  for (const i of [...items].sort((a, b) => a.seq - b.seq)) {
    if (i.type === 'approval') {
      const c = cards.get(i.plan_id);
      if (!c) continue;
      c.state = i.decision;
      c.auto = i.auto;
      if (i.run_id) c.runId = i.run_id;
    } else if (i.type === 'run') {
      const c = cards.get(i.plan_id);
      if (!c) continue;
      c.state = 'approved';
      c.runId = i.run_id;
      c.runState = i.state;
    } else if (i.type === 'result') {
      const c = cards.get(i.plan_id);
      if (!c) continue;
      c.result = i;
      c.runState = 'COMPLETED';
    } else if (i.type === 'error' && i.plan_id) {
      const c = cards.get(i.plan_id);
      if (c) c.error = i;
    }
  }
  return cards;
}

/** The items a thread shows on their own: approvals, runs and a plan's results and errors are
 * shown inside the plan's card. */
export function shown(items: readonly Item[], cards: ReadonlyMap<string, PlanCard>): Item[] {
  return items.filter((i) => {
    if (i.type === 'approval' || i.type === 'run') return !cards.has(i.plan_id);
    if (i.type === 'result') return !cards.has(i.plan_id);
    if (i.type === 'error') return !(i.plan_id && cards.has(i.plan_id));
    return true;
  });
}

export interface ProgressLine {
  /** 0..1, or null while nothing is measurable yet */
  value: number | null;
  text: string;
  done: boolean;
  failed: boolean;
}

const STEP_WORDS: Record<string, string> = {
  PENDING: 'waiting',
  RUNNING: 'running',
  COMPLETED: 'done',
  FAILED: 'failed',
  SKIPPED: 'skipped',
  CANCELLED: 'cancelled',
};

/** What the card's progress bar and line say, from the latest `run` event and the run item's state. */
export function progressLine(card: PlanCard, progress: RunProgress | undefined): ProgressLine {
  const state = card.result ? 'COMPLETED' : progress?.state ?? card.runState ?? 'PENDING';
  const failed = state === 'FAILED' || state === 'CANCELLED' || (card.error !== null && !card.result);
  const done = FINAL_RUN_STATES.has(state) || card.result !== null || card.error !== null;
  if (card.result || state === 'COMPLETED') return { value: 1, text: 'Done', done: true, failed: false };
  if (failed) return { value: null, text: state === 'CANCELLED' ? 'Cancelled' : 'Failed', done: true, failed: true };
  const steps = progress?.steps ?? [];
  if (!steps.length) return { value: null, text: 'Starting…', done, failed };
  const value = steps.reduce((sum, s) => sum + (s.state === 'COMPLETED' ? 1 : s.progress), 0) / steps.length;
  const current = steps.find((s) => s.state !== 'COMPLETED') ?? steps[steps.length - 1];
  const n = steps.indexOf(current) + 1;
  const word = STEP_WORDS[current.state] ?? current.state.toLowerCase();
  const pct = current.state === 'RUNNING' && current.progress > 0 ? ` ${Math.round(current.progress * 100)}%` : '';
  return { value, text: `Step ${n} of ${steps.length} · ${current.tool}: ${word}${pct}`, done, failed };
}

/** The inputs worth a line on a card: the prompt and the stated parameters, not refs' plumbing. */
export function keyInputs(inputs: Record<string, unknown>): [string, string][] {
  const out: [string, string][] = [];
  for (const [k, v] of Object.entries(inputs)) {
    if (v === null || v === undefined || v === '') continue;
    if (typeof v === 'string') {
      if (v.startsWith('upload:')) out.push([k, 'your attachment']);
      else if (v.startsWith('output:')) out.push([k, 'an earlier result']);
      else out.push([k, v.length > 120 ? `${v.slice(0, 117)}…` : v]);
    } else if (typeof v === 'number' || typeof v === 'boolean') out.push([k, String(v)]);
    else if (typeof v === 'object' && !Array.isArray(v) && typeof (v as { from?: unknown }).from === 'string')
      out.push([k, `the ${String((v as { output?: unknown }).output ?? 'output')} of step ${(v as { from: string }).from}`]);
    else out.push([k, JSON.stringify(v)]);
  }
  return out;
}

/** A new Idempotency-Key for an approval: one per card, so a double click approves once. */
export function idempotencyKey(planId: string): string {
  const random =
    typeof crypto !== 'undefined' && 'randomUUID' in crypto
      ? crypto.randomUUID()
      : `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
  return `chat-approve-${planId}-${random}`;
}
