import { describe, expect, it } from 'vitest';
import {
  creditsFor,
  formatUnits,
  depositTransaction,
  erc20TransferData,
  parseUnits,
  toChecksumAddress,
  utf8ToHex,
  walletError,
} from './wallet';

describe('EIP-55 checksums', () => {
  it('matches the EIP-55 test vectors', () => {
    for (const addr of [
      '0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed',
      '0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359',
      '0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB',
      '0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb',
    ]) {
      expect(toChecksumAddress(addr.toLowerCase())).toBe(addr);
      expect(toChecksumAddress(addr.toUpperCase().replace('0X', '0x'))).toBe(addr);
    }
  });

  it('refuses what is not an address', () => {
    expect(() => toChecksumAddress('0x1234')).toThrow();
  });
});

describe('amounts and transactions', () => {
  it('parses decimal amounts into base units exactly', () => {
    expect(parseUnits('1.5', 18)).toBe(1_500_000_000_000_000_000n);
    expect(parseUnits('0.000001', 6)).toBe(1n);
    expect(parseUnits('.25', 2)).toBe(25n);
    expect(parseUnits('2', 0)).toBe(2n);
    expect(parseUnits('0.0000001', 6)).toBeNull();
    expect(parseUnits('1e3', 18)).toBeNull();
    expect(parseUnits('', 18)).toBeNull();
    expect(parseUnits('-1', 18)).toBeNull();
  });

  it('formats base units back into decimals', () => {
    expect(formatUnits(1_500_000_000_000_000_000n, 18)).toBe('1.5');
    expect(formatUnits(1n, 6)).toBe('0.000001');
    expect(formatUnits(2_000_000n, 6)).toBe('2');
    expect(formatUnits(7n, 0)).toBe('7');
  });

  it('previews credits rounded down, as the server credits them', () => {
    expect(creditsFor(1_500_000_000_000_000_000n, 18, 2000)).toBe(3000n);
    expect(creditsFor(1_234_567n, 6, 1000)).toBe(1234n);
  });

  it('encodes an ERC-20 transfer by hand', () => {
    const data = erc20TransferData('0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed', 1_000_000n);
    expect(data).toBe(
      '0xa9059cbb' +
        '0000000000000000000000005aaeb6053f3e94c9b9a09f33669435e7ef1beaed' +
        '00000000000000000000000000000000000000000000000000000000000f4240',
    );
  });

  it('sends ETH as value and tokens as a call to their contract', () => {
    const from = '0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359';
    const treasury = '0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed';
    expect(depositTransaction(from, treasury, 10n ** 18n, null)).toEqual({
      from,
      to: '0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed',
      value: '0xde0b6b3a7640000',
    });
    const token = depositTransaction(from, treasury, 5n, '0xdbf03b407c01e7cd3cbea99509d93f8dddc8c6fb');
    expect(token.to).toBe('0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB');
    expect(token.value).toBe('0x0');
    expect(token.data?.startsWith('0xa9059cbb')).toBe(true);
  });

  it('hex-encodes UTF-8 for personal_sign', () => {
    expect(utf8ToHex('hi é')).toBe('0x6869' + '20' + 'c3a9');
  });
});

describe('wallet errors', () => {
  it('explains the common codes', () => {
    expect(walletError({ code: 4001, message: 'x' }).message).toMatch(/declined/);
    expect(walletError({ code: -32002 }).message).toMatch(/already has a request/);
    expect(walletError(new Error('boom')).message).toMatch(/boom/);
  });
});
