// The tools the canvas offers, with their ports. Signed in: GET /v1/tools, then each tool's
// detail (its inputs). Signed out the API shows only the public catalog, which has outputs but
// no inputs, so a signed-out canvas can lay tools out but not wire their inputs.
import { api, must } from '../api/client';
import { toolInfo, type ToolDetailLike, type Tools } from './model';

export async function loadTools(signedIn: boolean): Promise<{ tools: Tools; complete: boolean }> {
  if (!signedIn) {
    const catalog = await must(api.GET('/v1/catalog'));
    const tools: Tools = {};
    for (const t of catalog.tools) tools[t.slug] = toolInfo({ ...t, inputs: [] } as ToolDetailLike);
    return { tools, complete: false };
  }
  const list = await must(api.GET('/v1/tools'));
  const details = await Promise.all(
    list.map((t) => must(api.GET('/v1/tools/{slug}', { params: { path: { slug: t.slug } } }))),
  );
  const tools: Tools = {};
  for (const d of details) tools[d.slug] = toolInfo(d as ToolDetailLike);
  return { tools, complete: true };
}
