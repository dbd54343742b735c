// An output image behind the API's credentials: an <img src> cannot send an API key, so the file
// is fetched with the studio's headers and shown from a blob: URL (allowed by the CSP).
import { useEffect, useState } from 'preact/hooks';
import { authHeaders } from '../api/client';

export function OutputPreview({ url, alt }: { url: string; alt: string }) {
  const [src, setSrc] = useState<string | null>(null);
  const [failed, setFailed] = useState(false);
  useEffect(() => {
    let objectUrl: string | null = null;
    let live = true;
    fetch(url, { headers: authHeaders('GET'), credentials: 'same-origin' })
      .then((r) => (r.ok ? r.blob() : Promise.reject(new Error(String(r.status)))))
      .then((blob) => {
        if (!live) return;
        objectUrl = URL.createObjectURL(blob);
        setSrc(objectUrl);
      })
      .catch(() => live && setFailed(true));
    return () => {
      live = false;
      if (objectUrl) URL.revokeObjectURL(objectUrl);
    };
  }, [url]);
  if (failed) return <span class="preview-missing">preview unavailable</span>;
  if (!src) return <span class="preview-loading">loading preview…</span>;
  return <img class="tool-node-preview" src={src} alt={alt} width={96} height={96} />;
}
