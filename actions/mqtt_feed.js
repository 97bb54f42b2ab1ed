// The feed action of mqtt-whisk-provider (SPEC section 8). `wsk trigger create T --feed
// mqtt/mqtt_feed -p topic ...` (and get, update, delete) invoke it with a lifecycleEvent;
// it relays that to the provider's feed API with the caller's own key as Basic auth, so
// the provider can check the caller against OpenWhisk before it stores anything.
//
// Node's OpenWhisk runtime (nodejs:20) and nothing else: global fetch and AbortSignal.
// Failures RESOLVE with {error}: OpenWhisk counts that as a failed activation, and the CLI
// then deletes a trigger whose CREATE failed.
'use strict';

// Default deadline for the provider's answer, well inside the action's own 60 s limit.
const TIMEOUT_MS = 30000;
const SNIPPET_CHARS = 200;

// lifecycleEvent -> HTTP method and body. CREATE replaces the whole registration, UPDATE
// changes only the fields given, PAUSE/UNPAUSE (which the CLI never sends) toggle it.
const EVENTS = {
  CREATE: { method: 'PUT', body: (p) => registration(requireTopic(p)) },
  READ: { method: 'GET' },
  UPDATE: { method: 'PATCH', body: (p) => registration(p) },
  DELETE: { method: 'DELETE' },
  PAUSE: { method: 'PATCH', body: () => ({ active: false }) },
  UNPAUSE: { method: 'PATCH', body: () => ({ active: true }) },
};

exports.main = async function main(params = {}) {
  const authKey = typeof params.authKey === 'string' ? params.authKey : '';
  try {
    return await send(buildRequest(params, authKey));
  } catch (e) {
    return { error: redact(e.message, authKey) };
  }
};

function buildRequest(params, authKey) {
  const event = EVENTS[params.lifecycleEvent];
  if (!event) {
    throw new Error(
      `mqtt_feed: parameter lifecycleEvent must be one of ${Object.keys(EVENTS).join(', ')}` +
        `, got ${JSON.stringify(params.lifecycleEvent)}`,
    );
  }
  const { namespace, name } = parseTriggerName(params.triggerName);
  if (!authKey.includes(':')) {
    throw new Error('mqtt_feed: parameter authKey is missing or not of the form uuid:key');
  }
  const endpoint = parseEndpoint(params.provider_endpoint);
  const body = event.body && event.body(params);
  const headers = {
    Authorization: `Basic ${Buffer.from(authKey).toString('base64')}`,
    Accept: 'application/json',
  };
  if (body) headers['Content-Type'] = 'application/json';
  const timeoutMs = Number(params.provider_timeout_ms) > 0
    ? Number(params.provider_timeout_ms)
    : TIMEOUT_MS;
  const path = `/feed/v1/namespaces/${encodeURIComponent(namespace)}` +
    `/triggers/${encodeURIComponent(name)}`;
  return {
    endpoint,
    url: endpoint + path,
    timeoutMs,
    init: {
      method: event.method,
      headers,
      body: body && JSON.stringify(body),
      // Report a redirect rather than follow it: following would send the key elsewhere.
      redirect: 'manual',
      signal: AbortSignal.timeout(timeoutMs),
    },
  };
}

// "/ns/name" (or "ns/name"). "_" means the caller's own namespace, which OpenWhisk gives
// the action as __OW_NAMESPACE; the provider must see the real one, or two callers'
// "/_/t" would be the same registration.
function parseTriggerName(triggerName) {
  const match = typeof triggerName === 'string' && /^\/?([^/]+)\/([^/]+)$/.exec(triggerName);
  if (!match) {
    throw new Error(
      'mqtt_feed: parameter triggerName must be /<namespace>/<name>, got ' +
        JSON.stringify(triggerName),
    );
  }
  let [, namespace, name] = match;
  if (namespace === '_') {
    namespace = process.env.__OW_NAMESPACE;
    if (!namespace) {
      throw new Error(
        `mqtt_feed: triggerName ${triggerName} is in the default namespace _,` +
          ' but __OW_NAMESPACE is not set to resolve it',
      );
    }
  }
  return { namespace, name };
}

// The package binds it: http(s)://host:port, with any trailing slashes dropped so the
// path never starts with "//".
function parseEndpoint(value) {
  const endpoint = typeof value === 'string' ? value.trim().replace(/\/+$/, '') : '';
  let protocol;
  try {
    protocol = new URL(endpoint).protocol;
  } catch {
    // reported below
  }
  if (protocol !== 'http:' && protocol !== 'https:') {
    throw new Error(
      'mqtt_feed: parameter provider_endpoint is missing or not an http(s) URL (bind it on' +
        ' the package: wsk package update mqtt -p provider_endpoint http://<provider>:3000)',
    );
  }
  return endpoint;
}

// Only the registration's own fields, only those given: never provider_endpoint, authKey
// or anything else the action received.
function registration(params) {
  const fields = {};
  for (const key of ['topic', 'url', 'qos']) {
    if (params[key] !== undefined && params[key] !== null) fields[key] = params[key];
  }
  // `-p qos 1` arrives as the number 1, but "1" (a quoted value in a parameter file) means
  // the same; anything else goes as given, for the provider to accept or reject.
  const qos = fields.qos;
  if (typeof qos === 'string' && qos.trim() !== '' && Number.isFinite(Number(qos))) {
    fields.qos = Number(qos);
  }
  return fields;
}

function requireTopic(params) {
  if (typeof params.topic !== 'string' || params.topic === '') {
    throw new Error(
      "mqtt_feed: parameter topic is required for CREATE (e.g. -p topic 'dc1/sensors/+/temp')",
    );
  }
  return params;
}

async function send({ endpoint, url, timeoutMs, init }) {
  let res;
  let text;
  try {
    res = await fetch(url, init);
    text = await res.text();
  } catch (e) {
    // fetch's own message is just "fetch failed"; the cause says why (ECONNREFUSED...).
    const cause = e.name === 'TimeoutError'
      ? `no answer within ${timeoutMs} ms`
      : (e.cause && e.cause.message) || e.message;
    throw new Error(`cannot reach the mqtt feed provider at ${endpoint}: ${cause}`);
  }
  const json = parseObject(text);
  if (res.status >= 200 && res.status < 300) {
    if (json) return json;
    if (text.trim() === '') return {};
    throw new Error(
      `mqtt feed provider answered ${res.status} with a body that is not a JSON object: ` +
        snippet(text),
    );
  }
  let detail = json && typeof json.error === 'string' ? json.error : snippet(text);
  if (res.status >= 300 && res.status < 400) {
    detail = `redirect to ${res.headers.get('location')}; set provider_endpoint to where it leads`;
  }
  throw new Error(`mqtt feed provider answered ${res.status}: ${detail || '(empty body)'}`);
}

function parseObject(text) {
  try {
    const value = JSON.parse(text);
    return value && typeof value === 'object' && !Array.isArray(value) ? value : undefined;
  } catch {
    return undefined;
  }
}

// Enough of an HTML error page (a proxy's 502, say) to tell what answered.
function snippet(text) {
  const squashed = text.replace(/\s+/g, ' ').trim();
  return squashed.length > SNIPPET_CHARS ? `${squashed.slice(0, SNIPPET_CHARS)}...` : squashed;
}

// No error text of ours contains the key, but a provider or proxy echoing the request
// could put it there, and results are stored in activation records.
function redact(text, authKey) {
  const secret = authKey.slice(authKey.indexOf(':') + 1);
  return [authKey, Buffer.from(authKey).toString('base64'), secret]
    .filter((form) => form.length >= 8)
    .reduce((t, form) => t.split(form).join('***'), text);
}
