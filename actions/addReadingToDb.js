// addReadingToDb: writes the sensor readings of one provider fire (SPEC section 3: a
// message fire, or a batch fire of several messages) to the data center's InfluxDB 2, in
// ONE write: POST {influx_url}/api/v2/write?org=&bucket=&precision=ns with
// `Authorization: Token <influx_token>`.
//
// Parameters: datacenter_id, influx_url, influx_org, influx_bucket travel in every fire
// (the provider's FIRE_PARAMS); influx_token is bound on the action
// (`wsk action update addReadingToDb -p influx_token ...`), never in a ConfigMap.
// Optional: influx_timeout_ms (default 30000).
//
// A reading is a message body holding a JSON object, such as
//   {"datacenter_id":"dc1","device_fingerprint":"a1b2","temperature":21.5,"humidity":40}
// and becomes one point per numeric member (see SCHEMA below):
//   temperature,datacenter_id=dc1,device_fingerprint=a1b2,topic=dc1/sensors/t1 value=21.5 <ns>
//   humidity,datacenter_id=dc1,device_fingerprint=a1b2,topic=dc1/sensors/t1 value=40 <ns>
//
// Timestamp: the reading's own `timestamp` (else `ts`), else the message's `received_at`;
// never this action's clock. A number (or a string of digits) is read in the unit its
// integer part's magnitude implies: below 1e11 seconds, below 1e14 milliseconds, below
// 1e17 microseconds, else nanoseconds (so e.g. milliseconds before 1973 would be read as
// seconds); fractions are kept down to the nanosecond. Any other string must be RFC 3339
// (`2026-11-24T03:00:00.123456789+01:00`). Integers are read from the body's own text, so
// nanoseconds past 2^53 stay exact. A time before 2000-01-01 (a device clock never set,
// an uptime counter) or past InfluxDB's range is a bad timestamp.
//
// Idempotent: a redelivered reading gives the same series and time, so InfluxDB
// overwrites instead of adding (received_at is recorded once per message by the
// provider, and every retry of its fire carries the same). A message the broker delivers
// again after a provider restart is a new receipt with a new received_at: only readings
// with a time of their own overwrite then.
//
// What cannot be written is skipped and counted, never failing the rest: a body that is
// not JSON, not an object, unreadable (bad base64, not UTF-8) or has nothing numeric, a
// bad timestamp or tag; and, value by value, members that are null, booleans, strings,
// arrays or objects. The result is {written, skipped, reasons}: points written, things
// skipped, and one line per skipped thing naming the message and why.
//
// Rejects (the activation fails, and shows why) on a missing parameter, a fire that is not
// a message or batch fire, and any InfluxDB failure: its status and message, or why it
// could not be reached. Never with the token.
//
// Node's OpenWhisk runtime (nodejs:20) and nothing else: global fetch and AbortSignal.
'use strict';

// The InfluxDB schema of a data center's readings bucket. A measurement per quantity,
// named after the reading's member (temperature, humidity, gas_perc, ...), with the one
// float field `value`: each quantity is then its own series, which Grafana plots and Flux
// aggregates without picking a field (mean/min/max grouped by _measurement, and by
// device_fingerprint for per device), and a reading that lacks a quantity writes nothing
// for it rather than a point with a hole. Values are always written as floats (40, not
// 40i), so that a sensor sending 40 and then 40.5 never hits InfluxDB's field type
// conflict. The topic is a tag too: without it, two sensors that send no
// device_fingerprint, received in the same millisecond, would be the same point and one
// would overwrite the other.
const SCHEMA = Object.freeze({
  /** The one field of every point, a float. */
  VALUE_FIELD: 'value',
  /** The reading's own datacenter_id, else the fire's parameter. Always present. */
  DATACENTER_TAG: 'datacenter_id',
  /** The reading's device_fingerprint; omitted when the reading has none. */
  DEVICE_TAG: 'device_fingerprint',
  /** The MQTT topic the reading came on. */
  TOPIC_TAG: 'topic',
  /** Where a reading's own time is looked for, in this order. */
  TIMESTAMP_MEMBERS: Object.freeze(['timestamp', 'ts']),
  /** Members of a reading that are never measurements. */
  NOT_MEASUREMENTS: Object.freeze(['datacenter_id', 'device_fingerprint', 'timestamp', 'ts']),
  /** The write's precision: every time is written in nanoseconds. */
  PRECISION: 'ns',
});

const TIMEOUT_MS = 30000;
const SNIPPET_CHARS = 200;
const MAX_REASONS = 100;
const MAX_JSON_DEPTH = 64;

// 2000-01-01T00:00:00Z, and InfluxDB's latest time (models.MaxNanoTime).
const MIN_NS = 946684800n * 1000000000n;
const MAX_NS = 9223372036854775806n;

const PARAMETERS = [
  ['influx_url', 'FIRE_PARAMS'],
  ['influx_org', 'FIRE_PARAMS'],
  ['influx_bucket', 'FIRE_PARAMS'],
  ['datacenter_id', 'FIRE_PARAMS'],
  ['influx_token', 'bound on the action: wsk action update addReadingToDb -p influx_token ...'],
];

exports.SCHEMA = SCHEMA;

exports.main = async function main(params = {}) {
  const config = readConfig(params);
  const messages = messagesOf(params);
  const result = { written: 0, skipped: 0, reasons: [] };
  const lines = [];
  messages.forEach((message, index) => {
    const label = labelOf(message, params.type === 'batch' ? index : null);
    const skip = (why) => {
      result.skipped++;
      if (result.reasons.length < MAX_REASONS) result.reasons.push(`${label}: ${why}`);
    };
    try {
      lines.push(...linesOf(message, config, skip));
    } catch (e) {
      if (!(e instanceof Skip)) throw e;
      skip(e.message);
    }
  });
  if (result.skipped > result.reasons.length) {
    result.reasons.push(`... and ${result.skipped - result.reasons.length} more`);
  }
  if (lines.length > 0) {
    await withRetries(() => write(config, lines));
    result.written = lines.length;
  }
  return result;
};

/** A reading (or one of its values) that cannot be written, and why. */
class Skip extends Error {}

function readConfig(params) {
  const missing = PARAMETERS.filter(
    ([name]) => typeof params[name] !== 'string' || params[name].trim() === '',
  ).map(([name, from]) => `${name} (${from})`);
  if (missing.length > 0) {
    throw new Error(`addReadingToDb: missing parameter ${missing.join(', ')}`);
  }
  const url = params.influx_url.trim().replace(/\/+$/, '');
  let protocol;
  try {
    protocol = new URL(url).protocol;
  } catch {
    // reported below
  }
  if (protocol !== 'http:' && protocol !== 'https:') {
    throw new Error(
      `addReadingToDb: parameter influx_url must be an http(s) URL, got ${JSON.stringify(url)}`,
    );
  }
  const datacenter = params.datacenter_id;
  const unwritable = tagProblem(datacenter);
  if (unwritable) {
    throw new Error(`addReadingToDb: parameter datacenter_id ${unwritable}`);
  }
  const timeout = Number(params.influx_timeout_ms);
  return {
    url,
    org: params.influx_org,
    bucket: params.influx_bucket,
    token: params.influx_token,
    datacenter,
    timeoutMs: timeout > 0 ? timeout : TIMEOUT_MS,
  };
}

// A message fire is its own one message; a batch fire carries them in `messages`.
function messagesOf(params) {
  if (params.type === 'message') return [params];
  if (params.type === 'batch') {
    if (!Array.isArray(params.messages)) {
      throw new Error('addReadingToDb: a batch fire without a messages array');
    }
    return params.messages;
  }
  throw new Error(
    `addReadingToDb: a fire of type ${JSON.stringify(params.type)}, not "message" or ` +
      '"batch" (SPEC section 3): is the rule on the right trigger?',
  );
}

function labelOf(message, index) {
  const where = index === null ? 'message' : `messages[${index}]`;
  if (!isPlainObject(message)) return where;
  const topic = typeof message.topic === 'string' ? ` on ${message.topic}` : '';
  const id = typeof message.message_id === 'string' ? ` (${message.message_id})` : '';
  return `${where}${topic}${id}`;
}

// The line-protocol lines of one message; throws Skip for the whole reading, calls
// `skip` for a single value.
function linesOf(message, config, skip) {
  if (!isPlainObject(message)) throw new Skip(`not a message object but ${kindOf(message)}`);
  const reading = parseReading(message);

  const datacenter = tagOf(reading, SCHEMA.DATACENTER_TAG) ?? config.datacenter;
  const tags = [[SCHEMA.DATACENTER_TAG, datacenter]];
  const device = tagOf(reading, SCHEMA.DEVICE_TAG);
  if (device !== undefined) tags.push([SCHEMA.DEVICE_TAG, device]);
  if (typeof message.topic === 'string' && message.topic !== '') {
    const problem = tagProblem(message.topic);
    if (problem) throw new Skip(`its topic ${problem}`);
    tags.push([SCHEMA.TOPIC_TAG, message.topic]);
  }
  const tagSet = tags.map(([k, v]) => `,${k}=${escapeKey(v)}`).join('');
  const time = timeOf(reading, message);

  const lines = [];
  let members = 0;
  for (const [name, value] of reading) {
    if (SCHEMA.NOT_MEASUREMENTS.includes(name)) continue;
    members++;
    if (!(value instanceof JsonNumber)) {
      skip(`${JSON.stringify(name)} is ${kindOf(value)}, not a number`);
      continue;
    }
    if (!Number.isFinite(value.value)) {
      skip(`${JSON.stringify(name)} is ${value.raw}, too large for a float`);
      continue;
    }
    const problem = measurementProblem(name);
    if (problem) {
      skip(`${JSON.stringify(name)} ${problem}`);
      continue;
    }
    lines.push(
      `${escapeMeasurement(name)}${tagSet} ${SCHEMA.VALUE_FIELD}=${String(value.value)} ${time}`,
    );
  }
  if (members === 0) throw new Skip('the reading has no value, only tags and time');
  return lines;
}

// The message's body as a JSON object: a Map of its members, numbers as JsonNumber.
function parseReading(message) {
  if (typeof message.body !== 'string') {
    throw new Skip(`no body to read (body is ${kindOf(message.body)})`);
  }
  let text = message.body;
  if (message.encoding === 'base64') {
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 !== 0) {
      throw new Skip('the body is not valid base64');
    }
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(Buffer.from(text, 'base64'));
    } catch {
      throw new Skip('the body (base64) is not UTF-8 text, so not JSON');
    }
  } else if (message.encoding !== undefined) {
    throw new Skip(`unknown encoding ${JSON.stringify(message.encoding)}`);
  }
  let reading;
  try {
    reading = parseJson(text);
  } catch (e) {
    if (!(e instanceof JsonError)) throw e;
    throw new Skip(`the body is not JSON: ${e.message}`);
  }
  if (!(reading instanceof Map)) {
    throw new Skip(`the body is ${kindOf(reading)}, not a JSON object`);
  }
  return reading;
}

// A tag value from the reading: a string, or a number as written; undefined when absent,
// null or empty (InfluxDB has no empty tag values).
function tagOf(reading, name) {
  const value = reading.get(name);
  if (value === undefined || value === null || value === '') return undefined;
  const text = value instanceof JsonNumber ? value.raw : value;
  if (typeof text !== 'string') throw new Skip(`${name} is ${kindOf(value)}, not a string`);
  const problem = tagProblem(text);
  if (problem) throw new Skip(`${name} ${problem}`);
  return text;
}

// Line protocol has no escape for newlines (nor other control characters) in names and
// tag values, and a trailing backslash would escape the separator after it: such a name
// cannot be written as it is.
function tagProblem(value) {
  if (typeof value !== 'string' || value === '') return 'must be a non-empty string';
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(value)) {
    return `${JSON.stringify(value)} holds a control character, which line protocol cannot carry`;
  }
  if (value.endsWith('\\')) {
    return `${JSON.stringify(value)} ends with a backslash, which line protocol cannot carry`;
  }
  return null;
}

// A measurement name is a tag-like name that also must not start a comment (#) or use
// InfluxDB's reserved _ namespace.
function measurementProblem(name) {
  if (name === '') return 'is an empty name';
  if (name.startsWith('#')) return 'starts with #, which line protocol reads as a comment';
  if (name.startsWith('_')) return 'starts with _, a prefix InfluxDB reserves';
  return tagProblem(name);
}

function escapeMeasurement(name) {
  return name.replace(/[, ]/g, '\\$&');
}

function escapeKey(value) {
  return value.replace(/[,= ]/g, '\\$&');
}

// Nanoseconds since the epoch, as a decimal string.
function timeOf(reading, message) {
  for (const member of SCHEMA.TIMESTAMP_MEMBERS) {
    if (!reading.has(member)) continue;
    const value = reading.get(member);
    const shown = value instanceof JsonNumber ? value.raw : JSON.stringify(value);
    return checkedTime(`${member} ${shown}`, readingTime(value));
  }
  if (typeof message.received_at !== 'string') {
    throw new Skip('no timestamp of its own, and the message has no received_at');
  }
  const shown = JSON.stringify(message.received_at);
  return checkedTime(`received_at ${shown}`, rfc3339(message.received_at));
}

const RFC3339 =
  /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:[Zz]|([+-])(\d{2}):(\d{2}))$/;

function checkedTime(what, ns) {
  if (ns === null) throw new Skip(`bad timestamp: ${what} is not a time`);
  if (ns < MIN_NS) throw new Skip(`bad timestamp: ${what} is before 2000 (clock not set?)`);
  if (ns > MAX_NS) throw new Skip(`bad timestamp: ${what} is past InfluxDB's last time (2262)`);
  return ns.toString();
}

function readingTime(value) {
  if (value instanceof JsonNumber) return epochNumber(value.raw);
  if (typeof value === 'string') {
    return /^\d+(\.\d+)?$/.test(value) ? epochNumber(value) : rfc3339(value);
  }
  return null;
}

// A non-negative decimal number of seconds, ms, us or ns, by the magnitude of its integer
// part; exact, in BigInt, truncated to the nanosecond.
function epochNumber(raw) {
  const m = /^(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$/.exec(raw);
  if (!m) return null;
  const [, whole, fraction = '', exponentText = '0'] = m;
  const exponent = Number(exponentText) - fraction.length;
  if (Math.abs(exponent) > 40) return null;
  const mantissa = BigInt(whole + fraction);
  const integer = shift(mantissa, exponent);
  let unitDigits = 0;
  if (integer < 10n ** 11n) unitDigits = 9;
  else if (integer < 10n ** 14n) unitDigits = 6;
  else if (integer < 10n ** 17n) unitDigits = 3;
  return shift(mantissa, exponent + unitDigits);
}

// n * 10^e, truncated.
function shift(n, e) {
  return e >= 0 ? n * 10n ** BigInt(e) : n / 10n ** BigInt(-e);
}

// RFC 3339 (T, t or a space between date and time; Z, z or an offset), to nanoseconds;
// null if it is not one. Leap seconds (:60) are refused, as InfluxDB's Go time does.
function rfc3339(text) {
  const m = RFC3339.exec(text);
  if (!m) return null;
  const [y, mo, d, h, mi, s] = m.slice(1, 7).map(Number);
  const [fraction = '', sign, oh, om] = m.slice(7);
  const daysInMonth = new Date(Date.UTC(y, mo, 0)).getUTCDate();
  if (mo < 1 || mo > 12 || d < 1 || d > daysInMonth || h > 23 || mi > 59 || s > 59) return null;
  if (sign && (Number(oh) > 23 || Number(om) > 59)) return null;
  const seconds = BigInt(Date.UTC(y, mo - 1, d, h, mi, s) / 1000);
  const offset = sign ? BigInt((Number(oh) * 60 + Number(om)) * 60 * (sign === '-' ? -1 : 1)) : 0n;
  const nanos = BigInt(fraction.slice(0, 9).padEnd(9, '0'));
  return (seconds - offset) * 1000000000n + nanos;
}

// OpenWhisk never retries a failed activation, and the provider had its 202 long before:
// a write given up early is a reading lost. So transient InfluxDB failures (no answer,
// 429, 5xx) are retried with backoff until shortly before the activation's deadline
// (__OW_DEADLINE, ms since the epoch); outside OpenWhisk (no deadline) they are not.
const RETRY_MARGIN_MS = 2000;
const RETRY_MAX_DELAY_MS = 5000;

async function withRetries(attempt) {
  const deadline = Number(process.env.__OW_DEADLINE) || 0;
  for (let delay = 200; ; delay = Math.min(delay * 2, RETRY_MAX_DELAY_MS)) {
    try {
      return await attempt();
    } catch (e) {
      const transient = e.status === undefined || e.status === 429 || e.status >= 500;
      if (!transient || Date.now() + delay + RETRY_MARGIN_MS >= deadline) throw e;
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }
}

async function write(config, lines) {
  const query = new URLSearchParams({
    org: config.org,
    bucket: config.bucket,
    precision: SCHEMA.PRECISION,
  });
  const url = `${config.url}/api/v2/write?${query}`;
  const points = lines.length === 1 ? '1 point' : `${lines.length} points`;
  const what = `the write of ${points} to bucket ${config.bucket} at ${config.url}`;
  let res;
  let text;
  try {
    res = await fetch(url, {
      method: 'POST',
      headers: {
        Authorization: `Token ${config.token}`,
        'Content-Type': 'text/plain; charset=utf-8',
        Accept: 'application/json',
      },
      body: lines.join('\n'),
      // A redirect is reported rather than followed with the token.
      redirect: 'manual',
      signal: AbortSignal.timeout(config.timeoutMs),
    });
    text = await res.text();
  } catch (e) {
    // fetch's own message is just "fetch failed"; the cause says why (ECONNREFUSED...).
    const cause =
      e.name === 'TimeoutError'
        ? `no answer within ${config.timeoutMs} ms`
        : (e.cause && e.cause.message) || e.message;
    throw new Error(redact(`addReadingToDb: InfluxDB unreachable for ${what}: ${cause}`, config));
  }
  if (res.status >= 200 && res.status < 300) return;
  let detail = influxMessage(text);
  if (res.status >= 300 && res.status < 400) {
    detail = `redirect to ${res.headers.get('location')}; set influx_url to where it leads`;
  }
  const error = new Error(
    redact(`addReadingToDb: InfluxDB answered ${res.status} to ${what}: ${detail}`, config),
  );
  error.status = res.status;
  throw error;
}

// InfluxDB's {"code","message"} error, else a short snippet of whatever answered.
function influxMessage(text) {
  try {
    const json = JSON.parse(text);
    if (json && typeof json.message === 'string') return json.message;
  } catch {
    // not JSON: a proxy's page, say
  }
  const squashed = text.replace(/\s+/g, ' ').trim();
  if (squashed === '') return '(empty body)';
  return squashed.length > SNIPPET_CHARS ? `${squashed.slice(0, SNIPPET_CHARS)}...` : squashed;
}

// No error text of ours holds the token, but an InfluxDB or a proxy echoing the request
// could, and results are stored in activation records.
function redact(text, config) {
  return config.token.length >= 4 ? text.split(config.token).join('***') : text;
}

function isPlainObject(value) {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function kindOf(value) {
  if (value === undefined) return 'missing';
  if (value === null) return 'null';
  if (value instanceof JsonNumber) return `the number ${value.raw}`;
  if (Array.isArray(value)) return 'an array';
  if (value instanceof Map || typeof value === 'object') return 'an object';
  if (typeof value === 'string') return `a string ${snippet(JSON.stringify(value))}`;
  if (typeof value === 'boolean') return `a boolean (${value})`;
  return `a ${typeof value}`;
}

function snippet(text) {
  return text.length > 40 ? `${text.slice(0, 40)}...` : text;
}

// A JSON parser (RFC 8259) that keeps each number's text: JSON.parse turns
// 1732417200123456789 into 1732417200123456800, and its reviver sees only that. Objects
// become Maps (no __proto__ surprises), numbers JsonNumber, the rest plain values.
class JsonNumber {
  constructor(raw) {
    this.raw = raw;
    this.value = Number(raw);
  }
}

class JsonError extends Error {}

const NUMBER = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
// eslint-disable-next-line no-control-regex
const STRING = /"(?:[^"\\\u0000-\u001f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"/y;
const LITERALS = [
  ['true', true],
  ['false', false],
  ['null', null],
];

function parseJson(text) {
  const p = { text, i: 0 };
  const value = parseValue(p, 0);
  skipWhitespace(p);
  if (p.i < text.length) jsonFail(p, 'unexpected text after the value');
  return value;
}

function parseValue(p, depth) {
  skipWhitespace(p);
  if (depth > MAX_JSON_DEPTH) jsonFail(p, `nested deeper than ${MAX_JSON_DEPTH}`);
  const c = p.text[p.i];
  if (c === '{') return parseObject(p, depth);
  if (c === '[') return parseArray(p, depth);
  if (c === '"') return parseString(p);
  if (c === '-' || (c >= '0' && c <= '9')) {
    NUMBER.lastIndex = p.i;
    const m = NUMBER.exec(p.text);
    if (!m) jsonFail(p, 'a bad number');
    p.i += m[0].length;
    return new JsonNumber(m[0]);
  }
  for (const [word, value] of LITERALS) {
    if (p.text.startsWith(word, p.i)) {
      p.i += word.length;
      return value;
    }
  }
  jsonFail(p, p.i >= p.text.length ? 'unexpected end' : `unexpected ${JSON.stringify(c)}`);
}

function parseObject(p, depth) {
  const members = new Map();
  p.i++;
  skipWhitespace(p);
  if (p.text[p.i] === '}') {
    p.i++;
    return members;
  }
  for (;;) {
    skipWhitespace(p);
    if (p.text[p.i] !== '"') jsonFail(p, 'expected a member name');
    const name = parseString(p);
    skipWhitespace(p);
    if (p.text[p.i] !== ':') jsonFail(p, 'expected ":"');
    p.i++;
    members.set(name, parseValue(p, depth + 1));
    skipWhitespace(p);
    if (p.text[p.i] === ',') {
      p.i++;
    } else if (p.text[p.i] === '}') {
      p.i++;
      return members;
    } else {
      jsonFail(p, 'expected "," or "}"');
    }
  }
}

function parseArray(p, depth) {
  const items = [];
  p.i++;
  skipWhitespace(p);
  if (p.text[p.i] === ']') {
    p.i++;
    return items;
  }
  for (;;) {
    items.push(parseValue(p, depth + 1));
    skipWhitespace(p);
    if (p.text[p.i] === ',') {
      p.i++;
    } else if (p.text[p.i] === ']') {
      p.i++;
      return items;
    } else {
      jsonFail(p, 'expected "," or "]"');
    }
  }
}

function parseString(p) {
  STRING.lastIndex = p.i;
  const m = STRING.exec(p.text);
  if (!m) jsonFail(p, 'a bad string');
  p.i += m[0].length;
  return JSON.parse(m[0]);
}

function skipWhitespace(p) {
  while (p.i < p.text.length && ' \t\n\r'.includes(p.text[p.i])) p.i++;
}

function jsonFail(p, why) {
  throw new JsonError(`${why} at position ${p.i}`);
}
