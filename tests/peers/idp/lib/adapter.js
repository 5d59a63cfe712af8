// Storage adapter for oidc-provider (the interface documented in oidc-provider's
// example adapter: upsert/find/findByUserCode/findByUid/consume/destroy/revokeByGrantId).
//
// Unlike oidc-provider's bundled memory adapter (an LRU capped at 1000 entries) this keeps
// every artefact, keeps expired tokens for a grace period so that oidc-provider itself can
// answer "expired" (device code -> expired_token, refresh token -> expired) instead of
// "not found", can be enumerated by the control API (revoke a user's refresh tokens,
// list pending device codes), and can be persisted to a JSON state file.

const GRACE_SECONDS = 3600; // expired artefacts stay findable this long

const now = () => Math.floor(Date.now() / 1000);

export class Store {
  constructor() {
    this.models = new Map(); // model name -> Map(id -> { payload, expiresAt|null })
    this.onChange = () => {};
    this.shouldRevoke = () => true; // hook: the server suppresses revocation on code replay
  }

  model(name) {
    let m = this.models.get(name);
    if (!m) {
      m = new Map();
      this.models.set(name, m);
    }
    return m;
  }

  sweep() {
    const t = now();
    for (const m of this.models.values()) {
      for (const [id, entry] of m) {
        if (entry.expiresAt !== null && entry.expiresAt + GRACE_SECONDS < t) m.delete(id);
      }
    }
  }

  toJSON() {
    this.sweep();
    const out = {};
    for (const [name, m] of this.models) out[name] = Object.fromEntries(m);
    return out;
  }

  load(obj) {
    for (const [name, entries] of Object.entries(obj || {})) {
      const m = this.model(name);
      for (const [id, entry] of Object.entries(entries)) m.set(id, entry);
    }
  }

  // all live payloads of one model: [[id, payload], ...]
  entries(name) {
    return [...this.model(name).entries()].map(([id, e]) => [id, e.payload]);
  }
}

export function makeAdapterClass(store) {
  return class Adapter {
    constructor(name) {
      this.name = name;
      this.m = store.model(name);
    }

    async upsert(id, payload, expiresIn) {
      const expiresAt = typeof expiresIn === 'number' ? now() + expiresIn : null;
      this.m.set(id, { payload: structuredClone(payload), expiresAt });
      store.onChange();
    }

    #get(id) {
      const entry = this.m.get(id);
      if (!entry) return undefined;
      if (entry.expiresAt !== null) {
        // Sessions/interactions vanish at expiry; tokens linger so their expiry can be reported.
        const grace = ['Session', 'Interaction', 'ReplayDetection', 'PushedAuthorizationRequest'].includes(this.name)
          ? 0 : GRACE_SECONDS;
        if (entry.expiresAt + grace < now()) {
          this.m.delete(id);
          return undefined;
        }
      }
      return structuredClone(entry.payload);
    }

    async find(id) {
      return this.#get(id);
    }

    async findByUserCode(userCode) {
      for (const [id, entry] of this.m) {
        if (entry.payload.userCode === userCode) return this.#get(id);
      }
      return undefined;
    }

    async findByUid(uid) {
      for (const [id, entry] of this.m) {
        if (entry.payload.uid === uid) return this.#get(id);
      }
      return undefined;
    }

    async consume(id) {
      const entry = this.m.get(id);
      if (entry) {
        entry.payload.consumed = now();
        store.onChange();
      }
    }

    async destroy(id) {
      this.m.delete(id);
      store.onChange();
    }

    async revokeByGrantId(grantId) {
      if (!store.shouldRevoke()) return;
      for (const m of store.models.values()) {
        for (const [id, entry] of m) {
          if (entry.payload.grantId === grantId) m.delete(id);
        }
      }
      store.onChange();
    }
  };
}
