// The feed action against a fake provider: each lifecycleEvent's request (method, path,
// headers, body), and every way it fails. Run with `node --test actions/test/`, or
// `cargo test` (tests/it/actions.rs).
'use strict';

const assert = require('node:assert/strict');
const { after, before, beforeEach, describe, test } = require('node:test');

const { main } = require('../mqtt_feed.js');
const { closedEndpoint, startFakeProvider } = require('./fake_provider.js');

// OpenWhisk's well-known guest key: realistic length and shape.
const AUTH_KEY =
  '23bc46b1-71f6-4ed5-8c54-816aa4f8c502:123zO3xZCLrMN6v2BKK1dXYFpXlPkccOFqm12CdAsMgRU4VrNZ9lyGVCGuMDGIwP';
const SECRET = AUTH_KEY.split(':')[1];
const AUTH_KEY_B64 = Buffer.from(AUTH_KEY).toString('base64');

const STATUS = {
  config: {
    namespace: 'guest',
    name: 'tempTrigger',
    topic: 'dc1/sensors/+/temp',
    url: 'mqtt://broker:1883',
    qos: 1,
  },
  status: { active: true, dateChanged: 1700000000000, dateChangedISO: '2023-11-14T22:13:20.000Z' },
};

let provider;

before(async () => {
  provider = await startFakeProvider();
});
after(() => provider.close());
beforeEach(() => provider.reset());

/** What OpenWhisk passes for `wsk trigger <verb> tempTrigger` in the default namespace. */
function params(lifecycleEvent, extra = {}) {
  return {
    lifecycleEvent,
    triggerName: '/_/tempTrigger',
    authKey: AUTH_KEY,
    provider_endpoint: provider.endpoint,
    ...extra,
  };
}

/** Calls the action as OpenWhisk does, with __OW_NAMESPACE set (or unset, for null). */
async function invoke(actionParams, namespace = 'guest') {
  const saved = process.env.__OW_NAMESPACE;
  if (namespace === null) delete process.env.__OW_NAMESPACE;
  else process.env.__OW_NAMESPACE = namespace;
  try {
    return await main(actionParams);
  } finally {
    if (saved === undefined) delete process.env.__OW_NAMESPACE;
    else process.env.__OW_NAMESPACE = saved;
  }
}

/** Invokes, expects an {error} result without the key in any form, returns its text. */
async function invokeFailing(actionParams, namespace) {
  const result = await invoke(actionParams, namespace);
  assert.equal(typeof result.error, 'string', `expected {error}, got ${JSON.stringify(result)}`);
  const whole = JSON.stringify(result);
  for (const form of [AUTH_KEY, SECRET, AUTH_KEY_B64]) {
    assert.ok(!whole.includes(form), `the key leaked into ${whole}`);
  }
  return result.error;
}

function onlyRequest() {
  assert.equal(provider.requests.length, 1, JSON.stringify(provider.requests));
  return provider.requests[0];
}

function basicAuthOf(request) {
  const [scheme, encoded] = request.headers.authorization.split(' ');
  assert.equal(scheme, 'Basic');
  return Buffer.from(encoded, 'base64').toString('utf8');
}

const TRIGGER_PATH = '/feed/v1/namespaces/guest/triggers/tempTrigger';

describe('each lifecycleEvent becomes one request to the feed API', () => {
  test('CREATE puts topic, url and qos with the caller key as Basic auth', async () => {
    provider.answer({ status: 200, json: STATUS });
    const result = await invoke(
      params('CREATE', { topic: 'dc1/sensors/+/temp', url: 'mqtt://broker:1883', qos: 1 }),
    );

    assert.deepEqual(result, STATUS);
    const request = onlyRequest();
    assert.equal(request.method, 'PUT');
    assert.equal(request.path, TRIGGER_PATH);
    assert.equal(basicAuthOf(request), AUTH_KEY);
    assert.equal(request.headers['content-type'], 'application/json');
    assert.equal(request.headers.accept, 'application/json');
    assert.deepEqual(JSON.parse(request.body), {
      topic: 'dc1/sensors/+/temp',
      url: 'mqtt://broker:1883',
      qos: 1,
    });
  });

  test('CREATE sends only the fields given, and no other parameter', async () => {
    await invoke(params('CREATE', { topic: 'dc1/#', provider_timeout_ms: 5000, color: 'red' }));

    assert.deepEqual(JSON.parse(onlyRequest().body), { topic: 'dc1/#' });
  });

  test('CREATE turns qos "1" into the number 1', async () => {
    await invoke(params('CREATE', { topic: 'dc1/#', qos: '1' }));

    assert.deepEqual(JSON.parse(onlyRequest().body), { topic: 'dc1/#', qos: 1 });
  });

  test('READ gets the registration and returns the provider answer as is', async () => {
    provider.answer({ status: 200, json: STATUS });
    const result = await invoke(params('READ'));

    assert.deepEqual(result, STATUS);
    const request = onlyRequest();
    assert.equal(request.method, 'GET');
    assert.equal(request.path, TRIGGER_PATH);
    assert.equal(basicAuthOf(request), AUTH_KEY);
    assert.equal(request.headers.accept, 'application/json');
    assert.equal(request.headers['content-type'], undefined);
    assert.equal(request.body, '');
  });

  test('UPDATE patches only the fields given', async () => {
    provider.answer({ status: 200, json: STATUS });
    const result = await invoke(params('UPDATE', { qos: 2, url: 'mqtt://other:1883' }));

    assert.deepEqual(result, STATUS);
    const request = onlyRequest();
    assert.equal(request.method, 'PATCH');
    assert.equal(request.path, TRIGGER_PATH);
    assert.equal(basicAuthOf(request), AUTH_KEY);
    assert.equal(request.headers['content-type'], 'application/json');
    assert.deepEqual(JSON.parse(request.body), { qos: 2, url: 'mqtt://other:1883' });
  });

  for (const [event, active] of [
    ['PAUSE', false],
    ['UNPAUSE', true],
  ]) {
    test(`${event} patches active: ${active}`, async () => {
      await invoke(params(event, { topic: 'ignored/for/pause' }));

      const request = onlyRequest();
      assert.equal(request.method, 'PATCH');
      assert.equal(request.path, TRIGGER_PATH);
      assert.equal(basicAuthOf(request), AUTH_KEY);
      assert.deepEqual(JSON.parse(request.body), { active });
    });
  }

  test('DELETE deletes, without a body', async () => {
    provider.answer({ status: 200, json: { deleted: true } });
    const result = await invoke(params('DELETE'));

    assert.deepEqual(result, { deleted: true });
    const request = onlyRequest();
    assert.equal(request.method, 'DELETE');
    assert.equal(request.path, TRIGGER_PATH);
    assert.equal(basicAuthOf(request), AUTH_KEY);
    assert.equal(request.headers['content-type'], undefined);
    assert.equal(request.body, '');
  });
});

describe('the path', () => {
  test('encodes namespace and name, spaces, @ and & included', async () => {
    await invoke(params('READ', { triggerName: '/me@example.com_dev/temp & humidity' }));

    assert.equal(
      onlyRequest().path,
      '/feed/v1/namespaces/me%40example.com_dev/triggers/temp%20%26%20humidity',
    );
  });

  test('resolves _ to __OW_NAMESPACE, encoded too', async () => {
    await invoke(params('READ'), 'ops@dc1');

    assert.equal(onlyRequest().path, '/feed/v1/namespaces/ops%40dc1/triggers/tempTrigger');
  });

  test('accepts a triggerName without the leading slash', async () => {
    await invoke(params('READ', { triggerName: 'guest/tempTrigger' }), null);

    assert.equal(onlyRequest().path, TRIGGER_PATH);
  });

  test('drops trailing slashes of provider_endpoint', async () => {
    await invoke(params('READ', { provider_endpoint: `${provider.endpoint}//` }));

    assert.equal(onlyRequest().path, TRIGGER_PATH);
  });
});

describe('a failed call resolves with {error}', () => {
  test('4xx: the status and the provider error text', async () => {
    provider.answer({
      status: 403,
      json: { error: 'OpenWhisk answered 403 for trigger guest/tempTrigger: not authorized' },
    });
    const error = await invokeFailing(params('CREATE', { topic: 'dc1/#' }));

    assert.equal(
      error,
      'mqtt feed provider answered 403: OpenWhisk answered 403 for trigger guest/tempTrigger: ' +
        'not authorized',
    );
  });

  test('5xx with a JSON error: the status and the error text', async () => {
    provider.answer({ status: 500, json: { error: 'registry write failed' } });
    const error = await invokeFailing(params('DELETE'));

    assert.equal(error, 'mqtt feed provider answered 500: registry write failed');
  });

  test('a non-JSON 502 page: the status and a short snippet of it', async () => {
    const page =
      '<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n' +
      '<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n' +
      `${'<!-- padding -->\n'.repeat(50)}</body>\r\n</html>\r\n`;
    provider.answer({ status: 502, text: page });
    const error = await invokeFailing(params('READ'));

    assert.match(error, /^mqtt feed provider answered 502: <html> <head><title>502 Bad Gateway/);
    assert.ok(!/\s\s|[\r\n]/.test(error), `whitespace not squashed: ${JSON.stringify(error)}`);
    assert.ok(error.length < 300, `not short: ${error.length} characters`);
  });

  test('an empty error body says so', async () => {
    provider.answer({ status: 503, text: '' });
    const error = await invokeFailing(params('READ'));

    assert.equal(error, 'mqtt feed provider answered 503: (empty body)');
  });

  test('a redirect is reported, not followed with the key', async () => {
    provider.answer({ status: 308, text: '', headers: { Location: 'https://elsewhere.example/' } });
    const error = await invokeFailing(params('READ'));

    assert.match(error, /^mqtt feed provider answered 308: redirect to https:\/\/elsewhere\./);
    assert.equal(provider.requests.length, 1);
  });

  test('a 2xx that is not a JSON object', async () => {
    provider.answer({ status: 200, text: '<html>ok</html>' });
    const error = await invokeFailing(params('READ'));

    assert.equal(
      error,
      'mqtt feed provider answered 200 with a body that is not a JSON object: <html>ok</html>',
    );
  });

  test('a provider echoing the key does not get it into the result', async () => {
    provider.answer({
      status: 401,
      json: { error: `bad key ${AUTH_KEY} (Basic ${AUTH_KEY_B64}), secret ${SECRET}` },
    });
    const error = await invokeFailing(params('READ'));

    assert.match(error, /^mqtt feed provider answered 401: bad key \*\*\*/);
  });

  test('provider unreachable: names the endpoint and the cause', async () => {
    const endpoint = await closedEndpoint();
    const error = await invokeFailing(params('READ', { provider_endpoint: `${endpoint}/` }));

    const hostPort = endpoint.replace('http://', '');
    assert.equal(
      error,
      `cannot reach the mqtt feed provider at ${endpoint}: connect ECONNREFUSED ${hostPort}`,
    );
  });

  test('provider silent past the deadline', async () => {
    provider.answer({ hang: true });
    const error = await invokeFailing(params('READ', { provider_timeout_ms: 100 }));

    assert.equal(
      error,
      `cannot reach the mqtt feed provider at ${provider.endpoint}: no answer within 100 ms`,
    );
  });
});

describe('a missing or invalid parameter is an {error} naming it, and nothing is sent', () => {
  const cases = [
    ['no lifecycleEvent', { lifecycleEvent: undefined }, /parameter lifecycleEvent must be one of/],
    ['an unknown lifecycleEvent', { lifecycleEvent: 'FIRE' }, /lifecycleEvent .*got "FIRE"/],
    ['no triggerName', { triggerName: undefined }, /parameter triggerName must be/],
    ['a triggerName "name"', { triggerName: 'tempTrigger' }, /triggerName .*"tempTrigger"/],
    ['a triggerName "/name"', { triggerName: '/tempTrigger' }, /triggerName .*"\/tempTrigger"/],
    ['no authKey', { authKey: undefined }, /parameter authKey is missing/],
    ['an authKey without colon', { authKey: SECRET }, /parameter authKey .*uuid:key/],
    ['no provider_endpoint', { provider_endpoint: undefined }, /parameter provider_endpoint/],
    ['a provider_endpoint not a URL', { provider_endpoint: 'provider:3000' }, /provider_endpoint/],
    ['CREATE without topic', { lifecycleEvent: 'CREATE' }, /parameter topic is required/],
    ['CREATE with an empty topic', { lifecycleEvent: 'CREATE', topic: '' }, /parameter topic/],
  ];
  for (const [what, overrides, expected] of cases) {
    test(what, async () => {
      const error = await invokeFailing({ ...params('READ'), ...overrides });

      assert.match(error, expected);
      assert.equal(provider.requests.length, 0);
    });
  }

  test('namespace _ without __OW_NAMESPACE', async () => {
    const error = await invokeFailing(params('READ'), null);

    assert.match(error, /triggerName \/_\/tempTrigger .*__OW_NAMESPACE is not set/);
    assert.equal(provider.requests.length, 0);
  });
});
