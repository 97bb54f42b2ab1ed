// addReadingToDb against a fake InfluxDB 2 that parses what it is sent: message and batch
// fires, the schema, escaping (checked on the points the fake parsed, not on strings),
// timestamps, every kind of bad reading, idempotence, and every way InfluxDB fails. Then
// the fake's own checks, which aggregatesAction's tests rely on too. Run with
// `node --test actions/test/`, or `cargo test` (tests/it/actions.rs).
'use strict';

const assert = require('node:assert/strict');
const { afterEach, beforeEach, describe, test } = require('node:test');

const { main, SCHEMA } = require('../addReadingToDb.js');
const { startFakeInflux } = require('./fake_influxdb.js');
const { startFakeProvider } = require('./fake_provider.js');

const TOKEN = 'Xy9-secret-token-0123456789abcdef==';
const BUCKET = 'dc1_readings';
const RECEIVED_AT = '2026-11-24T03:00:00.123Z';
const RECEIVED_NS = BigInt(Date.parse(RECEIVED_AT)) * 1000000n;
const READING = {
  datacenter_id: 'dc1',
  device_fingerprint: 'a1b2',
  temperature: 21.5,
  humidity: 40,
  gas_perc: 3,
};

let influx;

beforeEach(async () => {
  influx = await startFakeInflux({ token: TOKEN, org: 'fog', buckets: [BUCKET, 'aggregates'] });
});
afterEach(() => influx.close());

/** FIRE_PARAMS of configmap.yml pointed at the fake, plus the token bound on the action. */
function actionParams(extra = {}) {
  return {
    datacenter_id: 'dc1',
    influx_url: influx.url,
    influx_org: 'fog',
    influx_bucket: BUCKET,
    influx_token: TOKEN,
    ...extra,
  };
}

/** A batch entry as the provider sends it; `body` an object is sent as its JSON. */
function entry(body, extra = {}) {
  return {
    topic: 'dc1/sensors/t1',
    body: typeof body === 'string' ? body : JSON.stringify(body),
    qos: 1,
    retain: false,
    received_at: RECEIVED_AT,
    message_id: '5f0c1a2b3c4d5e6f-1',
    ...extra,
  };
}

function messageFire(body, extra = {}) {
  return { type: 'message', ...entry(body, extra), ...actionParams() };
}

function batchFire(entries, extra = {}) {
  return { type: 'batch', messages: entries, ...actionParams(extra) };
}

function points() {
  return influx.points(BUCKET);
}

function writes() {
  return influx.requests.filter((r) => r.path === '/api/v2/write');
}

/** The stored point of `measurement` (with `topic`, when given); exactly one. */
function pointOf(measurement, topic) {
  const found = points().filter(
    (p) => p.measurement === measurement && (topic === undefined || p.tags.topic === topic),
  );
  assert.equal(found.length, 1, `points of ${measurement}: ${show(points())}`);
  return found[0];
}

function show(value) {
  return JSON.stringify(value, (_, v) => (typeof v === 'bigint' ? `${v}n` : v));
}

/** Runs the action, expecting a rejection without the token in any form; its error. */
async function rejection(fire) {
  let error;
  await assert.rejects(main(fire), (e) => {
    error = e;
    return true;
  });
  assert.ok(error instanceof Error, `rejected with ${show(error)}`);
  for (const text of [error.message, error.stack, show(error)]) {
    assert.ok(!text.includes(TOKEN), `the token leaked into ${text}`);
  }
  return error;
}

describe('a message fire', () => {
  test('one point per numeric member, tagged, at received_at, in one write', async () => {
    const result = await main(messageFire(READING));

    assert.deepEqual(result, { written: 3, skipped: 0, reasons: [] });
    const tags = { datacenter_id: 'dc1', device_fingerprint: 'a1b2', topic: 'dc1/sensors/t1' };
    assert.deepEqual(points(), [
      { measurement: 'temperature', tags, fields: { value: 21.5 }, time: RECEIVED_NS },
      { measurement: 'humidity', tags, fields: { value: 40 }, time: RECEIVED_NS },
      { measurement: 'gas_perc', tags, fields: { value: 3 }, time: RECEIVED_NS },
    ]);
    assert.equal(writes().length, 1);
    const [request] = writes();
    assert.equal(request.method, 'POST');
    assert.equal(request.query.get('org'), 'fog');
    assert.equal(request.query.get('bucket'), BUCKET);
    assert.equal(request.query.get('precision'), 'ns');
    assert.equal(request.headers.authorization, `Token ${TOKEN}`);
    assert.match(request.headers['content-type'], /^text\/plain; charset=utf-8$/);
  });

  test('the lines are the documented schema, exported as SCHEMA', async () => {
    await main(messageFire({ device_fingerprint: 'a1b2', temperature: 21.5 }));

    assert.equal(
      writes()[0].body,
      `temperature,${SCHEMA.DATACENTER_TAG}=dc1,${SCHEMA.DEVICE_TAG}=a1b2,` +
        `${SCHEMA.TOPIC_TAG}=dc1/sensors/t1 ${SCHEMA.VALUE_FIELD}=21.5 ${RECEIVED_NS}`,
    );
    assert.deepEqual(SCHEMA.NOT_MEASUREMENTS, [
      'datacenter_id',
      'device_fingerprint',
      'timestamp',
      'ts',
    ]);
  });

  test("values are written as floats, so 40 and 40.5 are one field's type", async () => {
    await main(messageFire({ humidity: 40 }, { topic: 'dc1/sensors/a' }));
    await main(messageFire({ humidity: 40.5 }, { topic: 'dc1/sensors/b' }));

    assert.match(writes()[0].body, / value=40 \d+$/);
    assert.deepEqual(
      points().map((p) => p.fields.value),
      [40, 40.5],
    );
  });

  test("the reading's datacenter_id wins over the fire's", async () => {
    await main(messageFire({ datacenter_id: 'dc7', temperature: 1 }));

    assert.equal(pointOf('temperature').tags.datacenter_id, 'dc7');
  });

  test("without one of its own, a reading gets the fire's datacenter_id", async () => {
    await main(messageFire({ temperature: 1 }));

    assert.equal(pointOf('temperature').tags.datacenter_id, 'dc1');
  });

  test('without device_fingerprint (absent, null or empty) the tag is left out', async () => {
    const bodies = [{ a: 1 }, { device_fingerprint: null, b: 1 }, { device_fingerprint: '', c: 1 }];
    await main(batchFire(bodies.map((body) => entry(body))));

    assert.equal(points().length, 3);
    for (const point of points()) {
      assert.deepEqual(Object.keys(point.tags), ['datacenter_id', 'topic']);
    }
  });

  test('a numeric device_fingerprint is a tag with its JSON text', async () => {
    await main(messageFire('{"device_fingerprint": 12345678901234567890, "t": 1}'));

    assert.equal(pointOf('t').tags.device_fingerprint, '12345678901234567890');
  });
});

describe('a batch fire', () => {
  test('every reading of every message in ONE write', async () => {
    const fire = batchFire([
      entry(READING, { topic: 'dc1/sensors/t1' }),
      entry({ device_fingerprint: 'c3d4', temperature: 19 }, { topic: 'dc1/sensors/t2' }),
      entry({ device_fingerprint: 'e5f6', humidity: 55.5 }, { topic: 'dc1/sensors/t3' }),
    ]);
    const result = await main(fire);

    assert.deepEqual(result, { written: 5, skipped: 0, reasons: [] });
    assert.equal(writes().length, 1);
    assert.equal(writes()[0].body.split('\n').length, 5);
    assert.equal(pointOf('temperature', 'dc1/sensors/t2').tags.device_fingerprint, 'c3d4');
    assert.equal(pointOf('humidity', 'dc1/sensors/t3').fields.value, 55.5);
  });

  test('each message has its own received_at', async () => {
    await main(
      batchFire([
        entry({ t: 1 }, { topic: 'a', received_at: '2026-11-24T03:00:00.001Z' }),
        entry({ t: 2 }, { topic: 'b', received_at: '2026-11-24T03:00:00.002Z' }),
      ]),
    );

    assert.equal(pointOf('t', 'b').time - pointOf('t', 'a').time, 1000000n);
  });

  test('a base64 body is decoded', async () => {
    const body = Buffer.from(JSON.stringify({ device_fingerprint: 'ü-1', temperature: 7 }));
    await main(batchFire([entry(body.toString('base64'), { encoding: 'base64' })]));

    assert.equal(pointOf('temperature').fields.value, 7);
    assert.equal(pointOf('temperature').tags.device_fingerprint, 'ü-1');
  });

  test('an empty batch writes nothing and calls no InfluxDB', async () => {
    const result = await main(batchFire([]));

    assert.deepEqual(result, { written: 0, skipped: 0, reasons: [] });
    assert.equal(influx.requests.length, 0);
  });
});

describe('escaping, checked on what InfluxDB parsed', () => {
  const awkward = [
    'plain',
    'with space',
    'a,comma',
    'an=equals',
    'all , = three',
    'say "hi"',
    'back\\slash',
    'back\\,slash before comma',
    'back\\ slash before space',
    'back\\=slash before equals',
    '\\leading backslash',
    'ünïcödé ☃ 温度 🌡️',
    "'single' \"double\" `back`",
    '#not a comment',
    '=leading equals',
    ' leading space',
  ];

  test('device_fingerprint, datacenter_id and topic come back exactly', async () => {
    const fire = batchFire(
      awkward.map((text, i) =>
        entry({ device_fingerprint: text, datacenter_id: text, [`m${i}`]: i }, { topic: text }),
      ),
    );
    const result = await main(fire);

    assert.equal(result.written, awkward.length, show(result));
    awkward.forEach((text, i) => {
      const point = pointOf(`m${i}`);
      assert.deepEqual(point.tags, { datacenter_id: text, device_fingerprint: text, topic: text });
      assert.equal(point.fields.value, i);
    });
  });

  test('measurement names (the readings member names) come back exactly', async () => {
    const names = awkward.filter((n) => !n.startsWith('#'));
    const reading = Object.fromEntries(names.map((name, i) => [name, i]));
    const result = await main(messageFire(reading));

    assert.equal(result.written, names.length, show(result));
    assert.deepEqual(
      points().map((p) => [p.measurement, p.fields.value]),
      names.map((name, i) => [name, i]),
    );
  });

  test('escapes spaces and commas in measurements; commas, equals and spaces in tags', async () => {
    await main(messageFire({ device_fingerprint: 'a b,c=d', 'air temp,C=x': 1 }, { topic: 't' }));

    assert.equal(
      writes()[0].body,
      'air\\ temp\\,C=x,datacenter_id=dc1,device_fingerprint=a\\ b\\,c\\=d,topic=t' +
        ` value=1 ${RECEIVED_NS}`,
    );
  });

  test('what line protocol cannot carry is skipped, named, and the rest written', async () => {
    const fire = batchFire([
      entry({ device_fingerprint: 'ends\\', t: 1 }, { topic: 'a' }),
      entry({ device_fingerprint: 'new\nline', t: 1 }, { topic: 'b' }),
      entry({ datacenter_id: 'tab\there', t: 1 }, { topic: 'c' }),
      entry({ t: 1 }, { topic: 'topic\\' }),
      entry(
        { '#comment': 1, _reserved: 2, '': 3, 'new\nline': 4, 'ends\\': 5, ok: 6 },
        { topic: 'd' },
      ),
    ]);
    const result = await main(fire);

    assert.equal(result.written, 1);
    assert.equal(pointOf('ok').fields.value, 6);
    assert.equal(result.skipped, 9);
    const expected = [
      /^messages\[0\] on a .*: device_fingerprint "ends\\\\" ends with a backslash/,
      /^messages\[1\] on b .*: device_fingerprint "new\\nline" holds a control character/,
      /^messages\[2\] on c .*: datacenter_id "tab\\there" holds a control character/,
      /^messages\[3\] on topic\\ .*: its topic "topic\\\\" ends with a backslash/,
      /^messages\[4\] on d .*: "#comment" starts with #/,
      /^messages\[4\] on d .*: "_reserved" starts with _/,
      /^messages\[4\] on d .*: "" is an empty name/,
      /^messages\[4\] on d .*: "new\\nline" "new\\nline" holds a control character/,
      /^messages\[4\] on d .*: "ends\\\\" "ends\\\\" ends with a backslash/,
    ];
    expected.forEach((pattern, i) => assert.match(result.reasons[i], pattern));
  });
});

describe('timestamps', () => {
  // 2024-11-24T03:00:00.123456789Z
  const NS = 1732417200123456789n;
  // [what, the timestamp as JSON text in the body, nanoseconds]
  const cases = [
    ['seconds', '1732417200', 1732417200000000000n],
    ['seconds with a fraction', '1732417200.5', 1732417200500000000n],
    ['seconds in exponent form', '1.7324172e9', 1732417200000000000n],
    ['seconds as a string of digits', '"1732417200"', 1732417200000000000n],
    ['milliseconds', '1732417200123', 1732417200123000000n],
    ['milliseconds with a fraction', '1732417200123.456789', NS],
    ['microseconds', '1732417200123456', 1732417200123456000n],
    ['nanoseconds past 2^53, exactly', '1732417200123456789', NS],
    ['nanoseconds as a string of digits', '"1732417200123456789"', NS],
    ['RFC 3339 with Z', '"2024-11-24T03:00:00Z"', 1732417200000000000n],
    ['RFC 3339 with nanoseconds', '"2024-11-24T03:00:00.123456789Z"', NS],
    ['RFC 3339 with an offset', '"2024-11-24T04:00:00.123456789+01:00"', NS],
    ['RFC 3339 with a negative offset', '"2024-11-23T21:30:00.123456789-05:30"', NS],
    ['RFC 3339 lower-case, with a space', '"2024-11-24 03:00:00.123456789z"', NS],
    ['RFC 3339, 10 fraction digits (truncated)', '"2024-11-24T03:00:00.1234567891Z"', NS],
    ['RFC 3339 on Feb 29 of a leap year', '"2024-02-29T00:00:00Z"', 1709164800000000000n],
  ];
  for (const [what, literal, expected] of cases) {
    test(what, async () => {
      const result = await main(messageFire(`{"timestamp": ${literal}, "t": 1}`));

      assert.equal(result.written, 1, show(result));
      assert.equal(pointOf('t').time, expected);
      assert.match(writes()[0].body, new RegExp(` ${expected}$`));
    });
  }

  test('ts when there is no timestamp; timestamp wins over ts', async () => {
    await main(
      batchFire([
        entry('{"ts": 1732417200123456789, "a": 1}'),
        entry('{"timestamp": 1732417200, "ts": 1, "b": 1}'),
      ]),
    );

    assert.equal(pointOf('a').time, NS);
    assert.equal(pointOf('b').time, 1732417200000000000n);
  });

  test('without one of its own: the message received_at, offset and all', async () => {
    await main(
      batchFire([
        entry({ a: 1 }),
        entry({ b: 1 }, { received_at: '2026-11-24T04:00:00.123+01:00' }),
      ]),
    );

    assert.equal(pointOf('a').time, RECEIVED_NS);
    assert.equal(pointOf('b').time, RECEIVED_NS);
  });

  const bad = [
    ['an uptime counter (before 2000)', '12345', /timestamp 12345 is before 2000/],
    ['milliseconds before 2000', '946684799999', /before 2000/],
    ['negative', '-1732417200', /timestamp -1732417200 is not a time/],
    ['past 2262', '9300000000000000000', /past InfluxDB's last time/],
    ['huge', '1e999', /timestamp 1e999 is not a time/],
    ['a boolean', 'true', /timestamp true is not a time/],
    ['null', 'null', /timestamp null is not a time/],
    ['an object', '{"s": 1}', /timestamp \{\} is not a time/],
    ['a word', '"yesterday"', /timestamp "yesterday" is not a time/],
    ['February 30th', '"2026-02-30T00:00:00Z"', /is not a time/],
    ['a leap second', '"2016-12-31T23:59:60Z"', /is not a time/],
    ['an hour 24', '"2026-01-01T24:00:00Z"', /is not a time/],
    ['no zone', '"2026-01-01T00:00:00"', /is not a time/],
    ['a bad offset', '"2026-01-01T00:00:00+25:00"', /is not a time/],
  ];
  for (const [what, literal, reason] of bad) {
    test(`a bad timestamp: ${what}, skipped while the next reading is written`, async () => {
      const result = await main(
        batchFire([entry(`{"timestamp": ${literal}, "t": 1}`, { topic: 'bad' }), entry({ ok: 1 })]),
      );

      assert.equal(result.written, 1, show(result));
      assert.equal(result.skipped, 1);
      assert.match(result.reasons[0], /^messages\[0\] on bad \(5f0c1a2b3c4d5e6f-1\): bad time/);
      assert.match(result.reasons[0], reason);
      assert.deepEqual(points().map((p) => p.measurement), ['ok']);
    });
  }

  test('no timestamp of its own and a received_at that is not RFC 3339: skipped', async () => {
    const fire = batchFire([entry({ t: 1 }, { received_at: 'now' }), entry({ ok: 1 })]);
    const result = await main(fire);

    assert.equal(result.written, 1);
    assert.match(result.reasons[0], /bad timestamp: received_at "now" is not a time/);
  });

  test('no timestamp and no received_at: skipped, the action clock is never used', async () => {
    const fire = batchFire([entry({ t: 1 }, { received_at: undefined }), entry({ ok: 1 })]);
    const result = await main(fire);

    assert.equal(result.written, 1);
    assert.match(result.reasons[0], /no timestamp of its own, and the message has no received_at/);
  });
});

describe('bad readings are skipped and counted, the others written', () => {
  const b64 = (bytes) => Buffer.from(bytes).toString('base64');
  const cases = [
    ['a body that is not JSON', entry('21.5 C'), /the body is not JSON: unexpected text after/],
    ['truncated JSON', entry('{"t": 1'), /the body is not JSON: expected "," or "}" at position 7/],
    ['JSON with a trailing comma', entry('{"t": 1,}'), /the body is not JSON/],
    ['an empty body', entry(''), /the body is not JSON: unexpected end/],
    ['a JSON array', entry('[1, 2]'), /the body is an array, not a JSON object/],
    ['a JSON number', entry('21.5'), /the body is the number 21.5, not a JSON object/],
    ['a JSON string', entry('"21.5"'), /the body is a string "21.5", not a JSON object/],
    ['JSON null', entry('null'), /the body is null, not a JSON object/],
    ['an empty object', entry('{}'), /the reading has no value, only tags and time/],
    ['only tags and a time', entry({ device_fingerprint: 'x', ts: 1732417200 }), /has no value/],
    ['bad base64', entry('not base64!', { encoding: 'base64' }), /not valid base64/],
    ['base64, not UTF-8', entry(b64([0xff, 0xfe, 0x7b]), { encoding: 'base64' }), /not UTF-8/],
    ['an unknown encoding', entry('{"t":1}', { encoding: 'gzip' }), /unknown encoding "gzip"/],
    ['no body', entry({ t: 1 }, { body: undefined }), /no body to read \(body is missing\)/],
    ['a body not a string', entry({ t: 1 }, { body: { t: 1 } }), /no body to read \(body is an obj/],
    ['a boolean datacenter_id', entry({ datacenter_id: true, t: 1 }), /datacenter_id is a boolean/],
    ['an object device_fingerprint', entry({ device_fingerprint: {} }), /device_fingerprint is an obj/],
    ['deep JSON', entry(`{"t": ${'['.repeat(100)}${']'.repeat(100)}}`), /nested deeper than 64/],
  ];
  for (const [what, bad, reason] of cases) {
    test(what, async () => {
      const result = await main(batchFire([{ ...bad, topic: 'bad/one' }, entry({ ok: 1 })]));

      assert.equal(result.written, 1, show(result));
      assert.equal(result.skipped, 1, show(result));
      assert.match(result.reasons[0], /^messages\[0\] on bad\/one \(5f0c1a2b3c4d5e6f-1\): /);
      assert.match(result.reasons[0], reason);
      assert.deepEqual(points().map((p) => p.measurement), ['ok']);
    });
  }

  test('a batch entry that is not an object', async () => {
    const result = await main(batchFire([42, null, entry({ ok: 1 })]));

    assert.equal(result.written, 1);
    assert.deepEqual(result.reasons, [
      'messages[0]: not a message object but a number',
      'messages[1]: not a message object but null',
    ]);
  });

  test('value by value: null, booleans, strings, arrays, objects, overflow', async () => {
    const body =
      '{"temperature": 21.5, "humidity": null, "door": true, "unit": "C", "list": [1],' +
      ' "nested": {"a": 1}, "huge": 1e999, "gas_perc": 3}';
    const result = await main(messageFire(body));

    assert.equal(result.written, 2);
    assert.deepEqual(points().map((p) => p.measurement), ['temperature', 'gas_perc']);
    assert.deepEqual(result.reasons, [
      'message on dc1/sensors/t1 (5f0c1a2b3c4d5e6f-1): "humidity" is null, not a number',
      'message on dc1/sensors/t1 (5f0c1a2b3c4d5e6f-1): "door" is a boolean (true), not a number',
      'message on dc1/sensors/t1 (5f0c1a2b3c4d5e6f-1): "unit" is a string "C", not a number',
      'message on dc1/sensors/t1 (5f0c1a2b3c4d5e6f-1): "list" is an array, not a number',
      'message on dc1/sensors/t1 (5f0c1a2b3c4d5e6f-1): "nested" is an object, not a number',
      'message on dc1/sensors/t1 (5f0c1a2b3c4d5e6f-1): "huge" is 1e999, too large for a float',
    ]);
    assert.equal(result.skipped, 6);
  });

  test('a fire with nothing writable resolves with written 0 and calls no InfluxDB', async () => {
    const result = await main(batchFire([entry('oops'), entry({ t: null })]));

    assert.equal(result.written, 0);
    assert.equal(result.skipped, 2);
    assert.equal(influx.requests.length, 0);
  });

  test('reasons stop at 100, the count does not', async () => {
    const result = await main(batchFire(Array.from({ length: 150 }, () => entry('x'))));

    assert.equal(result.skipped, 150);
    assert.equal(result.reasons.length, 101);
    assert.equal(result.reasons[100], '... and 50 more');
  });

  test('Object.prototype names are plain measurements; __proto__ is reserved (_)', async () => {
    const result = await main(
      messageFire('{"__proto__": 1, "constructor": 2, "toString": 3, "hasOwnProperty": 4}'),
    );

    assert.equal(result.written, 3, show(result));
    assert.deepEqual(
      points().map((p) => p.measurement),
      ['constructor', 'toString', 'hasOwnProperty'],
    );
    assert.match(result.reasons[0], /"__proto__" starts with _/);
  });
});

describe('idempotence', () => {
  test('the same fire twice gives the same points, not twice as many', async () => {
    const fire = batchFire([
      entry(READING, { topic: 'a' }),
      entry({ ts: 1732417200123, temperature: 19 }, { topic: 'b' }),
    ]);
    await main(fire);
    const first = points();
    await main(fire);

    assert.equal(writes().length, 2);
    assert.deepEqual(points(), first);
    assert.equal(first.length, 4);
  });

  test('a reading with its own time, redelivered with a new received_at, overwrites', async () => {
    const body = { ts: 1732417200123, temperature: 19 };
    await main(messageFire(body, { received_at: '2026-11-24T03:00:00.000Z', message_id: 'x-1' }));
    await main(messageFire(body, { received_at: '2026-11-24T03:05:00.000Z', message_id: 'y-7' }));

    assert.equal(points().length, 1);
  });
});

describe('inside OpenWhisk, transient failures are retried until the deadline', () => {
  const deadline = (ms) => {
    process.env.__OW_DEADLINE = String(Date.now() + ms);
  };
  afterEach(() => {
    delete process.env.__OW_DEADLINE;
  });

  test('a 503 that clears is retried, and the reading written once', async () => {
    deadline(30000);
    await influx.setFault({ status: 503, message: 'engine restarting' });
    const result = main(actionParams(messageFire(READING)));
    const failed = async () => {
      while (writes().length < 2) await new Promise((resolve) => setImmediate(resolve));
    };
    await failed();
    await influx.setFault(null);
    assert.equal((await result).written, 3);
    assert.equal(points().length, 3);
  });

  test('a 401 is not retried', async () => {
    deadline(30000);
    const error = await rejection({ ...messageFire(READING), influx_token: `${TOKEN}-revoked` });
    assert.equal(error.status, 401);
    assert.equal(writes().length, 1);
  });

  test('a failure that outlasts the deadline rejects before it', async () => {
    deadline(2500);
    await influx.setFault({ status: 500, message: 'down' });
    const started = Date.now();
    const error = await rejection(messageFire(READING));
    assert.equal(error.status, 500);
    assert.ok(Date.now() - started < 2500, 'gave up before the deadline');
    assert.ok(writes().length >= 1);
  });
});

describe('InfluxDB failing rejects with the status and its message, never the token', () => {
  test('401: a token InfluxDB does not know', async () => {
    const error = await rejection({ ...messageFire(READING), influx_token: `${TOKEN}-revoked` });

    assert.equal(error.status, 401);
    assert.match(
      error.message,
      new RegExp(
        '^addReadingToDb: InfluxDB answered 401 to the write of 3 points to bucket ' +
          `dc1_readings at ${influx.url}: unauthorized access$`,
      ),
    );
    assert.ok(!error.message.includes(`${TOKEN}-revoked`));
  });

  test('404: a bucket that does not exist', async () => {
    const error = await rejection({ ...messageFire(READING), influx_bucket: 'dc9_readings' });

    assert.equal(error.status, 404);
    assert.match(error.message, /answered 404 .*: bucket "dc9_readings" not found$/);
  });

  test('500', async () => {
    await influx.setFault({ status: 500, message: 'internal error: engine closed' });
    const error = await rejection(messageFire(READING));

    assert.equal(error.status, 500);
    assert.match(error.message, /answered 500 to the write of 3 points .*: internal error: engine/);
  });

  test('an InfluxDB echoing the token does not get it into the error', async () => {
    await influx.setFault({ status: 400, message: `bad request with Token ${TOKEN}` });
    const error = await rejection(messageFire(READING));

    assert.match(error.message, /: bad request with Token \*\*\*$/);
  });

  test('connection refused: names InfluxDB and the cause', async () => {
    await influx.setFault({ refuse: true });
    const error = await rejection(messageFire(READING));

    const hostPort = influx.url.replace('http://', '');
    assert.equal(error.status, undefined);
    assert.equal(
      error.message,
      `addReadingToDb: InfluxDB unreachable for the write of 3 points to bucket dc1_readings` +
        ` at ${influx.url}: connect ECONNREFUSED ${hostPort}`,
    );
  });

  test('silent past influx_timeout_ms', async () => {
    await influx.setFault({ hang: true });
    const error = await rejection({ ...messageFire(READING), influx_timeout_ms: 100 });

    assert.match(error.message, /unreachable for the write of 3 points .*: no answer within 100 ms/);
  });

  describe('answers that are not InfluxDB own', () => {
    let proxy;
    beforeEach(async () => {
      proxy = await startFakeProvider();
    });
    afterEach(() => proxy.close());

    test("a proxy's 502 page: a short snippet of it", async () => {
      const page =
        `<html><head><title>502 Bad Gateway</title></head>\n${'<p>x</p>\n'.repeat(80)}</html>`;
      proxy.answer({ status: 502, text: page });
      const error = await rejection({ ...messageFire(READING), influx_url: proxy.endpoint });

      assert.equal(error.status, 502);
      assert.match(error.message, /answered 502 .*: <html><head><title>502 Bad Gateway/);
      assert.ok(error.message.length < 400, error.message);
    });

    test('a redirect is reported, not followed with the token', async () => {
      proxy.answer({ status: 307, text: '', headers: { Location: 'https://elsewhere.example/' } });
      const error = await rejection({ ...messageFire(READING), influx_url: proxy.endpoint });

      assert.equal(error.status, 307);
      assert.match(error.message, /answered 307 .*: redirect to https:\/\/elsewhere\.example\//);
      assert.equal(proxy.requests.length, 1);
    });

    test('influx_url with a trailing slash', async () => {
      proxy.answer({ status: 204, text: '' });
      await main({ ...messageFire(READING), influx_url: `${proxy.endpoint}//` });

      assert.match(proxy.requests[0].path, /^\/api\/v2\/write\?/);
    });
  });
});

describe('a missing or invalid parameter rejects naming it, and nothing is sent', () => {
  const cases = [
    ['no influx_url', { influx_url: undefined }, /missing parameter influx_url \(FIRE_PARAMS\)$/],
    ['no influx_org', { influx_org: '' }, /missing parameter influx_org \(FIRE_PARAMS\)$/],
    ['no influx_bucket', { influx_bucket: undefined }, /missing parameter influx_bucket/],
    ['no datacenter_id', { datacenter_id: undefined }, /missing parameter datacenter_id/],
    [
      'no influx_token',
      { influx_token: undefined },
      /missing parameter influx_token \(bound on the action: wsk action update addReadingToDb -p/,
    ],
    [
      'several',
      { influx_org: undefined, influx_token: ' ' },
      /missing parameter influx_org \(FIRE_PARAMS\), influx_token/,
    ],
    ['a bad influx_url', { influx_url: 'influxdb:8086' }, /influx_url must be an http\(s\) URL/],
    ['a datacenter_id "dc1\\"', { datacenter_id: 'dc1\\' }, /datacenter_id "dc1\\\\" ends with a/],
    ['a fire of another type', { type: 'alarm' }, /a fire of type "alarm", not "message" or/],
    ['a fire without type', { type: undefined }, /a fire of type undefined/],
    ['a batch without messages', { type: 'batch', messages: undefined }, /without a messages/],
  ];
  for (const [what, overrides, expected] of cases) {
    test(what, async () => {
      const error = await rejection({ ...messageFire(READING), ...overrides });

      assert.match(error.message, expected);
      assert.equal(influx.requests.length, 0);
    });
  }
});

describe('the fake InfluxDB checks what InfluxDB checks', () => {
  async function post(path, { query = {}, body = '', token = TOKEN, type } = {}) {
    const headers = {};
    if (token) headers.Authorization = `Token ${token}`;
    if (type) headers['Content-Type'] = type;
    const res = await fetch(`${influx.url}${path}?${new URLSearchParams(query)}`, {
      method: 'POST',
      headers,
      body,
    });
    const text = await res.text();
    return { status: res.status, type: res.headers.get('content-type'), text };
  }
  const writeTo = (body, query = {}) =>
    post('/api/v2/write', { query: { org: 'fog', bucket: BUCKET, ...query }, body });

  test('parses escapes, quoted strings, integers, floats, booleans and comments', async () => {
    const body = [
      '# a comment',
      '',
      '   ',
      'm\\ 1\\,x\\=y,t\\ k\\=1=v\\,a\\ b\\=c,z=a\\b' +
        ' s="say \\"hi\\" \\\\ \\n",i=-42i,u=42u,f=1.5e3,g=-.5,h=7,b1=t,b2=FALSE' +
        ' 1700000000000000000',
      '  weather,place=here temp=1 1700000000000000001  ',
    ].join('\n');
    assert.equal((await writeTo(body)).status, 204);

    assert.deepEqual(points(), [
      {
        measurement: 'm 1,x\\=y',
        tags: { 't k=1': 'v,a b=c', z: 'a\\b' },
        fields: {
          s: 'say "hi" \\ \\n',
          i: -42,
          u: 42,
          f: 1500,
          g: -0.5,
          h: 7,
          b1: true,
          b2: false,
        },
        time: 1700000000000000000n,
      },
      {
        measurement: 'weather',
        tags: { place: 'here' },
        fields: { temp: 1 },
        time: 1700000000000000001n,
      },
    ]);
  });

  test('converts timestamps by precision; a point without one gets the server clock', async () => {
    const before = BigInt(Date.now()) * 1000000n;
    assert.equal((await writeTo('a v=1 1700000000', { precision: 's' })).status, 204);
    assert.equal((await writeTo('b v=1 1700000000001', { precision: 'ms' })).status, 204);
    assert.equal((await writeTo('c v=1 1700000000000002', { precision: 'us' })).status, 204);
    assert.equal((await writeTo('d v=1')).status, 204);

    const [a, b, c, d] = points().map((p) => p.time);
    assert.equal(a, 1700000000000000000n);
    assert.equal(b, 1700000000001000000n);
    assert.equal(c, 1700000000000002000n);
    assert.ok(d >= before && d <= BigInt(Date.now()) * 1000000n);
  });

  test('the same series and time merges fields instead of adding a point', async () => {
    await writeTo('m,b=2,a=1 x=1 5\nm,a=1,b=2 y=2 5\nm,a=1,b=2 x=3 5\nm,a=1,b=2 x=9 6');

    assert.deepEqual(points(), [
      { measurement: 'm', tags: { a: '1', b: '2' }, fields: { x: 3, y: 2 }, time: 5n },
      { measurement: 'm', tags: { a: '1', b: '2' }, fields: { x: 9 }, time: 6n },
    ]);
  });

  const malformed = [
    ['no fields', 'm', 'missing fields'],
    ['no fields after the tags', 'm,a=1', 'missing fields'],
    ['an empty tag value', 'm,a= v=1', 'missing tag value'],
    ['a tag without value', 'm,a v=1', 'missing tag value'],
    ['duplicate tags', 'm,a=1,a=2 v=1', 'duplicate tags'],
    ['a field without value', 'm v= 1', 'missing field value'],
    ['a field without =', 'm v 1', 'missing field value'],
    ['a bad number', 'm v=1.2.3', 'invalid number'],
    ['a bare word', 'm v=hello', 'invalid boolean'],
    ['an unbalanced quote', 'm v="open', 'unbalanced quotes'],
    ['a bad timestamp', 'm v=1 12:00', 'bad timestamp'],
    ['a timestamp past the range', 'm v=1 9223372036854775807', 'time outside range'],
    [
      'an int out of range',
      'm v=9223372036854775808i',
      'unable to parse integer 9223372036854775808i: value out of range',
    ],
    ['a trailing backslash escaping the separator', 'm,a=x\\ v=1', 'invalid tag format'],
  ];
  for (const [what, line, why] of malformed) {
    test(`rejects ${what} with 400 and stores nothing`, async () => {
      const answer = await writeTo(`ok v=1 1\n${line}`);

      assert.equal(answer.status, 400);
      assert.deepEqual(JSON.parse(answer.text), {
        code: 'invalid',
        message: `unable to parse '${line}': ${why}`,
      });
      assert.deepEqual(points(), []);
    });
  }

  test('an empty body is 400 writing requires points', async () => {
    const answer = await writeTo('\n# nothing\n');

    assert.equal(answer.status, 400);
    assert.equal(JSON.parse(answer.text).message, 'writing requires points');
  });

  test('token, org, bucket and precision', async () => {
    const answers = await Promise.all([
      post('/api/v2/write', { query: { org: 'fog', bucket: BUCKET }, body: 'm v=1', token: null }),
      post('/api/v2/write', { query: { org: 'fog', bucket: BUCKET }, body: 'm v=1', token: 'no' }),
      post('/api/v2/write', { query: { bucket: BUCKET }, body: 'm v=1' }),
      post('/api/v2/write', { query: { org: 'acme', bucket: BUCKET }, body: 'm v=1' }),
      post('/api/v2/write', { query: { org: 'fog' }, body: 'm v=1' }),
      post('/api/v2/write', { query: { org: 'fog', bucket: 'x' }, body: 'm v=1' }),
      writeTo('m v=1', { precision: 'h' }),
    ]);

    assert.deepEqual(
      answers.map((a) => [a.status, JSON.parse(a.text)]),
      [
        [401, { code: 'unauthorized', message: 'unauthorized access' }],
        [401, { code: 'unauthorized', message: 'unauthorized access' }],
        [400, { code: 'invalid', message: 'Please provide either orgID or org' }],
        [404, { code: 'not found', message: 'organization name "acme" not found' }],
        [400, { code: 'invalid', message: 'Please provide bucket' }],
        [404, { code: 'not found', message: 'bucket "x" not found' }],
        [
          400,
          {
            code: 'invalid',
            message: 'invalid precision "h"; valid precision units are ns, us, ms, and s',
          },
        ],
      ],
    );
    assert.deepEqual(points(), []);
  });

  test('a field type conflict drops that point (422) and keeps the others', async () => {
    await writeTo('temperature value=1 1');
    const answer = await writeTo('temperature value=2i 2\nhumidity value=3 3');

    assert.equal(answer.status, 422);
    assert.match(
      JSON.parse(answer.text).message,
      new RegExp(
        'field type conflict: input field "value" on measurement "temperature" is type ' +
          'integer, already exists as type float dropped=1$',
      ),
    );
    assert.deepEqual(points().map((p) => p.measurement), ['temperature', 'humidity']);
  });

  test('points() of a bucket it does not have throws', () => {
    assert.throws(() => influx.points('nope'), /no bucket "nope"/);
  });

  test('query without an evaluator: 501 after the auth checks', async () => {
    const unauthorized = await post('/api/v2/query', { query: { org: 'fog' }, token: 'no' });
    const unknownOrg = await post('/api/v2/query', {
      query: { org: 'x' },
      type: 'application/vnd.flux',
    });
    const answer = await post('/api/v2/query', {
      query: { org: 'fog' },
      type: 'application/vnd.flux',
      body: 'buckets()',
    });

    assert.equal(unauthorized.status, 401);
    assert.equal(unknownOrg.status, 404);
    assert.equal(answer.status, 501);
    assert.equal(JSON.parse(answer.text).code, 'not implemented');
  });

  test('query with an evaluator: Flux in, annotated CSV out, points readable', async () => {
    const seen = [];
    const evaluating = await startFakeInflux({
      token: TOKEN,
      org: 'fog',
      buckets: [BUCKET],
      query: async (flux, fake) => {
        if (flux === 'fail') throw new Error('error @1:1-1:5: undefined identifier fail');
        seen.push([flux, fake.points(BUCKET).length]);
        return '#datatype,string,long\n,result,table\n,_result,0\n';
      },
    });
    try {
      const ask = async (type, body) => {
        const res = await fetch(`${evaluating.url}/api/v2/query?org=fog`, {
          method: 'POST',
          headers: { Authorization: `Token ${TOKEN}`, 'Content-Type': type },
          body,
        });
        const text = await res.text();
        return { status: res.status, type: res.headers.get('content-type'), text };
      };
      await fetch(`${evaluating.url}/api/v2/write?org=fog&bucket=${BUCKET}`, {
        method: 'POST',
        headers: { Authorization: `Token ${TOKEN}` },
        body: 'm v=1 1',
      });
      const flux = await ask('application/vnd.flux', 'from(bucket: "dc1_readings")');
      const json = await ask('application/json', JSON.stringify({ query: 'q2', type: 'flux' }));
      const failed = await ask('application/vnd.flux', 'fail');
      const unsupported = await ask('text/plain', 'q3');

      assert.deepEqual([flux.status, flux.type], [200, 'text/csv; charset=utf-8']);
      assert.equal(flux.text, '#datatype,string,long\n,result,table\n,_result,0\n');
      assert.equal(json.status, 200);
      assert.deepEqual(seen, [
        ['from(bucket: "dc1_readings")', 1],
        ['q2', 1],
      ]);
      assert.equal(failed.status, 400);
      assert.match(JSON.parse(failed.text).message, /undefined identifier fail/);
      assert.equal(unsupported.status, 400);
    } finally {
      await evaluating.close();
    }
  });

  test('refuse, then restore on the same URL; every request recorded', async () => {
    await influx.setFault({ refuse: true });
    await assert.rejects(fetch(`${influx.url}/api/v2/write`, { method: 'POST' }), /fetch failed/);
    await influx.setFault(null);
    const answer = await writeTo('m v=1 1');

    assert.equal(answer.status, 204);
    assert.equal(influx.requests.length, 1);
    assert.equal(influx.requests[0].path, '/api/v2/write');
    assert.equal(influx.requests[0].query.get('org'), 'fog');
    assert.equal(influx.requests[0].body, 'm v=1 1');
  });
});
