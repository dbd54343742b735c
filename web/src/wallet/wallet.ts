// Talking to a wallet over EIP-1193: accounts, the chain, personal_sign, transactions, and the
// errors wallets answer with, turned into sentences a person can act on.
import type { Eip1193Provider } from './eip6963';
import { keccak256Hex } from './keccak';

/** A wallet's refusal or failure, with the EIP-1193 / JSON-RPC code when it gave one. */
export class WalletError extends Error {
  constructor(
    message: string,
    readonly code: number | null = null,
  ) {
    super(message);
  }
}

const MESSAGES: Record<number, string> = {
  4001: 'You declined the request in your wallet.',
  4100: 'The wallet has not authorised this site: connect it first.',
  4200: 'The wallet does not support this request.',
  4900: 'The wallet is not connected to any chain.',
  4901: 'The wallet is not connected to the requested chain.',
  4902: 'The wallet does not know this chain: add it in the wallet first.',
  [-32002]: 'Your wallet already has a request waiting: open the wallet to answer it.',
  [-32603]: 'The wallet failed to do this (internal error).',
};

/** The WalletError for anything a provider threw. */
export function walletError(e: unknown): WalletError {
  if (e instanceof WalletError) return e;
  const raw = (e ?? {}) as { code?: unknown; message?: unknown };
  const code = typeof raw.code === 'number' ? raw.code : null;
  const known = code !== null ? MESSAGES[code] : undefined;
  const detail = typeof raw.message === 'string' && raw.message ? raw.message : String(e);
  return new WalletError(known ?? `The wallet answered with an error: ${detail}`, code);
}

async function ask<T>(provider: Eip1193Provider, method: string, params?: unknown[]): Promise<T> {
  try {
    return (await provider.request(params ? { method, params } : { method })) as T;
  } catch (e) {
    throw walletError(e);
  }
}

const ADDRESS = /^0x[0-9a-fA-F]{40}$/;

/** EIP-55: the address with hex letters upper-cased where the hash of its lowercase form has a
 * nibble of 8 or more. The SIWE parser on the server accepts only this form. */
export function toChecksumAddress(address: string): string {
  if (!ADDRESS.test(address)) throw new WalletError(`not an address: ${address}`);
  const lower = address.slice(2).toLowerCase();
  const hash = keccak256Hex(lower);
  let out = '0x';
  for (let i = 0; i < 40; i++) out += parseInt(hash[i], 16) >= 8 ? lower[i].toUpperCase() : lower[i];
  return out;
}

/** eth_requestAccounts: the first account, checksummed (the wallet shows its own prompt). */
export async function connect(provider: Eip1193Provider): Promise<string> {
  const accounts = await ask<unknown>(provider, 'eth_requestAccounts');
  const first = Array.isArray(accounts) ? accounts[0] : undefined;
  if (typeof first !== 'string' || !ADDRESS.test(first)) throw new WalletError('The wallet shared no account.');
  return toChecksumAddress(first);
}

export async function chainId(provider: Eip1193Provider): Promise<number> {
  const raw = await ask<unknown>(provider, 'eth_chainId');
  const id = typeof raw === 'string' ? Number.parseInt(raw, raw.startsWith('0x') ? 16 : 10) : Number(raw);
  if (!Number.isSafeInteger(id) || id <= 0) throw new WalletError(`The wallet reported a strange chain id: ${raw}`);
  return id;
}

/** Make sure the wallet is on one of `accepted` (asking it to switch to the first otherwise). */
export async function ensureChain(provider: Eip1193Provider, accepted: readonly number[]): Promise<number> {
  const current = await chainId(provider);
  if (accepted.length === 0 || accepted.includes(current)) return current;
  await ask(provider, 'wallet_switchEthereumChain', [{ chainId: toQuantity(BigInt(accepted[0])) }]);
  const now = await chainId(provider);
  if (!accepted.includes(now)) {
    throw new WalletError(`Switch your wallet to chain ${accepted.join(' or ')} (it is on chain ${now}).`);
  }
  return now;
}

/** UTF-8 text as 0x-hex: personal_sign's first parameter, the form every wallet reads. */
export function utf8ToHex(text: string): string {
  let hex = '0x';
  for (const b of new TextEncoder().encode(text)) hex += b.toString(16).padStart(2, '0');
  return hex;
}

export async function personalSign(provider: Eip1193Provider, address: string, message: string): Promise<string> {
  const signature = await ask<unknown>(provider, 'personal_sign', [utf8ToHex(message), address]);
  if (typeof signature !== 'string' || !/^0x[0-9a-fA-F]+$/.test(signature)) {
    throw new WalletError('The wallet returned no signature.');
  }
  return signature;
}

/** A JSON-RPC quantity: 0x-hex without leading zeros. */
export function toQuantity(n: bigint): string {
  if (n < 0n) throw new WalletError('negative quantity');
  return `0x${n.toString(16)}`;
}

/** "1.5" of an 18-decimal asset → 1500000000000000000n; null when it is not a plain positive
 * decimal with at most `decimals` places. */
export function parseUnits(text: string, decimals: number): bigint | null {
  const m = /^(\d*)(?:\.(\d*))?$/.exec(text.trim());
  if (!m || (m[1] === '' && !m[2])) return null;
  const frac = m[2] ?? '';
  if (frac.length > decimals) return null;
  return BigInt(m[1] || '0') * 10n ** BigInt(decimals) + BigInt(frac.padEnd(decimals, '0') || '0');
}

/** Credits a deposit of `amount` base units buys: the server rounds down, as this does. */
export function creditsFor(amount: bigint, decimals: number, creditsPerUnit: number): bigint {
  return (amount * BigInt(creditsPerUnit)) / 10n ** BigInt(decimals);
}

function word(hex: string): string {
  return hex.padStart(64, '0');
}

/** ERC-20 `transfer(to, amount)` call data: the selector (keccak256 of the signature, first
 * 4 bytes) and the two arguments as 32-byte words. */
export function erc20TransferData(to: string, amount: bigint): string {
  if (!ADDRESS.test(to)) throw new WalletError(`not an address: ${to}`);
  if (amount < 0n || amount >= 2n ** 256n) throw new WalletError('amount out of range');
  return `0xa9059cbb${word(to.slice(2).toLowerCase())}${word(amount.toString(16))}`;
}

export interface TransactionRequest {
  from: string;
  to: string;
  value?: string;
  data?: string;
}

/** The transaction that deposits `amount` base units of an asset to `treasury`: value for the
 * native currency, a `transfer` call for an ERC-20 contract. */
export function depositTransaction(from: string, treasury: string, amount: bigint, contract: string | null): TransactionRequest {
  if (contract === null) return { from, to: toChecksumAddress(treasury), value: toQuantity(amount) };
  return { from, to: toChecksumAddress(contract), value: '0x0', data: erc20TransferData(treasury, amount) };
}

export async function sendTransaction(provider: Eip1193Provider, tx: TransactionRequest): Promise<string> {
  const hash = await ask<unknown>(provider, 'eth_sendTransaction', [tx]);
  if (typeof hash !== 'string' || !/^0x[0-9a-fA-F]{64}$/.test(hash)) {
    throw new WalletError('The wallet did not return a transaction hash.');
  }
  return hash;
}

/** Base units as a decimal: 1500000000000000000n, 18 → "1.5". */
export function formatUnits(amount: bigint, decimals: number): string {
  const negative = amount < 0n;
  const abs = negative ? -amount : amount;
  const base = 10n ** BigInt(decimals);
  const whole = (abs / base).toString();
  const frac = decimals > 0 ? (abs % base).toString().padStart(decimals, '0').replace(/0+$/, '') : '';
  return `${negative ? '-' : ''}${whole}${frac ? `.${frac}` : ''}`;
}
