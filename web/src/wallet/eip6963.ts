// Injected wallets, found as EIP-6963 describes: every wallet extension announces itself with an
// `eip6963:announceProvider` event (in answer to `eip6963:requestProvider`, and on its own when
// it loads), so several can coexist without fighting over `window.ethereum`. A wallet that
// predates EIP-6963 is still found through `window.ethereum`.
import { signal, type ReadonlySignal } from '@preact/signals';

/** An EIP-1193 provider: the one method every wallet has, and its events where it has them. */
export interface Eip1193Provider {
  request(args: { method: string; params?: unknown[] | Record<string, unknown> }): Promise<unknown>;
  on?(event: string, listener: (...args: unknown[]) => void): void;
  removeListener?(event: string, listener: (...args: unknown[]) => void): void;
}

export interface WalletInfo {
  uuid: string;
  name: string;
  /** A data: URI (EIP-6963 requires one); empty for the window.ethereum fallback. */
  icon: string;
  rdns: string;
}

export interface DiscoveredWallet {
  info: WalletInfo;
  provider: Eip1193Provider;
}

export const LEGACY_WALLET_INFO: WalletInfo = Object.freeze({
  uuid: 'window.ethereum',
  name: 'Browser wallet',
  icon: '',
  rdns: '',
});

interface AnnounceDetail {
  info?: Partial<WalletInfo>;
  provider?: Eip1193Provider;
}

function isProvider(p: unknown): p is Eip1193Provider {
  return typeof p === 'object' && p !== null && typeof (p as Eip1193Provider).request === 'function';
}

/** Only images a data: URI carries are shown: an announced icon is the wallet's own text, and a
 * remote URL would let it make the page fetch things (the CSP would refuse it anyway). */
export function safeIcon(icon: unknown): string {
  return typeof icon === 'string' && /^data:image\/(svg\+xml|png|jpeg|gif|webp)[;,]/i.test(icon) ? icon : '';
}

export interface WalletDiscovery {
  wallets: ReadonlySignal<DiscoveredWallet[]>;
  /** Ask the wallets to announce themselves again (e.g. one installed since). */
  refresh(): void;
  stop(): void;
}

/** Listen for wallets on `win`; the list updates as they announce themselves. */
export function discoverWallets(win: Window = window): WalletDiscovery {
  const announced = new Map<string, DiscoveredWallet>();
  const wallets = signal<DiscoveredWallet[]>([]);

  function publish() {
    const list = [...announced.values()];
    const legacy = (win as unknown as { ethereum?: unknown }).ethereum;
    // window.ethereum is usually one of the announced providers already: listed once, by name.
    if (isProvider(legacy) && !list.some((w) => w.provider === legacy)) {
      list.push({ info: LEGACY_WALLET_INFO, provider: legacy });
    }
    wallets.value = list;
  }

  function onAnnounce(event: Event) {
    const detail = (event as CustomEvent<AnnounceDetail>).detail;
    if (!detail || !isProvider(detail.provider) || !detail.info?.uuid) return;
    const info: WalletInfo = {
      uuid: String(detail.info.uuid),
      name: String(detail.info.name || 'Wallet'),
      icon: safeIcon(detail.info.icon),
      rdns: String(detail.info.rdns ?? ''),
    };
    announced.set(info.uuid, { info, provider: detail.provider });
    publish();
  }

  win.addEventListener('eip6963:announceProvider', onAnnounce);
  const refresh = () => {
    win.dispatchEvent(new Event('eip6963:requestProvider'));
    publish();
  };
  refresh();
  return {
    wallets,
    refresh,
    stop: () => win.removeEventListener('eip6963:announceProvider', onAnnounce),
  };
}

let shared: WalletDiscovery | null = null;

/** One discovery for the whole studio, started on first use: wallets announce themselves once
 * at load, so a listener that starts late must ask again (refresh). */
export function walletDiscovery(): WalletDiscovery {
  if (!shared) shared = discoverWallets(window);
  else shared.refresh();
  return shared;
}
