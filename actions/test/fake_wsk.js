// A stand-in for the OpenWhisk CLI, for deploy/openwhisk.sh's tests: `installFakeWsk()`
// puts an executable `wsk` in a fresh temp directory (put it first on PATH) that keeps the
// entities in a JSON file there and records every invocation, answering as the real wsk
// does for the subcommands the script uses: a missing entity's `get` exits 148 with "The
// requested resource does not exist.", a second `create` exits 153, a rule needs its
// trigger and action, an action in a package needs the package, a wrong key exits with
// "The supplied authentication is invalid". Anything else exits 2, so a script that starts
// using a new subcommand fails its tests until the fake learns it.
//
//   const wsk = installFakeWsk({ key: 'uuid:secret', propertyKey: 'uuid:secret' });
//   wsk.dir (for PATH), wsk.env (FAKE_WSK_* variables), wsk.state(), wsk.calls(),
//   wsk.run(args) (an operator's own wsk command), wsk.remove()
//
// (Node 20's `node --test actions/test/` also runs this file as a test file: without
// FAKE_WSK_STATE in the environment it does nothing.)
'use strict';

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const GLOBAL_WITH_VALUE = new Set(['--apihost', '--auth', '-u', '--cert', '--key']);
const GLOBAL_BOOLEAN = new Set(['-i', '--insecure']);

function installFakeWsk({ key = 'fake-uuid:fake-key', propertyKey = key } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fake-wsk-'));
  const bin = path.join(dir, 'bin');
  fs.mkdirSync(bin);
  fs.writeFileSync(
    path.join(bin, 'wsk'),
    `#!/bin/sh\nexec ${shellQuote(process.execPath)} ${shellQuote(__filename)} "$@"\n`,
    { mode: 0o755 },
  );
  const env = {
    FAKE_WSK_STATE: dir,
    FAKE_WSK_KEY: key,
    // The key `wsk property set --auth` would have stored; '' for none.
    FAKE_WSK_PROPERTY_KEY: propertyKey || '',
  };
  const read = (file, fallback) => {
    try {
      return fs.readFileSync(path.join(dir, file), 'utf8');
    } catch {
      return fallback;
    }
  };
  return {
    dir: bin,
    env,
    state: () => JSON.parse(read('state.json', JSON.stringify(emptyState()))),
    calls: () => read('calls.jsonl', '').split('\n').filter(Boolean).map((l) => JSON.parse(l)),
    /** Runs the fake as an operator would (not recorded as the script's). */
    run(args) {
      const result = spawnSync(process.execPath, [__filename, ...args], {
        env: { ...process.env, ...env, FAKE_WSK_UNRECORDED: '1' },
        encoding: 'utf8',
      });
      if (result.status !== 0) throw new Error(`fake wsk ${args.join(' ')}: ${result.stderr}`);
      return result.stdout;
    },
    remove: () => fs.rmSync(dir, { recursive: true, force: true }),
  };
}

function shellQuote(text) {
  return `'${text.replace(/'/g, "'\\''")}'`;
}

function emptyState() {
  return { triggers: {}, actions: {}, packages: {}, rules: {} };
}

// ---------------------------------------------------------------------------------------
// The CLI itself

class Exit extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

function cli(argv, env) {
  const dir = env.FAKE_WSK_STATE;
  const globals = {};
  const rest = [];
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i];
    const eq = arg.indexOf('=');
    if (GLOBAL_BOOLEAN.has(arg)) globals[arg === '-i' ? '--insecure' : arg] = true;
    else if (GLOBAL_WITH_VALUE.has(arg)) {
      if (i + 1 >= argv.length) throw new Exit(1, `error: flag needs an argument: ${arg}`);
      globals[arg === '-u' ? '--auth' : arg] = argv[(i += 1)];
    } else if (eq > 0 && GLOBAL_WITH_VALUE.has(arg.slice(0, eq))) {
      globals[arg.slice(0, eq)] = arg.slice(eq + 1);
    } else rest.push(arg);
  }
  if (!env.FAKE_WSK_UNRECORDED) {
    fs.appendFileSync(path.join(dir, 'calls.jsonl'), `${JSON.stringify({ argv, globals, command: rest })}\n`);
  }

  const key = globals['--auth'] || env.FAKE_WSK_PROPERTY_KEY;
  const [kind, verb, ...args] = rest;
  if (!key) {
    throw new Exit(1, 'error: The API host or authorization key is not configured. Run: wsk property set --apihost HOST --auth KEY');
  }
  if (key !== env.FAKE_WSK_KEY) {
    const what = kind === 'namespace' ? 'obtain the list of available namespaces' : `${verb} ${kind} '${args[0]}'`;
    throw new Exit(1, `error: Unable to ${what}: The supplied authentication is invalid (code 7a2f)`);
  }

  const file = path.join(dir, 'state.json');
  const state = fs.existsSync(file) ? JSON.parse(fs.readFileSync(file, 'utf8')) : emptyState();
  const output = run(state, kind, verb, args);
  fs.writeFileSync(file, `${JSON.stringify(state, null, 2)}\n`);
  return output;
}

const notFound = (verb, kind, name) =>
  new Exit(148, `error: Unable to ${verb} ${kind} '${name}': The requested resource does not exist. (code 0d3c)`);
const conflict = (kind, name) =>
  new Exit(153, `error: Unable to create ${kind} '${name}': resource already exists (code 5e1b)`);

/** -p K V, -a K V, --kind K, --shared yes|no; values are JSON when they parse as JSON. */
function options(args, allowed) {
  const positional = [];
  const found = { params: undefined, annotations: undefined };
  for (let i = 0; i < args.length; i += 1) {
    const arg = args[i];
    const flag = { '-p': 'params', '--param': 'params', '-a': 'annotations', '--annotation': 'annotations' }[arg];
    if (flag && allowed.includes(arg)) {
      if (i + 2 >= args.length) throw new Exit(1, `error: ${arg} needs KEY VALUE`);
      found[flag] = found[flag] || {};
      found[flag][args[i + 1]] = jsonish(args[i + 2]);
      i += 2;
    } else if ((arg === '--kind' || arg === '--shared') && allowed.includes(arg)) {
      if (i + 1 >= args.length) throw new Exit(1, `error: flag needs an argument: ${arg}`);
      found[arg.slice(2)] = args[(i += 1)];
    } else if (arg.startsWith('-')) {
      throw new Exit(2, `fake wsk: unsupported flag ${arg}`);
    } else positional.push(arg);
  }
  return { positional, ...found };
}

function jsonish(text) {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function expectPositional(positional, count, usage) {
  if (positional.length !== count) throw new Exit(1, `error: ${usage}`);
}

function run(state, kind, verb, args) {
  const command = `${kind} ${verb}`;
  switch (command) {
    case 'namespace list':
      return 'namespaces\nguest';
    case 'trigger get':
    case 'action get':
    case 'package get':
    case 'rule get': {
      const { positional } = options(args, []);
      expectPositional(positional, 1, `${kind} get NAME`);
      const entity = state[`${kind}s`][positional[0]];
      if (!entity) throw notFound('get', kind, positional[0]);
      return `ok: got ${kind} ${positional[0]}\n${JSON.stringify(entity, null, 4)}`;
    }
    case 'trigger create': {
      const { positional, params, annotations } = options(args, ['-p', '-a']);
      expectPositional(positional, 1, 'trigger create NAME');
      const [name] = positional;
      if (state.triggers[name]) throw conflict('trigger', name);
      state.triggers[name] = { parameters: params || {}, annotations: annotations || {} };
      return `ok: created trigger ${name}`;
    }
    case 'trigger update': {
      const { positional, params, annotations } = options(args, ['-p', '-a']);
      expectPositional(positional, 1, 'trigger update NAME');
      const [name] = positional;
      const old = state.triggers[name] || { parameters: {}, annotations: {} };
      state.triggers[name] = { parameters: params || old.parameters, annotations: annotations || old.annotations };
      return `ok: updated trigger ${name}`;
    }
    case 'action update': {
      const { positional, params, annotations, kind: runtime } = options(args, ['-p', '-a', '--kind']);
      if (positional.length < 1 || positional.length > 2) throw new Exit(1, 'error: action update NAME [FILE]');
      const [name, file] = positional;
      const slash = name.indexOf('/');
      if (slash >= 0 && !state.packages[name.slice(0, slash)]) throw notFound('update', 'action', name);
      const old = state.actions[name];
      if (!old && !file) throw new Exit(1, `error: Unable to update action '${name}': an action needs code`);
      let code = old && old.code;
      if (file) {
        try {
          code = fs.readFileSync(file, 'utf8');
        } catch {
          throw new Exit(1, `error: File '${file}' is not a valid file or it does not exist`);
        }
      }
      state.actions[name] = {
        code,
        kind: runtime || (old && old.kind) || 'nodejs:default',
        // The controller keeps what an update leaves out; -p and -a replace the whole set.
        parameters: params || (old ? old.parameters : {}),
        annotations: annotations || (old ? old.annotations : {}),
      };
      return `ok: updated action ${name}`;
    }
    case 'package update': {
      const { positional, params, annotations, shared } = options(args, ['-p', '-a', '--shared']);
      expectPositional(positional, 1, 'package update NAME');
      const [name] = positional;
      const old = state.packages[name];
      state.packages[name] = {
        shared: shared === undefined ? Boolean(old && old.shared) : shared === 'yes' || shared === 'true',
        parameters: params || (old ? old.parameters : {}),
        annotations: annotations || (old ? old.annotations : {}),
      };
      return `ok: updated package ${name}`;
    }
    case 'rule create':
    case 'rule update': {
      const { positional } = options(args, []);
      expectPositional(positional, 3, `rule ${verb} NAME TRIGGER ACTION`);
      const [name, trigger, action] = positional;
      if (verb === 'create' && state.rules[name]) throw conflict('rule', name);
      if (!state.triggers[trigger] || !state.actions[action]) throw notFound(verb, 'rule', name);
      const old = state.rules[name];
      state.rules[name] = { trigger, action, status: old ? old.status : 'active' };
      return `ok: ${verb}d rule ${name}`;
    }
    case 'rule enable':
    case 'rule disable': {
      const { positional } = options(args, []);
      expectPositional(positional, 1, `rule ${verb} NAME`);
      const rule = state.rules[positional[0]];
      if (!rule) throw notFound(verb, 'rule', positional[0]);
      rule.status = verb === 'enable' ? 'active' : 'inactive';
      return `ok: ${verb}d rule ${positional[0]}`;
    }
    default:
      throw new Exit(2, `fake wsk: unsupported command: ${command}`);
  }
}

if (require.main === module && process.env.FAKE_WSK_STATE) {
  try {
    process.stdout.write(`${cli(process.argv.slice(2), process.env)}\n`);
  } catch (e) {
    if (!(e instanceof Exit)) throw e;
    process.stderr.write(`${e.message}\n`);
    process.exitCode = e.code;
  }
}

module.exports = { installFakeWsk };
