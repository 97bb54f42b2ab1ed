// A stand-in for an InfluxDB 2 server: a real HTTP server on 127.0.0.1, port 0, that
// checks what a real one checks on the two endpoints the actions use, stores the points
// written to it as InfluxDB does, and answers Flux queries with a pluggable evaluator.
//
//   const { startFakeInflux } = require('./fake_influxdb');
//   const influx = await startFakeInflux({ token: 'tok', org: 'fog',
//     buckets: ['dc1_readings', 'aggregates'], query: optionalEvaluator });
//   influx.url              'http://127.0.0.1:<port>'
//   influx.points(bucket)   [{measurement, tags: {k: v}, fields: {k: number|string|boolean},
//                             time: BigInt ns}], in the order first written; a point with
//                           the measurement, tag set and time of an earlier one merges its
//                           fields into it (what InfluxDB does), so a rewrite never doubles
//   influx.requests         every request: {method, path, query (URLSearchParams), headers,
//                           body (string)}
//   influx.setFault(f)      null | {status, message} (every request answered so, in
//                           InfluxDB's {code, message} shape) | {refuse: true} (the server
//                           closes: connections are refused) | {hang: true} (requests are
//                           read and never answered); null restores. Returns a promise that
//                           resolves once the fault is in effect.
//   await influx.close()
//
// POST /api/v2/write?org=&bucket=&precision=  Authorization: Token <token> (else 401),
//   org and bucket present and existing (else 400 / 404), precision ns|us|ms|s (default
//   ns, else 400), the body parsed as line protocol (else 400 "unable to parse '<line>':
//   <why>", and nothing of the request is stored), a field whose type differs from the
//   one already stored for it drops its point (422, the rest is stored); 204 on success.
// POST /api/v2/query?org=  Token auth and org checked, the Flux text taken from an
//   application/vnd.flux body or an application/json {"query": ...} one; answered 200
//   text/csv with `await options.query(fluxText, influx)` (a string of annotated CSV),
//   400 with its message if it throws, 501 without an evaluator.
//
// The parser follows InfluxDB's own (models/points.go): in a measurement a backslash
// escapes a comma or a space, in tag keys, tag values and field keys a comma, an equals
// sign or a space; any other backslash is a literal one, so a name cannot end with one.
// In a string field value \" and \\ are escapes. Integers end in i, unsigned in u;
// booleans are t, T, true, True, TRUE (and the f forms); the timestamp is optional (then
// the server's clock, as InfluxDB does); lines starting with # are comments.
//
// (Node 20's `node --test actions/test/` also runs this file as a test file, with no
// tests in it; `cargo test` passes only the *.test.js files.)
'use strict';

const http = require('node:http');

const PRECISION_NS = { ns: 1n, us: 1000n, ms: 1000000n, s: 1000000000n };
// InfluxDB's models.MinNanoTime and MaxNanoTime.
const MIN_NS = -9223372036854775806n;
const MAX_NS = 9223372036854775806n;
const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
const UINT64_MAX = 2n ** 64n - 1n;

const CODES = {
  400: 'invalid',
  401: 'unauthorized',
  403: 'forbidden',
  404: 'not found',
  405: 'method not allowed',
  413: 'request too large',
  422: 'unprocessable entity',
  429: 'too many requests',
  500: 'internal error',
  501: 'not implemented',
  503: 'unavailable',
};

/** Starts the server; see the top of the file for what it offers. */
async function startFakeInflux(options = {}) {
  const token = options.token ?? 'tok';
  const org = options.org ?? 'fog';
  const evaluator = options.query;
  // bucket name -> {points: Map(series+time key -> point), fieldTypes: Map}
  const buckets = new Map(
    (options.buckets ?? ['dc1_readings']).map((name) => [
      name,
      { points: new Map(), fieldTypes: new Map() },
    ]),
  );
  const requests = [];
  let fault = null;
  let port = 0;

  const fake = {
    url: '',
    requests,
    points(bucket) {
      const stored = buckets.get(bucket);
      if (!stored) {
        throw new Error(`fake InfluxDB has no bucket ${JSON.stringify(bucket)}`);
      }
      return [...stored.points.values()].map((p) => ({
        measurement: p.measurement,
        tags: { ...p.tags },
        fields: { ...p.fields },
        time: p.time,
      }));
    },
    async setFault(next) {
      const wasRefusing = fault && fault.refuse;
      fault = next || null;
      if (fault && fault.refuse && !wasRefusing) await stopListening();
      if (!(fault && fault.refuse) && wasRefusing) await listen(port);
    },
    async close() {
      if (server.listening) await stopListening();
    },
  };

  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => {
      const url = new URL(req.url, 'http://fake-influxdb');
      const request = {
        method: req.method,
        path: url.pathname,
        query: url.searchParams,
        headers: req.headers,
        body: Buffer.concat(chunks).toString('utf8'),
      };
      requests.push(request);
      if (fault && fault.hang) return;
      Promise.resolve()
        .then(() => (fault ? failure(fault.status, fault.message) : route(request)))
        .catch((e) => failure(500, `fake InfluxDB failed: ${e.stack || e}`))
        .then((answer) => send(res, answer));
    });
  });

  function route(request) {
    if (request.path === '/api/v2/write') {
      if (request.method !== 'POST') return failure(405, 'method not allowed');
      return write(request);
    }
    if (request.path === '/api/v2/query') {
      if (request.method !== 'POST') return failure(405, 'method not allowed');
      return query(request);
    }
    return failure(404, 'path not found');
  }

  // The checks both endpoints make, in InfluxDB's order: token, then organization.
  function checkAuthAndOrg(request) {
    if (request.headers.authorization !== `Token ${token}`) {
      return failure(401, 'unauthorized access');
    }
    const name = request.query.get('org');
    if (!name) {
      // (InfluxDB also takes orgID; the actions name organizations, so this fake only
      // knows them by name.)
      return failure(400, 'Please provide either orgID or org');
    }
    if (name !== org) return failure(404, `organization name "${name}" not found`);
    return null;
  }

  function write(request) {
    const refused = checkAuthAndOrg(request);
    if (refused) return refused;
    const bucketName = request.query.get('bucket');
    if (!bucketName) return failure(400, 'Please provide bucket');
    const bucket = buckets.get(bucketName);
    if (!bucket) return failure(404, `bucket "${bucketName}" not found`);
    const precision = request.query.get('precision') || 'ns';
    if (!PRECISION_NS[precision]) {
      return failure(
        400,
        `invalid precision "${precision}"; valid precision units are ns, us, ms, and s`,
      );
    }
    let points;
    try {
      points = parseLineProtocol(request.body, PRECISION_NS[precision]);
    } catch (e) {
      if (e instanceof LineProtocolError) return failure(400, e.message);
      throw e;
    }
    if (points.length === 0) return failure(400, 'writing requires points');
    return store(bucket, points);
  }

  // Type conflicts are checked per point, as InfluxDB's shards do: a conflicting point is
  // dropped, the others are written, and the answer says so.
  function store(bucket, points) {
    const conflicts = [];
    for (const point of points) {
      const conflict = Object.entries(point.fields).find(([field, value]) => {
        const known = bucket.fieldTypes.get(`${point.measurement}\u0000${field}`);
        return known && known !== value.type;
      });
      if (conflict) {
        const [field, value] = conflict;
        const known = bucket.fieldTypes.get(`${point.measurement}\u0000${field}`);
        conflicts.push(
          `input field "${field}" on measurement "${point.measurement}" is type ` +
            `${value.type}, already exists as type ${known}`,
        );
        continue;
      }
      const fields = {};
      for (const [field, value] of Object.entries(point.fields)) {
        bucket.fieldTypes.set(`${point.measurement}\u0000${field}`, value.type);
        fields[field] = value.value;
      }
      const tagKeys = Object.keys(point.tags).sort();
      const tags = Object.fromEntries(tagKeys.map((k) => [k, point.tags[k]]));
      const key = [point.measurement, ...tagKeys.map((k) => `${k}=${tags[k]}`), point.time]
        .join('\u0000');
      const earlier = bucket.points.get(key);
      if (earlier) Object.assign(earlier.fields, fields);
      else bucket.points.set(key, { ...point, tags, fields });
    }
    if (conflicts.length > 0) {
      return failure(
        422,
        `failure writing points to database: partial write: field type conflict: ` +
          `${conflicts[0]} dropped=${conflicts.length}`,
      );
    }
    return { status: 204 };
  }

  async function query(request) {
    const refused = checkAuthAndOrg(request);
    if (refused) return refused;
    const type = (request.headers['content-type'] || '').split(';')[0].trim();
    let flux;
    if (type === 'application/vnd.flux') {
      flux = request.body;
    } else if (type === 'application/json') {
      let parsed;
      try {
        parsed = JSON.parse(request.body);
      } catch (e) {
        return failure(400, `failed to decode request body: ${e.message}`);
      }
      if (!parsed || typeof parsed.query !== 'string') {
        return failure(400, 'failed to decode request body: query is required');
      }
      flux = parsed.query;
    } else {
      return failure(400, `unsupported content type "${type}"`);
    }
    if (typeof evaluator !== 'function') {
      return failure(
        501,
        'this fake InfluxDB answers queries only when started with a query evaluator',
      );
    }
    let csv;
    try {
      csv = await evaluator(flux, fake);
    } catch (e) {
      return failure(400, e.message);
    }
    return { status: 200, contentType: 'text/csv; charset=utf-8', text: String(csv) };
  }

  function listen(at) {
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(at, '127.0.0.1', () => {
        server.off('error', reject);
        port = server.address().port;
        fake.url = `http://127.0.0.1:${port}`;
        resolve();
      });
    });
  }

  function stopListening() {
    // Kept-alive connections would otherwise still reach the closed server.
    const closed = new Promise((resolve) => server.close(() => resolve()));
    server.closeAllConnections();
    return closed;
  }

  await listen(0);
  return fake;
}

function failure(status, message) {
  return { status, json: { code: CODES[status] || 'internal error', message } };
}

// Every answer closes its connection: a client then never holds a kept-alive socket that
// `refuse` could cut under it, so a refused connection is always reported as one.
function send(res, answer) {
  if (res.destroyed) return;
  const headers = { Connection: 'close' };
  if (answer.json) {
    headers['Content-Type'] = 'application/json; charset=utf-8';
    res.writeHead(answer.status, headers);
    res.end(JSON.stringify(answer.json));
  } else if (answer.text !== undefined) {
    headers['Content-Type'] = answer.contentType;
    res.writeHead(answer.status, headers);
    res.end(answer.text);
  } else {
    res.writeHead(answer.status, headers);
    res.end();
  }
}

class LineProtocolError extends Error {}

/**
 * Parses a write body into points {measurement, tags, fields: {k: {type, value}}, time};
 * throws a LineProtocolError "unable to parse '<line>': <why>" at the first bad line.
 * `unit` is the precision in nanoseconds.
 */
function parseLineProtocol(text, unit) {
  const points = [];
  const parser = { text, i: 0 };
  while (parser.i < text.length) {
    const start = parser.i;
    try {
      const point = parseLine(parser, unit);
      if (point) points.push(point);
    } catch (e) {
      if (!(e instanceof LineProtocolError)) throw e;
      const end = text.indexOf('\n', start);
      const line = text.slice(start, end === -1 ? text.length : end).trim();
      throw new LineProtocolError(`unable to parse '${line}': ${e.message}`);
    }
  }
  return points;
}

const MEASUREMENT_ESCAPES = ', ';
const KEY_ESCAPES = ',= ';

// One line, from parser.i through its newline. Null for a blank line or a comment.
function parseLine(parser, unit) {
  const { text } = parser;
  skipSpaces(parser);
  if (atLineEnd(parser)) return endLine(parser, null);
  if (text[parser.i] === '#') {
    const end = text.indexOf('\n', parser.i);
    parser.i = end === -1 ? text.length : end + 1;
    return null;
  }

  const measurement = readName(parser, MEASUREMENT_ESCAPES, ', ');
  if (measurement === '') fail('missing measurement');
  const tags = {};
  while (text[parser.i] === ',') {
    parser.i++;
    const key = readName(parser, KEY_ESCAPES, ',= ');
    if (key === '') fail('missing tag key');
    if (text[parser.i] !== '=') fail('missing tag value');
    parser.i++;
    const value = readName(parser, KEY_ESCAPES, ',= ');
    if (text[parser.i] === '=') fail('invalid tag format');
    if (value === '') fail('missing tag value');
    if (Object.hasOwn(tags, key)) fail('duplicate tags');
    tags[key] = value;
  }
  if (text[parser.i] !== ' ') fail('missing fields');
  skipSpaces(parser);
  if (atLineEnd(parser)) fail('missing fields');

  const fields = {};
  for (;;) {
    const key = readName(parser, KEY_ESCAPES, ',= ');
    if (key === '') fail('missing field key');
    if (text[parser.i] !== '=') fail('missing field value');
    parser.i++;
    fields[key] = readFieldValue(parser);
    if (text[parser.i] === ',') {
      parser.i++;
      continue;
    }
    break;
  }

  skipSpaces(parser);
  let time;
  if (atLineEnd(parser)) {
    time = BigInt(Date.now()) * 1000000n;
  } else {
    const start = parser.i;
    while (!atLineEnd(parser)) parser.i++;
    const raw = text.slice(start, parser.i).replace(/ +$/, '');
    if (!/^-?\d+$/.test(raw)) fail('bad timestamp');
    time = BigInt(raw) * unit;
    if (time < MIN_NS || time > MAX_NS) fail('time outside range');
  }
  return endLine(parser, { measurement, tags, fields, time });
}

// A measurement, tag key, tag value or field key: up to an unescaped stop character or
// the end of the line. A backslash before one of `escapes` stands for it; any other
// backslash is itself.
function readName(parser, escapes, stops) {
  const { text } = parser;
  let out = '';
  while (!atLineEnd(parser) && !stops.includes(text[parser.i])) {
    const c = text[parser.i];
    if (c === '\\' && parser.i + 1 < text.length && escapes.includes(text[parser.i + 1])) {
      out += text[parser.i + 1];
      parser.i += 2;
    } else {
      out += c;
      parser.i++;
    }
  }
  return out;
}

function readFieldValue(parser) {
  const { text } = parser;
  if (text[parser.i] === '"') {
    parser.i++;
    let out = '';
    for (;;) {
      if (parser.i >= text.length) fail('unbalanced quotes');
      const c = text[parser.i];
      if (c === '"') break;
      if (c === '\\' && (text[parser.i + 1] === '"' || text[parser.i + 1] === '\\')) {
        out += text[parser.i + 1];
        parser.i += 2;
      } else {
        out += c;
        parser.i++;
      }
    }
    parser.i++;
    if (!atLineEnd(parser) && text[parser.i] !== ',' && text[parser.i] !== ' ') {
      fail('invalid field format');
    }
    return { type: 'string', value: out };
  }
  const start = parser.i;
  while (!atLineEnd(parser) && text[parser.i] !== ',' && text[parser.i] !== ' ') parser.i++;
  const raw = text.slice(start, parser.i);
  if (raw === '') fail('missing field value');
  if (/^(t|T|true|True|TRUE)$/.test(raw)) return { type: 'boolean', value: true };
  if (/^(f|F|false|False|FALSE)$/.test(raw)) return { type: 'boolean', value: false };
  if (/^-?\d+i$/.test(raw)) {
    const n = BigInt(raw.slice(0, -1));
    if (n < INT64_MIN || n > INT64_MAX) fail(`unable to parse integer ${raw}: value out of range`);
    return { type: 'integer', value: Number(n) };
  }
  if (/^\d+u$/.test(raw)) {
    const n = BigInt(raw.slice(0, -1));
    if (n > UINT64_MAX) fail(`unable to parse unsigned ${raw}: value out of range`);
    return { type: 'unsigned', value: Number(n) };
  }
  if (/^-?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(raw)) {
    const value = Number(raw);
    if (!Number.isFinite(value)) fail(`unable to parse float ${raw}: value out of range`);
    return { type: 'float', value };
  }
  if (/^[-.\d]/.test(raw)) fail('invalid number');
  fail('invalid boolean');
}

function skipSpaces(parser) {
  while (parser.text[parser.i] === ' ' || parser.text[parser.i] === '\t') parser.i++;
}

function atLineEnd(parser) {
  return parser.i >= parser.text.length || parser.text[parser.i] === '\n';
}

function endLine(parser, point) {
  if (!atLineEnd(parser)) fail('invalid field format');
  if (parser.i < parser.text.length) parser.i++;
  return point;
}

function fail(why) {
  throw new LineProtocolError(why);
}

module.exports = { startFakeInflux, parseLineProtocol };
