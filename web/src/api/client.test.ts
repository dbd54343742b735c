import { describe, expect, it } from 'vitest';
import { ApiError, authHeaders, errorMessage, storeApiKey } from './client';

describe('errorMessage', () => {
  it('reads the API error body', () => {
    const err = errorMessage(402, { detail: 'insufficient credits: 40 needed, 10 available', code: 'payment_required' });
    expect(err).toBeInstanceOf(ApiError);
    expect([err.status, err.code, err.message]).toEqual([402, 'payment_required', 'insufficient credits: 40 needed, 10 available']);
  });

  it('reads field errors and FastAPI validation lists', () => {
    const err = errorMessage(422, { detail: 'bad pipeline', code: 'invalid_pipeline', errors: [{ field: 'steps.big.image', reason: 'not connected' }] });
    expect(err.fields).toEqual([{ field: 'steps.big.image', reason: 'not connected' }]);
    expect(errorMessage(422, { detail: [{ msg: 'field required' }] }).message).toBe('field required');
    expect(errorMessage(503, null).message).toBe('the server answered 503');
  });
});

describe('authHeaders', () => {
  it('sends the API key when there is one, else the CSRF token on writes only', () => {
    storeApiKey('sk-test');
    expect(authHeaders('POST')).toEqual({ Authorization: 'Bearer sk-test' });
    storeApiKey(null);
    document.cookie = 'swarm_csrf=tok123';
    expect(authHeaders('POST')).toEqual({ 'X-CSRF-Token': 'tok123' });
    expect(authHeaders('GET')).toEqual({});
  });
});
