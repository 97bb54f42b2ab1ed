// Feeds one fire body (a file holding the JSON the provider POSTed to OpenWhisk) to
// addReadingToDb, as a rule would, against a fake InfluxDB, and prints what came of it:
//
//   node actions/test/write_fire.js fire.json
//   {"result": {"written", "skipped", "reasons"}, "writes": <requests>, "points": [{
//     "measurement", "tags", "fields", "time": "<ns as a decimal string>"}, ...]}
//
// The fire's influx_* parameters are replaced by the fake's (OpenWhisk would let them win
// over what is bound on the action), its datacenter_id and everything else stay as the
// provider sent them. Used by tests/it/actions.rs with fires from the real provider.
// Exits 1, with the error on stderr, when the action rejects.
//
// (Node 20's `node --test actions/test/` also runs this file, without arguments: it then
// does nothing. `cargo test` passes only the *.test.js files.)
'use strict';

const fs = require('node:fs');

const { main } = require('../addReadingToDb.js');
const { startFakeInflux } = require('./fake_influxdb.js');

const TOKEN = 'write-fire-token';
const ORG = 'fog';
const BUCKET = 'dc1_readings';

async function run(file) {
  const fire = JSON.parse(fs.readFileSync(file, 'utf8'));
  const influx = await startFakeInflux({ token: TOKEN, org: ORG, buckets: [BUCKET] });
  try {
    const result = await main({
      ...fire,
      influx_url: influx.url,
      influx_org: ORG,
      influx_bucket: BUCKET,
      influx_token: TOKEN,
    });
    const points = influx.points(BUCKET).map((p) => ({ ...p, time: p.time.toString() }));
    const writes = influx.requests.length;
    process.stdout.write(`${JSON.stringify({ result, writes, points })}\n`);
  } finally {
    await influx.close();
  }
}

if (process.env.NODE_TEST_CONTEXT && process.argv.length === 2) process.exit(0);
if (process.argv.length !== 3) {
  process.stderr.write('usage: node actions/test/write_fire.js <fire.json>\n');
  process.exit(2);
}
run(process.argv[2]).catch((e) => {
  process.stderr.write(`${e.stack || e}\n`);
  process.exit(1);
});
