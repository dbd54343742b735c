// The generate form's pure helpers, on the input schemas of real built-in tools (as GET
// /v1/tools/{slug} answers them: sdxl-txt2img, image-resize, contact-sheet).
import { describe, expect, it } from 'vitest';
import {
  BigSeed,
  bigIntJson,
  fieldsFromTool,
  generateLink,
  initialValues,
  labelFor,
  parsePrefill,
  randomSeed,
  sizePresets,
  toInputs,
  type Field,
} from './schema';

const SDXL: { input_schema: Record<string, unknown>; inputs: any[] } = {"input_schema": {"type": "object", "properties": {"prompt": {"description": "What to draw.", "type": "string", "maxLength": 10000, "x-input-type": "string"}, "negative_prompt": {"description": "What to avoid.", "type": "string", "maxLength": 10000, "default": "", "x-input-type": "string"}, "seed": {"description": "Sampler seed; -1 or absent picks a random one.", "anyOf": [{"type": "integer", "minimum": 0, "maximum": 18446744073709551615}, {"const": -1}, {"const": ""}, {"type": "null"}], "default": -1, "x-input-type": "seed"}, "width": {"description": "Image width in pixels (rounded down to a multiple of 8).", "type": "integer", "minimum": 64, "maximum": 2048, "default": 1024, "x-input-type": "integer"}, "height": {"description": "Image height in pixels (rounded down to a multiple of 8).", "type": "integer", "minimum": 64, "maximum": 2048, "default": 1024, "x-input-type": "integer"}, "steps": {"description": "Sampling steps.", "type": "integer", "minimum": 1, "maximum": 150, "default": 25, "x-input-type": "integer"}, "cfg": {"description": "Classifier-free guidance scale.", "type": "number", "minimum": 0, "maximum": 30, "default": 6.5, "x-input-type": "number"}}, "required": ["prompt"], "additionalProperties": false}, "inputs": [{"name": "prompt", "type": "string", "description": "What to draw.", "required": true}, {"name": "negative_prompt", "type": "string", "description": "What to avoid.", "required": false, "default": ""}, {"name": "seed", "type": "seed", "description": "Sampler seed; -1 or absent picks a random one.", "required": false, "default": -1}, {"name": "width", "type": "integer", "description": "Image width in pixels (rounded down to a multiple of 8).", "required": false, "default": 1024, "minimum": 64, "maximum": 2048}, {"name": "height", "type": "integer", "description": "Image height in pixels (rounded down to a multiple of 8).", "required": false, "default": 1024, "minimum": 64, "maximum": 2048}, {"name": "steps", "type": "integer", "description": "Sampling steps.", "required": false, "default": 25, "minimum": 1, "maximum": 150}, {"name": "cfg", "type": "number", "description": "Classifier-free guidance scale.", "required": false, "default": 6.5, "minimum": 0, "maximum": 30}]};
const RESIZE: { input_schema: Record<string, unknown>; inputs: any[] } = {"input_schema": {"type": "object", "properties": {"image": {"description": "The image to resize", "type": "string", "minLength": 1, "maxLength": 1024, "x-input-type": "image"}, "width": {"description": "The width in pixels (alone: the height follows the aspect ratio)", "type": "integer", "minimum": 1, "maximum": 16384, "x-input-type": "integer"}, "height": {"description": "The height in pixels (alone: the width follows the aspect ratio)", "type": "integer", "minimum": 1, "maximum": 16384, "x-input-type": "integer"}, "fit": {"description": "How the image fits a width and height given together", "type": "string", "maxLength": 10000, "enum": ["contain", "cover", "stretch"], "default": "contain", "x-input-type": "string"}}, "required": ["image"], "additionalProperties": false}, "inputs": [{"name": "image", "type": "image", "description": "The image to resize", "required": true}, {"name": "width", "type": "integer", "description": "The width in pixels (alone: the height follows the aspect ratio)", "required": false, "minimum": 1, "maximum": 16384}, {"name": "height", "type": "integer", "description": "The height in pixels (alone: the width follows the aspect ratio)", "required": false, "minimum": 1, "maximum": 16384}, {"name": "fit", "type": "string", "description": "How the image fits a width and height given together", "required": false, "default": "contain", "choices": ["contain", "cover", "stretch"]}]};
const SHEET: { input_schema: Record<string, unknown>; inputs: any[] } = {"input_schema": {"type": "object", "properties": {"images": {"description": "The images, in the order they are laid out (left to right, top to bottom)", "type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 1024}, "minItems": 1, "maxItems": 64, "x-input-type": "image", "x-many": true}, "columns": {"description": "How many images a row holds (default: a square-ish grid)", "type": "integer", "minimum": 1, "maximum": 64, "x-input-type": "integer"}, "cell": {"description": "The side of each square cell in pixels (default 256)", "type": "integer", "minimum": 16, "maximum": 2048, "x-input-type": "integer"}}, "required": ["images"], "additionalProperties": false}, "inputs": [{"name": "images", "type": "image", "description": "The images, in the order they are laid out (left to right, top to bottom)", "required": true, "many": true, "max_items": 64}, {"name": "columns", "type": "integer", "description": "How many images a row holds (default: a square-ish grid)", "required": false, "minimum": 1, "maximum": 64}, {"name": "cell", "type": "integer", "description": "The side of each square cell in pixels (default 256)", "required": false, "minimum": 16, "maximum": 2048}]};

const fields = (t: { input_schema: Record<string, unknown>; inputs: any[] }): Field[] =>
  fieldsFromTool(t.input_schema, t.inputs);
const byName = (fs: Field[], name: string) => fs.find((f) => f.name === name)!;

describe('fieldsFromTool', () => {
  it('reads a text-to-image tool: prompt, negative prompt, seed, sizes, sliders for steps and cfg', () => {
    const fs = fields(SDXL);
    expect(fs.map((f) => [f.name, f.kind])).toEqual([
      ['prompt', 'prompt'],
      ['negative_prompt', 'textarea'],
      ['seed', 'seed'],
      ['width', 'integer'],
      ['height', 'integer'],
      ['steps', 'integer'],
      ['cfg', 'number'],
    ]);
    expect(byName(fs, 'prompt').required).toBe(true);
    expect(byName(fs, 'steps')).toMatchObject({ slider: true, step: 1, minimum: 1, maximum: 150, default: 25 });
    expect(byName(fs, 'cfg')).toMatchObject({ slider: true, step: 0.5, label: 'CFG scale' });
    expect(byName(fs, 'width').slider).toBe(false);
  });

  it('turns choices into a select and an image input into an image field; many images stay a list', () => {
    const resize = fields(RESIZE);
    expect(byName(resize, 'fit')).toMatchObject({ kind: 'enum', choices: ['contain', 'cover', 'stretch'] });
    expect(byName(resize, 'image')).toMatchObject({ kind: 'image', many: false, required: true });
    expect(byName(fields(SHEET), 'images')).toMatchObject({ kind: 'image', many: true });
  });

  it('falls back to the schema alone, with booleans and enums from it', () => {
    const fs = fieldsFromTool({
      type: 'object',
      properties: {
        tiled: { type: 'boolean', default: true },
        mode: { type: 'string', enum: ['a', 'b'] },
        denoise: { type: 'number', minimum: 0, maximum: 1 },
      },
      required: ['mode'],
    });
    expect(fs.map((f) => f.kind)).toEqual(['boolean', 'enum', 'number']);
    expect(byName(fs, 'mode').required).toBe(true);
    expect(byName(fs, 'denoise').step).toBe(0.01);
  });
});

describe('values and inputs', () => {
  it('starts from the defaults, a -1 seed empty, and sends only what is set', () => {
    const fs = fields(SDXL);
    const values = initialValues(fs);
    expect(values).toMatchObject({ prompt: '', seed: '', steps: '25', cfg: '6.5', width: '1024' });
    expect(toInputs(fs, values).errors).toEqual({ prompt: 'required' });
    const { inputs, errors } = toInputs(fs, { ...values, prompt: 'a red fox', steps: '30' });
    expect(errors).toEqual({});
    expect(inputs).toEqual({ prompt: 'a red fox', seed: -1, width: 1024, height: 1024, steps: 30, cfg: 6.5 });
  });

  it('refuses numbers out of range or not whole, and bad seeds', () => {
    const fs = fields(SDXL);
    const v = { ...initialValues(fs), prompt: 'x', steps: '151', cfg: 'abc', width: '10.5', seed: '-3' };
    expect(toInputs(fs, v).errors).toEqual({
      steps: 'at most 150',
      cfg: 'a number',
      width: 'a whole number',
      seed: 'a whole number of 0 or more (empty: random)',
    });
  });

  it('pre-fills from a tweak, keeping a 63-bit seed exact through the link and the request body', () => {
    const fs = fields(SDXL);
    const link = generateLink('sdxl-txt2img', { prompt: 'fox', seed: new BigSeed('1879501611239828158'), steps: 20 });
    expect(link.startsWith('/generate/sdxl-txt2img?inputs=')).toBe(true);
    const raw = decodeURIComponent(link.split('inputs=')[1]);
    expect(raw).toBe('{"prompt":"fox","seed":1879501611239828158,"steps":20}');
    const prefill = parsePrefill(raw)!;
    expect(prefill.seed).toBe('1879501611239828158');
    const values = initialValues(fs, prefill);
    expect(values.seed).toBe('1879501611239828158');
    const { inputs } = toInputs(fs, values);
    expect(bigIntJson({ tool: 't', inputs })).toContain('"seed":1879501611239828158');
    expect(bigIntJson({ prompt: '"__ss_bigint__12"' })).toBe('{"prompt":"\\"__ss_bigint__12\\""}');
  });

  it('ignores a malformed or non-object prefill', () => {
    expect(parsePrefill('{nope')).toBeNull();
    expect(parsePrefill('[1]')).toBeNull();
    expect(parsePrefill(null)).toBeNull();
  });

  it('keeps image refs; a list for many', () => {
    const sheet = fields(SHEET);
    const values = initialValues(sheet, { images: 'upload:a' });
    expect(values.images).toEqual(['upload:a']);
    expect(toInputs(sheet, { ...values, images: ['upload:a', 'output:b'] }).inputs.images).toEqual(['upload:a', 'output:b']);
    expect(toInputs(fields(RESIZE), initialValues(fields(RESIZE))).errors.image).toBe('choose an image');
  });
});

describe('size presets and seeds', () => {
  it('offers SDXL sizes for a 1024 tool, none for a tool without width and height', () => {
    const presets = sizePresets(fields(SDXL));
    expect(presets[0]).toEqual({ label: 'Square 1024×1024', width: 1024, height: 1024 });
    expect(presets.length).toBe(5);
    expect(sizePresets(fields(SHEET))).toEqual([]);
  });

  it('offers 512 sizes for a tool whose default is 512', () => {
    const fs = fields(SDXL).map((f) => (f.name === 'width' || f.name === 'height' ? { ...f, default: 512 } : f));
    expect(sizePresets(fs).map((p) => p.width)).toEqual([512, 512, 768]);
  });

  it('rolls safe integer seeds that differ', () => {
    const a = randomSeed();
    const b = randomSeed();
    expect(Number.isSafeInteger(a) && a >= 0).toBe(true);
    expect(a).not.toBe(b);
  });

  it('labels inputs from their names', () => {
    expect(labelFor('negative_prompt')).toBe('Negative prompt');
    expect(labelFor('max_tokens')).toBe('Max tokens');
  });
});
