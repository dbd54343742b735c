import { describe, expect, it } from 'vitest';
import type { Eip1193Provider } from './eip6963';
import { buildSiweMessage, fieldsFor, isoTime, SIGN_IN_STATEMENT, signWithWallet, type Nonce } from './siwe';
import { WalletError } from './wallet';

const NONCE: Nonce = {
  nonce: 'abcDEF1234567890wxyz',
  issued_at: '2026-03-01T12:00:00.123456',
  expires_at: '2026-03-01T12:05:00.123456Z',
  domain: '127.0.0.1:8123',
  uri: 'http://127.0.0.1:8123',
  chain_ids: [1, 1337],
};

// Account.from_key(bytes([0x11]) * 32) in tests/siwe_helpers.py (ALICE), as eth_account spells it.
const ALICE = '0x19E7E376E7C213B7E7e7e46cc70A5dD086DAff2A';

describe('the EIP-4361 message', () => {
  it('follows the template, line by line', () => {
    const text = buildSiweMessage(fieldsFor(NONCE, ALICE, 1337, SIGN_IN_STATEMENT));
    expect(text).toBe(
      [
        '127.0.0.1:8123 wants you to sign in with your Ethereum account:',
        ALICE,
        '',
        'Sign in to swarmstation.',
        '',
        'URI: http://127.0.0.1:8123',
        'Version: 1',
        'Chain ID: 1337',
        'Nonce: abcDEF1234567890wxyz',
        'Issued At: 2026-03-01T12:00:00.123Z',
        'Expiration Time: 2026-03-01T12:05:00.123Z',
      ].join('\n'),
    );
  });

  it('reads times without a zone as UTC and keeps zoned ones', () => {
    expect(isoTime('2026-03-01T12:00:00')).toBe('2026-03-01T12:00:00.000Z');
    expect(isoTime('2026-03-01T13:00:00+01:00')).toBe('2026-03-01T12:00:00.000Z');
    expect(() => isoTime('yesterday')).toThrow();
  });
});

function fakeWallet(answers: Record<string, (params: unknown[]) => unknown>): Eip1193Provider & { calls: string[] } {
  const calls: string[] = [];
  return {
    calls,
    async request({ method, params }) {
      calls.push(method);
      const answer = answers[method];
      if (!answer) throw Object.assign(new Error('unsupported'), { code: 4200 });
      return answer((params as unknown[]) ?? []);
    },
  };
}

describe('signing with a wallet', () => {
  it('checksums the account, signs the hex-encoded message, and switches to an accepted chain', async () => {
    let chain = '0x5';
    let signed: unknown[] = [];
    const wallet = fakeWallet({
      eth_requestAccounts: () => [ALICE.toLowerCase()],
      eth_chainId: () => chain,
      wallet_switchEthereumChain: (p) => {
        chain = (p[0] as { chainId: string }).chainId;
        return null;
      },
      personal_sign: (p) => {
        signed = p;
        return '0x' + 'ab'.repeat(65);
      },
    });
    const result = await signWithWallet(wallet, SIGN_IN_STATEMENT, async () => NONCE);
    expect(result.address).toBe(ALICE);
    expect(result.message).toContain(`\n${ALICE}\n`);
    expect(result.message).toContain('Chain ID: 1\n');
    expect(signed[1]).toBe(ALICE);
    const decoded = new TextDecoder().decode(
      Uint8Array.from((signed[0] as string).slice(2).match(/../g)!.map((h) => parseInt(h, 16))),
    );
    expect(decoded).toBe(result.message);
    expect(wallet.calls).toEqual(['eth_requestAccounts', 'eth_chainId', 'wallet_switchEthereumChain', 'eth_chainId', 'personal_sign']);
  });

  it('turns a declined signature into a clear message', async () => {
    const wallet = fakeWallet({
      eth_requestAccounts: () => [ALICE],
      eth_chainId: () => '0x1',
      personal_sign: () => {
        throw Object.assign(new Error('User rejected the request.'), { code: 4001 });
      },
    });
    const failure = await signWithWallet(wallet, SIGN_IN_STATEMENT, async () => NONCE).catch((e) => e);
    expect(failure).toBeInstanceOf(WalletError);
    expect(failure.code).toBe(4001);
    expect(failure.message).toBe('You declined the request in your wallet.');
  });
});
