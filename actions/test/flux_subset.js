// A small Flux interpreter for the fake InfluxDB's query endpoint: exactly the subset
// aggregatesAction sends, computed over the points the fake stores, answered in InfluxDB's
// annotated CSV (#group, #datatype, #default, one block per result and schema, quoting),
// so the action's CSV parser reads output shaped like the real one's.
//
// Anything else throws a FluxError, which the fake answers with 400 (as InfluxDB answers a
// query it cannot compile), so a changed query cannot pass against a fake that ignores it.
//
// Understood:
//   name = <pipeline>                    assignments, then expression statements
//   from(bucket: "b") |> range(start: <time>, stop: <time>)   RFC 3339 literals
//   |> filter(fn: (r) => <pred>)         r.col / r["col"] == / != "string", and, or, ( )
//   |> group(columns: ["a", ...])        (mode "by" only)
//   |> mean() |> max() |> min()          over _value
//   |> yield(name: "n")                  a statement without yield is yielded as _result
//
// (Node 20's `node --test actions/test/` also runs this file as a test file, with no
// tests in it; `cargo test` passes only the *.test.js files.)
'use strict';

class FluxError extends Error {}

// ---------------------------------------------------------------------------------------
// Lexer

const TOKEN = new RegExp([
  /(?<space>\s+|\/\/[^\n]*)/,
  /(?<time>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2}))/,
  /(?<string>"(?:[^"\\]|\\.)*")/,
  /(?<ident>[A-Za-z_][A-Za-z0-9_]*)/,
  /(?<op>\|>|=>|==|!=|[=(){}[\]:,.])/,
].map((r) => r.source).join('|'), 'y');

function tokenize(text) {
  const tokens = [];
  TOKEN.lastIndex = 0;
  while (TOKEN.lastIndex < text.length) {
    const at = TOKEN.lastIndex;
    const m = TOKEN.exec(text);
    if (!m) throw new FluxError(`flux_subset: cannot read the query at ${JSON.stringify(text.slice(at, at + 20))}`);
    const [kind, value] = Object.entries(m.groups).find(([, v]) => v !== undefined);
    if (kind === 'space') continue;
    tokens.push({ kind, value, at });
  }
  tokens.push({ kind: 'end', value: '', at: text.length });
  return tokens;
}

function unquote(literal) {
  const escapes = { n: '\n', r: '\r', t: '\t', '"': '"', '\\': '\\', $: '$' };
  const body = literal.slice(1, -1);
  if (/(^|[^\\])(\\\\)*\$\{/.test(body)) {
    throw new FluxError(`flux_subset: string interpolation is not supported: ${literal}`);
  }
  return body.replace(/\\(.)/g, (_, c) => {
    if (!(c in escapes)) throw new FluxError(`flux_subset: unknown escape \\${c} in ${literal}`);
    return escapes[c];
  });
}

// ---------------------------------------------------------------------------------------
// Parser: program -> statements of pipelines of calls

function parse(text) {
  const tokens = tokenize(text);
  let pos = 0;
  const peek = (offset = 0) => tokens[pos + offset];
  const fail = (what) => {
    const t = peek();
    throw new FluxError(`flux_subset: expected ${what} at offset ${t.at}, found ${JSON.stringify(t.value) || 'the end'}`);
  };
  const take = (kind, value) => {
    const t = peek();
    if (t.kind !== kind || (value !== undefined && t.value !== value)) fail(value || kind);
    pos += 1;
    return t;
  };
  const is = (kind, value) => peek().kind === kind && (value === undefined || peek().value === value);

  function call() {
    const name = take('ident').value;
    take('op', '(');
    const args = {};
    while (!is('op', ')')) {
      const key = take('ident').value;
      take('op', ':');
      if (key in args) throw new FluxError(`flux_subset: argument ${key} of ${name}() given twice`);
      args[key] = value();
      if (!is('op', ')')) take('op', ',');
    }
    take('op', ')');
    return { name, args };
  }

  function value() {
    if (is('string')) return { kind: 'string', value: unquote(take('string').value) };
    if (is('time')) return { kind: 'time', value: take('time').value };
    if (is('op', '[')) {
      take('op', '[');
      const items = [];
      while (!is('op', ']')) {
        items.push(unquote(take('string').value));
        if (!is('op', ']')) take('op', ',');
      }
      take('op', ']');
      return { kind: 'array', value: items };
    }
    if (is('op', '(') && peek(1).kind === 'ident' && peek(2).value === ')' && peek(3).value === '=>') {
      take('op', '(');
      const param = take('ident').value;
      take('op', ')');
      take('op', '=>');
      return { kind: 'fn', param, body: predicate(param) };
    }
    return fail('a string, a time, an array of strings or a function (r) => ...');
  }

  // or < and < comparison; parentheses group.
  function predicate(param) {
    let left = conjunction(param);
    while (is('ident', 'or')) {
      take('ident', 'or');
      left = { op: 'or', left, right: conjunction(param) };
    }
    return left;
  }
  function conjunction(param) {
    let left = comparison(param);
    while (is('ident', 'and')) {
      take('ident', 'and');
      left = { op: 'and', left, right: comparison(param) };
    }
    return left;
  }
  function comparison(param) {
    if (is('op', '(')) {
      take('op', '(');
      const inner = predicate(param);
      take('op', ')');
      return inner;
    }
    take('ident', param);
    let column;
    if (is('op', '.')) {
      take('op', '.');
      column = take('ident').value;
    } else {
      take('op', '[');
      column = unquote(take('string').value);
      take('op', ']');
    }
    const op = is('op', '==') || is('op', '!=') ? take('op').value : fail('== or !=');
    return { op, column, value: unquote(take('string').value) };
  }

  function pipeline() {
    let source;
    if (is('ident') && peek(1).value === '(') source = { call: call() };
    else source = { variable: take('ident').value };
    const calls = [];
    while (is('op', '|>')) {
      take('op', '|>');
      calls.push(call());
    }
    return { source, calls };
  }

  const statements = [];
  while (!is('end')) {
    if (is('ident') && peek(1).value === '=') {
      const name = take('ident').value;
      take('op', '=');
      statements.push({ assign: name, pipeline: pipeline() });
    } else {
      statements.push({ pipeline: pipeline() });
    }
  }
  return statements;
}

// ---------------------------------------------------------------------------------------
// Evaluation: a stream is a list of tables {key: [column...], rows: [record...]};
// a record maps column -> {type, value}, value a BigInt for time and long.

const NS_PER_MS = 1000000n;

/** An RFC 3339 literal as nanoseconds since the epoch, digits past milliseconds kept. */
function timeNs(literal) {
  const m = /^(.*?:\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})$/.exec(literal);
  const whole = Date.parse(`${m[1]}${m[3]}`);
  if (Number.isNaN(whole)) throw new FluxError(`flux_subset: invalid time ${literal}`);
  const fraction = BigInt((m[2] || '').padEnd(9, '0').slice(0, 9));
  return BigInt(whole) * NS_PER_MS + fraction;
}

function rfc3339(ns) {
  const ms = ns / NS_PER_MS;
  const rest = ns % NS_PER_MS;
  const iso = new Date(Number(ms)).toISOString();
  const nanos = `${iso.slice(20, 23)}${String(rest).padStart(6, '0')}`.replace(/0+$/, '');
  return `${iso.slice(0, 19)}${nanos ? `.${nanos}` : ''}Z`;
}

function fieldValue(value) {
  if (typeof value === 'bigint') return { type: 'long', value };
  if (typeof value === 'number') return { type: 'double', value };
  if (typeof value === 'boolean') return { type: 'boolean', value };
  if (typeof value === 'string') return { type: 'string', value };
  throw new FluxError(`flux_subset: cannot type the stored field value ${String(value)}`);
}

const str = (value) => ({ type: 'string', value });
const time = (value) => ({ type: 'dateTime:RFC3339', value });

function keyOf(record, columns) {
  return JSON.stringify(columns.map((c) => (record[c] ? String(record[c].value) : null)));
}

function regroup(rows, columnsOf) {
  const tables = new Map();
  for (const row of rows) {
    const columns = columnsOf(row);
    const id = JSON.stringify(columns) + keyOf(row, columns);
    if (!tables.has(id)) tables.set(id, { key: columns, rows: [] });
    tables.get(id).rows.push(row);
  }
  return [...tables.values()];
}

function expectArgs(call, allowed, required = allowed) {
  for (const name of Object.keys(call.args)) {
    if (!allowed.includes(name)) throw new FluxError(`flux_subset: ${call.name}() has no argument ${name}`);
  }
  for (const name of required) {
    if (!(name in call.args)) throw new FluxError(`flux_subset: ${call.name}() needs ${name}`);
  }
}

function argOf(call, name, kind) {
  const arg = call.args[name];
  if (arg.kind !== kind) throw new FluxError(`flux_subset: ${call.name}(${name}:) must be a ${kind}`);
  return arg;
}

function test(pred, record) {
  if (pred.op === 'and') return test(pred.left, record) && test(pred.right, record);
  if (pred.op === 'or') return test(pred.left, record) || test(pred.right, record);
  const cell = record[pred.column];
  // A missing column compares as null: == is false, != true.
  const equal = cell !== undefined && cell.type === 'string' && cell.value === pred.value;
  return pred.op === '==' ? equal : !equal;
}

function compareValues(a, b) {
  return a < b ? -1 : a > b ? 1 : 0;
}

function numericRows(table, fn) {
  for (const row of table.rows) {
    const { type } = row._value;
    if (type !== 'double' && type !== 'long' && type !== 'unsignedLong') {
      throw new RuntimeFluxError(`unsupported input type for ${fn} aggregate: ${type}`);
    }
  }
}

/** An error InfluxDB reports inside a 200 answer, as an error table. */
class RuntimeFluxError extends Error {}

function selector(table, fn) {
  numericRows(table, fn);
  let best;
  for (const row of table.rows) {
    const c = compareValues(row._value.value, best ? best._value.value : undefined);
    if (!best || (fn === 'max' ? c > 0 : c < 0)) best = row;
  }
  return { key: table.key, rows: best ? [best] : [] };
}

function mean(table) {
  numericRows(table, 'mean');
  if (table.rows.length === 0) return { key: table.key, rows: [] };
  let sum = 0;
  for (const row of table.rows) sum += Number(row._value.value);
  const record = {};
  for (const column of table.key) if (table.rows[0][column]) record[column] = table.rows[0][column];
  record._value = { type: 'double', value: sum / table.rows.length };
  return { key: table.key, rows: [record] };
}

function apply(stream, call) {
  switch (call.name) {
    case 'range': {
      expectArgs(call, ['start', 'stop']);
      const start = timeNs(argOf(call, 'start', 'time').value);
      const stop = timeNs(argOf(call, 'stop', 'time').value);
      if (start >= stop) throw new FluxError('flux_subset: range() start must be before stop');
      return stream.map((table) => ({
        key: ['_start', '_stop', ...table.key],
        rows: table.rows.filter((row) => row._time.value >= start && row._time.value < stop)
          .map((row) => ({ _start: time(start), _stop: time(stop), ...row })),
      }));
    }
    case 'filter': {
      expectArgs(call, ['fn']);
      const { body } = argOf(call, 'fn', 'fn');
      return stream.map((table) => ({ key: table.key, rows: table.rows.filter((row) => test(body, row)) }));
    }
    case 'group': {
      expectArgs(call, ['columns', 'mode'], ['columns']);
      if (call.args.mode && (call.args.mode.kind !== 'string' || call.args.mode.value !== 'by')) {
        throw new FluxError('flux_subset: group() supports mode: "by" only');
      }
      const wanted = argOf(call, 'columns', 'array').value;
      return regroup(stream.flatMap((t) => t.rows), (row) => wanted.filter((c) => c in row));
    }
    case 'mean':
      expectArgs(call, []);
      return stream.map(mean);
    case 'max':
    case 'min':
      expectArgs(call, []);
      return stream.map((table) => selector(table, call.name));
    default:
      throw new FluxError(`flux_subset: ${call.name}() is not supported`);
  }
}

function evaluatePipeline(pipeline, variables, fake) {
  let stream;
  const { calls } = pipeline;
  if (pipeline.source.call) {
    const from = pipeline.source.call;
    if (from.name !== 'from') throw new FluxError(`flux_subset: a pipeline must start with from(), not ${from.name}()`);
    expectArgs(from, ['bucket']);
    if (!calls[0] || calls[0].name !== 'range') {
      throw new FluxError('flux_subset: from() must be followed by range() (InfluxDB refuses unbounded reads)');
    }
    const bucket = argOf(from, 'bucket', 'string').value;
    const points = fake.points(bucket);
    if (!points) throw new FluxError(`flux_subset: could not find bucket "${bucket}"`);
    const rows = [];
    for (const point of points) {
      for (const [field, value] of Object.entries(point.fields)) {
        const row = { _time: time(BigInt(point.time)), _value: fieldValue(value),
          _field: str(field), _measurement: str(point.measurement) };
        for (const [tag, tagValue] of Object.entries(point.tags || {})) row[tag] = str(tagValue);
        rows.push(row);
      }
    }
    // One table per series, as from() reads them.
    stream = regroup(rows, (row) => ['_measurement', '_field',
      ...Object.keys(row).filter((c) => !c.startsWith('_')).sort()]);
  } else {
    const name = pipeline.source.variable;
    if (!variables.has(name)) throw new FluxError(`flux_subset: undefined identifier ${name}`);
    stream = variables.get(name);
  }
  let yielded;
  calls.forEach((call, i) => {
    if (call.name === 'yield') {
      if (i !== calls.length - 1) throw new FluxError('flux_subset: yield() must end its pipeline');
      expectArgs(call, ['name'], []);
      yielded = call.args.name ? argOf(call, 'name', 'string').value : '_result';
      return;
    }
    stream = apply(stream, call);
  });
  return { stream, yielded };
}

/**
 * Runs `flux` against the fake's stored points (`fake.points(bucket)`) and returns the
 * annotated CSV InfluxDB would answer. Throws FluxError for anything outside the subset.
 */
function evaluate(flux, fake) {
  const statements = parse(flux);
  const variables = new Map();
  const results = [];
  try {
    for (const statement of statements) {
      const { stream, yielded } = evaluatePipeline(statement.pipeline, variables, fake);
      if (statement.assign) {
        if (yielded) throw new FluxError('flux_subset: yield() in an assignment is not supported');
        variables.set(statement.assign, stream);
      } else {
        const name = yielded || '_result';
        if (results.some((r) => r.name === name)) throw new FluxError(`flux_subset: two results named ${name}`);
        results.push({ name, tables: stream.filter((t) => t.rows.length > 0) });
      }
    }
  } catch (e) {
    if (e instanceof RuntimeFluxError) return errorCsv(e.message);
    throw e;
  }
  return renderCsv(results);
}

// ---------------------------------------------------------------------------------------
// Annotated CSV

const ORDER = ['_start', '_stop', '_time', '_value', '_field', '_measurement'];

function columnOrder(a, b) {
  const ia = ORDER.indexOf(a);
  const ib = ORDER.indexOf(b);
  if (ia >= 0 || ib >= 0) return (ia < 0 ? ORDER.length : ia) - (ib < 0 ? ORDER.length : ib);
  return a < b ? -1 : a > b ? 1 : 0;
}

function quote(text) {
  return /[",\r\n]/.test(text) || /^\s|\s$/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

function cellText(cell) {
  if (!cell) return '';
  if (cell.type === 'dateTime:RFC3339') return rfc3339(cell.value);
  if (cell.type === 'double') {
    if (cell.value === Infinity) return '+Inf';
    if (cell.value === -Infinity) return '-Inf';
  }
  return String(cell.value);
}

/**
 * Per result, its tables in blocks of one schema (columns and types); each block has
 * #group, #datatype and #default rows (the result's name as #default of the result
 * column, whose cells are left empty) and a header; a blank line ends each block.
 */
function renderCsv(results) {
  const lines = [];
  for (const { name, tables } of results) {
    let block;
    tables.forEach((table, id) => {
      const columns = [...new Set(table.rows.flatMap((row) => Object.keys(row)))].sort(columnOrder);
      const types = columns.map((c) => table.rows.find((row) => row[c])[c].type);
      const schema = JSON.stringify([columns, types, table.key.filter((c) => columns.includes(c)).sort()]);
      if (!block || block !== schema) {
        if (block) lines.push('');
        block = schema;
        lines.push(['#group', 'false', 'false', ...columns.map((c) => String(table.key.includes(c)))].join(','));
        lines.push(['#datatype', 'string', 'long', ...types].join(','));
        lines.push(['#default', quote(name), '', ...columns.map(() => '')].join(','));
        lines.push(['', 'result', 'table', ...columns].join(','));
      }
      for (const row of table.rows) {
        lines.push(['', '', String(id), ...columns.map((c) => quote(cellText(row[c])))].join(','));
      }
    });
    if (block) lines.push('');
  }
  return lines.length === 0 ? '' : `${lines.join('\r\n')}\r\n`;
}

function errorCsv(message) {
  return [
    '#datatype,string,string',
    '#group,true,true',
    '#default,,',
    ',error,reference',
    `,${quote(message)},`,
    '',
  ].join('\r\n');
}

module.exports = { evaluate, parse, FluxError, renderCsv };
