import { describe, expect, it } from 'vitest';
import {
  ancestors,
  forks,
  keyInputs,
  mergeItems,
  nextParent,
  parseRunProgress,
  planCards,
  progressLine,
  ROOT,
  select,
  shown,
  thread,
  type Item,
  type PlanItem,
  type UserMessage,
} from './model';

let seq = 0;
const base = (id: string, parent: string | null) => ({ id, seq: ++seq, parent_id: parent, created_at: '2026-01-01T00:00:00Z' });

const greeting = (id: string): Item =>
  ({ ...base(id, null), type: 'agent_message', text: 'Hello', kind: 'greeting', suggestions: [] }) as unknown as Item;
const user = (id: string, parent: string | null, text = id): UserMessage =>
  ({ ...base(id, parent), type: 'user_message', text, images: [] }) as UserMessage;
const agent = (id: string, parent: string, kind = 'answer'): Item =>
  ({ ...base(id, parent), type: 'agent_message', text: id, kind, suggestions: [] }) as unknown as Item;
const plan = (id: string, parent: string, total = 120): PlanItem =>
  ({
    ...base(id, parent),
    type: 'plan',
    pipeline: { inputs: {}, steps: {} },
    steps: [
      { id: 'gen', tool: 'sdxl-txt2img', inputs: { prompt: 'a watercolor fox in the snow', seed: 7 } },
      { id: 'big', tool: 'upscale-4x', inputs: { image: { from: 'gen', output: 'image' } } },
    ],
    quote: { total, charged: true, steps: [] },
    explanation: 'x',
    chain: ['sdxl-txt2img', 'upscale-4x'],
    params: {},
    intent: 'chain',
    state: 'proposed',
    run_id: null,
    approvable: true,
    balance: 1000,
    shortfall: 0,
    deposit_url: null,
  }) as unknown as PlanItem;
const approval = (id: string, planId: string, decision: 'approved' | 'rejected', runId: string | null): Item =>
  ({ ...base(id, planId), type: 'approval', plan_id: planId, decision, auto: false, run_id: runId }) as Item;
const run = (id: string, parent: string, planId: string, runId: string, state = 'PENDING'): Item =>
  ({ ...base(id, parent), type: 'run', plan_id: planId, run_id: runId, state }) as Item;
const result = (id: string, parent: string, planId: string, runId: string): Item =>
  ({
    ...base(id, parent),
    type: 'result',
    plan_id: planId,
    run_id: runId,
    outputs: [{ step: 'big', port: 'image', ref: 'output:o1', url: '/v1/jobs/j/outputs/o1', content_type: 'image/png' }],
    values: {},
  }) as Item;
const error = (id: string, parent: string, planId: string | null): Item =>
  ({ ...base(id, parent), type: 'error', message: 'the run failed', code: 'run_failed', errors: [], plan_id: planId, run_id: null }) as Item;

const texts = (turns: ReturnType<typeof thread>) => turns.map((t) => t.message?.id ?? ROOT);

/** greeting → u1 → plan p1 (approved: a1 → r1 → res1) → u2 → agent m2; u2b answers res1 too. */
function story(): Item[] {
  seq = 0;
  return [
    greeting('g'),
    user('u1', 'g', 'a watercolor fox in the snow, then make it 4x bigger'),
    plan('p1', 'u1'),
    approval('a1', 'p1', 'approved', 'run1'),
    run('r1', 'a1', 'p1', 'run1'),
    result('res1', 'r1', 'p1', 'run1'),
    user('u2', 'res1', 'more vibrant'),
    agent('m2', 'u2'),
    user('u2b', 'res1', 'same but at night'),
    agent('m2b', 'u2b'),
  ];
}

describe('thread', () => {
  it('follows the branch to the leaf, each user message a turn with what followed it', () => {
    const items = story();
    const turns = thread(items, {}, 'm2');
    expect(texts(turns)).toEqual([ROOT, 'u1', 'u2']);
    expect(turns[0].items.map((i) => i.id)).toEqual(['g']);
    expect(turns[1].items.map((i) => i.id)).toEqual(['p1', 'a1', 'r1', 'res1']);
    expect(turns[2].items.map((i) => i.id)).toEqual(['m2']);
    expect(turns[2].siblings.map((s) => s.id)).toEqual(['u2', 'u2b']);
  });

  it('shows the newest branch when the leaf is on none of them, and the chosen one when selected', () => {
    const items = story();
    expect(texts(thread(items, {}, null))).toEqual([ROOT, 'u1', 'u2b']);
    expect(texts(thread(items, { u1: 'u2' }, 'm2b'))).toEqual([ROOT, 'u1', 'u2']);
    // a selection naming a message that is not a sibling there is ignored
    expect(texts(thread(items, { u1: 'u1' }, 'm2b'))).toEqual([ROOT, 'u1', 'u2b']);
  });

  it('an edit of the first message branches at the root and hides the other branch below it', () => {
    const items = [...story(), user('u1b', 'g', 'a red fox'), agent('m1b', 'u1b')];
    const turns = thread(items, {}, 'm1b');
    expect(texts(turns)).toEqual([ROOT, 'u1b']);
    expect(turns[1].siblings.map((s) => s.id)).toEqual(['u1', 'u1b']);
    expect(texts(thread(items, { [ROOT]: 'u1' }, 'm1b'))).toEqual([ROOT, 'u1', 'u2b']);
  });

  it('a user message posted under a plan and one under its later result are siblings', () => {
    seq = 0;
    const items = [
      greeting('g'),
      user('u1', 'g'),
      plan('p1', 'u1'),
      user('early', 'p1'),
      approval('a1', 'p1', 'approved', 'run1'),
      run('r1', 'a1', 'p1', 'run1'),
      result('res1', 'r1', 'p1', 'run1'),
      user('late', 'res1'),
    ];
    const turns = thread(items, {}, 'late');
    expect(texts(turns)).toEqual([ROOT, 'u1', 'late']);
    expect(turns[2].siblings.map((s) => s.id)).toEqual(['early', 'late']);
  });

  it('is empty but for the opening when there are no items', () => {
    expect(thread([], {}, null)).toEqual([{ fork: ROOT, message: null, siblings: [], items: [] }]);
  });
});

describe('next message and selection', () => {
  it('answers the newest item of the last turn', () => {
    const items = story();
    expect(nextParent(thread(items, {}, 'm2'))).toBe('m2');
    expect(nextParent(thread(items.slice(0, 6), {}, 'res1'))).toBe('res1');
    seq = 0;
    expect(nextParent(thread([greeting('g'), user('u', 'g')], {}, 'u'))).toBe('u');
    expect(nextParent(thread([], {}, null))).toBeNull();
  });

  it('selects a posted message at its fork', () => {
    const items = story();
    const edited = user('u2c', 'res1');
    expect(select(items, {}, edited)).toEqual({ u1: 'u2c' });
    const root = user('u1c', 'g');
    expect(select(items, { u1: 'u2' }, root)).toEqual({ u1: 'u2', [ROOT]: 'u1c' });
  });

  it('finds each item’s fork and a leaf’s ancestors', () => {
    const f = forks(story());
    expect(f.get('g')).toBe(ROOT);
    expect(f.get('u1')).toBe(ROOT);
    expect(f.get('res1')).toBe('u1');
    expect(f.get('u2b')).toBe('u1');
    expect(f.get('m2b')).toBe('u2b');
    expect([...ancestors(story(), 'm2')]).toEqual(['m2', 'u2', 'res1', 'r1', 'a1', 'p1', 'u1', 'g']);
  });

  it('merges items once each, in seq order', () => {
    const items = story();
    const merged = mergeItems(items.slice(0, 3), [items[4], items[2], items[3]]);
    expect(merged.map((i) => i.id)).toEqual(['g', 'u1', 'p1', 'a1', 'r1']);
  });
});

describe('plan cards', () => {
  it('fold the approval, run and result into the plan', () => {
    const items = story();
    const cards = planCards(items);
    const card = cards.get('p1')!;
    expect(card.state).toBe('approved');
    expect(card.runId).toBe('run1');
    expect(card.result?.id).toBe('res1');
    expect(shown(thread(items, {}, 'm2')[1].items, cards).map((i) => i.id)).toEqual(['p1']);
  });

  it('a proposed plan stays proposed; a rejection shows; a run error goes in the card', () => {
    seq = 0;
    const items = [
      greeting('g'),
      user('u1', 'g'),
      plan('p1', 'u1'),
      user('u2', 'p1'),
      plan('p2', 'u2'),
      approval('a2', 'p2', 'rejected', null),
      agent('m2', 'a2'),
      user('u3', 'm2'),
      plan('p3', 'u3'),
      approval('a3', 'p3', 'approved', 'run3'),
      run('r3', 'a3', 'p3', 'run3'),
      error('e3', 'r3', 'p3'),
      error('e4', 'r3', null),
    ];
    const cards = planCards(items);
    expect(cards.get('p1')!.state).toBe('proposed');
    expect(cards.get('p2')!.state).toBe('rejected');
    expect(cards.get('p3')!.error?.id).toBe('e3');
    const line = progressLine(cards.get('p3')!, undefined);
    expect(line.failed).toBe(true);
    expect(line.done).toBe(true);
    expect(shown(items, cards).map((i) => i.id)).toEqual(['g', 'u1', 'p1', 'u2', 'p2', 'm2', 'u3', 'p3', 'e4']);
  });
});

describe('run progress', () => {
  it('reads a run event and says which step runs and how far the plan is', () => {
    seq = 0;
    const items = [greeting('g'), user('u1', 'g'), plan('p1', 'u1'), approval('a1', 'p1', 'approved', 'run1'), run('r1', 'a1', 'p1', 'run1')];
    const card = planCards(items).get('p1')!;
    expect(progressLine(card, undefined)).toEqual({ value: null, text: 'Starting…', done: false, failed: false });
    const p = parseRunProgress({
      run_id: 'run1',
      plan_id: 'p1',
      state: 'RUNNING',
      steps: [
        { id: 'gen', tool: 'sdxl-txt2img', state: 'COMPLETED', progress: 1 },
        { id: 'big', tool: 'upscale-4x', state: 'RUNNING', progress: 0.5 },
      ],
    });
    expect(p?.steps).toHaveLength(2);
    const line = progressLine(card, p!);
    expect(line.value).toBeCloseTo(0.75);
    expect(line.text).toBe('Step 2 of 2 · upscale-4x: running 50%');
    expect(line.done).toBe(false);
    const finished = planCards([...items, result('res1', 'r1', 'p1', 'run1')]).get('p1')!;
    expect(progressLine(finished, p!)).toEqual({ value: 1, text: 'Done', done: true, failed: false });
  });

  it('refuses malformed events and clamps progress', () => {
    expect(parseRunProgress(null)).toBeNull();
    expect(parseRunProgress({ run_id: 1, state: 'RUNNING', steps: [] })).toBeNull();
    expect(parseRunProgress({ run_id: 'r', state: 'RUNNING', steps: [{ id: 's', tool: 't', state: 'RUNNING', progress: 7 }] })?.steps[0].progress).toBe(1);
  });
});

describe('key inputs', () => {
  it('names the prompt and parameters, and says where wired and attached images come from', () => {
    expect(keyInputs({ prompt: 'a fox', seed: 7, empty: '' })).toEqual([
      ['prompt', 'a fox'],
      ['seed', '7'],
    ]);
    expect(keyInputs({ image: { from: 'gen', output: 'image' } })).toEqual([['image', 'the image of step gen']]);
    expect(keyInputs({ image: 'upload:abc', other: 'output:x' })).toEqual([
      ['image', 'your attachment'],
      ['other', 'an earlier result'],
    ]);
  });
});
