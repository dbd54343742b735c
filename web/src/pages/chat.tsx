// Chat: say what you want; the agent (its persona from GET /v1/agent/persona) answers with a plan
// (its steps and price), an answer or a polite refusal. Plans run only when approved (one
// Idempotency-Key per card, so a double click runs once); the run's progress and its results
// arrive on the conversation's event stream and show inside the plan's card. Every user message
// can be edited into a new branch, and the thread switches between sibling branches. The
// conversation model (items → thread, branches, cards, progress) is in chat/model.ts.
import { useEffect, useMemo, useRef, useState } from 'preact/hooks';
import type { PageProps } from '../app';
import { api, ApiError, must, type Schemas } from '../api/client';
import avatarDefault from '../chat/avatar.svg';
import {
  idempotencyKey,
  keyInputs,
  lastSeq,
  mergeItems,
  nextParent,
  parseRunProgress,
  planCards,
  progressLine,
  select,
  shown,
  thread,
  type AgentMessage,
  type ErrorItem,
  type Item,
  type PlanCard,
  type ResultItem,
  type RunProgress,
  type Selection,
  type Turn,
  type UserMessage,
} from '../chat/model';
import { followConversation } from '../chat/stream';
import { uploadImage } from '../forms/fields';
import { isImage } from '../forms/jobs';
import { OutputImage } from '../forms/media';
import { navigate, query } from '../router';
import { account, refreshBalance } from '../session';
import { credits, ErrorMessage, Loading, PageTitle, RequireSignIn, useLoad } from '../ui';
import './chat.css';

type Persona = Schemas['PersonaOut'];
type Summary = Schemas['ConversationSummary'];

const MAX_IMAGES = 4;
/** Local previews of the files uploaded in this page's life: upload ref → blob: URL (there is
 * no GET for an upload; a sent message's attachments show from these, or as a label). */
const PREVIEWS: Record<string, string> = {};

export default function Page(_props: PageProps) {
  return (
    <RequireSignIn>
      <Chat />
    </RequireSignIn>
  );
}

function loadPersona(): Promise<Persona> {
  return must(api.GET('/v1/agent/persona'));
}

async function loadConversations(): Promise<Summary[]> {
  return (await must(api.GET('/v1/conversations', { params: { query: { limit: 100 } } }))).conversations;
}

function Chat() {
  const current = query.value.get('c');
  const [persona] = useLoad(loadPersona);
  const [list, listError, reloadList] = useLoad(loadConversations);
  const [creating, setCreating] = useState(false);
  const [createError, setCreateError] = useState<unknown>(null);

  async function create(): Promise<void> {
    setCreating(true);
    setCreateError(null);
    try {
      const made = await must(api.POST('/v1/conversations', { body: { title: '' } }));
      navigate(`/chat?c=${encodeURIComponent(made.id)}`);
      reloadList();
    } catch (e) {
      setCreateError(e);
    } finally {
      setCreating(false);
    }
  }

  /** The first message of a new conversation: made, said, then opened (which loads both). A
   * message the server refuses leaves the page as it is, with the message to fix, and the
   * conversation made for it is used by the next try. */
  const started = useRef<string | null>(null);
  async function start(text: string, images: string[]): Promise<boolean> {
    if (!started.current) {
      started.current = (await must(api.POST('/v1/conversations', { body: { title: '' } }))).id;
      reloadList();
    }
    const conversationId = started.current;
    await must(
      api.POST('/v1/conversations/{conversation_id}/messages', {
        params: { path: { conversation_id: conversationId } },
        body: { text, images },
      }),
    );
    started.current = null;
    navigate(`/chat?c=${encodeURIComponent(conversationId)}`);
    reloadList();
    return true;
  }

  return (
    <section class="chat">
      <PageTitle>Chat</PageTitle>
      <div class="chat-layout">
        <ConversationList
          list={list}
          error={listError}
          current={current}
          creating={creating}
          onNew={() => void create()}
          onChanged={reloadList}
        />
        <div class="chat-main">
          <ErrorMessage error={createError} />
          {current ? (
            <Conversation key={current} id={current} persona={persona} onChanged={reloadList} />
          ) : (
            <Welcome persona={persona} onStart={start} />
          )}
        </div>
      </div>
    </section>
  );
}

// -- the conversation list --------------------------------------------------------------------------

function ConversationList(props: {
  list: Summary[] | undefined;
  error: unknown;
  current: string | null;
  creating: boolean;
  onNew: () => void;
  onChanged: () => void;
}) {
  return (
    <nav class="chat-list card" aria-label="Conversations">
      <div class="row chat-list-head">
        <h2>Conversations</h2>
        <button type="button" onClick={props.onNew} disabled={props.creating}>
          {props.creating ? 'Starting…' : 'New conversation'}
        </button>
      </div>
      <ErrorMessage error={props.error} />
      {!props.list && !props.error ? (
        <Loading what="Loading your conversations" />
      ) : props.list && props.list.length === 0 ? (
        <p class="hint">None yet: say something to start one.</p>
      ) : (
        <ul>
          {(props.list ?? []).map((c) => (
            <ConversationRow key={c.id} conv={c} current={c.id === props.current} onChanged={props.onChanged} />
          ))}
        </ul>
      )}
    </nav>
  );
}

function ConversationRow({ conv, current, onChanged }: { conv: Summary; current: boolean; onChanged: () => void }) {
  const [mode, setMode] = useState<'view' | 'rename' | 'delete'>('view');
  const [title, setTitle] = useState(conv.title);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const name = conv.title || 'Untitled conversation';

  async function rename(e: Event) {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await must(
        api.PATCH('/v1/conversations/{conversation_id}', {
          params: { path: { conversation_id: conv.id } },
          body: { title: title.trim() },
        }),
      );
      setMode('view');
      onChanged();
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  }

  async function remove() {
    setBusy(true);
    setError(null);
    try {
      await must(api.DELETE('/v1/conversations/{conversation_id}', { params: { path: { conversation_id: conv.id } } }));
      if (current) navigate('/chat', { replace: true });
      onChanged();
    } catch (err) {
      setError(err);
      setBusy(false);
    }
  }

  return (
    <li class={current ? 'current' : undefined} data-testid="conversation-row">
      {mode === 'rename' ? (
        <form class="row" onSubmit={(e) => void rename(e)}>
          <input
            aria-label="New title"
            id={`title-${conv.id}`}
            value={title}
            maxLength={200}
            onInput={(e) => setTitle(e.currentTarget.value)}
            ref={(el) => el?.focus()}
          />
          <button type="submit" disabled={busy}>
            Save
          </button>
          <button type="button" class="secondary" onClick={() => setMode('view')}>
            Cancel
          </button>
        </form>
      ) : (
        <>
          <a href={`/chat?c=${encodeURIComponent(conv.id)}`} aria-current={current ? 'page' : undefined} class="chat-title">
            {name}
          </a>
          {mode === 'delete' ? (
            <span class="row">
              <span class="hint">Delete it?</span>
              <button type="button" class="danger" onClick={() => void remove()} disabled={busy}>
                Delete
              </button>
              <button type="button" class="secondary" onClick={() => setMode('view')}>
                Keep
              </button>
            </span>
          ) : (
            <span class="row row-actions">
              <button
                type="button"
                class="link"
                aria-label={`Rename ${name}`}
                onClick={() => {
                  setTitle(conv.title);
                  setMode('rename');
                }}
              >
                Rename
              </button>
              <button type="button" class="link" aria-label={`Delete ${name}`} onClick={() => setMode('delete')}>
                Delete
              </button>
            </span>
          )}
        </>
      )}
      <ErrorMessage error={error} />
    </li>
  );
}

// -- the persona --------------------------------------------------------------------------------------

/** The operator's avatar where the page's CSP lets an image come from (this origin, data:),
 * else the studio's own (inlined as a data: URL). */
export function avatarSrc(url: string | null | undefined): string {
  if (url && ((url.startsWith('/') && !url.startsWith('//')) || url.startsWith('data:image/'))) return url;
  return avatarDefault;
}

function Avatar({ persona }: { persona: Persona | undefined }) {
  return <img class="avatar" src={avatarSrc(persona?.avatar_url)} alt="" width={36} height={36} />;
}

/** No conversation open: the persona's greeting, and a composer whose first message starts one. */
function Welcome(props: { persona: Persona | undefined; onStart: (text: string, images: string[]) => Promise<boolean> }) {
  const [sending, setSending] = useState(false);
  const [error, setError] = useState<unknown>(null);
  async function send(text: string, images: string[]): Promise<boolean> {
    setSending(true);
    setError(null);
    try {
      return await props.onStart(text, images);
    } catch (e) {
      setError(e);
      return false;
    } finally {
      setSending(false);
    }
  }
  return (
    <>
      <ol class="chat-thread" aria-label="Messages">
        <li class="bubble agent" data-testid="agent-message">
          <Avatar persona={props.persona} />
          <div>
            <p class="who">{props.persona?.name ?? 'The agent'}</p>
            <p class="text">{props.persona?.greeting ?? 'Tell me what you would like to make.'}</p>
          </div>
        </li>
      </ol>
      <Composer sending={sending} error={error} previews={PREVIEWS} onSend={send} />
    </>
  );
}

// -- one conversation -----------------------------------------------------------------------------------

function Conversation({ id, persona, onChanged }: { id: string; persona: Persona | undefined; onChanged: () => void }) {
  const [items, setItems] = useState<Item[]>([]);
  const [loaded, setLoaded] = useState<{ after: number } | null>(null);
  const [loadError, setLoadError] = useState<unknown>(null);
  const [leaf, setLeaf] = useState<string | null>(null);
  const [selection, setSelection] = useState<Selection>({});
  const [progress, setProgress] = useState<Record<string, RunProgress>>({});
  const [connected, setConnected] = useState(true);
  const [sendError, setSendError] = useState<unknown>(null);
  const [sending, setSending] = useState(false);
  const itemsRef = useRef(items);
  itemsRef.current = items;

  useEffect(() => {
    let live = true;
    must(api.GET('/v1/conversations/{conversation_id}', { params: { path: { conversation_id: id } } })).then(
      (conv) => {
        if (!live) return;
        const got = conv.items as Item[];
        setItems(got);
        setLeaf(conv.leaf_id);
        setLoaded({ after: lastSeq(got) });
      },
      (e) => live && setLoadError(e),
    );
    return () => {
      live = false;
    };
  }, [id]);

  // new items and run progress, from the last item loaded on; resumed after a dropped connection
  useEffect(() => {
    if (!loaded) return;
    const abort = new AbortController();
    void followConversation(`/v1/conversations/${encodeURIComponent(id)}/events`, {
      after: loaded.after,
      signal: abort.signal,
      onConnected: setConnected,
      onEvent: (ev) => {
        let data: unknown;
        try {
          data = JSON.parse(ev.data);
        } catch {
          return;
        }
        if (ev.event === 'item' && data && typeof data === 'object' && 'id' in data) {
          const item = data as Item;
          setItems((old) => mergeItems(old, [item]));
          setLeaf((l) => (item.parent_id && item.parent_id === l ? item.id : l));
          if (item.type === 'result' || item.type === 'error' || item.type === 'run') void refreshBalance();
        } else if (ev.event === 'run') {
          const p = parseRunProgress(data);
          if (p) setProgress((old) => ({ ...old, [p.run_id]: p }));
        }
      },
    });
    return () => abort.abort();
  }, [id, loaded]);

  const turns = useMemo(() => thread(items, selection, leaf), [items, selection, leaf]);
  // a new item while the person reads the end of the thread: keep the end (the composer) in sight
  const end = useRef<HTMLDivElement>(null);
  const count = useRef(0);
  useEffect(() => {
    const grew = items.length > count.current;
    const first = count.current === 0;
    count.current = items.length;
    const el = end.current;
    if (!grew || !el) return;
    const nearEnd = el.getBoundingClientRect().top < window.innerHeight + 800;
    if (first || nearEnd) el.scrollIntoView({ block: 'end' });
  }, [items.length, loaded]);
  const cards = useMemo(() => planCards(items), [items]);
  const outputUrls = useMemo(() => {
    const m: Record<string, string> = {};
    for (const i of items) if (i.type === 'result') for (const o of i.outputs) m[o.ref] = o.url;
    return m;
  }, [items]);

  function added(more: Item[]) {
    setItems((old) => mergeItems(old, more));
  }

  async function send(text: string, images: string[], parentId: string | null): Promise<boolean> {
    setSending(true);
    setSendError(null);
    try {
      const reply = await must(
        api.POST('/v1/conversations/{conversation_id}/messages', {
          params: { path: { conversation_id: id } },
          body: { text, images, ...(parentId ? { parent_id: parentId } : {}) },
        }),
      );
      const more = [reply.message, ...reply.items] as Item[];
      setSelection((sel) => select(itemsRef.current, sel, reply.message as UserMessage));
      added(more);
      setLeaf(more[more.length - 1].id);
      onChanged(); // the title (the first message names it) and the order of the list
      return true;
    } catch (e) {
      setSendError(e);
      return false;
    } finally {
      setSending(false);
    }
  }

  if (loadError)
    return (
      <>
        <ErrorMessage error={loadError} />
        <p>
          <a href="/chat">Back to the chat</a>
        </p>
      </>
    );
  if (!loaded) return <Loading what="Loading the conversation" />;

  return (
    <>
      {!connected && (
        <p class="hint" role="status">
          Reconnecting to the conversation…
        </p>
      )}
      <ol class="chat-thread" aria-label="Messages" aria-live="polite" aria-relevant="additions">
        {turns.map((turn) => (
          <TurnView
            key={turn.message?.id ?? 'root'}
            turn={turn}
            persona={persona}
            cards={cards}
            progress={progress}
            previews={PREVIEWS}
            outputUrls={outputUrls}
            conversationId={id}
            busy={sending}
            onAdded={added}
            onSwitch={(fork, to) => setSelection((sel) => ({ ...sel, [fork]: to }))}
            onBranch={(message, text) => send(text, message.images, message.parent_id)}
          />
        ))}
      </ol>
      <Composer
        sending={sending}
        error={sendError}
        previews={PREVIEWS}
        onSend={(text, images) => send(text, images, nextParent(turns))}
      />
      <div ref={end} />
    </>
  );
}

interface TurnProps {
  turn: Turn;
  persona: Persona | undefined;
  cards: Map<string, PlanCard>;
  progress: Record<string, RunProgress>;
  previews: Record<string, string>;
  outputUrls: Record<string, string>;
  conversationId: string;
  busy: boolean;
  onAdded: (items: Item[]) => void;
  onSwitch: (fork: string, to: string) => void;
  onBranch: (message: UserMessage, text: string) => Promise<boolean>;
}

function TurnView(props: TurnProps) {
  const { turn } = props;
  return (
    <>
      {turn.message && <UserBubble {...props} message={turn.message} />}
      {shown(turn.items, props.cards).map((item) => (
        <ItemView key={item.id} item={item} {...props} />
      ))}
    </>
  );
}

function UserBubble(props: TurnProps & { message: UserMessage }) {
  const { message, turn } = props;
  const [editing, setEditing] = useState(false);
  const [text, setText] = useState(message.text);
  const index = turn.siblings.findIndex((s) => s.id === message.id);
  const n = turn.siblings.length;
  const editId = `edit-${message.id}`;

  async function branch(e: Event) {
    e.preventDefault();
    if (await props.onBranch(message, text.trim())) setEditing(false);
  }

  return (
    <li class="bubble user" data-testid="user-message" data-item-id={message.id}>
      {editing ? (
        <form onSubmit={(e) => void branch(e)} class="edit">
          <label for={editId}>Edit into a new branch</label>
          <textarea id={editId} value={text} onInput={(e) => setText(e.currentTarget.value)} maxLength={4000} />
          <div class="row">
            <button type="submit" disabled={props.busy || (!text.trim() && !message.images.length)}>
              Send as a new branch
            </button>
            <button type="button" class="secondary" onClick={() => setEditing(false)}>
              Cancel
            </button>
          </div>
        </form>
      ) : (
        <>
          {message.text && <p class="text">{message.text}</p>}
          {message.images.length > 0 && (
            <ul class="thumbs" aria-label="Attached images">
              {message.images.map((ref) => (
                <li key={ref}>
                  <Attachment refName={ref} previews={props.previews} outputUrls={props.outputUrls} />
                </li>
              ))}
            </ul>
          )}
          <div class="row bubble-actions">
            {message.parent_id && (
              <button
                type="button"
                class="link"
                onClick={() => {
                  setText(message.text);
                  setEditing(true);
                }}
              >
                Edit / branch from here
              </button>
            )}
            {n > 1 && (
              <span class="branches row" role="group" aria-label="Branches">
                <button
                  type="button"
                  class="secondary small"
                  aria-label="Previous branch"
                  disabled={index <= 0}
                  onClick={() => props.onSwitch(turn.fork, turn.siblings[index - 1].id)}
                >
                  ‹
                </button>
                <span data-testid="branch-position">
                  Branch {index + 1} of {n}
                </span>
                <button
                  type="button"
                  class="secondary small"
                  aria-label="Next branch"
                  disabled={index >= n - 1}
                  onClick={() => props.onSwitch(turn.fork, turn.siblings[index + 1].id)}
                >
                  ›
                </button>
              </span>
            )}
          </div>
        </>
      )}
    </li>
  );
}

function Attachment({ refName, previews, outputUrls }: { refName: string; previews: Record<string, string>; outputUrls: Record<string, string> }) {
  const local = previews[refName];
  if (local) return <img src={local} alt="An attached image" />;
  const out = outputUrls[refName];
  if (out) return <OutputImage url={out} alt="An earlier result" />;
  return <span class="attachment-chip">{refName.startsWith('output:') ? 'An earlier result' : 'An attached image'}</span>;
}

function ItemView(props: TurnProps & { item: Item }) {
  const { item } = props;
  switch (item.type) {
    case 'agent_message':
      return <AgentBubble persona={props.persona} message={item} />;
    case 'plan': {
      const card = props.cards.get(item.id);
      return card ? <PlanCardView {...props} card={card} /> : null;
    }
    case 'error':
      return (
        <li class="bubble agent" data-testid="agent-error">
          <Avatar persona={props.persona} />
          <div>
            <p class="who">{props.persona?.name ?? 'The agent'}</p>
            <ItemError error={item} />
          </div>
        </li>
      );
    case 'result':
      return (
        <li class="bubble agent">
          <Results result={item} runId={item.run_id} />
        </li>
      );
    default:
      return null;
  }
}

function ItemError({ error }: { error: ErrorItem }) {
  return <ErrorMessage error={new ApiError(0, error.code, error.message, error.errors)} />;
}

function AgentBubble({ persona, message }: { persona: Persona | undefined; message: AgentMessage }) {
  return (
    <li class={`bubble agent kind-${message.kind}`} data-testid="agent-message">
      <Avatar persona={persona} />
      <div>
        <p class="who">{persona?.name ?? 'The agent'}</p>
        <p class="text">{message.text}</p>
        {message.suggestions.length > 0 && (
          <>
            <p class="hint">What I can do instead:</p>
            <ul class="suggestions">
              {message.suggestions.map((s) => (
                <li key={s.slug}>
                  <a href={`/generate/${encodeURIComponent(s.slug)}`}>{s.name}</a>
                  <span class="hint"> · {s.description}</span>
                </li>
              ))}
            </ul>
          </>
        )}
        {message.deposit_url && (
          <p>
            <a class="button secondary" href={message.deposit_url.startsWith('/') ? message.deposit_url : '/account'}>
              Add credits
            </a>
          </p>
        )}
      </div>
    </li>
  );
}

// -- a plan's card ----------------------------------------------------------------------------------------

function PlanCardView(props: TurnProps & { card: PlanCard }) {
  const { card, conversationId } = props;
  const plan = card.plan;
  const key = useRef<string>(idempotencyKey(plan.id));
  const [pending, setPending] = useState<'approve' | 'reject' | null>(null);
  const [error, setError] = useState<unknown>(null);
  const progress = card.runId ? props.progress[card.runId] : undefined;
  const line = progressLine(card, progress);
  const shortfall = plan.shortfall > 0 && card.state === 'proposed';
  const available = account.value?.available;
  // the balance may have grown since the plan was proposed (a deposit): offer to approve then
  const coverable = !shortfall || (available !== undefined && available !== null && available >= plan.quote.total);

  async function decide(what: 'approve' | 'reject') {
    if (pending) return;
    setPending(what);
    setError(null);
    try {
      const path = { conversation_id: conversationId, plan_id: plan.id };
      if (what === 'approve') {
        const done = await must(
          api.POST('/v1/conversations/{conversation_id}/plans/{plan_id}/approve', {
            params: { path, header: { 'Idempotency-Key': key.current } },
          }),
        );
        props.onAdded(done.items as Item[]);
        void refreshBalance(); // the hold shows at once
      } else {
        const done = await must(api.POST('/v1/conversations/{conversation_id}/plans/{plan_id}/reject', { params: { path } }));
        props.onAdded(done.items as Item[]);
      }
    } catch (e) {
      setError(e);
    } finally {
      setPending(null);
    }
  }

  const insufficient = error instanceof ApiError && error.status === 402;
  return (
    <li class="plan-card card" data-testid="plan-card" data-plan-id={plan.id}>
      <div class="row plan-head">
        <h3>Plan: {plan.chain.join(' → ')}</h3>
        <span class={`badge ${card.state === 'approved' ? 'ok' : card.state === 'rejected' ? 'bad' : 'warn'}`}>
          {card.state === 'approved' ? (card.auto ? 'auto-approved' : 'approved') : card.state}
        </span>
      </div>
      <p class="explanation">{plan.explanation}</p>
      <ol class="plan-steps">
        {plan.steps.map((step) => (
          <li key={step.id}>
            <strong class="tool">{step.tool}</strong>
            {keyInputs(step.inputs).length > 0 && (
              <ul class="inputs">
                {keyInputs(step.inputs).map(([k, v]) => (
                  <li key={k}>
                    <span class="hint">{k}:</span> {v}
                  </li>
                ))}
              </ul>
            )}
          </li>
        ))}
      </ol>
      <p class="price" data-testid="plan-price">
        {plan.quote.charged ? (
          <>
            Price: up to <strong>{credits(plan.quote.total)}</strong>, held when you approve and charged only for what completes.
          </>
        ) : (
          <>Free for you (quote {credits(plan.quote.total)}).</>
        )}
      </p>
      {shortfall && (
        <div class="message info" data-testid="shortfall">
          Your balance was {credits(plan.balance)}: this plan needs <strong>{credits(plan.shortfall)}</strong> more.{' '}
          <a href={plan.deposit_url && plan.deposit_url.startsWith('/') ? plan.deposit_url : '/account'}>Add credits</a>, then approve it.
        </div>
      )}
      {card.state === 'proposed' && (
        <div class="row">
          <button
            type="button"
            onClick={() => void decide('approve')}
            disabled={pending !== null || !coverable}
          >
            {pending === 'approve' ? 'Approving…' : `Approve (${credits(plan.quote.total)})`}
          </button>
          <button type="button" class="secondary" onClick={() => void decide('reject')} disabled={pending !== null}>
            {pending === 'reject' ? 'Rejecting…' : 'Reject'}
          </button>
        </div>
      )}
      <ErrorMessage error={error} />
      {insufficient && (
        <p>
          <a class="button secondary" href="/account">
            Add credits
          </a>
        </p>
      )}
      {card.state === 'approved' && (
        <div class="plan-run" data-testid="plan-run">
          <progress
            aria-label="Plan progress"
            aria-valuetext={line.text}
            max={1}
            {...(line.value === null ? {} : { value: line.value })}
          />
          <p class="progress-text" role="status" data-testid="plan-progress-text">
            {line.text}
          </p>
        </div>
      )}
      {card.error && <ItemError error={card.error} />}
      {card.result && <Results result={card.result} runId={card.runId} />}
    </li>
  );
}

function Results({ result, runId }: { result: ResultItem; runId: string | null }) {
  const images = result.outputs.filter((o) => isImage(o.content_type));
  const others = result.outputs.filter((o) => !isImage(o.content_type));
  const values = Object.entries(result.values ?? {});
  return (
    <div class="results" data-testid="plan-result">
      {images.length > 0 && (
        <ul class="result-images">
          {images.map((o) => (
            <li key={o.ref}>
              <OutputImage url={o.url} alt={`Result of step ${o.step}`} />
            </li>
          ))}
        </ul>
      )}
      {others.map((o) => (
        <p key={o.ref}>
          <a href={o.url}>{`${o.step} · ${o.port} (${o.content_type})`}</a>
        </p>
      ))}
      {values.length > 0 && <pre class="values">{JSON.stringify(result.values, null, 2)}</pre>}
      <div class="row">
        {runId && (
          <a class="button secondary" href={`/sandbox?from_run=${encodeURIComponent(runId)}`}>
            Open in canvas
          </a>
        )}
        {runId && <a href={`/history/run/${encodeURIComponent(runId)}`}>Details</a>}
      </div>
    </div>
  );
}

// -- the composer -----------------------------------------------------------------------------------------

interface Attached {
  ref: string;
  name: string;
  preview: string;
}

function Composer(props: {
  sending: boolean;
  error: unknown;
  previews: Record<string, string>;
  onSend: (text: string, images: string[]) => Promise<boolean>;
}) {
  const [text, setText] = useState('');
  const [attached, setAttached] = useState<Attached[]>([]);
  const [uploading, setUploading] = useState(false);
  const [uploadError, setUploadError] = useState<unknown>(null);
  const [over, setOver] = useState(false);
  const fileInput = useRef<HTMLInputElement>(null);

  async function take(files: FileList | File[] | null | undefined) {
    const list = Array.from(files ?? []).filter((f) => f.type.startsWith('image/'));
    if (!list.length) return;
    const room = MAX_IMAGES - attached.length;
    if (room <= 0) {
      setUploadError(new Error(`At most ${MAX_IMAGES} images per message.`));
      return;
    }
    setUploading(true);
    setUploadError(null);
    try {
      const done: Attached[] = [];
      for (const file of list.slice(0, room)) {
        const up = await uploadImage(file);
        const preview = URL.createObjectURL(file);
        props.previews[up.ref] = preview;
        done.push({ ref: up.ref, name: up.filename, preview });
      }
      setAttached((old) => [...old, ...done]);
      if (list.length > room) setUploadError(new Error(`At most ${MAX_IMAGES} images per message: the others were left out.`));
    } catch (e) {
      setUploadError(e);
    } finally {
      setUploading(false);
      if (fileInput.current) fileInput.current.value = '';
    }
  }

  async function submit(e?: Event) {
    e?.preventDefault();
    if (props.sending || uploading || (!text.trim() && !attached.length)) return;
    if (await props.onSend(text.trim(), attached.map((a) => a.ref))) {
      setText('');
      setAttached([]);
    }
  }

  return (
    <form
      class={`composer card${over ? ' over' : ''}`}
      onSubmit={(e) => void submit(e)}
      onDragOver={(e) => {
        e.preventDefault();
        setOver(true);
      }}
      onDragLeave={() => setOver(false)}
      onDrop={(e) => {
        e.preventDefault();
        setOver(false);
        void take(e.dataTransfer?.files);
      }}
      data-testid="composer"
    >
      <label for="chat-message">Your message</label>
      <textarea
        id="chat-message"
        value={text}
        maxLength={4000}
        placeholder="Describe what you want, e.g. “a watercolor fox in the snow, then make it 4x bigger”"
        aria-describedby="chat-message-hint"
        onInput={(e) => setText(e.currentTarget.value)}
        onPaste={(e) => {
          const files = Array.from(e.clipboardData?.files ?? []);
          if (files.some((f) => f.type.startsWith('image/'))) {
            e.preventDefault();
            void take(files);
          }
        }}
        onKeyDown={(e) => {
          if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
            e.preventDefault();
            void submit();
          }
        }}
      />
      <p id="chat-message-hint" class="hint">
        Enter sends, Shift+Enter starts a new line. Drop or paste images here, or attach them with the button.
      </p>
      {attached.length > 0 && (
        <ul class="thumbs" aria-label="Images to send">
          {attached.map((a) => (
            <li key={a.ref}>
              <img src={a.preview} alt={a.name} />
              <button
                type="button"
                class="link"
                aria-label={`Remove ${a.name}`}
                onClick={() => setAttached((old) => old.filter((x) => x.ref !== a.ref))}
              >
                Remove
              </button>
            </li>
          ))}
        </ul>
      )}
      <div class="row composer-actions">
        <input
          ref={fileInput}
          hidden
          tabIndex={-1}
          type="file"
          accept="image/png,image/jpeg,image/webp"
          multiple
          aria-label="Images to attach"
          data-testid="attach-input"
          onChange={(e) => void take(e.currentTarget.files)}
        />
        <button type="button" class="secondary" onClick={() => fileInput.current?.click()} disabled={uploading}>
          {uploading ? 'Uploading…' : 'Attach images'}
        </button>
        <span class="hint">Balance: {credits(account.value?.available)}</span>
        <button type="submit" disabled={props.sending || uploading || (!text.trim() && !attached.length)}>
          {props.sending ? 'Sending…' : 'Send'}
        </button>
      </div>
      <ErrorMessage error={uploadError} />
      <ErrorMessage error={props.error} />
    </form>
  );
}
