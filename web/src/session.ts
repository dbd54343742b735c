// Who is signed in, and their balance: signals the whole studio reads.
import { computed, signal } from '@preact/signals';
import { api, errorMessage, must, storeApiKey, type Schemas } from './api/client';

export type WhoAmI = Schemas['WhoAmI'];
export type Account = Schemas['AccountOut'];

export const me = signal<WhoAmI | null>(null);
/** False until the first /v1/auth/session answer (signed in or not) has arrived. */
export const sessionKnown = signal(false);
export const account = signal<Account | null>(null);

export const signedIn = computed(() => me.value !== null);
export const isAdmin = computed(() => me.value?.user.role === 'admin');

export async function loadSession(): Promise<void> {
  try {
    const { data, response } = await api.GET('/v1/auth/session');
    me.value = response.ok && data ? data : null;
  } catch {
    me.value = null;
  } finally {
    sessionKnown.value = true;
  }
  if (me.value) await refreshBalance();
  else account.value = null;
}

export async function refreshBalance(): Promise<void> {
  try {
    const { data, response } = await api.GET('/v1/account');
    if (response.ok && data) account.value = data;
  } catch {
    /* the header shows the last known balance */
  }
}

export async function signInWithApiKey(key: string): Promise<void> {
  storeApiKey(key.trim());
  const { data, response, error } = await api.GET('/v1/auth/session');
  if (!response.ok || !data) {
    storeApiKey(null);
    throw errorMessage(response.status, error);
  }
  me.value = data;
  await refreshBalance();
}

export async function signOut(): Promise<void> {
  if (me.value?.via === 'session') await must(api.POST('/v1/auth/signout')).catch(() => undefined);
  storeApiKey(null);
  me.value = null;
  account.value = null;
}
