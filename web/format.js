// @ts-check
/** Number formatting shared by the chat and status views. */

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

/**
 * 1536 → "1.5 KiB"; three significant digits.
 * @param {number} n
 */
export function bytes(n) {
  if (!Number.isFinite(n)) return '–';
  let u = 0;
  let x = n;
  while (Math.abs(x) >= 1024 && u < UNITS.length - 1) {
    x /= 1024;
    u++;
  }
  return `${u === 0 ? String(Math.round(x)) : x.toPrecision(3)} ${UNITS[u]}`;
}

/**
 * 12345 → "12,345".
 * @param {number} n
 */
export function int(n) {
  return Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '–';
}

/**
 * 0.1234 → "12.3%"; null → "–".
 * @param {number | null | undefined} x
 */
export function percent(x) {
  return x === null || x === undefined || !Number.isFinite(x) ? '–' : `${(x * 100).toFixed(x >= 0.995 || x === 0 ? 0 : 1)}%`;
}

/**
 * Seconds: 0.0123 → "12 ms", 1.5 → "1.50 s".
 * @param {number | null | undefined} s
 */
export function duration(s) {
  if (s === null || s === undefined || !Number.isFinite(s)) return '–';
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  return `${s.toFixed(s < 10 ? 2 : 1)} s`;
}

/**
 * A (possibly tiny) amount of money: $0.0000046, $1.23.
 * @param {number} amount
 * @param {string} currency ISO code
 */
export function money(amount, currency) {
  try {
    return new Intl.NumberFormat('en-US', {
      style: 'currency',
      currency,
      maximumSignificantDigits: 2,
    }).format(amount);
  } catch {
    return `${amount.toPrecision(2)} ${currency}`;
  }
}

/**
 * Tokens per second with sensible precision.
 * @param {number | null | undefined} x
 */
export function rate(x) {
  if (x === null || x === undefined || !Number.isFinite(x)) return '–';
  return x >= 100 ? String(Math.round(x)) : x.toFixed(1);
}
