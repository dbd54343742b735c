// The inputs of a tool as form controls, one per field of schema.ts: text areas for prompts,
// number boxes (with a slider for a small range), a seed with a dice, size presets, selects,
// checkboxes, and image inputs that take a file by picking or by dropping it on the field.
import { useRef, useState } from 'preact/hooks';
import { authHeaders, errorMessage, type Schemas } from '../api/client';
import { ErrorMessage } from '../ui';
import { OutputImage } from './media';
import { randomSeed, sizePresets, type Field, type FormValue, type FormValues } from './schema';

export type Upload = Schemas['UploadOut'];

/** POST /v1/uploads (multipart); the upload's ref goes in an image input. */
export async function uploadImage(file: File): Promise<Upload> {
  const form = new FormData();
  form.append('file', file, file.name);
  let response: Response;
  try {
    response = await fetch('/v1/uploads', {
      method: 'POST',
      body: form,
      headers: authHeaders('POST'),
      credentials: 'same-origin',
    });
  } catch {
    throw errorMessage(0, null);
  }
  const body: unknown = await response.json().catch(() => null);
  if (!response.ok) throw errorMessage(response.status, body);
  return body as Upload;
}

const id = (name: string) => `field-${name}`;

interface FieldsProps {
  fields: Field[];
  values: FormValues;
  errors: Record<string, string>;
  onChange: (name: string, value: FormValue) => void;
  /** Rendered under the prompt: trigger hints and the LoRA preview. */
  promptExtra?: preact.ComponentChildren;
  /** Thumbnails for image refs that are not local files (an earlier output: `output:<id>`). */
  previews?: Record<string, string>;
}

export function ToolFields({ fields, values, errors, onChange, promptExtra, previews = {} }: FieldsProps) {
  const presets = sizePresets(fields);
  return (
    <>
      {fields.map((f) => {
        const control = (
          <FieldControl
            key={f.name}
            field={f}
            value={values[f.name] ?? ''}
            error={errors[f.name]}
            onChange={(v) => onChange(f.name, v)}
            previews={previews}
          />
        );
        if (f.kind === 'prompt' && promptExtra)
          return (
            <div key={f.name}>
              {control}
              {promptExtra}
            </div>
          );
        // the size presets sit before the width box: choosing one fills both
        if (f.name === 'width' && presets.length)
          return (
            <div key={f.name}>
              <SizePresets
                presets={presets}
                width={String(values.width ?? '')}
                height={String(values.height ?? '')}
                onPick={(w, h) => {
                  onChange('width', String(w));
                  onChange('height', String(h));
                }}
              />
              {control}
            </div>
          );
        return control;
      })}
    </>
  );
}

/** The help line (required, description) and the field's error, which describedBy points at. */
function FieldHelp({ field, error }: { field: Field; error?: string }) {
  return (
    <>
      {(field.description || field.required) && (
        <p class="hint" id={`${id(field.name)}-help`}>
          {field.required && <strong class="required">Required. </strong>}
          {field.description}
        </p>
      )}
      {error && (
        <p class="field-error" id={`${id(field.name)}-error`}>
          {field.label}: {error}
        </p>
      )}
    </>
  );
}

function Described({ field, error, children }: { field: Field; error?: string; children: preact.ComponentChildren }) {
  return (
    <div class={`field field-${field.kind}${error ? ' invalid' : ''}`}>
      <label for={id(field.name)}>
        {field.label}
      </label>
      {children}
      <FieldHelp field={field} error={error} />
    </div>
  );
}

function describedBy(field: Field, error?: string): string | undefined {
  const ids = [field.description || field.required ? `${id(field.name)}-help` : '', error ? `${id(field.name)}-error` : ''].filter(Boolean);
  return ids.length ? ids.join(' ') : undefined;
}

interface ControlProps {
  field: Field;
  value: FormValue;
  error?: string;
  onChange: (value: FormValue) => void;
  previews: Record<string, string>;
}

function FieldControl({ field, value, error, onChange, previews }: ControlProps) {
  const common = {
    id: id(field.name),
    name: field.name,
    'aria-describedby': describedBy(field, error),
    'aria-invalid': error ? ('true' as const) : undefined,
    'aria-required': field.required ? ('true' as const) : undefined,
  };
  const text = typeof value === 'string' ? value : '';
  switch (field.kind) {
    case 'prompt':
    case 'textarea':
      return (
        <Described field={field} error={error}>
          <textarea
            {...common}
            rows={field.kind === 'prompt' ? 4 : 2}
            value={text}
            required={field.required}
            onInput={(e) => onChange(e.currentTarget.value)}
          />
        </Described>
      );
    case 'integer':
    case 'number':
      return (
        <Described field={field} error={error}>
          <div class="number-row">
            {field.slider && (
              <input
                type="range"
                aria-label={`${field.label} slider`}
                min={field.minimum}
                max={field.maximum}
                step={field.step}
                value={text === '' ? String(field.default ?? field.minimum ?? 0) : text}
                onInput={(e) => onChange(e.currentTarget.value)}
              />
            )}
            <input
              {...common}
              type="number"
              inputMode={field.kind === 'integer' ? 'numeric' : 'decimal'}
              min={field.minimum}
              max={field.maximum}
              step={field.kind === 'integer' ? 1 : 'any'}
              value={text}
              onInput={(e) => onChange(e.currentTarget.value)}
            />
          </div>
        </Described>
      );
    case 'seed':
      return (
        <Described field={field} error={error}>
          <div class="number-row">
            <input
              {...common}
              type="text"
              inputMode="numeric"
              placeholder="random"
              value={text}
              onInput={(e) => onChange(e.currentTarget.value)}
            />
            <button
              type="button"
              class="secondary dice"
              aria-label="Roll a random seed"
              title="Roll a random seed"
              onClick={() => onChange(String(randomSeed()))}
            >
              <DiceIcon />
            </button>
            {text !== '' && (
              <button type="button" class="link" onClick={() => onChange('')}>
                Random each run
              </button>
            )}
          </div>
        </Described>
      );
    case 'enum':
      return (
        <Described field={field} error={error}>
          <select {...common} value={text} onChange={(e) => onChange(e.currentTarget.value)}>
            {!field.required && <option value="">(default)</option>}
            {(field.choices ?? []).map((c) => (
              <option key={c} value={c}>
                {c}
              </option>
            ))}
          </select>
        </Described>
      );
    case 'boolean':
      return (
        <div class="field field-boolean">
          <label class="check">
            <input
              type="checkbox"
              id={id(field.name)}
              name={field.name}
              checked={value === true}
              aria-describedby={describedBy(field, error)}
              onChange={(e) => onChange(e.currentTarget.checked)}
            />
            {field.label}
          </label>
          {field.description && (
            <p class="hint" id={`${id(field.name)}-help`}>
              {field.description}
            </p>
          )}
        </div>
      );
    case 'image':
      return <ImageField field={field} value={value} error={error} onChange={onChange} previews={previews} />;
    default:
      return (
        <Described field={field} error={error}>
          <input {...common} type="text" value={text} required={field.required} onInput={(e) => onChange(e.currentTarget.value)} />
        </Described>
      );
  }
}

/** A die's face (five pips); drawn, since emoji fonts are not everywhere. */
function DiceIcon() {
  return (
    <svg aria-hidden="true" width="20" height="20" viewBox="0 0 20 20" focusable="false">
      <rect x="1.5" y="1.5" width="17" height="17" rx="4" fill="none" stroke="currentColor" stroke-width="1.6" />
      {[
        [6, 6],
        [14, 6],
        [10, 10],
        [6, 14],
        [14, 14],
      ].map(([cx, cy]) => (
        <circle key={`${cx}-${cy}`} cx={cx} cy={cy} r="1.7" fill="currentColor" />
      ))}
    </svg>
  );
}

function SizePresets(props: {
  presets: { label: string; width: number; height: number }[];
  width: string;
  height: string;
  onPick: (w: number, h: number) => void;
}) {
  return (
    <fieldset class="sizes">
      <legend>Size</legend>
      <div class="row">
        {props.presets.map((p) => {
          const on = props.width === String(p.width) && props.height === String(p.height);
          return (
            <button
              key={p.label}
              type="button"
              class={on ? '' : 'secondary'}
              aria-pressed={on}
              onClick={() => props.onPick(p.width, p.height)}
            >
              {p.label}
            </button>
          );
        })}
      </div>
    </fieldset>
  );
}

interface Picked {
  ref: string;
  name: string;
  preview: string | null;
}

/** An image input: pick files, or drop them on the field; each is uploaded at once and the
 * field holds its ref. Several for a `many` input. */
function ImageField({ field, value, error, onChange, previews }: ControlProps) {
  const refs = (Array.isArray(value) ? value : [value]).filter((v): v is string => typeof v === 'string' && v !== '');
  const [local, setLocal] = useState<Record<string, Picked>>({});
  const [busy, setBusy] = useState(false);
  const [uploadError, setUploadError] = useState<unknown>(null);
  const [over, setOver] = useState(false);
  const input = useRef<HTMLInputElement>(null);

  async function take(files: FileList | File[] | null) {
    const list = Array.from(files ?? []).filter((f) => f.type.startsWith('image/') || f.type === '');
    if (!list.length) return;
    setBusy(true);
    setUploadError(null);
    try {
      const chosen = field.many ? list : list.slice(0, 1);
      const done: Picked[] = [];
      for (const file of chosen) {
        const up = await uploadImage(file);
        done.push({ ref: up.ref, name: up.filename, preview: URL.createObjectURL(file) });
      }
      setLocal((old) => ({ ...old, ...Object.fromEntries(done.map((d) => [d.ref, d])) }));
      const next = done.map((d) => d.ref);
      onChange(field.many ? [...refs, ...next] : next[0]);
    } catch (e) {
      setUploadError(e);
    } finally {
      setBusy(false);
      if (input.current) input.current.value = '';
    }
  }

  function remove(ref: string) {
    onChange(field.many ? refs.filter((r) => r !== ref) : '');
  }

  return (
    <div class={`field field-image${error ? ' invalid' : ''}`}>
      <label for={id(field.name)}>
        {field.label}
      </label>
      <div
        class={`dropzone${over ? ' over' : ''}`}
        data-testid={`drop-${field.name}`}
        onDragOver={(e) => {
          e.preventDefault();
          setOver(true);
        }}
        onDragLeave={() => setOver(false)}
        onDrop={(e) => {
          e.preventDefault();
          setOver(false);
          void take(e.dataTransfer?.files ?? null);
        }}
      >
        <input
          ref={input}
          id={id(field.name)}
          type="file"
          accept="image/png,image/jpeg,image/webp"
          multiple={field.many}
          aria-describedby={describedBy(field, error)}
          aria-required={field.required ? 'true' : undefined}
          onChange={(e) => void take(e.currentTarget.files)}
        />
        <p class="hint">{busy ? 'Uploading…' : `Choose ${field.many ? 'images' : 'an image'} or drop ${field.many ? 'them' : 'one'} here.`}</p>
        {refs.length > 0 && (
          <ul class="picked" aria-label={`${field.label}: chosen`}>
            {refs.map((ref) => {
              const known = local[ref];
              const earlier = !known && previews[ref];
              return (
                <li key={ref}>
                  {known?.preview ? <img src={known.preview} alt={known.name} /> : null}
                  {earlier ? <OutputImage url={earlier} alt="an earlier output" /> : null}
                  <span class="ref">{known ? known.name : ref.startsWith('output:') ? 'An earlier output' : ref}</span>
                  <button type="button" class="link" onClick={() => remove(ref)} aria-label={`Remove ${known?.name ?? ref}`}>
                    Remove
                  </button>
                </li>
              );
            })}
          </ul>
        )}
      </div>
      <FieldHelp field={field} error={error} />
      <ErrorMessage error={uploadError} />
    </div>
  );
}
