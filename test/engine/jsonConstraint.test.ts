/**
 * The JSON automaton against a plain validator: documents are checked byte by byte, and random
 * walks through the automaton (any accepted byte, chosen at random) must always end in JSON that
 * parses and that an independent schema validator (below, written from the JSON Schema spec)
 * accepts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { compileSchema, JsonConstraint, MAX_WHITESPACE_RUN } from '../../src/engine/jsonConstraint.js';
import { InvalidInputError } from '../../src/errors.js';
import { Rng } from '../../src/engine/random.js';

type Schema = Record<string, unknown> | boolean;
const enc = new TextEncoder();

function acceptsWhole(schema: Schema | null, text: string): boolean {
  const c = schema === null ? new JsonConstraint() : new JsonConstraint(compileSchema(schema));
  for (const b of enc.encode(text)) {
    const one = Uint8Array.of(b);
    if (!c.accepts(one)) return false;
    c.advance(one);
  }
  return c.canEnd;
}

/** An independent validator for the keywords the automaton supports. */
function valid(schema: Schema, v: unknown, root: Schema = schema): boolean {
  if (schema === true) return true;
  if (schema === false) return false;
  const s = schema;
  if (typeof s['$ref'] === 'string') {
    const ref = s['$ref'];
    const target = ref === '#' ? root : ((root as Record<string, Record<string, Schema>>)[ref.split('/')[1]!]![ref.split('/')[2]!]!);
    return valid(target, v, root);
  }
  if ('const' in s) return JSON.stringify(s['const']) === JSON.stringify(v);
  if (Array.isArray(s['enum'])) return s['enum'].some((e) => JSON.stringify(e) === JSON.stringify(v));
  if (Array.isArray(s['anyOf'])) return s['anyOf'].some((o: Schema) => valid(o, v, root));
  const types = s['type'] === undefined ? null : Array.isArray(s['type']) ? (s['type'] as string[]) : [s['type'] as string];
  const typeOk = (t: string) =>
    t === 'string' ? typeof v === 'string'
    : t === 'number' ? typeof v === 'number'
    : t === 'integer' ? Number.isInteger(v)
    : t === 'boolean' ? typeof v === 'boolean'
    : t === 'null' ? v === null
    : t === 'array' ? Array.isArray(v)
    : t === 'object' ? typeof v === 'object' && v !== null && !Array.isArray(v)
    : false;
  if (types && !types.some(typeOk)) return false;
  if (typeof v === 'string') {
    const len = [...v].length;
    if (typeof s['minLength'] === 'number' && len < s['minLength']) return false;
    if (typeof s['maxLength'] === 'number' && len > s['maxLength']) return false;
  }
  if (Array.isArray(v)) {
    if (typeof s['minItems'] === 'number' && v.length < s['minItems']) return false;
    if (typeof s['maxItems'] === 'number' && v.length > s['maxItems']) return false;
    if (s['items'] !== undefined && !v.every((x) => valid(s['items'] as Schema, x, root))) return false;
  }
  if (typeof v === 'object' && v !== null && !Array.isArray(v)) {
    const props = (s['properties'] ?? {}) as Record<string, Schema>;
    const o = v as Record<string, unknown>;
    for (const r of (s['required'] ?? []) as string[]) if (!(r in o)) return false;
    for (const [k, x] of Object.entries(o)) {
      if (k in props) {
        if (!valid(props[k]!, x, root)) return false;
      } else if (s['additionalProperties'] === false) return false;
    }
  }
  return true;
}

/** Walks the automaton choosing random accepted bytes (structural ones favoured, so walks end). */
function randomWalk(schema: Schema | null, rng: Rng, maxBytes = 4000): string | null {
  const c = schema === null ? new JsonConstraint() : new JsonConstraint(compileSchema(schema));
  const alphabet = enc.encode('{}[]",:  \n-0123456789.eE+abcdefghijklmnopqrstuvwxyzAB\\/é');
  const structural = new Set(enc.encode('{}[]",:'));
  const out: number[] = [];
  while (!c.complete && out.length < maxBytes) {
    if (c.canEnd && rng.next() < 0.3) break;
    const options = [...alphabet].filter((b) => c.accepts(Uint8Array.of(b)));
    if (options.length === 0) break;
    const weighted = options.flatMap((b) => (structural.has(b) ? [b, b, b, b, b, b] : [b]));
    const b = weighted[Math.floor(rng.next() * weighted.length)]!;
    c.advance(Uint8Array.of(b));
    out.push(b);
  }
  if (!c.canEnd) return null;
  return new TextDecoder().decode(Uint8Array.from(out));
}

const person = {
  type: 'object',
  properties: {
    name: { type: 'string', maxLength: 12 },
    age: { type: 'integer' },
    nickname: { type: ['string', 'null'], maxLength: 5 },
    tags: { type: 'array', items: { enum: ['a', 'b', 12, 1] }, maxItems: 3 },
    role: { const: 'admin' },
    ok: { type: 'boolean' },
  },
  required: ['name', 'age', 'role'],
  additionalProperties: false,
};
const tree = {
  $defs: { node: { type: 'object', properties: { value: { type: 'number' }, children: { type: 'array', items: { $ref: '#/$defs/node' }, maxItems: 2 } }, required: ['value'] } },
  $ref: '#/$defs/node',
};
const union = { anyOf: [{ type: 'string', minLength: 2, maxLength: 4 }, { type: 'object', properties: { x: { type: 'null' } }, required: ['x'] }, { type: 'array', minItems: 1, maxItems: 2, items: { type: 'integer' } }] };

test('documents valid under the schema are accepted byte by byte; invalid ones are refused at the first wrong byte', () => {
  assert.ok(acceptsWhole(person, '{"name":"Ann","age":-3,"role":"admin"}'));
  assert.ok(acceptsWhole(person, '{"name": "Ann", "age":30,"nickname":null,"tags":["a",12,1],"role":"admin","ok":true}'));
  assert.ok(!acceptsWhole(person, '{"age":3,"name":"Ann","role":"admin"}'), 'properties come in schema order');
  assert.ok(!acceptsWhole(person, '{"name":"Ann","role":"admin"}'), 'a required property cannot be skipped');
  assert.ok(!acceptsWhole(person, '{"name":"Ann","age":1.5,"role":"admin"}'), 'integer');
  assert.ok(!acceptsWhole(person, '{"name":"Ann","age":1,"role":"user"}'), 'const');
  assert.ok(!acceptsWhole(person, '{"name":"Ann","age":1,"role":"admin","x":1}'), 'no unlisted property');
  assert.ok(!acceptsWhole(person, '{"name":"Ann Elizabeth Smith","age":1,"role":"admin"}'), 'maxLength');
  assert.ok(!acceptsWhole(person, '{"name":"A","age":1,"tags":["a","b","a","b"],"role":"admin"}'), 'maxItems');
  assert.ok(acceptsWhole(tree, '{"value":1,"children":[{"value":2.5e3},{"value":-0.25,"children":[]}]}'), '$ref recursion');
  assert.ok(acceptsWhole(union, '"abc"') && acceptsWhole(union, '{"x":null}') && acceptsWhole(union, '[1,2]'));
  assert.ok(!acceptsWhole(union, '"a"') && !acceptsWhole(union, '[]') && !acceptsWhole(union, '[1,2,3]'));
});

test('json_object: the value starts at the first byte and whitespace runs are capped', () => {
  assert.equal(MAX_WHITESPACE_RUN, 1);
  assert.ok(acceptsWhole(null, '{"a": [1, {"b": null}], "c": "d"}'));
  assert.ok(!acceptsWhole(null, ' {"a":1}'), 'no leading whitespace');
  assert.ok(!acceptsWhole(null, '{"a":  1}'), 'two spaces in a row');
  assert.ok(!acceptsWhole(null, '[1]'), 'json_object is an object');
  const c = new JsonConstraint();
  for (const b of enc.encode('{"a":1}')) c.advance(Uint8Array.of(b));
  assert.ok(c.complete, 'the closed object ends generation');
  assert.ok(!c.accepts(enc.encode(' ')), 'nothing may follow');
});

test('compact (schema mode): no whitespace between tokens, spaces inside strings still allowed', () => {
  const c = new JsonConstraint(compileSchema({ type: 'object', properties: { a: { type: 'string' } } }), { compact: true });
  c.advance(enc.encode('{"a":'));
  assert.ok(!c.accepts(enc.encode(' ')));
  assert.ok(!c.accepts(enc.encode('\n')));
  c.advance(enc.encode('"x'));
  assert.ok(c.accepts(enc.encode(' y')));
});

test('a top-level number may end (canEnd) but is not complete: more digits could follow', () => {
  const c = new JsonConstraint(compileSchema({ type: 'integer' }));
  c.advance(enc.encode('12'));
  assert.ok(c.canEnd);
  assert.ok(!c.complete);
  assert.ok(c.accepts(enc.encode('3')));
  assert.ok(!c.accepts(enc.encode('.')));
});

test('random walks through the automaton always end in JSON that an independent validator accepts (600 walks, 6 schemas)', () => {
  const schemas: (Schema | null)[] = [null, person, tree, union, { type: 'array', items: { type: 'string', maxLength: 3 }, maxItems: 4 }, { enum: [1, 12, 'x', null, true] }];
  const rng = new Rng(7);
  for (const schema of schemas) {
    let finished = 0;
    for (let i = 0; i < 100; i++) {
      const text = randomWalk(schema, rng);
      if (text === null) continue;
      finished++;
      let value: unknown;
      assert.doesNotThrow(() => (value = JSON.parse(text)), `parses: ${text}`);
      assert.ok(valid(schema ?? { type: 'object' }, value), `valid under ${JSON.stringify(schema)}: ${text}`);
      assert.ok(!/^\s/.test(text) && !/\s\s/.test(text.replace(/"(?:[^"\\]|\\.)*"/g, '""')), `whitespace: ${JSON.stringify(text)}`);
    }
    assert.ok(finished >= 80, `${finished} of 100 walks finished for ${JSON.stringify(schema)}`);
  }
});

test('unsupported keywords are refused with InvalidInputError naming the keyword and where it is', () => {
  const refuse = (schema: unknown, field: RegExp) =>
    assert.throws(() => compileSchema(schema), (e: unknown) => e instanceof InvalidInputError && field.test(e.field) && /not supported|must|names/.test(e.message), JSON.stringify(schema));
  refuse({ type: 'object', properties: { age: { type: 'integer', minimum: 0 } } }, /^schema\.properties\.age\.minimum$/);
  refuse({ type: 'string', pattern: '^a' }, /^schema\.pattern$/);
  refuse({ type: 'string', format: 'email' }, /^schema\.format$/);
  refuse({ oneOf: [{ type: 'string' }] }, /^schema\.oneOf$/);
  refuse({ type: 'object', required: ['x'], properties: {} }, /^schema\.required$/);
  refuse({ $ref: 'http://example.com/s.json' }, /^schema\.\$ref$/);
  refuse({ type: 'date' }, /^schema\.type$/);
  refuse({ $defs: { a: { type: 'string', pattern: 'x' } }, type: 'string' }, /^schema\.\$defs\.a\.pattern$/);
});
