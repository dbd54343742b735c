import { afterEach, describe, expect, it } from 'vitest';
import { discoverWallets, LEGACY_WALLET_INFO, safeIcon, type Eip1193Provider } from './eip6963';

const ICON = 'data:image/svg+xml,%3Csvg%3E%3C/svg%3E';

function provider(): Eip1193Provider {
  return { request: async () => null };
}

/** A fake extension: announces on request and once when it loads, as real ones do. */
function install(uuid: string, name: string, p = provider(), icon = ICON) {
  const announce = () =>
    window.dispatchEvent(
      new CustomEvent('eip6963:announceProvider', { detail: Object.freeze({ info: { uuid, name, icon, rdns: `x.${name}` }, provider: p }) }),
    );
  window.addEventListener('eip6963:requestProvider', announce);
  return { p, announce, remove: () => window.removeEventListener('eip6963:requestProvider', announce) };
}

const cleanups: (() => void)[] = [];
afterEach(() => {
  while (cleanups.length) cleanups.pop()!();
  delete (window as unknown as { ethereum?: unknown }).ethereum;
});

describe('EIP-6963 discovery', () => {
  it('finds wallets installed before it asks, and those that announce later', () => {
    const a = install('a', 'Alpha');
    cleanups.push(a.remove);
    const discovery = discoverWallets(window);
    cleanups.push(discovery.stop);
    expect(discovery.wallets.value.map((w) => w.info.name)).toEqual(['Alpha']);
    const b = install('b', 'Beta');
    cleanups.push(b.remove);
    b.announce();
    expect(discovery.wallets.value.map((w) => w.info.name)).toEqual(['Alpha', 'Beta']);
    a.announce(); // again: still listed once
    expect(discovery.wallets.value).toHaveLength(2);
  });

  it('falls back to window.ethereum, but does not list it twice', () => {
    const legacy = provider();
    (window as unknown as { ethereum: unknown }).ethereum = legacy;
    const discovery = discoverWallets(window);
    cleanups.push(discovery.stop);
    expect(discovery.wallets.value).toEqual([{ info: LEGACY_WALLET_INFO, provider: legacy }]);
    const same = install('c', 'Gamma', legacy);
    cleanups.push(same.remove);
    same.announce();
    expect(discovery.wallets.value.map((w) => w.info.name)).toEqual(['Gamma']);
  });

  it('ignores announcements without a provider, and icons that are not data: images', () => {
    const discovery = discoverWallets(window);
    cleanups.push(discovery.stop);
    window.dispatchEvent(new CustomEvent('eip6963:announceProvider', { detail: { info: { uuid: 'x', name: 'X' } } }));
    expect(discovery.wallets.value).toEqual([]);
    expect(safeIcon('https://evil.example/i.png')).toBe('');
    expect(safeIcon('javascript:alert(1)')).toBe('');
    expect(safeIcon(ICON)).toBe(ICON);
  });

  it('stops listening when stopped', () => {
    const discovery = discoverWallets(window);
    discovery.stop();
    const late = install('d', 'Delta');
    cleanups.push(late.remove);
    late.announce();
    expect(discovery.wallets.value).toEqual([]);
  });
});
