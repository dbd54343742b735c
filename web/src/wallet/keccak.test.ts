import { describe, expect, it } from 'vitest';
import { keccak256Hex } from './keccak';

describe('keccak256', () => {
  it('matches the known vectors', () => {
    expect(keccak256Hex('')).toBe('c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470');
    expect(keccak256Hex('abc')).toBe('4e03657aea45a94fc7d47ba826c8d667c0d1e6e33a64a036ec44f58fa12d6c45');
    expect(keccak256Hex('The quick brown fox jumps over the lazy dog')).toBe(
      '4d741b6f1eb29cb2a9b9911c82f56fa8d73b04959d3d9d222895df6c0b28aa15',
    );
    // The ERC-20 transfer selector is the first 4 bytes of this one.
    expect(keccak256Hex('transfer(address,uint256)').slice(0, 8)).toBe('a9059cbb');
  });

  it('hashes inputs across the 136-byte block boundary', () => {
    // Lengths around the rate exercise the padding landing in a block of its own.
    // (values from eth_utils.keccak)
    expect(keccak256Hex('a'.repeat(135))).toBe('34367dc248bbd832f4e3e69dfaac2f92638bd0bbd18f2912ba4ef454919cf446');
    expect(keccak256Hex('a'.repeat(136))).toBe('a6c4d403279fe3e0af03729caada8374b5ca54d8065329a3ebcaeb4b60aa386e');
    expect(keccak256Hex('a'.repeat(137))).toBe('d869f639c7046b4929fc92a4d988a8b22c55fbadb802c0c66ebcd484f1915f39');
    expect(keccak256Hex('a'.repeat(200))).toBe('96ea54061def936c4be90b518992fdc6f12f535068a256229aca54267b4d084d');
  });
});
