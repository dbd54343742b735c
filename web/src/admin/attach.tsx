// Attach a machine that swarmstation did not rent: the form registers it in a pool and the
// answer's worker command (with its token) is shown once, with a copy button. The attached
// machines are listed with detach and rotate-token (which also shows a new command once).
import { useState } from 'preact/hooks';
import { api, must, type Schemas } from '../api/client';
import { Loading, Notice } from '../ui';
import { LoadError, useAction, usePoll } from './common';
import { tone } from './format';

type Attached = Schemas['InstanceAttached'];

export function Attach() {
  const [data, error, reload] = usePoll(
    async () => {
      const [pools, instances] = await Promise.all([
        must(api.GET('/v1/admin/pools')),
        must(api.GET('/v1/admin/instances')),
      ]);
      return { pools, attached: instances.filter((i) => i.provider === 'static') };
    },
    3000,
  );
  const [shown, setShown] = useState<Attached | null>(null);
  if (!data) return error ? <LoadError error={error} /> : <Loading what="Loading the pools" />;
  return (
    <div data-testid="admin-attach">
      <LoadError error={error} />
      <AttachForm
        pools={data.pools.map((p) => p.name)}
        onAttached={(a) => {
          setShown(a);
          reload();
        }}
      />
      {shown && <Command attached={shown} onDismiss={() => setShown(null)} />}
      <h2>Attached machines</h2>
      {data.attached.length === 0 ? (
        <p class="muted">None yet.</p>
      ) : (
        <ul class="admin-attached">
          {data.attached.map((i) => (
            <AttachedItem key={i.id} instance={i} onCommand={setShown} onChanged={reload} />
          ))}
        </ul>
      )}
    </div>
  );
}

function AttachForm({ pools, onAttached }: { pools: string[]; onAttached: (a: Attached) => void }) {
  const [form, setForm] = useState({ pool: pools[0] ?? '', name: '', slots: '', price: '0', server: '', comfyui: 'http://127.0.0.1:8188', dir: '/path/to/ComfyUI' });
  const action = useAction();
  const set = (k: keyof typeof form) => (e: Event) => setForm({ ...form, [k]: (e.target as HTMLInputElement).value });
  async function attach(event: Event) {
    event.preventDefault();
    const out = await action.run(() =>
      must(
        api.POST('/v1/admin/instances', {
          body: {
            pool: form.pool,
            name: form.name.trim() || null,
            slots: form.slots ? Number(form.slots) : null,
            price_per_hour: Number(form.price || 0),
            server_url: form.server.trim() || null,
            comfyui_url: form.comfyui,
            comfy_dir: form.dir,
          },
        }),
      ),
    );
    if (out) {
      onAttached(out);
      setForm({ ...form, name: '' });
    }
  }
  return (
    <form onSubmit={attach} class="admin-form card" aria-label="Attach a machine">
      <div>
        <label for="attach-pool">Pool</label>
        <select id="attach-pool" value={form.pool} onChange={set('pool')} required>
          {pools.map((p) => (
            <option key={p} value={p}>
              {p}
            </option>
          ))}
        </select>
      </div>
      <div>
        <label for="attach-name">Machine name</label>
        <input id="attach-name" value={form.name} onInput={set('name')} maxLength={100} />
      </div>
      <div>
        <label for="attach-slots">Slots</label>
        <input id="attach-slots" type="number" min={1} max={64} value={form.slots} placeholder="the pool's" onInput={set('slots')} />
      </div>
      <div>
        <label for="attach-price">Price per hour (USD)</label>
        <input id="attach-price" type="number" min={0} step="any" value={form.price} onInput={set('price')} />
      </div>
      <div>
        <label for="attach-server">Control plane URL as the machine reaches it</label>
        <input id="attach-server" type="url" value={form.server} placeholder="this server's public URL" onInput={set('server')} />
      </div>
      <div>
        <label for="attach-comfyui">ComfyUI URL on the machine</label>
        <input id="attach-comfyui" type="url" required value={form.comfyui} onInput={set('comfyui')} />
      </div>
      <div>
        <label for="attach-dir">ComfyUI folder on the machine</label>
        <input id="attach-dir" required value={form.dir} onInput={set('dir')} />
      </div>
      <p class="row">
        <button type="submit" disabled={action.busy || !form.pool}>
          Attach machine
        </button>
      </p>
      <LoadError error={action.error} />
    </form>
  );
}

/** The worker command with its token: shown once (the server keeps only the token's hash). */
function Command({ attached, onDismiss }: { attached: Attached; onDismiss: () => void }) {
  const [copied, setCopied] = useState<string | null>(null);
  async function copy() {
    try {
      await navigator.clipboard.writeText(attached.command);
      setCopied('Copied.');
    } catch {
      setCopied('Copying was refused; select the command and copy it yourself.');
    }
  }
  return (
    <section class="card admin-once" aria-labelledby="command-h" data-testid="worker-command">
      <h2 id="command-h">Run this on the machine</h2>
      <Notice>
        The token in this command is shown only this once. If it is lost, rotate the token below. Instance{' '}
        <code>{attached.instance_id}</code>.
      </Notice>
      <pre>
        <code data-testid="worker-command-text">{attached.command}</code>
      </pre>
      <p class="row">
        <button type="button" onClick={() => void copy()}>
          Copy command
        </button>
        <button type="button" class="secondary" onClick={onDismiss}>
          I have saved it
        </button>
        {copied && <span role="status">{copied}</span>}
      </p>
    </section>
  );
}

function AttachedItem({
  instance: i,
  onCommand,
  onChanged,
}: {
  instance: Schemas['InstanceOut'];
  onCommand: (a: Attached) => void;
  onChanged: () => void;
}) {
  const action = useAction();
  const label = (i.info?.name as string | undefined) ?? i.id.slice(0, 8);
  const path = { params: { path: { instance_id: i.id } } };
  return (
    <li class="card">
      <strong>{label}</strong> <span class={`badge ${tone(i.state)}`}>{i.state}</span> <span class="hint">pool {i.pool}</span>
      {i.state_reason && <div class="hint">{i.state_reason}</div>}
      <p class="row">
        <button
          type="button"
          class="secondary"
          disabled={action.busy}
          onClick={async () => {
            const out = await action.run(() => must(api.POST('/v1/admin/instances/{instance_id}/rotate-token', path)));
            if (out) onCommand(out);
          }}
        >
          Rotate token<span class="visually-hidden"> of {label}</span>
        </button>
        <button
          type="button"
          class="danger"
          disabled={action.busy}
          onClick={async () => {
            if (await action.run(() => must(api.POST('/v1/admin/instances/{instance_id}/detach', path)))) onChanged();
          }}
        >
          Detach<span class="visually-hidden"> {label}</span>
        </button>
      </p>
      <LoadError error={action.error} />
    </li>
  );
}
