// Sign-In with Ethereum (EIP-4361): the message, built by template from the server's nonce
// answer (which says the domain, URI and chains it accepts), and the round trip that has the
// wallet sign it. The server (domain/siwe.py) parses it with the siwe grammar: the address must
// be EIP-55 checksummed, the domain and URI ours, the chain accepted, the times ISO 8601 with a
// zone, the issue time not in the future.
import { api, must, type Schemas } from '../api/client';
import type { Eip1193Provider } from './eip6963';
import { connect, ensureChain, personalSign } from './wallet';

export type Nonce = Schemas['NonceOut'];

export const SIGN_IN_STATEMENT = 'Sign in to swarmstation.';
export const LINK_STATEMENT = 'Link this wallet to my swarmstation account.';

export interface SiweFields {
  domain: string;
  address: string; // EIP-55
  statement: string;
  uri: string;
  chainId: number;
  nonce: string;
  issuedAt: string;
  expirationTime?: string;
}

/** An ISO 8601 time with a zone. Servers that store naive UTC times send them without one;
 * they are UTC, so they get a Z (a bare time would be read as local time by Date). */
export function isoTime(value: string): string {
  const zoned = /(?:Z|[+-]\d{2}:?\d{2})$/i.test(value) ? value : `${value}Z`;
  const when = new Date(zoned);
  if (Number.isNaN(when.getTime())) throw new Error(`not a time: ${value}`);
  return when.toISOString();
}

/** The EIP-4361 text, line by line as the grammar has it. */
export function buildSiweMessage(f: SiweFields): string {
  const lines = [
    `${f.domain} wants you to sign in with your Ethereum account:`,
    f.address,
    '',
    f.statement,
    '',
    `URI: ${f.uri}`,
    'Version: 1',
    `Chain ID: ${f.chainId}`,
    `Nonce: ${f.nonce}`,
    `Issued At: ${f.issuedAt}`,
  ];
  if (f.expirationTime) lines.push(`Expiration Time: ${f.expirationTime}`);
  return lines.join('\n');
}

/** The fields for one nonce answer: the server's own issue and expiry times, so that a device
 * whose clock runs ahead is not refused for "issuing in the future". */
export function fieldsFor(nonce: Nonce, address: string, chainId: number, statement: string): SiweFields {
  return {
    domain: nonce.domain,
    address,
    statement,
    uri: nonce.uri,
    chainId,
    nonce: nonce.nonce,
    issuedAt: isoTime(nonce.issued_at),
    expirationTime: isoTime(nonce.expires_at),
  };
}

export interface SignedMessage {
  address: string;
  message: string;
  signature: string;
}

/** Connect, fetch a nonce, build the message and have the wallet sign it. Throws WalletError
 * (declined, wrong chain) or ApiError (the nonce could not be had). */
export async function signWithWallet(
  provider: Eip1193Provider,
  statement: string,
  getNonce: () => Promise<Nonce> = () => must(api.GET('/v1/auth/nonce')),
): Promise<SignedMessage> {
  const address = await connect(provider);
  const nonce = await getNonce();
  const chain = await ensureChain(provider, nonce.chain_ids);
  const message = buildSiweMessage(fieldsFor(nonce, address, chain, statement));
  const signature = await personalSign(provider, address, message);
  return { address, message, signature };
}
