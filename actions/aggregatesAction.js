// aggregatesAction: the daily aggregates of one fog data center (issue 11). The provider's
// alarm fires aggregatesTrigger (SPEC section 3: ALARM_PAYLOAD plus "type": "alarm",
// "alarm" and "scheduled_at"); this action then reads the PREVIOUS calendar day, in the
// data center's zone, from the local InfluxDB 2, computes the mean, max and min of every
// quantity per device with one Flux query, and writes them to the central InfluxDB 2
// tagged with the data center and the day, at the day's start, so running the same day
// again overwrites its points instead of adding to them (CENTRAL_SCHEMA below).
//
// Parameters: datacenter_id, local_influx_url/_org/_bucket, central_influx_url/_org/
// _bucket and timezone (IANA, default UTC) travel in ALARM_PAYLOAD; scheduled_at (and
// type "alarm") come with the alarm fire; local_influx_token and central_influx_token are
// bound on the action (wsk action update aggregatesAction -p local_influx_token ... -p
// central_influx_token ...). Optional: influx_timeout_ms (default 20000, per request).
//
// The day comes from scheduled_at, never from the action's clock: a fire retried or
// caught up after an outage aggregates the day its tick was for. The day is
// [local midnight of D, local midnight of D+1): 23 or 25 hours on DST days.
//
// Node's OpenWhisk runtime (nodejs:20) and nothing else: global fetch, AbortSignal and
// Intl for the zone. Returns a promise; every failure REJECTS (the activation fails and
// shows why), naming the parameter or InfluxDB's status and message, never a token.
'use strict';

/**
 * What addReadingToDb writes to the local bucket (the names of its exports.SCHEMA): a
 * measurement per quantity (temperature, humidity, ...) with the one float field `value`,
 * tagged datacenter_id, device_fingerprint (when the reading has one) and topic. Copied
 * here because each action is deployed as one file; a test checks the two agree.
 */
const LOCAL_SCHEMA = Object.freeze({
  VALUE_FIELD: 'value',
  DATACENTER_TAG: 'datacenter_id',
  DEVICE_TAG: 'device_fingerprint',
});

/**
 * What this action writes to the central bucket: per data center, day, quantity and
 * device, one point with the day's mean, max and min, at the day's start, so a second run
 * of the same day overwrites it.
 */
const CENTRAL_SCHEMA = Object.freeze({
  measurement: 'the local measurement, i.e. the quantity (temperature, humidity, ...)',
  tags: Object.freeze({
    datacenter_id: 'the data center (ALARM_PAYLOAD datacenter_id)',
    day: "the aggregated calendar day in the data center's zone, YYYY-MM-DD",
    device_fingerprint: 'the device; absent on the aggregate of readings without one',
  }),
  fields: Object.freeze({
    mean: "float: mean of the day's values",
    max: "float: largest value of the day",
    min: "float: smallest value of the day",
  }),
  time: "the day's start: local midnight of `day` in the zone, as an instant (precision s)",
});

// Every one is required; timezone defaults to UTC.
const PAYLOAD_PARAMS = [
  'datacenter_id',
  'local_influx_url', 'local_influx_org', 'local_influx_bucket',
  'central_influx_url', 'central_influx_org', 'central_influx_bucket',
];
const BOUND_PARAMS = ['local_influx_token', 'central_influx_token'];

// Each InfluxDB request's deadline, well inside the action's own 60 s default limit.
const TIMEOUT_MS = 20000;
// InfluxDB's advice for one write request.
const LINES_PER_WRITE = 5000;
// The result lists the points written up to this many (activation results are bounded).
const POINTS_IN_RESULT = 1000;
const SNIPPET_CHARS = 300;

exports.main = async function main(params = {}) {
  const tokens = [params.local_influx_token, params.central_influx_token]
    .filter((t) => typeof t === 'string' && t.length > 0);
  try {
    return await aggregate(params);
  } catch (e) {
    // InfluxDB does not echo tokens, but a proxy in front of it might.
    const error = new Error(redact(e.message, tokens));
    if (e.status !== undefined) error.status = e.status;
    throw error;
  }
};

async function aggregate(params) {
  const config = readParams(params);
  const window = dayWindow(config.scheduledAt, config.zone);
  const query = buildQuery(config.local.bucket, window, LOCAL_SCHEMA);
  const csv = await influx(config.local, 'local', '/api/v2/query', { org: config.local.org }, {
    'Content-Type': 'application/json',
    Accept: 'application/csv',
  }, JSON.stringify({
    query,
    type: 'flux',
    // Without these, InfluxDB answers plain CSV with no column types.
    dialect: { header: true, delimiter: ',', annotations: ['datatype', 'group', 'default'] },
  }));
  const aggregates = collectAggregates(parseAnnotatedCsv(csv), LOCAL_SCHEMA);
  const result = {
    datacenter_id: config.datacenterId,
    day: window.day,
    zone: config.zone,
    start: window.start.toISOString(),
    stop: window.stop.toISOString(),
    hours: (window.stop - window.start) / 3600000,
    written: 0,
  };
  if (aggregates.length === 0) {
    result.message = `no readings in ${config.local.bucket} between ${result.start} and ` +
      `${result.stop}: nothing written for ${window.day}`;
    return result;
  }
  const skipped = [];
  const lines = [];
  for (const a of aggregates) {
    const problem = tagProblem(a.measurement) ||
      (a.device === undefined ? null : tagProblem(a.device));
    if (problem) skipped.push(`${JSON.stringify([a.measurement, a.device])}: ${problem}`);
    else lines.push(centralLine(a, config.datacenterId, window));
  }
  if (skipped.length > 0) result.skipped = skipped;
  for (let i = 0; i < lines.length; i += LINES_PER_WRITE) {
    await influx(config.central, 'central', '/api/v2/write', {
      org: config.central.org,
      bucket: config.central.bucket,
      precision: 's',
    }, { 'Content-Type': 'text/plain; charset=utf-8' },
    lines.slice(i, i + LINES_PER_WRITE).join('\n'));
  }
  result.written = lines.length;
  result.message = `wrote ${lines.length} aggregates of ${window.day} to ` +
    `${config.central.bucket}`;
  result.points = aggregates.slice(0, POINTS_IN_RESULT).map(({ measurement, device, values }) => ({
    measurement,
    ...(device === undefined ? {} : { [LOCAL_SCHEMA.DEVICE_TAG]: device }),
    ...values,
  }));
  if (aggregates.length > POINTS_IN_RESULT) result.points_truncated = true;
  return result;
}

// ---------------------------------------------------------------------------------------
// Parameters

function readParams(params) {
  const missing = [...PAYLOAD_PARAMS, 'scheduled_at', ...BOUND_PARAMS]
    .filter((name) => typeof params[name] !== 'string' || params[name].trim() === '');
  if (missing.length > 0) {
    const bound = missing.filter((name) => BOUND_PARAMS.includes(name));
    throw new Error(
      `aggregatesAction: missing parameter${missing.length > 1 ? 's' : ''} ` +
        `${missing.join(', ')}` +
        (bound.length > 0
          ? ` (bind the tokens on the action: wsk action update aggregatesAction ${
            bound.map((name) => `-p ${name} ...`).join(' ')})`
          : ' (they come in ALARM_PAYLOAD, plus scheduled_at from the alarm fire)'),
    );
  }
  if (params.type !== undefined && params.type !== 'alarm') {
    throw new Error(
      `aggregatesAction: parameter type must be "alarm" (an alarm fire), got ${
        JSON.stringify(params.type)}: is a message trigger's rule pointing here?`,
    );
  }
  const unwritable = tagProblem(params.datacenter_id);
  if (unwritable) {
    throw new Error(
      `aggregatesAction: parameter datacenter_id ${JSON.stringify(params.datacenter_id)} ${
        unwritable}, which line protocol cannot carry`,
    );
  }
  const scheduledAt = parseRfc3339(params.scheduled_at);
  if (scheduledAt === undefined) {
    throw new Error(
      'aggregatesAction: parameter scheduled_at must be an RFC 3339 time such as ' +
        `2026-03-30T03:00:00+02:00, got ${JSON.stringify(params.scheduled_at)}`,
    );
  }
  const zone = params.timezone === undefined || params.timezone === '' ? 'UTC' : params.timezone;
  if (typeof zone !== 'string' || !isTimeZone(zone)) {
    throw new Error(
      'aggregatesAction: parameter timezone must be an IANA time zone such as Europe/Rome, ' +
        `got ${JSON.stringify(zone)}`,
    );
  }
  return {
    datacenterId: params.datacenter_id,
    scheduledAt,
    zone,
    local: influxTarget(params, 'local'),
    central: influxTarget(params, 'central'),
  };
}

function influxTarget(params, which) {
  const name = `${which}_influx_url`;
  const url = params[name].trim().replace(/\/+$/, '');
  let protocol;
  try {
    protocol = new URL(url).protocol;
  } catch {
    // reported below
  }
  if (protocol !== 'http:' && protocol !== 'https:') {
    throw new Error(
      `aggregatesAction: parameter ${name} must be an http(s) URL, got ${JSON.stringify(url)}`,
    );
  }
  const timeout = Number(params.influx_timeout_ms);
  return {
    which,
    url,
    org: params[`${which}_influx_org`],
    bucket: params[`${which}_influx_bucket`],
    token: params[`${which}_influx_token`],
    timeoutMs: timeout > 0 ? timeout : TIMEOUT_MS,
  };
}

const RFC3339 =
  /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?(?:([Zz])|([+-])(\d{2}):(\d{2}))$/;

/** An RFC 3339 time as a Date (milliseconds; finer digits dropped), or undefined. */
function parseRfc3339(text) {
  const m = typeof text === 'string' && RFC3339.exec(text.trim());
  if (!m) return undefined;
  const [, y, mo, d, h, mi, s, frac, , sign, oh, om] = m;
  const [year, month, day, hour, minute, second] = [y, mo, d, h, mi, s].map(Number);
  if (month < 1 || month > 12 || day < 1 || day > daysInMonth(year, month) || hour > 23 ||
      minute > 59 || second > 60 || (oh !== undefined && (Number(oh) > 23 || Number(om) > 59))) {
    return undefined;
  }
  const ms = frac ? Number(frac.slice(1, 4).padEnd(3, '0')) : 0;
  // A leap second (…:60) is the instant after …:59.
  let t = Date.UTC(year, month - 1, day, hour, minute, Math.min(second, 59), ms);
  if (second === 60) t += 1000;
  if (sign) t -= (sign === '-' ? -1 : 1) * (Number(oh) * 60 + Number(om)) * 60000;
  return new Date(t);
}

function daysInMonth(year, month) {
  return new Date(Date.UTC(year, month, 0)).getUTCDate();
}

function isTimeZone(zone) {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: zone });
    return true;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------
// The day, in the zone

const formatters = new Map();

/** The wall clock of instant `ms` in `zone`, as the UTC milliseconds of the same reading. */
function wallClock(ms, zone) {
  let format = formatters.get(zone);
  if (!format) {
    format = new Intl.DateTimeFormat('en-US', {
      timeZone: zone,
      hourCycle: 'h23',
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: 'numeric',
      second: 'numeric',
    });
    formatters.set(zone, format);
  }
  const parts = {};
  for (const { type, value } of format.formatToParts(new Date(ms))) parts[type] = value;
  // Years before 1 AD come with era; not a concern for readings.
  return Date.UTC(Number(parts.year), Number(parts.month) - 1, Number(parts.day),
    Number(parts.hour), Number(parts.minute), Number(parts.second)) + (ms % 1000 + 1000) % 1000;
}

/** The zone's offset from UTC at instant `ms`, in milliseconds. */
function offsetAt(ms, zone) {
  return wallClock(ms, zone) - ms;
}

/**
 * The first instant whose wall clock in `zone` reads the date `wall` (UTC milliseconds of
 * that date's midnight): local midnight, or, where the clocks jump over midnight (spring
 * forward at 00:00, as in America/Santiago), the instant of the jump.
 */
function startOfLocalDay(wall, zone) {
  const HOUR = 3600000;
  // Offsets are between -12 h and +14 h, so the instant is within [wall - 14 h, wall + 12 h];
  // at most one transition falls in that span.
  const offsets = new Set([offsetAt(wall - 15 * HOUR, zone), offsetAt(wall, zone),
    offsetAt(wall + 13 * HOUR, zone)]);
  const exact = [...offsets].map((o) => wall - o).filter((t) => wallClock(t, zone) === wall);
  if (exact.length > 0) return Math.min(...exact);
  // Midnight does not exist that day: find the jump, the first instant at or past it.
  const candidates = [...offsets].map((o) => wall - o);
  let lo = Math.min(...candidates);
  let hi = Math.max(...candidates);
  if (wallClock(lo, zone) >= wall || wallClock(hi, zone) < wall) {
    throw new Error(`aggregatesAction: cannot find the start of the day in ${zone}`);
  }
  // Invariant: wallClock(lo) < wall <= wallClock(hi). Transitions are at whole seconds.
  while (hi - lo > 1000) {
    const mid = lo + Math.floor((hi - lo) / 2000) * 1000;
    if (wallClock(mid, zone) < wall) lo = mid;
    else hi = mid;
  }
  return hi;
}

/**
 * The calendar day before the one `scheduledAt` falls on in `zone`, as
 * `{day: "YYYY-MM-DD", start: Date, stop: Date}` with stop exclusive.
 */
function dayWindow(scheduledAt, zone) {
  const fired = wallClock(scheduledAt.getTime(), zone);
  const firedDate = new Date(fired);
  const dayWall = Date.UTC(firedDate.getUTCFullYear(), firedDate.getUTCMonth(),
    firedDate.getUTCDate() - 1);
  const nextWall = Date.UTC(firedDate.getUTCFullYear(), firedDate.getUTCMonth(),
    firedDate.getUTCDate());
  return {
    day: new Date(dayWall).toISOString().slice(0, 10),
    start: new Date(startOfLocalDay(dayWall, zone)),
    stop: new Date(startOfLocalDay(nextWall, zone)),
  };
}

// ---------------------------------------------------------------------------------------
// The query

/** A Flux string literal: backslash, quote and the start of an interpolation escaped. */
function fluxString(value) {
  return `"${String(value).replace(/\\/g, '\\\\').replace(/"/g, '\\"')
    .replace(/\$\{/g, '\\${').replace(/\n/g, '\\n').replace(/\r/g, '\\r').replace(/\t/g, '\\t')}"`;
}

/** Flux's RFC 3339 time literal: seconds, or milliseconds when there are any. */
function fluxTime(date) {
  return date.toISOString().replace('.000Z', 'Z');
}

/**
 * One query, three results: the day's mean, max and min of every quantity, per device
 * (the readings without a device_fingerprint together). The local bucket is the data
 * center's own, so neither datacenter_id nor topic splits the groups.
 */
function buildQuery(bucket, window, schema) {
  return [
    `data = from(bucket: ${fluxString(bucket)})`,
    `  |> range(start: ${fluxTime(window.start)}, stop: ${fluxTime(window.stop)})`,
    `  |> filter(fn: (r) => r._field == ${fluxString(schema.VALUE_FIELD)})`,
    `  |> group(columns: ["_measurement", ${fluxString(schema.DEVICE_TAG)}])`,
    '',
    'data |> mean() |> yield(name: "mean")',
    'data |> max() |> yield(name: "max")',
    'data |> min() |> yield(name: "min")',
    '',
  ].join('\n');
}

// ---------------------------------------------------------------------------------------
// Annotated CSV (https://docs.influxdata.com/influxdb/v2/reference/syntax/annotated-csv/)

/** RFC 4180 rows: `{cells, blank}` per line, quoted cells may hold commas, quotes, newlines. */
function csvRows(text) {
  const rows = [];
  let cells = [];
  let cell = '';
  let quotedRow = false;
  let i = 0;
  const endRow = () => {
    cells.push(cell);
    rows.push({ cells, blank: cells.length === 1 && cell === '' && !quotedRow });
    cells = [];
    cell = '';
    quotedRow = false;
  };
  while (i < text.length) {
    const c = text[i];
    if (c === '"' && cell === '') {
      // A quoted cell: up to the quote not doubled.
      quotedRow = true;
      i += 1;
      for (;;) {
        if (i >= text.length) throw new Error('annotated CSV: a quoted cell is not closed');
        if (text[i] === '"') {
          if (text[i + 1] === '"') {
            cell += '"';
            i += 2;
            continue;
          }
          i += 1;
          break;
        }
        cell += text[i];
        i += 1;
      }
      if (i < text.length && text[i] !== ',' && text[i] !== '\r' && text[i] !== '\n') {
        throw new Error(`annotated CSV: text after a closing quote in row ${rows.length + 1}`);
      }
    } else if (c === ',') {
      cells.push(cell);
      cell = '';
      i += 1;
    } else if (c === '\r' && text[i + 1] === '\n') {
      endRow();
      i += 2;
    } else if (c === '\n') {
      endRow();
      i += 1;
    } else {
      cell += c;
      i += 1;
    }
  }
  if (cell !== '' || cells.length > 0 || quotedRow) endRow();
  return rows;
}

const ANNOTATIONS = new Set(['#datatype', '#group', '#default']);

/**
 * InfluxDB's annotated CSV as tables: `[{result, table, columns: [{name, datatype, group,
 * default}], records: [{column: typed value}]}]`, records carrying `result` and `table`
 * too. Several blocks (each with its annotations and header, separated by blank lines),
 * defaults for empty cells and plain CSV without annotations are understood; an error
 * table (columns error, reference) throws its message. An empty body is no tables.
 */
function parseAnnotatedCsv(text) {
  const tables = [];
  const byId = new Map();
  let annotations = {};
  let header;
  for (const { cells, blank } of csvRows(text)) {
    if (blank) {
      // The end of a block: the next one brings its own annotations and header.
      annotations = {};
      header = undefined;
      continue;
    }
    if (cells[0].startsWith('#')) {
      if (header) {
        annotations = {};
        header = undefined;
      }
      // Annotations InfluxDB may add later are ignored, the known ones kept.
      if (ANNOTATIONS.has(cells[0])) annotations[cells[0].slice(1)] = cells;
      continue;
    }
    if (!header) {
      header = cells.map((name, i) => ({
        name,
        datatype: annotations.datatype ? annotations.datatype[i] || 'string' : 'string',
        group: annotations.group ? annotations.group[i] === 'true' : false,
        default: annotations.default ? annotations.default[i] || '' : '',
      }));
      for (const name of ['datatype', 'group', 'default']) {
        if (annotations[name] && annotations[name].length !== cells.length) {
          throw new Error(
            `annotated CSV: #${name} has ${annotations[name].length} cells, the header ${
              cells.length}`,
          );
        }
      }
      const names = header.map((c) => c.name);
      if (names.includes('error') && names.includes('reference') && !names.includes('table')) {
        header.isError = true;
      }
      continue;
    }
    if (cells.length !== header.length) {
      throw new Error(
        `annotated CSV: a row has ${cells.length} cells, its header ${header.length}`,
      );
    }
    const record = {};
    header.forEach((column, i) => {
      if (i === 0 && column.name === '') return; // the annotation column
      const raw = cells[i] === '' ? column.default : cells[i];
      record[column.name] = typed(raw, column.datatype, column.name);
    });
    if (header.isError) {
      throw new Error(
        `InfluxDB reported an error in its answer: ${record.error}` +
          (record.reference ? ` (reference ${record.reference})` : ''),
      );
    }
    const id = `${record.result}\u0000${record.table}`;
    let table = byId.get(id);
    if (!table) {
      table = {
        result: record.result,
        table: record.table,
        columns: header.filter((c, i) => !(i === 0 && c.name === '')),
        records: [],
      };
      byId.set(id, table);
      tables.push(table);
    }
    table.records.push(record);
  }
  return tables;
}

/** A cell's value by its #datatype; null for an empty cell without a default. */
function typed(raw, datatype, column) {
  if (raw === '' && datatype !== 'string') return null;
  switch (datatype.split(':')[0]) {
    case 'double': {
      const special = { '+Inf': Infinity, '-Inf': -Infinity, NaN };
      const value = raw in special ? special[raw] : Number(raw);
      if (Number.isNaN(value) && raw !== 'NaN') throw badCell(raw, datatype, column);
      return value;
    }
    case 'long':
    case 'unsignedLong': {
      if (!/^-?\d+$/.test(raw)) throw badCell(raw, datatype, column);
      const value = BigInt(raw);
      return value >= BigInt(Number.MIN_SAFE_INTEGER) && value <= BigInt(Number.MAX_SAFE_INTEGER)
        ? Number(value)
        : value;
    }
    case 'boolean':
      if (raw !== 'true' && raw !== 'false') throw badCell(raw, datatype, column);
      return raw === 'true';
    default:
      // string, dateTime (kept as InfluxDB wrote it: nanoseconds), duration, base64Binary
      return raw;
  }
}

function badCell(raw, datatype, column) {
  return new Error(`annotated CSV: ${JSON.stringify(raw)} in column ${column} is not a ${datatype}`);
}

/**
 * The query's three results, joined per series: `[{measurement, device, values: {mean,
 * max, min}}]` (device undefined for readings without one), in a stable order.
 */
function collectAggregates(tables, schema) {
  const series = new Map();
  for (const table of tables) {
    if (!['mean', 'max', 'min'].includes(table.result)) {
      throw new Error(`the aggregates query returned an unexpected result ${table.result}`);
    }
    for (const record of table.records) {
      const value = record._value;
      if (value === null || value === undefined) continue;
      const measurement = String(record._measurement);
      const rawDevice = record[schema.DEVICE_TAG];
      const device = rawDevice === undefined || rawDevice === null || rawDevice === ''
        ? undefined
        : String(rawDevice);
      const id = JSON.stringify([measurement, device === undefined ? null : device]);
      let entry = series.get(id);
      if (!entry) {
        entry = { id, measurement, device, values: {} };
        series.set(id, entry);
      }
      entry.values[table.result] = Number(value);
    }
  }
  return [...series.values()]
    .filter((entry) => Object.values(entry.values).every(Number.isFinite))
    .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
    .map(({ measurement, device, values }) => ({ measurement, device, values }));
}

// ---------------------------------------------------------------------------------------
// Line protocol

// As InfluxDB reads line protocol (models/points.go): a backslash escapes a comma or a
// space (and, in keys and tag values, an equals sign); any other backslash is itself.
function escapeMeasurement(name) {
  return name.replace(/[, ]/g, '\\$&');
}

function escapeKey(value) {
  return value.replace(/[,= ]/g, '\\$&');
}

/** Why `value` cannot be a measurement or tag value in line protocol, or null. */
function tagProblem(value) {
  if (typeof value !== 'string' || value === '') return 'must be a non-empty string';
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(value)) return 'holds a control character';
  if (value.endsWith('\\')) return 'ends with a backslash';
  return null;
}

function centralLine({ measurement, device, values }, datacenterId, window) {
  const tags = { datacenter_id: datacenterId, day: window.day };
  if (device !== undefined) tags[LOCAL_SCHEMA.DEVICE_TAG] = device;
  const tagText = Object.keys(tags).sort()
    .map((name) => `,${escapeKey(name)}=${escapeKey(tags[name])}`).join('');
  // Always floats (no `i`), as the readings are: the central field types never conflict.
  const fieldText = ['mean', 'max', 'min']
    .filter((name) => values[name] !== undefined)
    .map((name) => `${name}=${String(values[name])}`).join(',');
  const seconds = Math.round(window.start.getTime() / 1000);
  return `${escapeMeasurement(measurement)}${tagText} ${fieldText} ${seconds}`;
}

// ---------------------------------------------------------------------------------------
// HTTP

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

function influx(...request) {
  return withRetries(() => influxOnce(...request));
}

async function influxOnce(target, which, path, query, headers, body) {
  const url = `${target.url}${path}?${new URLSearchParams(query)}`;
  let res;
  let text;
  try {
    res = await fetch(url, {
      method: 'POST',
      headers: { ...headers, Authorization: `Token ${target.token}` },
      body,
      redirect: 'manual',
      signal: AbortSignal.timeout(target.timeoutMs),
    });
    text = await res.text();
  } catch (e) {
    const cause = e.name === 'TimeoutError'
      ? `no answer within ${target.timeoutMs} ms`
      : (e.cause && (e.cause.code || e.cause.message)) || e.message;
    throw new Error(`cannot reach the ${which} InfluxDB at ${target.url}: ${cause}`);
  }
  if (res.status >= 200 && res.status < 300) return text;
  let detail;
  try {
    const json = JSON.parse(text);
    detail = json && typeof json.message === 'string' ? json.message : undefined;
    if (detail && json.code) detail = `${json.code}: ${detail}`;
  } catch {
    // not JSON: a proxy's page, say
  }
  if (res.status >= 300 && res.status < 400) {
    detail = `redirect to ${res.headers.get('location')}; set ${which}_influx_url to where it leads`;
  }
  const what = path.endsWith('/query') ? `query of ${target.org}` : `write to ${target.bucket}`;
  const error = new Error(
    `the ${which} InfluxDB answered ${res.status} to the ${what}: ${
      detail || snippet(text) || '(empty body)'}`,
  );
  error.status = res.status;
  throw error;
}

function snippet(text) {
  const squashed = text.replace(/\s+/g, ' ').trim();
  return squashed.length > SNIPPET_CHARS ? `${squashed.slice(0, SNIPPET_CHARS)}...` : squashed;
}

function redact(text, tokens) {
  return tokens.filter((t) => t.length >= 4).reduce((acc, t) => acc.split(t).join('***'), text);
}

exports.LOCAL_SCHEMA = LOCAL_SCHEMA;
exports.CENTRAL_SCHEMA = CENTRAL_SCHEMA;
exports.dayWindow = dayWindow;
exports.parseRfc3339 = parseRfc3339;
exports.buildQuery = buildQuery;
exports.parseAnnotatedCsv = parseAnnotatedCsv;
exports.collectAggregates = collectAggregates;
