// Under the prompt: the LoRA trigger words this person may use (GET /v1/loras/trigger-map), to
// add with a click, and a live preview of which LoRAs the prompt as typed will apply (POST
// /v1/loras/resolve, debounced: one request once typing pauses, not one per key).
import { useEffect, useState } from 'preact/hooks';
import { api, must, type Schemas } from '../api/client';

type Resolved = Schemas['ResolveOut'];

const DEBOUNCE_MS = 300;
const MAX_HINTS = 12;

export function LoraHints({ tool, prompt, onAdd }: { tool: string; prompt: string; onAdd: (word: string) => void }) {
  const [triggers, setTriggers] = useState<Record<string, string[]>>({});
  const [resolved, setResolved] = useState<Resolved | null>(null);
  const [problem, setProblem] = useState<string | null>(null);

  useEffect(() => {
    let live = true;
    must(api.GET('/v1/loras/trigger-map')).then(
      (map) => live && setTriggers(map),
      () => undefined, // hints are a help, not needed to run: no error for them
    );
    return () => {
      live = false;
    };
  }, []);

  useEffect(() => {
    if (!prompt.trim()) {
      setResolved(null);
      setProblem(null);
      return;
    }
    let live = true;
    const timer = setTimeout(() => {
      must(api.POST('/v1/loras/resolve', { body: { tool, prompt } })).then(
        (r) => {
          if (!live) return;
          setResolved(r);
          setProblem(null);
        },
        (e: unknown) => live && setProblem(e instanceof Error ? e.message : String(e)),
      );
    }, DEBOUNCE_MS);
    return () => {
      live = false;
      clearTimeout(timer);
    };
  }, [tool, prompt]);

  const words = Object.keys(triggers).sort().slice(0, MAX_HINTS);
  const lower = prompt.toLowerCase();
  return (
    <div class="lora-hints">
      {words.length > 0 && (
        <div class="triggers">
          <span class="hint">LoRA triggers:</span>
          <ul class="chips" aria-label="LoRA trigger words">
            {words.map((w) => (
              <li key={w}>
                <button
                  type="button"
                  class={`chip${lower.includes(w) ? ' on' : ''}`}
                  title={`Selects ${triggers[w].join(', ')}`}
                  aria-label={`Add the trigger “${w}” (${triggers[w].join(', ')})`}
                  onClick={() => onAdd(w)}
                >
                  {w}
                </button>
              </li>
            ))}
          </ul>
        </div>
      )}
      <p class="applies" aria-live="polite" data-testid="lora-preview">
        {problem ? (
          <span class="field-error">{problem}</span>
        ) : resolved && resolved.loras.length > 0 ? (
          <>
            Applies:{' '}
            {resolved.loras.map((l, i) => (
              <span key={l.slug}>
                {i > 0 && ', '}
                <strong>{l.slug}</strong> ×{l.weight} <span class="hint">({l.source === 'tag' ? 'tag' : `“${l.matched_text}”`})</span>
              </span>
            ))}
          </>
        ) : resolved ? (
          <span class="hint">No LoRAs apply to this prompt.</span>
        ) : null}
        {resolved?.warnings.map((w) => (
          <span key={w} class="hint warn">
            {' '}
            {w}
          </span>
        ))}
      </p>
    </div>
  );
}
