// aggregatesAction against two fake InfluxDB 2 servers (a data center's local one and the
// central one), the local one answering the action's Flux with flux_subset.js in InfluxDB's
// annotated CSV: which day is aggregated (DST days included), what is written centrally,
// running a day twice, an empty day, every way InfluxDB fails; and the CSV parser alone.
// Run with `node --test actions/test/`, or `cargo test` (tests/it/actions.rs).
'use strict';

const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { afterEach, beforeEach, describe, test } = require('node:test');

const action = require('../aggregatesAction.js');
const { startFakeInflux } = require('./fake_influxdb.js');
const { evaluate, FluxError } = require('./flux_subset.js');

const { main, parseAnnotatedCsv, dayWindow, parseRfc3339 } = action;

const LOCAL_TOKEN = 'local-token-0123456789abcdef';
const CENTRAL_TOKEN = 'central-token-fedcba9876543210';
const NS = 1000000000n;

let local;
let central;

// Fresh servers per test: stored points and requests never leak from one test to the next.
beforeEach(async () => {
  local = await startFakeInflux({
    token: LOCAL_TOKEN, org: 'fog', buckets: ['dc1_readings'], query: evaluate,
  });
  central = await startFakeInflux({ token: CENTRAL_TOKEN, org: 'fog-central', buckets: ['aggregates'] });
});

afterEach(() => Promise.all([local.close(), central.close()]));

/** What the alarm fire brings: configmap.yml's ALARM_PAYLOAD shape, plus the bound tokens. */
function params(scheduledAt, extra = {}) {
  return {
    datacenter_id: 'dc1',
    local_influx_url: local.url,
    local_influx_org: 'fog',
    local_influx_bucket: 'dc1_readings',
    central_influx_url: central.url,
    central_influx_org: 'fog-central',
    central_influx_bucket: 'aggregates',
    timezone: 'Europe/Rome',
    type: 'alarm',
    alarm: 'default',
    scheduled_at: scheduledAt,
    local_influx_token: LOCAL_TOKEN,
    central_influx_token: CENTRAL_TOKEN,
    ...extra,
  };
}

/** Nanoseconds of an RFC 3339 time (whole milliseconds) plus `extraNs`. */
function ns(rfc3339, extraNs = 0n) {
  return BigInt(Date.parse(rfc3339)) * 1000000n + extraNs;
}

/**
 * Seeds the local bucket through its write endpoint, in addReadingToDb's schema: a
 * measurement per quantity, field value, tags datacenter_id, device_fingerprint, topic.
 */
async function seed(readings) {
  const esc = (v) => v.replace(/[,= ]/g, '\\$&');
  const lines = readings.map(({ quantity, device, value, time, topic = 'dc1/sensors/t1', field = 'value' }) => {
    const tags = [`datacenter_id=dc1`, device === undefined ? null : `device_fingerprint=${esc(device)}`,
      `topic=${esc(topic)}`].filter(Boolean).join(',');
    const fieldText = typeof value === 'string' ? `"${value}"` : String(value);
    return `${quantity.replace(/[, ]/g, '\\$&')},${tags} ${field}=${fieldText} ${time}`;
  });
  const res = await fetch(`${local.url}/api/v2/write?org=fog&bucket=dc1_readings&precision=ns`, {
    method: 'POST',
    headers: { Authorization: `Token ${LOCAL_TOKEN}` },
    body: lines.join('\n'),
  });
  assert.equal(res.status, 204, await res.text());
}

/** The central points, sorted, with times as RFC 3339 for readable assertions. */
function centralPoints() {
  return central.points('aggregates')
    .map((p) => ({ ...p, time: new Date(Number(p.time / 1000000n)).toISOString() }))
    .sort((a, b) => JSON.stringify([a.measurement, a.tags]).localeCompare(JSON.stringify([b.measurement, b.tags])));
}

const requestsTo = (fake, endpoint) => fake.requests.filter((r) => r.path === endpoint);

describe('the day aggregated', () => {
  test('an ordinary day: mean, max and min per quantity and device, at the day\'s start', async () => {
    // 2026-06-01 in Rome (CEST, +02:00) is [2026-05-31T22:00Z, 2026-06-01T22:00Z).
    await seed([
      { quantity: 'temperature', device: 'a1b2', value: 20, time: ns('2026-05-31T22:00:00.000Z') },
      { quantity: 'temperature', device: 'a1b2', value: 22.5, time: ns('2026-06-01T12:00:00.000Z') },
      { quantity: 'temperature', device: 'a1b2', value: 25, time: ns('2026-06-01T21:59:59.999Z', 999999n) },
      { quantity: 'temperature', device: 'c3d4', value: -1.5, time: ns('2026-06-01T10:00:00.000Z') },
      { quantity: 'humidity', device: 'a1b2', value: 40, time: ns('2026-06-01T10:00:00.000Z') },
      { quantity: 'humidity', device: 'a1b2', value: 50, time: ns('2026-06-01T11:00:00.000Z') },
      // No device: aggregated together per quantity.
      { quantity: 'gas_perc', value: 3, time: ns('2026-06-01T09:00:00.000Z'), topic: 'dc1/sensors/g1' },
      { quantity: 'gas_perc', value: 5, time: ns('2026-06-01T09:00:00.000Z'), topic: 'dc1/sensors/g2' },
      // Just outside: the nanosecond before the start, the stop itself.
      { quantity: 'temperature', device: 'a1b2', value: 1000, time: ns('2026-05-31T21:59:59.999Z', 999999n) },
      { quantity: 'temperature', device: 'a1b2', value: -1000, time: ns('2026-06-01T22:00:00.000Z') },
    ]);

    const result = await main(params('2026-06-02T03:00:00+02:00'));

    assert.deepEqual(
      { day: result.day, zone: result.zone, start: result.start, stop: result.stop, hours: result.hours, written: result.written },
      { day: '2026-06-01', zone: 'Europe/Rome', start: '2026-05-31T22:00:00.000Z', stop: '2026-06-01T22:00:00.000Z', hours: 24, written: 4 },
    );
    const at = '2026-05-31T22:00:00.000Z';
    const tags = (device) => ({ datacenter_id: 'dc1', day: '2026-06-01', ...(device ? { device_fingerprint: device } : {}) });
    assert.deepEqual(centralPoints(), [
      { measurement: 'gas_perc', tags: tags(), fields: { mean: 4, max: 5, min: 3 }, time: at },
      { measurement: 'humidity', tags: tags('a1b2'), fields: { mean: 45, max: 50, min: 40 }, time: at },
      { measurement: 'temperature', tags: tags('a1b2'), fields: { mean: 22.5, max: 25, min: 20 }, time: at },
      { measurement: 'temperature', tags: tags('c3d4'), fields: { mean: -1.5, max: -1.5, min: -1.5 }, time: at },
    ]);
    assert.deepEqual(
      result.points.find((p) => p.measurement === 'temperature' && p.device_fingerprint === 'a1b2'),
      { measurement: 'temperature', device_fingerprint: 'a1b2', mean: 22.5, max: 25, min: 20 },
    );
    assert.match(result.message, /wrote 4 aggregates of 2026-06-01 to aggregates/);
  });

  test('the query and the write are the requests InfluxDB\'s API documents', async () => {
    await seed([{ quantity: 'temperature', device: 'a1b2', value: 20, time: ns('2026-06-01T12:00:00.000Z') }]);
    await main(params('2026-06-02T01:00:00Z'));

    const [query] = requestsTo(local, '/api/v2/query');
    assert.equal(query.method, 'POST');
    assert.equal(query.query.get('org'), 'fog');
    assert.equal(query.headers.authorization, `Token ${LOCAL_TOKEN}`);
    assert.equal(query.headers.accept, 'application/csv');
    assert.equal(query.headers['content-type'], 'application/json');
    const body = JSON.parse(query.body);
    assert.deepEqual(body.dialect.annotations, ['datatype', 'group', 'default']);
    assert.match(body.query, /range\(start: 2026-05-31T22:00:00Z, stop: 2026-06-01T22:00:00Z\)/);

    const writes = requestsTo(central, '/api/v2/write');
    assert.equal(writes.length, 1);
    assert.equal(writes[0].query.get('org'), 'fog-central');
    assert.equal(writes[0].query.get('bucket'), 'aggregates');
    assert.equal(writes[0].query.get('precision'), 's');
    assert.equal(writes[0].headers.authorization, `Token ${CENTRAL_TOKEN}`);
    assert.equal(
      writes[0].body,
      `temperature,datacenter_id=dc1,day=2026-06-01,device_fingerprint=a1b2 mean=20,max=20,min=20 ${
        Date.parse('2026-05-31T22:00:00Z') / 1000}`,
    );
  });

  test('the spring-forward day (2026-03-29 in Rome) is 23 hours, its bounds exact', async () => {
    // 00:00 CET = 2026-03-28T23:00Z; 02:00 CET jumps to 03:00 CEST; 00:00 CEST of the
    // 30th = 2026-03-29T22:00Z.
    await seed([
      { quantity: 'temperature', device: 'a1b2', value: 99, time: ns('2026-03-28T22:59:59.999Z', 999999n) },
      { quantity: 'temperature', device: 'a1b2', value: 10, time: ns('2026-03-28T23:00:00.000Z') },
      { quantity: 'temperature', device: 'a1b2', value: 14, time: ns('2026-03-29T21:59:59.999Z', 999999n) },
      { quantity: 'temperature', device: 'a1b2', value: -99, time: ns('2026-03-29T22:00:00.000Z') },
    ]);

    const result = await main(params('2026-03-30T03:00:00+02:00'));

    assert.equal(result.day, '2026-03-29');
    assert.equal(result.start, '2026-03-28T23:00:00.000Z');
    assert.equal(result.stop, '2026-03-29T22:00:00.000Z');
    assert.equal(result.hours, 23);
    assert.deepEqual(centralPoints().map((p) => [p.fields, p.time]), [
      [{ mean: 12, max: 14, min: 10 }, '2026-03-28T23:00:00.000Z'],
    ]);
  });

  test('the fall-back day (2026-10-25 in Rome) is 25 hours, the repeated hour counted twice', async () => {
    // 00:00 CEST = 2026-10-24T22:00Z; 03:00 CEST goes back to 02:00 CET; 00:00 CET of the
    // 26th = 2026-10-25T23:00Z. 02:30 happens at 00:30Z and again at 01:30Z.
    await seed([
      { quantity: 'humidity', device: 'a1b2', value: 99, time: ns('2026-10-24T21:59:59.999Z', 999999n) },
      { quantity: 'humidity', device: 'a1b2', value: 30, time: ns('2026-10-24T22:00:00.000Z') },
      { quantity: 'humidity', device: 'a1b2', value: 40, time: ns('2026-10-25T00:30:00.000Z') },
      { quantity: 'humidity', device: 'a1b2', value: 50, time: ns('2026-10-25T01:30:00.000Z') },
      { quantity: 'humidity', device: 'a1b2', value: 60, time: ns('2026-10-25T22:59:59.999Z', 999999n) },
      { quantity: 'humidity', device: 'a1b2', value: -99, time: ns('2026-10-25T23:00:00.000Z') },
    ]);

    const result = await main(params('2026-10-26T03:00:00+01:00'));

    assert.equal(result.day, '2026-10-25');
    assert.equal(result.start, '2026-10-24T22:00:00.000Z');
    assert.equal(result.stop, '2026-10-25T23:00:00.000Z');
    assert.equal(result.hours, 25);
    assert.deepEqual(centralPoints().map((p) => [p.fields, p.time]), [
      [{ mean: 45, max: 60, min: 30 }, '2026-10-24T22:00:00.000Z'],
    ]);
  });

  test('an empty day writes nothing and says so', async () => {
    await seed([{ quantity: 'temperature', device: 'a1b2', value: 20, time: ns('2026-06-03T12:00:00.000Z') }]);

    const result = await main(params('2026-06-02T03:00:00+02:00'));

    assert.equal(result.written, 0);
    assert.equal(result.day, '2026-06-01');
    assert.match(result.message, /no readings .* nothing written for 2026-06-01/);
    assert.equal(result.points, undefined);
    assert.equal(requestsTo(central, '/api/v2/write').length, 0);
    assert.deepEqual(central.points('aggregates'), []);
  });

  test('the same day run twice overwrites its points instead of doubling them', async () => {
    await seed([
      { quantity: 'temperature', device: 'a1b2', value: 20, time: ns('2026-06-01T08:00:00.000Z') },
      { quantity: 'temperature', device: 'a1b2', value: 30, time: ns('2026-06-01T09:00:00.000Z') },
    ]);
    await main(params('2026-06-02T03:00:00+02:00'));
    const first = centralPoints();

    await main(params('2026-06-02T03:00:00+02:00'));
    assert.deepEqual(centralPoints(), first);

    // A late reading, then the day again: the same one point, with the new aggregates.
    await seed([{ quantity: 'temperature', device: 'a1b2', value: 40, time: ns('2026-06-01T10:00:00.000Z') }]);
    await main(params('2026-06-02T03:00:00+02:00'));
    assert.deepEqual(centralPoints().map((p) => p.fields), [{ mean: 30, max: 40, min: 20 }]);
    assert.equal(requestsTo(central, '/api/v2/write').length, 3);
  });

  test('a retried or caught-up fire aggregates the day of its scheduled_at, not of today', async () => {
    await seed([{ quantity: 'temperature', device: 'a1b2', value: 20, time: ns('2026-03-29T12:00:00.000Z') }]);
    // The same tick, as a retry and as a catch-up would carry it (months before the
    // clock of whoever runs this test, and after 03:00 local time: no "today" involved).
    const once = await main(params('2026-03-30T01:00:00Z'));
    const again = await main(params('2026-03-30T03:00:00.000+02:00'));
    for (const result of [once, again]) {
      assert.deepEqual([result.day, result.start, result.stop, result.written],
        ['2026-03-29', '2026-03-28T23:00:00.000Z', '2026-03-29T22:00:00.000Z', 1]);
    }
    assert.equal(centralPoints().length, 1);
  });

  test('timezone defaults to UTC', async () => {
    const { timezone, ...withoutZone } = params('2026-06-02T00:30:00Z');
    void timezone;
    const result = await main(withoutZone);
    assert.deepEqual([result.zone, result.day, result.start, result.stop],
      ['UTC', '2026-06-01', '2026-06-01T00:00:00.000Z', '2026-06-02T00:00:00.000Z']);
  });

  test('tag values with commas, spaces, equals signs and quotes survive CSV and line protocol', async () => {
    const device = 'dev "7", rack=3 b';
    await seed([
      { quantity: 'temperature', device, value: 1, time: ns('2026-06-01T08:00:00.000Z') },
      { quantity: 'temperature', device, value: 3, time: ns('2026-06-01T09:00:00.000Z') },
    ]);
    const result = await main(params('2026-06-02T03:00:00+02:00'));
    assert.equal(result.written, 1);
    assert.deepEqual(centralPoints().map((p) => [p.tags.device_fingerprint, p.fields]),
      [[device, { mean: 2, max: 3, min: 1 }]]);
  });
});

describe('the day window alone', () => {
  const window = (at, zone) => {
    const w = dayWindow(parseRfc3339(at), zone);
    return [w.day, w.start.toISOString(), w.stop.toISOString()];
  };

  test('a fire just after local midnight aggregates the day that just ended', () => {
    assert.deepEqual(window('2026-06-02T00:00:00+02:00', 'Europe/Rome'),
      ['2026-06-01', '2026-05-31T22:00:00.000Z', '2026-06-01T22:00:00.000Z']);
    assert.deepEqual(window('2026-06-01T23:59:59+02:00', 'Europe/Rome'),
      ['2026-05-31', '2026-05-30T22:00:00.000Z', '2026-05-31T22:00:00.000Z']);
  });

  test('a zone whose clocks skip midnight starts the day at the jump (America/Santiago)', () => {
    // 2026-09-06: 00:00 -04 does not exist, the clocks go to 01:00 -03 at 04:00Z.
    assert.deepEqual(window('2026-09-07T03:00:00-03:00', 'America/Santiago'),
      ['2026-09-06', '2026-09-06T04:00:00.000Z', '2026-09-07T03:00:00.000Z']);
    // 2026-04-04: 24:00 -03 goes back to 23:00 -04; the day lasts 25 hours.
    assert.deepEqual(window('2026-04-05T03:00:00-04:00', 'America/Santiago'),
      ['2026-04-04', '2026-04-04T03:00:00.000Z', '2026-04-05T04:00:00.000Z']);
  });

  test('the year and month roll over', () => {
    assert.deepEqual(window('2026-01-01T03:00:00+01:00', 'Europe/Rome'),
      ['2025-12-31', '2025-12-30T23:00:00.000Z', '2025-12-31T23:00:00.000Z']);
    assert.deepEqual(window('2028-03-01T05:00:00Z', 'UTC'),
      ['2028-02-29', '2028-02-29T00:00:00.000Z', '2028-03-01T00:00:00.000Z']);
  });
});

describe('parameters', () => {
  test('a missing parameter rejects naming it, and says where tokens come from', async () => {
    const { central_influx_token: token, ...rest } = params('2026-06-02T03:00:00+02:00');
    void token;
    await assert.rejects(main(rest), /missing parameter central_influx_token.*wsk action update aggregatesAction -p central_influx_token/);
    await assert.rejects(main({ ...params('2026-06-02T03:00:00+02:00'), local_influx_bucket: '' }),
      /missing parameter local_influx_bucket .*ALARM_PAYLOAD/);
  });

  test('scheduled_at must be RFC 3339', async () => {
    for (const bad of ['2026-06-02', '2026-06-02 03:00', '2026-13-02T03:00:00Z', '2026-02-30T03:00:00Z',
      '1780369200', 'yesterday', '2026-06-02T03:00:00+0200']) {
      await assert.rejects(main(params(bad)), /parameter scheduled_at must be an RFC 3339 time/, bad);
    }
    assert.equal(local.requests.length, 0);
  });

  test('an unknown timezone rejects naming it', async () => {
    await assert.rejects(main(params('2026-06-02T03:00:00+02:00', { timezone: 'Europe/Atlantis' })),
      /parameter timezone must be an IANA time zone .*"Europe\/Atlantis"/);
  });

  test('a fire that is not an alarm fire rejects', async () => {
    await assert.rejects(main(params('2026-06-02T03:00:00+02:00', { type: 'message' })),
      /parameter type must be "alarm"/);
  });

  test('a URL that is not http(s) rejects naming it', async () => {
    await assert.rejects(main(params('2026-06-02T03:00:00+02:00', { central_influx_url: 'influx.example:8086' })),
      /parameter central_influx_url must be an http\(s\) URL/);
  });

  test('configmap.yml\'s ALARM_PAYLOAD carries every parameter the action reads from it', () => {
    const configmap = fs.readFileSync(path.join(__dirname, '..', '..', 'configmap.yml'), 'utf8');
    const line = configmap.split('\n').find((l) => l.trim().startsWith('ALARM_PAYLOAD:'));
    const payload = JSON.parse(line.trim().replace(/^ALARM_PAYLOAD: '/, '').replace(/'$/, '').replace(/''/g, "'"));
    const fromPayload = Object.keys(params('x')).filter((k) =>
      !['type', 'alarm', 'scheduled_at', 'local_influx_token', 'central_influx_token'].includes(k));
    assert.deepEqual(Object.keys(payload).sort(), fromPayload.sort());
    assert.equal(payload.timezone, configmap.match(/ALARM_TIMEZONE: '([^']*)'/)[1]);
  });
});

describe('inside OpenWhisk, transient failures are retried until the deadline', () => {
  afterEach(() => {
    delete process.env.__OW_DEADLINE;
  });

  test('a central 503 that clears is retried, and the day written once', async () => {
    process.env.__OW_DEADLINE = String(Date.now() + 30000);
    await seed([{ quantity: 'temperature', device: 'a1b2', value: 20, time: ns('2026-06-01T12:00:00.000Z') }]);
    await central.setFault({ status: 503, message: 'shard moving' });
    const result = main(params('2026-06-02T03:00:00+02:00'));
    while (requestsTo(central, '/api/v2/write').length < 2) {
      await new Promise((resolve) => setImmediate(resolve));
    }
    await central.setFault(null);
    await result;
    assert.equal(centralPoints().length, 1);
  });

  test('a 401 is not retried', async () => {
    process.env.__OW_DEADLINE = String(Date.now() + 30000);
    await assert.rejects(main(params('2026-06-02T03:00:00+02:00', { local_influx_token: 'wrong-token-123' })),
      (e) => e.status === 401);
    assert.equal(requestsTo(local, '/api/v2/query').length, 1);
  });
});

describe('InfluxDB failures reject with the status and message, never a token', () => {
  const noTokens = (e) => {
    assert.ok(!e.message.includes(LOCAL_TOKEN) && !e.message.includes(CENTRAL_TOKEN), e.message);
    assert.ok(!JSON.stringify(e).includes(LOCAL_TOKEN), JSON.stringify(e));
    return true;
  };

  test('a wrong local token: 401', async () => {
    await assert.rejects(main(params('2026-06-02T03:00:00+02:00', { local_influx_token: 'wrong-token-123' })),
      (e) => /local InfluxDB answered 401 .*unauthorized access/.test(e.message) && e.status === 401 && noTokens(e));
    assert.equal(central.requests.length, 0);
  });

  test('a local 500', async () => {
    await local.setFault({ status: 500, message: 'engine: disk full' });
    await assert.rejects(main(params('2026-06-02T03:00:00+02:00')),
      (e) => /local InfluxDB answered 500 to the query of fog: internal error: engine: disk full/.test(e.message) && noTokens(e));
  });

  test('a local InfluxDB refusing connections', async () => {
    await local.setFault({ refuse: true });
    await assert.rejects(main(params('2026-06-02T03:00:00+02:00')),
      (e) => /cannot reach the local InfluxDB at http:\/\/127\.0\.0\.1:\d+: ECONNREFUSED/.test(e.message) && noTokens(e));
  });

  test('a local InfluxDB that never answers, within influx_timeout_ms', async () => {
    await local.setFault({ hang: true });
    await assert.rejects(main(params('2026-06-02T03:00:00+02:00', { influx_timeout_ms: 200 })),
      /cannot reach the local InfluxDB .*no answer within 200 ms/);
  });

  test('a wrong central token: 401, after reading the day', async () => {
    await seed([{ quantity: 'temperature', device: 'a1b2', value: 20, time: ns('2026-06-01T12:00:00.000Z') }]);
    await assert.rejects(main(params('2026-06-02T03:00:00+02:00', { central_influx_token: 'wrong-token-456' })),
      (e) => /central InfluxDB answered 401 to the write to aggregates: .*unauthorized access/.test(e.message) && noTokens(e));
  });

  test('a central 500 and a central refusing connections', async () => {
    await seed([{ quantity: 'temperature', device: 'a1b2', value: 20, time: ns('2026-06-01T12:00:00.000Z') }]);
    await central.setFault({ status: 500, message: 'unavailable shard' });
    await assert.rejects(main(params('2026-06-02T03:00:00+02:00')), /central InfluxDB answered 500 .*unavailable shard/);
    await central.setFault({ refuse: true });
    await assert.rejects(main(params('2026-06-02T03:00:00+02:00')), /cannot reach the central InfluxDB .*ECONNREFUSED/);
  });

  test('a wrong central bucket: 404 naming it', async () => {
    await seed([{ quantity: 'temperature', device: 'a1b2', value: 20, time: ns('2026-06-01T12:00:00.000Z') }]);
    await assert.rejects(main(params('2026-06-02T03:00:00+02:00', { central_influx_bucket: 'agregates' })),
      /central InfluxDB answered 404 .*bucket "agregates" not found/);
  });

  test('an error InfluxDB reports inside a 200 answer (an error table) rejects with it', async () => {
    // A string `value` in the bucket (not addReadingToDb's doing): mean() fails mid-query.
    await seed([{ quantity: 'status', device: 'a1b2', value: 'ok', time: ns('2026-06-01T12:00:00.000Z') }]);
    await assert.rejects(main(params('2026-06-02T03:00:00+02:00')),
      /InfluxDB reported an error in its answer: unsupported input type for mean aggregate: string/);
    assert.equal(central.requests.length, 0);
  });
});

describe('the fake\'s Flux subset refuses what it does not understand', () => {
  const fake = { points: () => [] };

  test('the action\'s own query is understood', () => {
    const w = dayWindow(parseRfc3339('2026-06-02T03:00:00+02:00'), 'Europe/Rome');
    assert.equal(evaluate(action.buildQuery('dc1_readings', w, action.LOCAL_SCHEMA), fake), '');
  });

  for (const [what, flux] of [
    ['a relative range', 'from(bucket: "b") |> range(start: -1d)'],
    ['no range', 'from(bucket: "b") |> filter(fn: (r) => r._field == "value")'],
    ['an unknown function', 'from(bucket: "b") |> range(start: 2026-06-01T00:00:00Z, stop: 2026-06-02T00:00:00Z) |> sum()'],
    ['an unknown argument', 'from(bucket: "b") |> range(start: 2026-06-01T00:00:00Z, stop: 2026-06-02T00:00:00Z) |> mean(column: "x")'],
    ['a comparison it cannot do', 'from(bucket: "b") |> range(start: 2026-06-01T00:00:00Z, stop: 2026-06-02T00:00:00Z) |> filter(fn: (r) => r._value > 1)'],
    ['an import', 'import "strings"\nfrom(bucket: "b")'],
    ['an undefined variable', 'data |> mean()'],
  ]) {
    test(what, () => {
      assert.throws(() => evaluate(flux, fake), FluxError);
    });
  }

  test('through the fake, a query it cannot read is a 400 the action rejects with', async () => {
    const res = await fetch(`${local.url}/api/v2/query?org=fog`, {
      method: 'POST',
      headers: { Authorization: `Token ${LOCAL_TOKEN}`, 'Content-Type': 'application/vnd.flux' },
      body: 'from(bucket: "dc1_readings") |> range(start: -1d)',
    });
    assert.equal(res.status, 400);
    assert.match((await res.json()).message, /flux_subset/);
  });
});

describe('the annotated CSV parser', () => {
  test('quoted cells: commas, doubled quotes, newlines, CRLF and LF', () => {
    const csv = [
      '#datatype,string,long,string,double',
      '#group,false,false,true,false',
      '#default,_result,,,',
      ',result,table,device,_value',
      ',,0,"a,b",1.5',
      ',,1,"say ""hi""",2',
      ',,2,"two\r\nlines\nhere",3',
      ',,3,"",4',
      '',
    ].join('\r\n');
    const tables = parseAnnotatedCsv(csv);
    assert.deepEqual(tables.map((t) => t.records.map((r) => [r.device, r._value])),
      [[['a,b', 1.5]], [['say "hi"', 2]], [['two\r\nlines\nhere', 3]], [['', 4]]]);
    assert.equal(parseAnnotatedCsv(csv.replace(/\r\n(?=[#,]|$)/g, '\n')).length, 4);
  });

  test('annotations: #default fills empty cells, #datatype types them, #group is kept', () => {
    const csv = [
      '#group,false,false,true,true,false,false,true',
      '#datatype,string,long,dateTime:RFC3339,string,long,boolean,unsignedLong',
      '#default,mean,,,,,,',
      ',result,table,_start,_measurement,_value,ok,big',
      ',,0,2026-06-01T00:00:00Z,temperature,-42,true,18446744073709551615',
      '',
    ].join('\r\n');
    const [table] = parseAnnotatedCsv(csv);
    assert.deepEqual(table.records[0], {
      result: 'mean', table: 0, _start: '2026-06-01T00:00:00Z', _measurement: 'temperature',
      _value: -42, ok: true, big: 18446744073709551615n,
    });
    assert.deepEqual(table.columns.map((c) => [c.name, c.group]),
      [['result', false], ['table', false], ['_start', true], ['_measurement', true], ['_value', false], ['ok', false], ['big', true]]);
  });

  test('several results and blocks, each re-headered after a blank line', () => {
    const csv = [
      '#group,false,false,true,false',
      '#datatype,string,long,string,double',
      '#default,mean,,,',
      ',result,table,_measurement,_value',
      ',,0,temperature,21.5',
      ',,1,humidity,40',
      '',
      '#group,false,false,true,false,false',
      '#datatype,string,long,string,long,dateTime:RFC3339',
      '#default,max,,,,',
      ',result,table,_measurement,_value,_time',
      ',,0,count,7,2026-06-01T10:00:00.123456789Z',
      '',
      '',
    ].join('\r\n');
    const tables = parseAnnotatedCsv(csv);
    assert.deepEqual(tables.map((t) => [t.result, t.table, t.records.map((r) => r._value)]),
      [['mean', 0, [21.5]], ['mean', 1, [40]], ['max', 0, [7]]]);
    assert.equal(tables[2].records[0]._time, '2026-06-01T10:00:00.123456789Z');
  });

  test('an empty answer is no tables', () => {
    assert.deepEqual(parseAnnotatedCsv(''), []);
    assert.deepEqual(parseAnnotatedCsv('\r\n'), []);
    assert.deepEqual(parseAnnotatedCsv('\r\n\r\n'), []);
  });

  test('plain CSV without annotations (a vnd.flux query\'s default) is read as strings', () => {
    const csv = ',result,table,_measurement,_value\r\n,_result,0,temperature,21.5\r\n\r\n';
    const [table] = parseAnnotatedCsv(csv);
    assert.deepEqual(table.records[0], { result: '_result', table: '0', _measurement: 'temperature', _value: '21.5' });
  });

  test('an error table throws its message', () => {
    const csv = [
      '#datatype,string,string',
      '#group,true,true',
      '#default,,',
      ',error,reference',
      ',"panic: runtime error, index out of range",897',
      '',
    ].join('\r\n');
    assert.throws(() => parseAnnotatedCsv(csv),
      /InfluxDB reported an error in its answer: panic: runtime error, index out of range \(reference 897\)/);
  });

  test('malformed CSV throws rather than guess', () => {
    assert.throws(() => parseAnnotatedCsv(',result,table\r\n,,"0\r\n'), /quoted cell is not closed/);
    assert.throws(() => parseAnnotatedCsv(',result,table\r\n,,0,extra\r\n'), /a row has 4 cells, its header 3/);
    assert.throws(() => parseAnnotatedCsv('#datatype,string,long\r\n,result,table,x\r\n'), /#datatype has 3 cells/);
    assert.throws(() => parseAnnotatedCsv('#datatype,string,double\r\n,result,_value\r\n,,abc\r\n'), /"abc" in column _value is not a double/);
    assert.throws(() => parseAnnotatedCsv(',a\r\n,"x"y\r\n'), /text after a closing quote/);
  });

  test('the fake\'s rendering round-trips through the parser', () => {
    const points = [
      { measurement: 'temperature', tags: { device_fingerprint: 'a,"b"\nc', topic: 't' }, fields: { value: 1 }, time: 5n * NS },
      { measurement: 'temperature', tags: { device_fingerprint: 'a,"b"\nc', topic: 't' }, fields: { value: 3 }, time: 6n * NS },
    ];
    const w = { start: new Date(0), stop: new Date(10000) };
    const csv = evaluate(action.buildQuery('b', w, action.LOCAL_SCHEMA), { points: () => points });
    assert.match(csv, /^#group,/);
    assert.match(csv, /"a,""b""\nc"/);
    assert.deepEqual(action.collectAggregates(parseAnnotatedCsv(csv), action.LOCAL_SCHEMA),
      [{ measurement: 'temperature', device: 'a,"b"\nc', values: { mean: 2, max: 3, min: 1 } }]);
  });
});

describe('the schemas', () => {
  test('LOCAL_SCHEMA is addReadingToDb\'s', () => {
    const { SCHEMA } = require('../addReadingToDb.js');
    for (const [name, value] of Object.entries(action.LOCAL_SCHEMA)) {
      assert.deepEqual(SCHEMA[name], value, name);
    }
  });

  test('readings written by addReadingToDb are what the day aggregates', async () => {
    const { main: addReadingToDb } = require('../addReadingToDb.js');
    const message = (body, receivedAt) => ({
      topic: 'dc1/sensors/t1', body: JSON.stringify(body), qos: 1, retain: false, received_at: receivedAt,
    });
    const written = await addReadingToDb({
      type: 'batch',
      messages: [
        message({ device_fingerprint: 'a1b2', temperature: 21.5, humidity: 40 }, '2026-03-29T08:00:00.000Z'),
        message({ device_fingerprint: 'a1b2', temperature: 23.5, humidity: 44 }, '2026-03-29T20:00:00.000Z'),
        // Its own timestamp puts it on the 30th in Rome: not part of the 29th.
        message({ device_fingerprint: 'a1b2', temperature: 99, timestamp: '2026-03-30T00:00:00+02:00' },
          '2026-03-29T22:00:05.000Z'),
      ],
      datacenter_id: 'dc1',
      influx_url: local.url,
      influx_org: 'fog',
      influx_bucket: 'dc1_readings',
      influx_token: LOCAL_TOKEN,
    });
    assert.equal(written.written, 5, JSON.stringify(written));

    const result = await main(params('2026-03-30T03:00:00+02:00'));

    assert.equal(result.written, 2);
    assert.deepEqual(centralPoints().map((p) => [p.measurement, p.tags, p.fields, p.time]), [
      ['humidity', { datacenter_id: 'dc1', day: '2026-03-29', device_fingerprint: 'a1b2' },
        { mean: 42, max: 44, min: 40 }, '2026-03-28T23:00:00.000Z'],
      ['temperature', { datacenter_id: 'dc1', day: '2026-03-29', device_fingerprint: 'a1b2' },
        { mean: 22.5, max: 23.5, min: 21.5 }, '2026-03-28T23:00:00.000Z'],
    ]);
  });

  test('CENTRAL_SCHEMA documents every tag and field written', async () => {
    await seed([{ quantity: 'temperature', device: 'a1b2', value: 20, time: ns('2026-06-01T12:00:00.000Z') }]);
    await main(params('2026-06-02T03:00:00+02:00'));
    const [point] = central.points('aggregates');
    assert.deepEqual(Object.keys(point.tags).sort(), Object.keys(action.CENTRAL_SCHEMA.tags).sort());
    assert.deepEqual(Object.keys(point.fields).sort(), Object.keys(action.CENTRAL_SCHEMA.fields).sort());
  });
});
