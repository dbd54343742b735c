import { describe, expect, it } from 'vitest';
import { createHistory } from './history';
import { addNode, moveNodes } from './model';
import { EMPTY_GRAPH } from './types';

describe('history', () => {
  it('undoes and redoes edits', () => {
    const h = createHistory(EMPTY_GRAPH);
    const a = addNode(EMPTY_GRAPH, 'upscale-4x', { x: 0, y: 0 }).graph;
    h.push(a);
    expect(h.canUndo).toBe(true);
    expect(h.undo()).toBe(EMPTY_GRAPH);
    expect(h.canRedo).toBe(true);
    expect(h.redo()).toBe(a);
    expect(h.redo()).toBeNull();
  });

  it('coalesces the steps of one drag into one entry', () => {
    const h = createHistory(EMPTY_GRAPH);
    const { graph: a, id } = addNode(EMPTY_GRAPH, 'upscale-4x', { x: 0, y: 0 });
    h.push(a);
    for (let x = 1; x <= 10; x++) h.push(moveNodes(h.present, { [id]: { x, y: 0 } }), 'drag-1');
    expect(h.present.nodes[0].position.x).toBe(10);
    expect(h.undo()).toBe(a);
    expect(h.undo()).toBe(EMPTY_GRAPH);
  });

  it('a new edit clears redo, and the stack is bounded', () => {
    const h = createHistory(EMPTY_GRAPH, 3);
    let g = EMPTY_GRAPH;
    for (let i = 0; i < 5; i++) h.push((g = addNode(g, 't', { x: i, y: 0 }).graph));
    let undone = 0;
    while (h.undo()) undone++;
    expect(undone).toBe(3);
    h.redo();
    h.push(addNode(h.present, 'u', { x: 0, y: 0 }).graph);
    expect(h.canRedo).toBe(false);
  });
});
