/**
 * Constrained decoding for `response_format: {type: "json_object"}`: a byte-level pushdown
 * automaton that accepts exactly the prefixes of one JSON object (RFC 8259 grammar, optional
 * surrounding whitespace). The sampler asks `accepts(bytes)` for a candidate token and
 * `advance(bytes)` for the chosen one; once the object is closed only end-of-sequence may follow.
 */

const enum S {
  /** Before the top-level object. */
  Start,
  /** Inside an object: expecting a key or `}`. */
  ObjectKeyOrEnd,
  /** After `,` in an object: a key must follow. */
  ObjectKey,
  /** After a key: expecting `:`. */
  Colon,
  /** Expecting any value (after `:`, `[`, or `,` in an array). */
  Value,
  /** After `[`: a value or `]`. */
  ValueOrArrayEnd,
  /** After a value inside a container: `,` or the closing bracket. */
  AfterValue,
  /** Inside a string (key or value). */
  String,
  StringEscape,
  /** Inside \uXXXX: `hex` digits still to come. */
  StringUnicode,
  /** Numbers: after '-', after a leading 0, in integer digits, after '.', in fraction, after e, after e sign, in exponent. */
  NumMinus,
  NumZero,
  NumInt,
  NumDot,
  NumFrac,
  NumExp,
  NumExpSign,
  NumExpDigits,
  /** Inside true / false / null: `literal` holds the rest to match. */
  Literal,
  /** The object is complete: only whitespace may follow. */
  Done,
}

interface State {
  s: S;
  /** Open containers: '{' or '['. */
  stack: string;
  /** For strings: whether this string is an object key. */
  key: boolean;
  hex: number;
  literal: string;
}

const isWs = (b: number) => b === 0x20 || b === 0x09 || b === 0x0a || b === 0x0d;
const isDigit = (b: number) => b >= 0x30 && b <= 0x39;
const isHex = (b: number) => isDigit(b) || (b >= 0x41 && b <= 0x46) || (b >= 0x61 && b <= 0x66);

export class JsonConstraint {
  private state: State = { s: S.Start, stack: '', key: false, hex: 0, literal: '' };

  /** True once a complete JSON object has been produced. */
  get complete(): boolean {
    return this.state.s === S.Done;
  }

  /** Whether appending `bytes` keeps the output a prefix of a JSON object. */
  accepts(bytes: Uint8Array): boolean {
    if (bytes.length === 0) return false; // a token that adds nothing cannot make progress
    const st = { ...this.state };
    for (const b of bytes) if (!step(st, b)) return false;
    return true;
  }

  /** Append the chosen token's bytes (must be accepted). */
  advance(bytes: Uint8Array): void {
    for (const b of bytes) {
      if (!step(this.state, b)) throw new Error('JsonConstraint.advance: bytes not accepted');
    }
  }
}

/** Ends a number or literal-free value: the container decides what may follow. */
function valueEnded(st: State): void {
  st.s = st.stack.length === 0 ? S.Done : S.AfterValue;
}

function startValue(st: State, b: number): boolean {
  switch (b) {
    case 0x7b: // {
      st.stack += '{';
      st.s = S.ObjectKeyOrEnd;
      return true;
    case 0x5b: // [
      st.stack += '[';
      st.s = S.ValueOrArrayEnd;
      return true;
    case 0x22: // "
      st.s = S.String;
      st.key = false;
      return true;
    case 0x2d: // -
      st.s = S.NumMinus;
      return true;
    case 0x74: // t
      st.s = S.Literal;
      st.literal = 'rue';
      return true;
    case 0x66: // f
      st.s = S.Literal;
      st.literal = 'alse';
      return true;
    case 0x6e: // n
      st.s = S.Literal;
      st.literal = 'ull';
      return true;
    default:
      if (b === 0x30) {
        st.s = S.NumZero;
        return true;
      }
      if (isDigit(b)) {
        st.s = S.NumInt;
        return true;
      }
      return false;
  }
}

/** A byte that ends a number: handle it as the state after the number would. */
function afterNumber(st: State, b: number): boolean {
  valueEnded(st);
  return step(st, b);
}

function step(st: State, b: number): boolean {
  switch (st.s) {
    case S.Start:
      if (isWs(b)) return true;
      if (b !== 0x7b) return false; // json_object: the top-level value is an object
      st.stack = '{';
      st.s = S.ObjectKeyOrEnd;
      return true;
    case S.ObjectKeyOrEnd:
    case S.ObjectKey:
      if (isWs(b)) return true;
      if (b === 0x22) {
        st.s = S.String;
        st.key = true;
        return true;
      }
      if (b === 0x7d && st.s === S.ObjectKeyOrEnd) return closeContainer(st, '{');
      return false;
    case S.Colon:
      if (isWs(b)) return true;
      if (b !== 0x3a) return false;
      st.s = S.Value;
      return true;
    case S.Value:
      if (isWs(b)) return true;
      return startValue(st, b);
    case S.ValueOrArrayEnd:
      if (isWs(b)) return true;
      if (b === 0x5d) return closeContainer(st, '[');
      return startValue(st, b);
    case S.AfterValue: {
      if (isWs(b)) return true;
      const top = st.stack[st.stack.length - 1];
      if (b === 0x2c) {
        st.s = top === '{' ? S.ObjectKey : S.Value;
        return true;
      }
      if (b === 0x7d && top === '{') return closeContainer(st, '{');
      if (b === 0x5d && top === '[') return closeContainer(st, '[');
      return false;
    }
    case S.String:
      if (b === 0x22) {
        if (st.key) st.s = S.Colon;
        else valueEnded(st);
        return true;
      }
      if (b === 0x5c) {
        st.s = S.StringEscape;
        return true;
      }
      return b >= 0x20; // control characters must be escaped; UTF-8 continuation bytes pass
    case S.StringEscape:
      if (b === 0x75) {
        st.s = S.StringUnicode;
        st.hex = 4;
        return true;
      }
      if ('"\\/bfnrt'.includes(String.fromCharCode(b))) {
        st.s = S.String;
        return true;
      }
      return false;
    case S.StringUnicode:
      if (!isHex(b)) return false;
      if (--st.hex === 0) st.s = S.String;
      return true;
    case S.NumMinus:
      if (b === 0x30) st.s = S.NumZero;
      else if (isDigit(b)) st.s = S.NumInt;
      else return false;
      return true;
    case S.NumZero:
    case S.NumInt:
      if (isDigit(b) && st.s === S.NumInt) return true;
      if (b === 0x2e) {
        st.s = S.NumDot;
        return true;
      }
      if (b === 0x65 || b === 0x45) {
        st.s = S.NumExp;
        return true;
      }
      return afterNumber(st, b);
    case S.NumDot:
      if (!isDigit(b)) return false;
      st.s = S.NumFrac;
      return true;
    case S.NumFrac:
      if (isDigit(b)) return true;
      if (b === 0x65 || b === 0x45) {
        st.s = S.NumExp;
        return true;
      }
      return afterNumber(st, b);
    case S.NumExp:
      if (b === 0x2b || b === 0x2d) {
        st.s = S.NumExpSign;
        return true;
      }
      if (!isDigit(b)) return false;
      st.s = S.NumExpDigits;
      return true;
    case S.NumExpSign:
      if (!isDigit(b)) return false;
      st.s = S.NumExpDigits;
      return true;
    case S.NumExpDigits:
      if (isDigit(b)) return true;
      return afterNumber(st, b);
    case S.Literal:
      if (b !== st.literal.charCodeAt(0)) return false;
      st.literal = st.literal.slice(1);
      if (st.literal === '') valueEnded(st);
      return true;
    case S.Done:
      return isWs(b);
  }
}

function closeContainer(st: State, open: '{' | '['): boolean {
  if (st.stack[st.stack.length - 1] !== open) return false;
  st.stack = st.stack.slice(0, -1);
  valueEnded(st);
  return true;
}
