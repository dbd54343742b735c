import { getBezierPath, Position } from '@xyflow/system';
import { describe, expect, it } from 'vitest';
import {
  bezierControls,
  buildScene,
  cachedMeasure,
  CARD,
  cull,
  DEFAULT_THEME,
  detail,
  dotGrid,
  drawScene,
  edgeBounds,
  estimateLayout,
  previewBox,
  previewsHeight,
  splitLabels,
  toFlow,
  toScreen,
  viewMatrix,
  visibleRect,
  wrap,
  type Ctx,
  type FlowNodeLike,
  type Scene,
} from './sketch';

const size1 = { width: 800, height: 600, dpr: 1 };

// a monospace stand-in for the browser's text measure: 6 px a character
const measure = (text: string) => text.length * 6;

const port = (name: string, type: string, required = false) => ({ name, type, required });

function node(id: string, x: number, y: number, extra: Partial<FlowNodeLike> = {}): FlowNodeLike {
  return {
    id,
    position: { x, y },
    title: 'Tool',
    inputs: [port('prompt', 'string', true), port('seed', 'seed')],
    outputs: [port('image', 'image')],
    wired: [],
    ...extra,
  };
}

/** A 2D context that records what is drawn. */
function recorder() {
  const calls: { op: string; args: unknown[]; font: string }[] = [];
  const ctx: Record<string, unknown> = {
    fillStyle: '',
    strokeStyle: '',
    lineWidth: 1,
    font: '',
    textAlign: 'left',
    textBaseline: 'alphabetic',
    globalAlpha: 1,
    measureText: (t: string) => ({ width: measure(t) }),
  };
  for (const op of ['setTransform', 'fillRect', 'beginPath', 'moveTo', 'lineTo', 'bezierCurveTo', 'rect', 'roundRect', 'arc', 'fill', 'stroke', 'fillText', 'drawImage'])
    ctx[op] = (...args: unknown[]) => void calls.push({ op, args, font: String(ctx.font) });
  return { ctx: ctx as unknown as Ctx, calls };
}

describe('the view transform', () => {
  const view = { x: 120, y: -40, zoom: 0.5 };

  it('maps flow points to the screen and back', () => {
    const p = { x: 300, y: 80 };
    expect(toScreen(view, p)).toEqual({ x: 270, y: 0 });
    expect(toFlow(view, toScreen(view, p))).toEqual(p);
  });

  it('shows the flow rectangle the screen covers', () => {
    expect(visibleRect(view, 1000, 600)).toEqual({ x: -240, y: 80, width: 2000, height: 1200 });
  });

  it('draws in device pixels', () => {
    expect(viewMatrix(view, 2)).toEqual([1, 0, 0, 1, 240, -80]);
  });
});

describe('wires', () => {
  it('bend as xyflow draws them, forwards and backwards', () => {
    for (const [x1, y1, x2, y2] of [
      [0, 0, 100, 50],
      [100, 0, 0, 50],
      [10, 300, 10, 20],
    ]) {
      const [path] = getBezierPath({ sourceX: x1, sourceY: y1, sourcePosition: Position.Right, targetX: x2, targetY: y2, targetPosition: Position.Left });
      const numbers = path.match(/-?[\d.]+/g)!.map(Number);
      expect(numbers).toEqual([x1, y1, ...bezierControls({ x1, y1, x2, y2 }), x2, y2]);
    }
  });

  it('are culled by a box around their control points', () => {
    const e = { id: 'e', x1: 100, y1: 0, x2: 0, y2: 50 };
    const b = edgeBounds(e);
    const [c1x, , c2x] = bezierControls(e);
    expect(b.x).toBe(Math.min(c2x, 0));
    expect(b.x + b.width).toBe(Math.max(c1x, 100));
    expect(b.y).toBe(0);
    expect(b.height).toBe(50);
  });
});

describe('the scene', () => {
  it('estimates an unmeasured card as the DOM lays it out', () => {
    // measured in Chromium: 5 inputs and 1 output, a one-line title: the card is 203 px high with
    // the first handle's centre at 64; 3 inputs: 163
    const five = estimateLayout(1, [false, false, false, false, false], [false]);
    expect(five.height).toBe(203);
    expect(five.inputs[0]).toBe(64);
    expect(five.inputs[4]).toBe(144);
    expect(estimateLayout(1, [false, false, false], [false]).height).toBe(163);
    // a two-line title, the second input's label and the output's label wrapped: 277 px, the
    // handles at 82, 110, 138 ... and the output's at 90
    const wrapped = estimateLayout(2, [false, true, false, false, false, false, false], [true]);
    expect(wrapped.height).toBe(277);
    expect(wrapped.inputs.slice(0, 3)).toEqual([82, 110, 138]);
    expect(wrapped.outputs).toEqual([90]);
  });

  it('wraps labels that do not fit their share of the card', () => {
    // 6 px a character: 23 characters (138 px) + padding next to 12 (72 px) + padding is over
    // the 232 px the two lists share
    const s = splitLabels(['prompt*: string', 'negative_prompt: string'], ['image: image'], '', measure);
    expect(s.inputs).toEqual([false, true]);
    expect(s.outputs).toEqual([true]);
    expect(splitLabels(['a: b'], ['c: d'], '', measure)).toEqual({ inputs: [false], outputs: [false] });
  });

  it('wraps titles at word boundaries', () => {
    expect(wrap('Stable Diffusion 1.5: text to image', 26 * 6, '', measure)).toEqual(['Stable Diffusion 1.5: text', 'to image']);
    expect(wrap('', 100, '', measure)).toEqual(['']);
  });

  it('uses what xyflow measured, else the estimate, and ends wires at the handles', () => {
    const measured = node('a', 0, 0, {
      measured: { width: 240, height: 150 },
      handles: { source: [{ id: 'out:image', x: 233, y: 70, width: 12, height: 12 }], target: [{ id: 'in:prompt', x: -5, y: 90, width: 12, height: 12 }] },
    });
    const guessed = node('b', 400, 100, { wired: ['prompt'] });
    const scene = buildScene([measured, guessed], [{ id: 'w', source: 'a', sourceHandle: 'out:image', target: 'b', targetHandle: 'in:prompt' }], measure);
    const [a, b] = scene.nodes;
    expect(a.measured).toBe(true);
    expect(a.height).toBe(150);
    expect(a.outputs[0].y).toBe(76);
    expect(a.inputs[0].y).toBe(96);
    // the second input was not measured: where the estimate puts it
    expect(a.inputs[1].y).toBe(estimateLayout(1, [false, false], [false]).inputs[1]);
    expect(b.measured).toBe(false);
    expect(b.height).toBe(estimateLayout(1, [false, false], [false]).height);
    expect(b.inputs[0].wired).toBe(true);
    expect(scene.edges).toEqual([{ id: 'w', x1: 245, y1: 76, x2: 395, y2: 100 + b.inputs[0].y }]);
  });

  it('leaves out wires whose ports are unknown', () => {
    const scene = buildScene([node('a', 0, 0), node('b', 300, 0)], [{ id: 'w', source: 'a', sourceHandle: 'out:nope', target: 'b', targetHandle: 'in:prompt' }], measure);
    expect(scene.edges).toEqual([]);
  });

  it('keeps what is on screen', () => {
    const scene: Scene = buildScene([node('in', 0, 0), node('out', 5000, 0), node('edge', -200, -150)], [], measure);
    const seen = cull(scene, { x: 0, y: 0, width: 1000, height: 800 });
    expect(seen.nodes.map((n) => n.id)).toEqual(['in', 'edge']);
    // a wire whose ends are both off screen but which crosses it
    const across = { id: 'x', x1: -500, y1: 100, x2: 2000, y2: 400 };
    expect(cull({ nodes: [], edges: [across] }, { x: 0, y: 0, width: 1000, height: 800 }).edges).toHaveLength(1);
    expect(cull({ nodes: [], edges: [across] }, { x: 0, y: 500, width: 1000, height: 800 }).edges).toHaveLength(0);
  });
});

describe('drawing', () => {
  const size = { width: 800, height: 600, dpr: 2 };

  it('draws the cards on screen, in order, with their text when it is readable', () => {
    const scene = buildScene([node('first', 0, 0, { title: 'One' }), node('second', 100, 50, { title: 'Two' }), node('far', 9000, 0, { title: 'Far' })], [], measure);
    const { ctx, calls } = recorder();
    const stats = drawScene(ctx, scene, { x: 0, y: 0, zoom: 1 }, size, DEFAULT_THEME, measure);
    expect(stats).toEqual({ nodes: 2, edges: 0, detail: 'text' });
    expect(calls[0]).toMatchObject({ op: 'setTransform', args: [2, 0, 0, 2, 0, 0] });
    const texts = calls.filter((c) => c.op === 'fillText').map((c) => c.args[0]);
    expect(texts).toContain('One');
    expect(texts).toContain('prompt*: ');
    expect(texts).not.toContain('Far');
    // the second card is drawn over the first one's text (it covers it in the DOM too)
    const firstText = calls.findIndex((c) => c.op === 'fillText' && c.args[0] === 'One');
    const secondCard = calls.findIndex((c) => c.op === 'roundRect' && c.args[0] === 100 && c.args[1] === 50);
    const secondText = calls.findIndex((c) => c.op === 'fillText' && c.args[0] === 'Two');
    expect(firstText).toBeLessThan(secondCard);
    expect(secondCard).toBeLessThan(secondText);
  });

  it('draws bars instead of text too small to read', () => {
    expect(detail(0.5)).toBe('text');
    expect(detail(0.3)).toBe('bars');
    const scene = buildScene([node('a', 0, 0)], [], measure);
    const { ctx, calls } = recorder();
    expect(drawScene(ctx, scene, { x: 0, y: 0, zoom: 0.3 }, size, DEFAULT_THEME, measure).detail).toBe('bars');
    expect(calls.filter((c) => c.op === 'fillText')).toEqual([]);
    // title, the id row, two inputs and one output
    expect(calls.filter((c) => c.op === 'rect')).toHaveLength(5);
  });

  it('draws every wire on screen in one stroke, under the cards', () => {
    const scene = buildScene(
      [node('a', 0, 0), node('b', 400, 0), node('c', 800, 300)],
      [
        { id: 'ab', source: 'a', sourceHandle: 'out:image', target: 'b', targetHandle: 'in:prompt' },
        { id: 'bc', source: 'b', sourceHandle: 'out:image', target: 'c', targetHandle: 'in:seed' },
      ],
      measure,
    );
    const { ctx, calls } = recorder();
    drawScene(ctx, scene, { x: 0, y: 0, zoom: 1 }, size, DEFAULT_THEME, measure);
    const curves = calls.filter((c) => c.op === 'bezierCurveTo');
    expect(curves).toHaveLength(2);
    const lastCurve = calls.lastIndexOf(curves[1]);
    const firstStroke = calls.findIndex((c) => c.op === 'stroke');
    const firstCard = calls.findIndex((c) => c.op === 'roundRect');
    expect(lastCurve).toBeLessThan(firstStroke);
    expect(firstStroke).toBeLessThan(firstCard);
  });
});

describe('previews', () => {
  it('sit above the button, two to a row, as the DOM lays them out', () => {
    // one image: a 96px square 2px below the previews' top, 6px in from the border
    const one = estimateLayout(1, [false], [false], previewsHeight(1));
    expect(one.height - estimateLayout(1, [false], [false]).height).toBe(100);
    expect(previewBox(one.height, 1, 0)).toEqual({ x: 7, y: one.height - 1 - 4 - 36 - 4 - 2 - 96 });
    // three images: two rows; the third under the first
    expect(previewsHeight(3)).toBe(200);
    const h = 400;
    expect(previewBox(h, 3, 1).x - previewBox(h, 3, 0).x).toBe(100);
    expect(previewBox(h, 3, 2)).toEqual({ x: 7, y: previewBox(h, 3, 0).y + 100 });
  });

  it('draw the loaded thumbnails cropped square, else grey squares', () => {
    const scene = buildScene([node('a', 0, 0, { images: 2, state: 'completed' })], [], measure);
    const img = { naturalWidth: 200, naturalHeight: 100 } as unknown as CanvasImageSource;
    const { ctx, calls } = recorder();
    drawScene(ctx, scene, { x: 0, y: 0, zoom: 1 }, size1, DEFAULT_THEME, measure, { previews: () => [img] });
    const drawn = calls.filter((c) => c.op === 'drawImage');
    expect(drawn).toHaveLength(1);
    const at = previewBox(scene.nodes[0].height, 2, 0);
    expect(drawn[0].args).toEqual([img, 50, 0, 100, 100, at.x, at.y, 96, 96]);
    // the second has not loaded: a placeholder where it goes
    const second = previewBox(scene.nodes[0].height, 2, 1);
    expect(calls.some((c) => c.op === 'fillRect' && c.args[0] === second.x && c.args[1] === second.y)).toBe(true);
  });
});

describe('the dot grid', () => {
  it('puts the dots where xyflow does, whatever the pan', () => {
    // zoom 1, no pan: xyflow's pattern starts half a period back with the dot at its radius
    expect(dotGrid({ x: 0, y: 0, zoom: 1 })).toEqual({ x0: 10.5, y0: 10.5, period: 20, radius: 0.5 });
    const g = dotGrid({ x: -1234.5, y: 77, zoom: 0.5 });
    expect(g.period).toBe(10);
    expect(g.x0).toBeGreaterThanOrEqual(0);
    expect(g.x0).toBeLessThan(10);
    // a whole number of periods of pan moves nothing
    expect(dotGrid({ x: -1234.5 + 30, y: 77, zoom: 0.5 }).x0).toBeCloseTo(g.x0);
  });
});

describe('text widths', () => {
  it('are measured once per text and font', () => {
    let n = 0;
    const m = cachedMeasure((t) => (n++, t.length));
    expect(m('abc', 'f')).toBe(3);
    expect(m('abc', 'f')).toBe(3);
    expect(m('abc', 'g')).toBe(3);
    expect(n).toBe(2);
  });
});

describe('the card model', () => {
  it('matches the stylesheet', () => {
    // sandbox.css: --ss-node-width 240px, handles 12px; the name's line box inside 6px padding
    expect(CARD.width).toBe(240);
    expect(CARD.handle).toBe(12);
    expect(CARD.nameWidth).toBe(CARD.width - 2 * CARD.border - 12);
  });
});
