// Small helpers shared by server.js and lib/directory.js.

import * as crypto from 'node:crypto';

// A result of a handler: {status, body?, headers?, error?}. `error` = {code, message} is sent in
// Graph's envelope {"error":{code,message,innerError:{date,request-id,client-request-id}}}.
export function E(status, code, message, headers) {
  return { status, error: { code, message }, headers };
}

export function ok(status, body, headers) {
  return { status, body, headers };
}

export const lower = (s) => String(s ?? '').toLowerCase();

export function sha256(buf) {
  return crypto.createHash('sha256').update(buf).digest('hex');
}

export function uuid() {
  return crypto.randomUUID();
}

// Graph-like dates: 2026-01-01T12:00:00Z (directory) / with 7 fractional digits (mail)
export function isoNow(ms = Date.now()) {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

// Case-insensitive scope/role membership.
export function hasAny(list, wanted) {
  const have = new Set((list || []).map(lower));
  return wanted.some((w) => have.has(lower(w)));
}

// A tiny OData $filter: clauses `prop eq 'value'` (or `prop eq null`) joined by `and`.
// Returns [{prop, value}] or null when the expression is not understood.
export function parseFilter(expr) {
  if (expr == null || expr === '') return [];
  const out = [];
  let rest = String(expr).trim();
  const re = /^([A-Za-z][A-Za-z0-9_/]*)\s+eq\s+(?:'((?:[^']|'')*)'|(null|true|false))\s*/;
  for (;;) {
    const m = re.exec(rest);
    if (!m) return null;
    let value;
    if (m[2] !== undefined) value = m[2].replace(/''/g, "'");
    else value = m[3] === 'null' ? null : m[3] === 'true';
    out.push({ prop: m[1], value });
    rest = rest.slice(m[0].length);
    if (rest === '') return out;
    const a = /^and\s+/i.exec(rest);
    if (!a) return null;
    rest = rest.slice(a[0].length);
  }
}

export function getPath(obj, prop) {
  let v = obj;
  for (const p of prop.split('/')) {
    if (v == null) return undefined;
    const k = Object.keys(v).find((x) => lower(x) === lower(p));
    v = k === undefined ? undefined : v[k];
  }
  return v;
}

export function matchesFilter(obj, clauses) {
  return clauses.every(({ prop, value }) => {
    const v = getPath(obj, prop);
    if (value === null) return v == null;
    if (typeof value === 'boolean') return v === value;
    return typeof v === 'string' && lower(v) === lower(value);
  });
}

// $select: keep the listed properties (case-insensitive names, original spelling kept).
export function project(obj, select) {
  if (!select) return obj;
  const names = String(select).split(',').map((s) => s.trim()).filter(Boolean).map(lower);
  const out = {};
  for (const [k, v] of Object.entries(obj)) {
    if (k.startsWith('@odata.') || names.includes(lower(k))) out[k] = v;
  }
  return out;
}
