// Job outputs on screen. An output's URL needs the person's credentials: a browser session's
// cookie goes with a plain <img src>, but an API key is a header, which <img> cannot send; so
// with a key the image is fetched (with the header) and shown from a blob: URL, which the CSP
// allows. The same URL serves the download link.
import { useEffect, useState } from 'preact/hooks';
import { authHeaders } from '../api/client';

function usesApiKey(): boolean {
  return 'Authorization' in authHeaders('GET');
}

/** A URL the browser can load for `url`: the URL itself, or a blob: URL of it fetched with the
 * API key. null while it loads; `failed` when it could not be fetched. */
export function useOutputUrl(url: string | null): { src: string | null; failed: boolean } {
  const [state, setState] = useState<{ src: string | null; failed: boolean }>({ src: null, failed: false });
  useEffect(() => {
    if (!url) {
      setState({ src: null, failed: false });
      return;
    }
    if (!usesApiKey()) {
      setState({ src: url, failed: false });
      return;
    }
    let live = true;
    let made: string | null = null;
    const abort = new AbortController();
    setState({ src: null, failed: false });
    fetch(url, { headers: authHeaders('GET'), credentials: 'same-origin', signal: abort.signal })
      .then((r) => (r.ok ? r.blob() : Promise.reject(new Error(String(r.status)))))
      .then((blob) => {
        if (!live) return;
        made = URL.createObjectURL(blob);
        setState({ src: made, failed: false });
      })
      .catch(() => live && setState({ src: null, failed: true }));
    return () => {
      live = false;
      abort.abort();
      if (made) URL.revokeObjectURL(made);
    };
  }, [url]);
  return state;
}

export function OutputImage({ url, alt, class: cls }: { url: string; alt: string; class?: string }) {
  const { src, failed } = useOutputUrl(url);
  if (failed) return <span class="output-missing">Image unavailable</span>;
  if (!src) return <span class="output-loading" aria-label={`Loading ${alt}`} role="img" />;
  return <img class={cls} src={src} alt={alt} loading="lazy" decoding="async" />;
}

export function DownloadLink({ url, filename }: { url: string; filename: string }) {
  const { src } = useOutputUrl(url);
  return (
    <a class="button secondary" href={src ?? url} download={filename} aria-disabled={src ? undefined : 'true'}>
      Download
    </a>
  );
}
