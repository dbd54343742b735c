// Undo/redo over whole-graph snapshots. Graphs are immutable values, so a snapshot is a
// reference, not a copy. Consecutive edits with the same `coalesce` key (the steps of one drag,
// the keystrokes into one field) replace the newest entry instead of adding one.
import type { CanvasGraph } from './types';

export interface History {
  readonly present: CanvasGraph;
  readonly canUndo: boolean;
  readonly canRedo: boolean;
  /** Record a new present; `coalesce` merges it with the previous edit of the same key. */
  push(graph: CanvasGraph, coalesce?: string): void;
  /** Replace the present without an undo entry (a load, or viewport changes). */
  reset(graph: CanvasGraph): void;
  undo(): CanvasGraph | null;
  redo(): CanvasGraph | null;
}

export function createHistory(initial: CanvasGraph, limit = 100): History {
  let past: CanvasGraph[] = [];
  let future: CanvasGraph[] = [];
  let present = initial;
  let lastKey: string | undefined;
  return {
    get present() {
      return present;
    },
    get canUndo() {
      return past.length > 0;
    },
    get canRedo() {
      return future.length > 0;
    },
    push(graph, coalesce) {
      if (graph === present) return;
      if (!(coalesce !== undefined && coalesce === lastKey && past.length)) {
        past.push(present);
        if (past.length > limit) past = past.slice(past.length - limit);
      }
      present = graph;
      future = [];
      lastKey = coalesce;
    },
    reset(graph) {
      present = graph;
      lastKey = undefined;
    },
    undo() {
      const prev = past.pop();
      if (!prev) return null;
      future.push(present);
      present = prev;
      lastKey = undefined;
      return present;
    },
    redo() {
      const next = future.pop();
      if (!next) return null;
      past.push(present);
      present = next;
      lastKey = undefined;
      return present;
    },
  };
}
