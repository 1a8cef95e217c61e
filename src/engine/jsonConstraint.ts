/**
 * Constrained decoding to JSON: a byte-level pushdown automaton that accepts exactly the prefixes
 * of one JSON value (RFC 8259) that a JSON Schema allows — `response_format` `json_object` (any
 * object), `json_schema`, and the arguments of tool calls. The sampler asks `accepts(bytes)` for a
 * candidate token and `advance(bytes)` for the chosen one.
 *
 * The automaton runs a small set of parser states side by side (a stack of frames each), because
 * a schema can leave the next byte ambiguous: `anyOf`, optional properties, enums where one value
 * is a prefix of another (1 and 12), numbers that may or may not continue. A state that a byte
 * cannot extend is dropped; the output is valid while any state survives.
 *
 * Two rules keep a small model from spending its tokens on nothing: the value starts at the first
 * byte (no leading whitespace) and insignificant whitespace comes in runs of at most
 * MAX_WHITESPACE_RUN bytes — under a schema, none at all (compact JSON, `{"a":1}`, as OpenAI
 * writes tool arguments: a model that is not trained on JSON otherwise spends a token on a space
 * or a line break at every position that allows one). Numbers are capped at MAX_INT_DIGITS / MAX_FRACTION_DIGITS digits, so
 * that a number always ends; strings end where the schema's maxLength says.
 *
 * Object properties are produced in the schema's order (required ones always, optional ones may be
 * skipped): JSON does not order keys, so this is a subset of the valid outputs that is much easier
 * to steer, and property names are then forced byte by byte. Properties a schema does not list are
 * never produced (valid whatever `additionalProperties` says).
 */
import { InvalidInputError } from '../errors.js';

export const MAX_WHITESPACE_RUN = 1;
export const MAX_INT_DIGITS = 15;
export const MAX_FRACTION_DIGITS = 15;
const MAX_EXP_DIGITS = 3;
/** Parser states kept at once; more only arise from pathological anyOf nesting. */
const MAX_STATES = 256;
/** `$ref` chains followed without consuming a byte before giving up (a schema that refers to itself only). */
const MAX_REF_DEPTH = 32;

/** A compiled schema node: what one JSON value may be. */
export type SchemaNode =
  | { readonly k: 'any' }
  | { readonly k: 'object'; readonly props: readonly Property[]; readonly free: SchemaNode | null }
  | { readonly k: 'array'; readonly items: SchemaNode; readonly min: number; readonly max: number }
  | { readonly k: 'string'; readonly min: number; readonly max: number }
  | { readonly k: 'number'; readonly integer: boolean }
  /** One of these exact serialisations (enum, const, booleans, null). */
  | { readonly k: 'literals'; readonly values: readonly Uint8Array[] }
  | { readonly k: 'anyOf'; readonly options: readonly SchemaNode[] }
  | { readonly k: 'ref'; readonly resolve: () => SchemaNode };

export interface Property {
  readonly name: string;
  /** `"name":`'s key bytes after the opening quote, closing quote included. */
  readonly key: Uint8Array;
  readonly node: SchemaNode;
  readonly required: boolean;
}

const utf8 = new TextEncoder();
const ANY: SchemaNode = { k: 'any' };
const ANY_OBJECT: SchemaNode = { k: 'object', props: [], free: ANY };
const lit = (...values: unknown[]): SchemaNode => ({ k: 'literals', values: values.map((v) => utf8.encode(JSON.stringify(v))) });
const ANY_OPTIONS: readonly SchemaNode[] = [
  ANY_OBJECT,
  { k: 'array', items: ANY, min: 0, max: Infinity },
  { k: 'string', min: 0, max: Infinity },
  { k: 'number', integer: false },
  lit(true, false, null),
];

/** Keywords that describe a schema without constraining it. */
const ANNOTATIONS = new Set(['title', 'description', 'default', 'examples', '$schema', '$id', '$comment', 'deprecated', 'readOnly', 'writeOnly', 'strict']);
const SUPPORTED = new Set([
  'type', 'properties', 'required', 'additionalProperties', 'items', 'minItems', 'maxItems', 'enum', 'const',
  'anyOf', 'allOf', '$ref', '$defs', 'definitions', 'minLength', 'maxLength',
]);

/**
 * A JSON Schema → the automaton's node tree. Throws InvalidInputError naming the keyword (and
 * where it sits, e.g. `schema.properties.age.minimum`) for anything it cannot enforce, so that a
 * request is refused rather than answered with output that ignores part of its schema.
 */
export function compileSchema(schema: unknown, field = 'schema'): SchemaNode {
  const root = schema;
  const defs = new Map<string, SchemaNode>();
  const resolving = new Set<string>();

  const refNode = (ref: string, at: string): SchemaNode => {
    if (ref === '#') return { k: 'ref', resolve: () => lazy('#', () => compile(root, field)) };
    const m = /^#\/(\$defs|definitions)\/([^/]+)$/.exec(ref);
    if (!m) throw new InvalidInputError(`${at}.$ref`, `the reference ${JSON.stringify(ref)} is not supported: use a local one, "#", "#/$defs/NAME" or "#/definitions/NAME"`);
    const [, section, name] = m;
    const target = (root as Record<string, Record<string, unknown> | undefined>)[section!]?.[decodeURIComponent(name!).replace(/~1/g, '/').replace(/~0/g, '~')];
    if (target === undefined) throw new InvalidInputError(`${at}.$ref`, `${JSON.stringify(ref)} names no schema in ${section}`);
    return { k: 'ref', resolve: () => lazy(ref, () => compile(target, `${field}.${section}.${name}`)) };
  };
  // References compile on first use, so a recursive schema (a tree of nodes) stays finite.
  const lazy = (key: string, make: () => SchemaNode): SchemaNode => {
    let node = defs.get(key);
    if (node) return node;
    if (resolving.has(key)) return { k: 'ref', resolve: () => defs.get(key)! };
    resolving.add(key);
    node = make();
    defs.set(key, node);
    return node;
  };

  const compile = (s: unknown, at: string): SchemaNode => {
    if (s === true || (isObject(s) && Object.keys(s).every((k) => ANNOTATIONS.has(k)))) return ANY;
    if (s === false) throw new InvalidInputError(at, 'the schema false allows no value at all');
    if (!isObject(s)) throw new InvalidInputError(at, `must be a JSON Schema object, got ${JSON.stringify(s)}`);
    for (const key of Object.keys(s)) {
      if (!ANNOTATIONS.has(key) && !SUPPORTED.has(key)) {
        throw new InvalidInputError(`${at}.${key}`, `the JSON Schema keyword "${key}" is not supported by constrained decoding (supported: ${[...SUPPORTED].join(', ')})`);
      }
    }
    // Validate every definition up front, so a bad one is refused even if unused so far.
    if (at === field) {
      for (const section of ['$defs', 'definitions'] as const) {
        const group = s[section];
        if (group === undefined) continue;
        if (!isObject(group)) throw new InvalidInputError(`${at}.${section}`, 'must be an object of named schemas');
        for (const name of Object.keys(group)) lazy(`#/${section}/${name}`, () => compile(group[name], `${at}.${section}.${name}`));
      }
    }
    if (s['$ref'] !== undefined) {
      if (typeof s['$ref'] !== 'string') throw new InvalidInputError(`${at}.$ref`, 'must be a string');
      const others = Object.keys(s).filter((k) => !ANNOTATIONS.has(k) && k !== '$ref' && k !== '$defs' && k !== 'definitions');
      if (others.length > 0) throw new InvalidInputError(`${at}.${others[0]}`, `"${others[0]}" beside "$ref" is not supported: move it into the referenced schema`);
      return refNode(s['$ref'], at);
    }
    if (s['const'] !== undefined) return lit(s['const']);
    if (s['enum'] !== undefined) {
      const values = s['enum'];
      if (!Array.isArray(values) || values.length === 0) throw new InvalidInputError(`${at}.enum`, 'must be a non-empty array');
      return lit(...values);
    }
    if (s['anyOf'] !== undefined || s['allOf'] !== undefined) {
      const key = s['anyOf'] !== undefined ? 'anyOf' : 'allOf';
      const list = s[key];
      if (!Array.isArray(list) || list.length === 0) throw new InvalidInputError(`${at}.${key}`, 'must be a non-empty array of schemas');
      if (key === 'allOf' && list.length !== 1) throw new InvalidInputError(`${at}.allOf`, 'allOf with more than one schema is not supported: merge them into one');
      const options = list.map((o, i) => compile(o, `${at}.${key}[${i}]`));
      return options.length === 1 ? options[0]! : { k: 'anyOf', options };
    }
    const type = s['type'] ?? (s['properties'] !== undefined || s['additionalProperties'] !== undefined ? 'object' : s['items'] !== undefined ? 'array' : undefined);
    if (type === undefined) return ANY;
    if (Array.isArray(type)) {
      if (type.length === 0) throw new InvalidInputError(`${at}.type`, 'must name at least one type');
      const options = type.map((t, i) => typed(s, t, `${at}.type[${i}]`, at));
      return options.length === 1 ? options[0]! : { k: 'anyOf', options };
    }
    return typed(s, type, `${at}.type`, at);
  };

  const count = (s: Record<string, unknown>, key: string, at: string, fallback: number): number => {
    const v = s[key];
    if (v === undefined) return fallback;
    if (!Number.isSafeInteger(v) || (v as number) < 0) throw new InvalidInputError(`${at}.${key}`, 'must be an integer ≥ 0');
    return v as number;
  };

  const typed = (s: Record<string, unknown>, type: unknown, typeAt: string, at: string): SchemaNode => {
    switch (type) {
      case 'string': {
        const min = count(s, 'minLength', at, 0);
        const max = count(s, 'maxLength', at, Infinity);
        if (max < min) throw new InvalidInputError(`${at}.maxLength`, 'is below minLength');
        return { k: 'string', min, max };
      }
      case 'number':
      case 'integer':
        return { k: 'number', integer: type === 'integer' };
      case 'boolean':
        return lit(true, false);
      case 'null':
        return lit(null);
      case 'array': {
        const min = count(s, 'minItems', at, 0);
        const max = count(s, 'maxItems', at, Infinity);
        if (max < min) throw new InvalidInputError(`${at}.maxItems`, 'is below minItems');
        if (Array.isArray(s['items'])) throw new InvalidInputError(`${at}.items`, 'tuple items (an array of schemas) are not supported: give one schema');
        return { k: 'array', items: s['items'] === undefined ? ANY : compile(s['items'], `${at}.items`), min, max };
      }
      case 'object': {
        const properties = s['properties'] ?? {};
        if (!isObject(properties)) throw new InvalidInputError(`${at}.properties`, 'must be an object of schemas');
        const required = s['required'] ?? [];
        if (!Array.isArray(required) || !required.every((r) => typeof r === 'string')) throw new InvalidInputError(`${at}.required`, 'must be an array of property names');
        const missing = required.find((r) => !(r in properties));
        if (missing !== undefined) throw new InvalidInputError(`${at}.required`, `names ${JSON.stringify(missing)}, which is not in properties`);
        const props = Object.keys(properties).map((name): Property => ({
          name,
          key: utf8.encode(JSON.stringify(name).slice(1)),
          node: compile(properties[name], `${at}.properties.${name}`),
          required: required.includes(name),
        }));
        const extra = s['additionalProperties'];
        // Free-form keys only when the schema lists none: with properties, producing just those is valid.
        const free = props.length > 0 || extra === false ? null : extra === undefined || extra === true ? ANY : compile(extra, `${at}.additionalProperties`);
        return { k: 'object', props, free };
      }
      default:
        throw new InvalidInputError(typeAt, `the type ${JSON.stringify(type)} is not supported: use string, number, integer, boolean, null, array or object`);
    }
  };

  return compile(schema, field);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

type Frame =
  | { readonly k: 'value'; readonly node: SchemaNode }
  /** Matching one of several byte strings in lockstep; `i` bytes matched so far. */
  | { readonly k: 'lit'; readonly opts: readonly Uint8Array[]; readonly i: number }
  /**
   * Inside a string: `len` characters so far; esc 0 none, -1 after `\`, 1..4 hex digits to come;
   * `cont` UTF-8 continuation bytes the current character still needs (tokens can be single bytes,
   * so the automaton itself keeps the text valid UTF-8).
   */
  | { readonly k: 'str'; readonly len: number; readonly min: number; readonly max: number; readonly esc: number; readonly cont: number }
  | { readonly k: 'num'; readonly integer: boolean; readonly phase: NumPhase; readonly digits: number }
  | { readonly k: 'arr'; readonly node: Extract<SchemaNode, { k: 'array' }>; readonly count: number; readonly phase: 'open' | 'after' | 'comma' }
  | {
      readonly k: 'obj';
      readonly node: Extract<SchemaNode, { k: 'object' }>;
      /** Index of the first property not yet produced or skipped. */
      readonly next: number;
      readonly phase: 'open' | 'colon' | 'value' | 'after' | 'comma';
      /** The schema of the value after the current key. */
      readonly cur: SchemaNode;
    };

type NumPhase = 'minus' | 'zero' | 'int' | 'dot' | 'frac' | 'exp' | 'expSign' | 'expDigits';

interface State {
  readonly stack: readonly Frame[];
  /** Whitespace bytes in the current run. */
  readonly ws: number;
}

const isWs = (b: number) => b === 0x20 || b === 0x09 || b === 0x0a || b === 0x0d;
const isDigit = (b: number) => b >= 0x30 && b <= 0x39;
const isHex = (b: number) => isDigit(b) || (b >= 0x41 && b <= 0x46) || (b >= 0x61 && b <= 0x66);

export interface JsonConstraintOptions {
  /** No insignificant whitespace: compact JSON (default: whitespace allowed, runs capped). */
  readonly compact?: boolean;
}

export class JsonConstraint {
  private states: readonly State[];
  private readonly compact: boolean;

  /** `node`: the compiled schema (compileSchema); default: any JSON object (json_object). */
  constructor(node: SchemaNode = ANY_OBJECT, options: JsonConstraintOptions = {}) {
    this.states = [{ stack: [{ k: 'value', node }], ws: 0 }];
    this.compact = options.compact === true;
  }

  /** True once the value is complete and nothing more may follow: generation should stop. */
  get complete(): boolean {
    return this.states.every((s) => s.stack.length === 0);
  }

  /** True when the output so far is a whole valid value (end-of-sequence may come now), e.g. `12` of an integer. */
  get canEnd(): boolean {
    return this.states.some((s) => s.stack.length === 0 || (s.stack.length === 1 && softEnd(s.stack[0]!)));
  }

  /** Whether appending `bytes` keeps the output a prefix of a valid value. */
  accepts(bytes: Uint8Array): boolean {
    if (bytes.length === 0) return false; // a token that adds nothing cannot make progress
    return run(this.states, bytes, this.compact).length > 0;
  }

  /** Append the chosen token's bytes (must be accepted). */
  advance(bytes: Uint8Array): void {
    const next = run(this.states, bytes, this.compact);
    if (next.length === 0) throw new Error('JsonConstraint.advance: bytes not accepted');
    this.states = next;
  }
}

function run(states: readonly State[], bytes: Uint8Array, compact: boolean): readonly State[] {
  let cur = states;
  for (const b of bytes) {
    const next: State[] = [];
    for (const s of cur) {
      // Compact: a space is text inside a string and nothing else; tabs and line breaks never are.
      if (compact && isWs(b) && (b !== 0x20 || s.stack[s.stack.length - 1]?.k !== 'str')) continue;
      for (const n of step(s.stack, s.ws, b, 0)) if (next.length < MAX_STATES) next.push(n);
    }
    if (next.length === 0) return next;
    cur = next;
  }
  return cur;
}

/** A frame that may end here or continue: a number in an accepting phase, a literal with a full match. */
function softEnd(f: Frame): boolean {
  if (f.k === 'num') return f.phase === 'zero' || f.phase === 'int' || f.phase === 'frac' || f.phase === 'expDigits';
  if (f.k === 'lit') return f.opts.some((o) => o.length === f.i);
  return false;
}

const push = (rest: readonly Frame[], ...frames: Frame[]): Frame[] => [...rest, ...frames];
const one = (stack: readonly Frame[]): State[] => [{ stack, ws: 0 }];

/** A literal frame, popped at once when every option is fully matched. */
function litFrame(rest: readonly Frame[], opts: readonly Uint8Array[], i: number): State[] {
  if (opts.every((o) => o.length === i)) return one(rest);
  return one(push(rest, { k: 'lit', opts, i }));
}

function step(stack: readonly Frame[], ws: number, b: number, depth: number): State[] {
  const top = stack[stack.length - 1];
  if (top === undefined) return []; // the value is complete: nothing may follow
  const rest = stack.slice(0, -1);
  const space = (): State[] => (ws < MAX_WHITESPACE_RUN ? [{ stack, ws: ws + 1 }] : []);
  switch (top.k) {
    case 'value':
      return startValue(rest, top.node, b, depth);
    case 'lit': {
      const out: State[] = [];
      const cont = top.opts.filter((o) => o.length > top.i && o[top.i] === b);
      if (cont.length > 0) out.push(...litFrame(rest, cont, top.i + 1));
      if (top.opts.some((o) => o.length === top.i)) out.push(...step(rest, 0, b, depth));
      return out;
    }
    case 'str':
      return stepString(rest, top, b);
    case 'num':
      return stepNumber(rest, top, ws, b, depth);
    case 'arr': {
      const n = top.node;
      if (isWs(b)) return space();
      if (top.phase === 'open' && b === 0x5d) return n.min === 0 ? one(rest) : [];
      if (top.phase === 'after') {
        if (b === 0x2c) return top.count < n.max ? one(push(rest, { ...top, phase: 'comma' })) : [];
        if (b === 0x5d) return top.count >= n.min ? one(rest) : [];
        return [];
      }
      if (n.max === 0) return [];
      return step(push(rest, { ...top, phase: 'after', count: top.count + 1 }, { k: 'value', node: n.items }), 0, b, depth);
    }
    case 'obj': {
      const n = top.node;
      if (isWs(b)) return space();
      switch (top.phase) {
        case 'open':
        case 'comma':
          if (b === 0x7d && top.phase === 'open') return requiredLeft(n, 0) ? [] : one(rest);
          if (b !== 0x22) return [];
          if (n.free) return one(push(rest, { ...top, phase: 'colon', cur: n.free }, { k: 'str', len: 0, min: 0, max: Infinity, esc: 0, cont: 0 }));
          return keysFrom(rest, top);
        case 'colon':
          return b === 0x3a ? one(push(rest, { ...top, phase: 'value' })) : [];
        case 'value':
          return step(push(rest, { ...top, phase: 'after' }, { k: 'value', node: top.cur }), 0, b, depth);
        case 'after':
          if (b === 0x2c) return n.free || top.next < n.props.length ? one(push(rest, { ...top, phase: 'comma' })) : [];
          if (b === 0x7d) return requiredLeft(n, top.next) ? [] : one(rest);
          return [];
      }
    }
  }
}

/** Whether a required property at or after `from` is still to come. */
function requiredLeft(n: Extract<SchemaNode, { k: 'object' }>, from: number): boolean {
  for (let j = from; j < n.props.length; j++) if (n.props[j]!.required) return true;
  return false;
}

/** After a key's opening quote: any property from `next` on, skipping only optional ones. */
function keysFrom(rest: readonly Frame[], obj: Extract<Frame, { k: 'obj' }>): State[] {
  const out: State[] = [];
  for (let j = obj.next; j < obj.node.props.length; j++) {
    const p = obj.node.props[j]!;
    out.push(...litFrame(push(rest, { ...obj, phase: 'colon', next: j + 1, cur: p.node }), [p.key], 0));
    if (p.required) break;
  }
  return out;
}

function startValue(rest: readonly Frame[], node: SchemaNode, b: number, depth: number): State[] {
  switch (node.k) {
    case 'any':
      return ANY_OPTIONS.flatMap((o) => startValue(rest, o, b, depth));
    case 'anyOf':
      return node.options.flatMap((o) => startValue(rest, o, b, depth));
    case 'ref':
      return depth >= MAX_REF_DEPTH ? [] : startValue(rest, node.resolve(), b, depth + 1);
    case 'object':
      return b === 0x7b ? one(push(rest, { k: 'obj', node, next: 0, phase: 'open', cur: ANY })) : [];
    case 'array':
      return b === 0x5b ? one(push(rest, { k: 'arr', node, count: 0, phase: 'open' })) : [];
    case 'string':
      return b === 0x22 ? one(push(rest, { k: 'str', len: 0, min: node.min, max: node.max, esc: 0, cont: 0 })) : [];
    case 'number':
      if (b === 0x2d) return one(push(rest, { k: 'num', integer: node.integer, phase: 'minus', digits: 0 }));
      if (b === 0x30) return one(push(rest, { k: 'num', integer: node.integer, phase: 'zero', digits: 1 }));
      if (isDigit(b)) return one(push(rest, { k: 'num', integer: node.integer, phase: 'int', digits: 1 }));
      return [];
    case 'literals': {
      const opts = node.values.filter((v) => v[0] === b);
      return opts.length > 0 ? litFrame(rest, opts, 1) : [];
    }
  }
}

function stepString(rest: readonly Frame[], f: Extract<Frame, { k: 'str' }>, b: number): State[] {
  if (f.esc > 0) {
    if (!isHex(b)) return [];
    return one(push(rest, f.esc === 1 ? { ...f, esc: 0, len: f.len + 1 } : { ...f, esc: f.esc - 1 }));
  }
  if (f.esc === -1) {
    if (b === 0x75) return one(push(rest, { ...f, esc: 4 }));
    return '"\\/bfnrt'.includes(String.fromCharCode(b)) ? one(push(rest, { ...f, esc: 0, len: f.len + 1 })) : [];
  }
  const continuation = b >= 0x80 && b <= 0xbf;
  // A continuation byte belongs to the character already counted, and only where one is due.
  if (f.cont > 0) return continuation ? one(push(rest, { ...f, cont: f.cont - 1 })) : [];
  if (continuation) return [];
  if (b === 0x22) return f.len >= f.min ? one(rest) : [];
  if (b < 0x20) return []; // control characters must be escaped
  if (f.len >= f.max) return [];
  if (b === 0x5c) return one(push(rest, { ...f, esc: -1 }));
  if (b < 0x80) return one(push(rest, { ...f, len: f.len + 1 }));
  // Lead bytes of 2-, 3- and 4-byte characters (0xC0, 0xC1 and above 0xF4 never occur in UTF-8).
  const cont = b >= 0xc2 && b <= 0xdf ? 1 : b >= 0xe0 && b <= 0xef ? 2 : b >= 0xf0 && b <= 0xf4 ? 3 : -1;
  return cont < 0 ? [] : one(push(rest, { ...f, len: f.len + 1, cont }));
}

function stepNumber(rest: readonly Frame[], f: Extract<Frame, { k: 'num' }>, ws: number, b: number, depth: number): State[] {
  const to = (phase: NumPhase, digits: number) => one(push(rest, { ...f, phase, digits }));
  // A byte that cannot extend an accepting number ends it: the container handles that byte.
  const end = () => (softEnd(f) ? step(rest, ws, b, depth) : []);
  switch (f.phase) {
    case 'minus':
      if (b === 0x30) return to('zero', 1);
      return isDigit(b) ? to('int', 1) : [];
    case 'zero':
    case 'int':
      if (isDigit(b) && f.phase === 'int') return f.digits < MAX_INT_DIGITS ? to('int', f.digits + 1) : [];
      if (!f.integer && b === 0x2e) return to('dot', 0);
      if (!f.integer && (b === 0x65 || b === 0x45)) return to('exp', 0);
      return end();
    case 'dot':
      return isDigit(b) ? to('frac', 1) : [];
    case 'frac':
      if (isDigit(b)) return f.digits < MAX_FRACTION_DIGITS ? to('frac', f.digits + 1) : [];
      if (b === 0x65 || b === 0x45) return to('exp', 0);
      return end();
    case 'exp':
      if (b === 0x2b || b === 0x2d) return to('expSign', 0);
      return isDigit(b) ? to('expDigits', 1) : [];
    case 'expSign':
      return isDigit(b) ? to('expDigits', 1) : [];
    case 'expDigits':
      if (isDigit(b)) return f.digits < MAX_EXP_DIGITS ? to('expDigits', f.digits + 1) : [];
      return end();
  }
}
