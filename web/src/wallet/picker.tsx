// The discovered wallets as buttons (icon and name), shared by the sign-in and account pages.
import './wallet.css';
import type { DiscoveredWallet } from './eip6963';

export function WalletButtons({
  wallets,
  onPick,
  busy,
  label = (name) => name,
}: {
  wallets: DiscoveredWallet[];
  onPick: (wallet: DiscoveredWallet) => void;
  busy: boolean;
  /** The button's text for a wallet's name (e.g. "Link Test Wallet"). */
  label?: (name: string) => string;
}) {
  return (
    <ul class="wallet-buttons">
      {wallets.map((w) => (
        <li key={w.info.uuid}>
          <button type="button" class="secondary wallet-button" disabled={busy} onClick={() => onPick(w)}>
            {w.info.icon ? <img src={w.info.icon} alt="" width={24} height={24} /> : <span class="wallet-icon" aria-hidden="true" />}
            {label(w.info.name)}
          </button>
        </li>
      ))}
    </ul>
  );
}

/** 0x1234…abcd: enough to recognise an address, short enough for a phone. */
export function shortAddress(address: string): string {
  return `${address.slice(0, 6)}…${address.slice(-4)}`;
}
