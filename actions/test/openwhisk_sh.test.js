// deploy/openwhisk.sh against a fake wsk (fake_wsk.js) first on PATH: what the first run
// creates, that a second run creates and changes nothing, that wsk's flags reach every
// call, and the clear failures when wsk is missing or not authenticated. Run with
// `node --test actions/test/`, or `cargo test` (tests/it/actions.rs).
'use strict';

const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawn, execFileSync } = require('node:child_process');
const { afterEach, describe, test } = require('node:test');

const { installFakeWsk } = require('./fake_wsk.js');

const ROOT = path.join(__dirname, '..', '..');
const SCRIPT = path.join(ROOT, 'deploy', 'openwhisk.sh');
const BASH = execFileSync('bash', ['-c', 'command -v bash'], { encoding: 'utf8' }).trim();
const KEY = '23bc46b1-71f6-4ed5-8c54-816aa4f8c502:123zO3xZCLrMN6v2BKK1dXYFpXlPkccOFqm12CdAsMgRU4VrNZ9lyGVCGuMDGIwP';
const ENDPOINT = 'http://mqtt-whisk-provider.fog-dc1.svc:3000';

let fakes = [];
afterEach(() => {
  for (const fake of fakes) fake.remove();
  fakes = [];
});

function fakeWsk(options) {
  const fake = installFakeWsk(options);
  fakes.push(fake);
  return fake;
}

/** Runs the script with `args`, PATH = the fake's directory first (or `path`). */
function runScript(args, { fake, env = {}, pathDirs } = {}) {
  const PATH = pathDirs || [fake.dir, process.env.PATH].join(path.delimiter);
  return new Promise((resolve, reject) => {
    const child = spawn(BASH, [SCRIPT, ...args], {
      cwd: os.tmpdir(),
      env: { HOME: os.tmpdir(), PATH, ...(fake ? fake.env : {}), ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

const verbs = (calls) => calls.map((c) => c.command.slice(0, 2).join(' '));
const code = (file) => fs.readFileSync(path.join(ROOT, 'actions', file), 'utf8');

describe('deploy/openwhisk.sh', () => {
  test('the first run creates every entity of README\'s Deploy section and the feed', async () => {
    const fake = fakeWsk({ key: KEY });

    const run = await runScript(['--provider-endpoint', ENDPOINT], { fake });

    assert.equal(run.code, 0, run.stderr);
    const state = fake.state();
    assert.deepEqual(state.triggers, {
      addReadingToDbTrigger: { parameters: {}, annotations: {} },
      aggregatesTrigger: { parameters: {}, annotations: {} },
    });
    assert.deepEqual(state.actions, {
      addReadingToDb: { code: code('addReadingToDb.js'), kind: 'nodejs:20', parameters: {}, annotations: {} },
      aggregatesAction: { code: code('aggregatesAction.js'), kind: 'nodejs:20', parameters: {}, annotations: {} },
      'mqtt/mqtt_feed': { code: code('mqtt_feed.js'), kind: 'nodejs:20', parameters: {}, annotations: { feed: true } },
    });
    assert.deepEqual(state.packages, {
      mqtt: { shared: true, parameters: { provider_endpoint: ENDPOINT }, annotations: {} },
    });
    assert.deepEqual(state.rules, {
      addReadingToDbRule: { trigger: 'addReadingToDbTrigger', action: 'addReadingToDb', status: 'active' },
      aggregatesRule: { trigger: 'aggregatesTrigger', action: 'aggregatesAction', status: 'active' },
    });
    assert.match(run.stdout, /trigger addReadingToDbTrigger: created/);
    assert.match(run.stdout, /rule aggregatesRule: created/);
    // The reminder of what each action needs bound, without any secret in the script.
    assert.match(run.stdout, /wsk action update addReadingToDb -p influx_token /);
    assert.match(run.stdout, /wsk action update aggregatesAction -p local_influx_token .*\n.*-p central_influx_token /);
  });

  test('a second run creates nothing and changes nothing, bound tokens included', async () => {
    const fake = fakeWsk({ key: KEY });
    assert.equal((await runScript(['--provider-endpoint', ENDPOINT], { fake })).code, 0);
    // What an operator binds afterwards must survive the script's updates.
    fake.run(['action', 'update', 'aggregatesAction', '-p', 'local_influx_token', 'L', '-p', 'central_influx_token', 'C']);
    fake.run(['action', 'update', 'addReadingToDb', '-p', 'influx_token', 'T']);
    const before = fake.state();
    const callsBefore = fake.calls().length;

    const run = await runScript(['--provider-endpoint', ENDPOINT], { fake });

    assert.equal(run.code, 0, run.stderr);
    assert.deepEqual(fake.state(), before);
    const second = verbs(fake.calls().slice(callsBefore));
    assert.ok(!second.some((v) => v.endsWith(' create')), `created again: ${second.join(', ')}`);
    assert.ok(!second.includes('trigger update'), 'a trigger was updated');
    assert.deepEqual(second, [
      'namespace list',
      'trigger get', 'action update', 'rule get', 'rule update', 'rule enable',
      'trigger get', 'action update', 'rule get', 'rule update', 'rule enable',
      'package update', 'action update',
    ]);
    assert.match(run.stdout, /trigger aggregatesTrigger: exists, left as it is/);
  });

  test('a trigger that exists with parameters is left as it is; a disabled rule is enabled', async () => {
    const fake = fakeWsk({ key: KEY });
    fake.run(['trigger', 'create', 'aggregatesTrigger', '-p', 'note', 'kept']);
    assert.equal((await runScript([], { fake })).code, 0);
    fake.run(['rule', 'disable', 'aggregatesRule']);

    assert.equal((await runScript([], { fake })).code, 0);

    const state = fake.state();
    assert.deepEqual(state.triggers.aggregatesTrigger, { parameters: { note: 'kept' }, annotations: {} });
    assert.equal(state.rules.aggregatesRule.status, 'active');
  });

  test('-i, --apihost and --auth reach every wsk call, the key is never printed', async () => {
    // No key in wsk's properties: only the flag authenticates.
    const fake = fakeWsk({ key: KEY, propertyKey: '' });

    const run = await runScript(['-i', '--apihost', 'https://ow.dc1.example:443', '--auth', KEY,
      '--provider-endpoint', ENDPOINT], { fake });

    assert.equal(run.code, 0, run.stderr);
    const calls = fake.calls();
    assert.equal(calls.length, 13, calls.map((c) => c.command.join(' ')).join('\n'));
    for (const call of calls) {
      assert.deepEqual(call.globals, { '--insecure': true, '--apihost': 'https://ow.dc1.example:443', '--auth': KEY },
        call.argv.join(' '));
    }
    assert.ok(!`${run.stdout}${run.stderr}`.includes(KEY.split(':')[1]));
  });

  test('-u KEY and --apihost=HOST forms pass through too', async () => {
    const fake = fakeWsk({ key: KEY, propertyKey: '' });
    const run = await runScript(['-u', KEY, '--apihost=https://ow:443'], { fake });
    assert.equal(run.code, 0, run.stderr);
    for (const call of fake.calls()) {
      assert.deepEqual(call.globals, { '--auth': KEY, '--apihost': 'https://ow:443' });
    }
  });

  test('without --provider-endpoint the feed is skipped with a note; PROVIDER_ENDPOINT works too', async () => {
    const fake = fakeWsk({ key: KEY });
    const run = await runScript([], { fake });
    assert.equal(run.code, 0, run.stderr);
    assert.deepEqual(fake.state().packages, {});
    assert.equal(fake.state().actions['mqtt/mqtt_feed'], undefined);
    assert.match(run.stdout, /package mqtt: skipped: pass --provider-endpoint URL \(or set PROVIDER_ENDPOINT\)/);

    const withEnv = await runScript([], { fake, env: { PROVIDER_ENDPOINT: `${ENDPOINT}/` } });
    assert.equal(withEnv.code, 0, withEnv.stderr);
    assert.deepEqual(fake.state().packages.mqtt.parameters, { provider_endpoint: ENDPOINT });

    // Installed once, later runs without the endpoint still update the feed action's code.
    const later = await runScript([], { fake });
    assert.equal(later.code, 0, later.stderr);
    assert.match(later.stdout, /package mqtt: exists, left as it is/);
    assert.ok(verbs(fake.calls()).slice(-2).every((v) => v === 'package get' || v === 'action update'));
  });

  test('without wsk on PATH it fails saying so, before anything else', async () => {
    const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'no-wsk-'));
    try {
      const run = await runScript([], { pathDirs: empty });
      assert.notEqual(run.code, 0);
      assert.match(run.stderr, /openwhisk\.sh: wsk is not on PATH: install the OpenWhisk CLI/);
    } finally {
      fs.rmSync(empty, { recursive: true, force: true });
    }
  });

  test('unauthenticated wsk: a clear error, nothing created', async () => {
    const fake = fakeWsk({ key: KEY, propertyKey: 'someone-else:wrong-key' });

    const run = await runScript(['--provider-endpoint', ENDPOINT], { fake });

    assert.notEqual(run.code, 0);
    assert.match(run.stderr,
      /wsk is not authenticated: run wsk property set --apihost \.\.\. --auth \.\.\. or pass --apihost\/--auth/);
    assert.match(run.stderr, /The supplied authentication is invalid/);
    assert.deepEqual(verbs(fake.calls()), ['namespace list']);
    assert.deepEqual(fake.state(), { triggers: {}, actions: {}, packages: {}, rules: {} });
  });

  test('a wrong --auth is masked in the error', async () => {
    const fake = fakeWsk({ key: KEY, propertyKey: '' });
    const wrong = 'someone-else:a-wrong-key-that-must-not-show';
    const run = await runScript(['--auth', wrong], { fake });
    assert.notEqual(run.code, 0);
    assert.match(run.stderr, /wsk is not authenticated/);
    assert.ok(!run.stderr.includes(wrong), run.stderr);
  });

  test('a get failing for another reason than "does not exist" stops the script', async () => {
    const fake = fakeWsk({ key: KEY });
    // Authenticated for namespace list, then the key is revoked: every get fails with 401.
    fake.run(['trigger', 'create', 'placeholder']);
    const run = await runScript([], {
      fake,
      env: { FAKE_WSK_KEY: KEY, FAKE_WSK_PROPERTY_KEY: KEY, PATH: [writeRevokingWsk(fake), process.env.PATH].join(path.delimiter) },
    });
    assert.notEqual(run.code, 0);
    assert.match(run.stderr, /wsk trigger get addReadingToDbTrigger failed:\n.*authentication is invalid/);
    assert.ok(!verbs(fake.calls()).includes('trigger create'));
  });

  test('unknown arguments are refused with the usage', async () => {
    const fake = fakeWsk({ key: KEY });
    const run = await runScript(['--namespace', 'x'], { fake });
    assert.notEqual(run.code, 0);
    assert.match(run.stderr, /usage: deploy\/openwhisk\.sh/);
    assert.match(run.stderr, /unknown argument: --namespace/);
    assert.deepEqual(fake.calls(), []);
  });

  test('bash -n finds no syntax error', () => {
    execFileSync(BASH, ['-n', SCRIPT]);
  });
});

/**
 * A wsk in front of the fake that lets `namespace list` through with the right key and
 * gives every other call a wrong one: a key revoked mid-run.
 */
function writeRevokingWsk(fake) {
  const dir = path.join(fake.env.FAKE_WSK_STATE, 'revoking');
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'wsk'), [
    '#!/bin/sh',
    'case "$*" in',
    '  *"namespace list"*) ;;',
    '  *) FAKE_WSK_PROPERTY_KEY=revoked:key; export FAKE_WSK_PROPERTY_KEY ;;',
    'esac',
    `exec "${path.join(fake.dir, 'wsk')}" "$@"`,
    '',
  ].join('\n'), { mode: 0o755 });
  return dir;
}
