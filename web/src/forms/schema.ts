// A tool's inputs as form fields: pure functions from the tool's JSON Schema (input_schema) and
// its inputs[] list to a field list, the form's starting values, and back to the `inputs` object
// POST /v1/jobs and POST /v1/quotes take. No DOM here: the generate page renders what this says.

/** What the form shows for one input. */
export type FieldKind =
  | 'prompt' // a long text the LoRA triggers apply to (textarea)
  | 'textarea' // any other long text (negative prompt)
  | 'text'
  | 'integer'
  | 'number'
  | 'seed'
  | 'enum'
  | 'boolean'
  | 'image'; // an upload ref (`upload:<id>`) or an earlier output (`output:<id>`); `many` for a list

export interface Field {
  name: string;
  kind: FieldKind;
  label: string;
  description: string;
  required: boolean;
  default?: unknown;
  minimum?: number;
  maximum?: number;
  /** Slider step for numbers with a small range. */
  step?: number;
  /** Both ends known and the range small enough for a slider beside the number box. */
  slider: boolean;
  choices?: string[];
  many: boolean;
}

/** A form value: what an input element holds. Numbers stay text until they are sent, so that a
 * half-typed "1." is not rewritten under the person's cursor. Images are refs (a list if many). */
export type FormValue = string | boolean | string[];
export type FormValues = Record<string, FormValue>;

type JsonSchema = {
  type?: string | string[];
  properties?: Record<string, JsonSchema>;
  required?: string[];
  description?: string;
  default?: unknown;
  minimum?: number;
  maximum?: number;
  enum?: unknown[];
  anyOf?: JsonSchema[];
  items?: JsonSchema;
  maxLength?: number;
  title?: string;
  'x-input-type'?: string;
  'x-many'?: boolean;
};

/** The inputs[] entries of GET /v1/tools/{slug}: the server's own reading of the schema. */
export interface ToolInput {
  name: string;
  type: string;
  description?: string;
  required?: boolean;
  default?: unknown;
  minimum?: number;
  maximum?: number;
  choices?: string[];
  many?: boolean;
}

const LABELS: Record<string, string> = { cfg: 'CFG scale', negative_prompt: 'Negative prompt' };

export function labelFor(name: string): string {
  if (LABELS[name]) return LABELS[name];
  const words = name.replace(/[_-]+/g, ' ').trim();
  return words.charAt(0).toUpperCase() + words.slice(1);
}

function kindOf(name: string, type: string, prop: JsonSchema, choices: string[] | undefined): FieldKind {
  if (type === 'image') return 'image';
  if (type === 'seed' || name === 'seed') return 'seed';
  if (choices && choices.length) return 'enum';
  if (type === 'boolean') return 'boolean';
  if (type === 'integer') return 'integer';
  if (type === 'number') return 'number';
  if (name === 'prompt') return 'prompt';
  // a text that may be long (the schema allows paragraphs) gets a textarea
  if (/prompt|text|caption|instruction/.test(name) || (prop.maxLength ?? 0) > 200) return 'textarea';
  return 'text';
}

function firstType(prop: JsonSchema): string | undefined {
  if (prop['x-input-type']) return prop['x-input-type'];
  if (typeof prop.type === 'string') return prop.type;
  if (Array.isArray(prop.type)) return prop.type.find((t) => t !== 'null');
  for (const alt of prop.anyOf ?? []) {
    const t = firstType(alt);
    if (t && t !== 'null') return t;
  }
  return undefined;
}

/** The form's fields, in the tool's own input order (inputs[]), falling back to the schema's
 * property order for a tool that lists no inputs. */
export function fieldsFromTool(inputSchema: Record<string, unknown>, inputs: ToolInput[] = []): Field[] {
  const schema = inputSchema as JsonSchema;
  const props = schema.properties ?? {};
  const required = new Set(schema.required ?? []);
  const byName = new Map(inputs.map((i) => [i.name, i]));
  const names = inputs.length ? inputs.map((i) => i.name) : Object.keys(props);
  return names.map((name) => {
    const prop = props[name] ?? {};
    const listed = byName.get(name);
    const type = listed?.type ?? firstType(prop) ?? 'string';
    const choices =
      listed?.choices ?? (Array.isArray(prop.enum) ? prop.enum.filter((v): v is string => typeof v === 'string') : undefined);
    const minimum = listed?.minimum ?? prop.minimum;
    const maximum = listed?.maximum ?? prop.maximum;
    const kind = kindOf(name, type, prop, choices);
    const numeric = kind === 'integer' || kind === 'number';
    const range = minimum !== undefined && maximum !== undefined ? maximum - minimum : undefined;
    // a slider for steps, cfg, denoise; not for pixel sizes (a slider to 16384 is no help)
    const slider = numeric && range !== undefined && range > 0 && range <= 150;
    const field: Field = {
      name,
      kind,
      label: labelFor(name),
      description: listed?.description ?? prop.description ?? '',
      required: listed?.required ?? required.has(name),
      default: listed && 'default' in listed ? listed.default : prop.default,
      minimum,
      maximum,
      slider,
      choices: kind === 'enum' ? choices : undefined,
      many: Boolean(listed?.many ?? prop['x-many']),
    };
    if (slider) field.step = kind === 'integer' ? 1 : range! <= 1 ? 0.01 : 0.5;
    return field;
  });
}

function textOf(value: unknown): string {
  if (value === undefined || value === null) return '';
  return String(value);
}

/** The starting value of each field: the tool's default, or what `prefill` (a tweak, a rerun,
 * an "upscale this") gives. A seed of -1 means "random": the box stays empty. */
export function initialValues(fields: Field[], prefill: Record<string, unknown> = {}): FormValues {
  const values: FormValues = {};
  for (const f of fields) {
    const given = f.name in prefill ? prefill[f.name] : f.default;
    if (f.kind === 'boolean') values[f.name] = given === true || given === 'true';
    else if (f.kind === 'image')
      values[f.name] = f.many
        ? (Array.isArray(given) ? given : given ? [given] : []).map(textOf)
        : Array.isArray(given)
          ? textOf(given[0])
          : textOf(given);
    else if (f.kind === 'seed') values[f.name] = given === -1 || given === '' ? '' : textOf(given);
    else values[f.name] = textOf(given);
  }
  return values;
}

export interface Converted {
  inputs: Record<string, unknown>;
  /** field name → why its value cannot be sent (the form shows it next to the field) */
  errors: Record<string, string>;
}

/** One field's value as the API takes it; `undefined` leaves the input out (the tool's default). */
export function coerce(field: Field, value: FormValue): { value?: unknown; error?: string } {
  if (field.kind === 'boolean') return { value: value === true };
  if (field.kind === 'image') {
    const refs = (Array.isArray(value) ? value : [value]).filter((v) => v !== '');
    if (!refs.length) return field.required ? { error: 'choose an image' } : {};
    return { value: field.many ? refs : refs[0] };
  }
  const text = typeof value === 'string' ? value.trim() : '';
  if (field.kind === 'seed') {
    if (text === '') return { value: -1 };
    // a seed can pass 2^53: sent as the digits, through bigIntJson below
    if (!/^\d+$/.test(text)) return { error: 'a whole number of 0 or more (empty: random)' };
    return { value: BigInt(text) <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(text) : new BigSeed(text) };
  }
  if (field.kind === 'integer' || field.kind === 'number') {
    if (text === '') return field.required ? { error: 'required' } : {};
    const n = Number(text);
    if (!Number.isFinite(n)) return { error: 'a number' };
    if (field.kind === 'integer' && !Number.isInteger(n)) return { error: 'a whole number' };
    if (field.minimum !== undefined && n < field.minimum) return { error: `at least ${field.minimum}` };
    if (field.maximum !== undefined && n > field.maximum) return { error: `at most ${field.maximum}` };
    return { value: n };
  }
  const raw = typeof value === 'string' ? value : '';
  if (field.kind === 'enum' && raw !== '' && field.choices && !field.choices.includes(raw))
    return { error: `one of ${field.choices.join(', ')}` };
  // an empty optional text is left out: the tool's default applies
  if (raw.trim() === '') return field.required ? { error: 'required' } : {};
  return { value: raw };
}

/** The `inputs` of a run from the form's values, with every field's problem. */
export function toInputs(fields: Field[], values: FormValues): Converted {
  const inputs: Record<string, unknown> = {};
  const errors: Record<string, string> = {};
  for (const f of fields) {
    const { value, error } = coerce(f, values[f.name] ?? '');
    if (error) errors[f.name] = error;
    else if (value !== undefined) inputs[f.name] = value;
  }
  return { inputs, errors };
}

/** A seed beyond Number.MAX_SAFE_INTEGER, kept as its digits so that JSON carries it exactly. */
export class BigSeed {
  constructor(readonly digits: string) {}
  toJSON(): string {
    return `${BIG_MARK}${this.digits}`;
  }
}
const BIG_MARK = '__ss_bigint__';

/** JSON.stringify that writes BigSeeds as bare digits (JSON numbers of any size). A person's
 * text cannot fake the mark: inside a JSON string its quotes would be escaped. */
export function bigIntJson(body: unknown): string {
  return JSON.stringify(body).replace(/"__ss_bigint__(\d+)"/g, '$1');
}

/** JSON.parse that keeps integers beyond 2^53 exact, as strings, under "seed" keys only: a job's
 * seed (the server picks 63-bit ones) survives a tweak or a rerun. */
export function parseKeepingSeeds(text: string): unknown {
  const quoted = text.replace(/("seed"\s*:\s*)(\d{16,})(?=\s*[,}\]])/g, '$1"$2"');
  return JSON.parse(quoted);
}

/** A new random seed (48 bits: exact in a JavaScript number). */
export function randomSeed(): number {
  const words = new Uint32Array(2);
  crypto.getRandomValues(words);
  return (words[0] & 0xffff) * 2 ** 32 + words[1];
}

export interface SizePreset {
  label: string;
  width: number;
  height: number;
}

const PRESETS_BY_BASE: [number, [string, number, number][]][] = [
  [
    1024,
    [
      ['Square 1024×1024', 1024, 1024],
      ['Portrait 832×1216', 832, 1216],
      ['Landscape 1216×832', 1216, 832],
      ['Wide 1344×768', 1344, 768],
      ['Tall 768×1344', 768, 1344],
    ],
  ],
  [
    512,
    [
      ['Square 512×512', 512, 512],
      ['Portrait 512×768', 512, 768],
      ['Landscape 768×512', 768, 512],
    ],
  ],
];

/** Width/height pairs for a tool with both a width and a height input: presets around the
 * tool's own default size (SDXL/Flux 1024, SD 1.5 512), within its limits. Empty without both. */
export function sizePresets(fields: Field[]): SizePreset[] {
  const w = fields.find((f) => f.name === 'width' && f.kind === 'integer');
  const h = fields.find((f) => f.name === 'height' && f.kind === 'integer');
  if (!w || !h) return [];
  const base = typeof w.default === 'number' ? w.default : 1024;
  const table = PRESETS_BY_BASE.find(([b]) => base >= b)?.[1] ?? PRESETS_BY_BASE[1][1];
  const fits = (n: number, f: Field) => (f.minimum === undefined || n >= f.minimum) && (f.maximum === undefined || n <= f.maximum);
  return table
    .filter(([, width, height]) => fits(width, w) && fits(height, h))
    .map(([label, width, height]) => ({ label, width, height }));
}

/** The `?inputs=` of a tweak or rerun link: a JSON object, or null when missing or malformed. */
export function parsePrefill(raw: string | null): Record<string, unknown> | null {
  if (!raw) return null;
  try {
    const value = parseKeepingSeeds(raw);
    return value && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

/** The link that opens `tool` on the generate page with `inputs` filled in. */
export function generateLink(tool: string, inputs?: Record<string, unknown>): string {
  const base = `/generate/${encodeURIComponent(tool)}`;
  return inputs ? `${base}?inputs=${encodeURIComponent(bigIntJson(inputs))}` : base;
}
