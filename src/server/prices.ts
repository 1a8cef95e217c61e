/**
 * What a request would cost at an API price list, DeepSeek-style: prompt tokens served from the
 * context cache are billed at the (much lower) hit price, the rest at the miss price.
 */

export interface PriceTable {
  /** ISO currency code reported with every cost, e.g. "USD". */
  readonly currency: string;
  /** Per million prompt tokens not found in the cache. */
  readonly inputCacheMissPerMillion: number;
  /** Per million prompt tokens served from the cache. */
  readonly inputCacheHitPerMillion: number;
  /** Per million generated tokens. */
  readonly outputPerMillion: number;
}

/** DeepSeek-V2's launch prices (docs/SPEC.md §9): $0.14 miss, $0.014 hit, $0.28 output per 1M tokens. */
export const DEEPSEEK_V2_LAUNCH_PRICES: PriceTable = {
  currency: 'USD',
  inputCacheMissPerMillion: 0.14,
  inputCacheHitPerMillion: 0.014,
  outputPerMillion: 0.28,
};

export interface Cost {
  readonly currency: string;
  readonly input_cache_miss: number;
  readonly input_cache_hit: number;
  readonly output: number;
  /** At the price table. */
  readonly total: number;
  /**
   * With a machine price (--machine-cost-per-hour): what the request cost in machine time — its
   * share of the engine's measured busy seconds (`machine_seconds`) at that hourly price. Absent otherwise.
   */
  readonly machine?: number;
  readonly machine_seconds?: number;
}

/** The machine's share of a request: busy seconds at an hourly price. */
export function machineCost(perHour: number, busyS: number): { machine: number; machine_seconds: number } {
  return { machine: round((busyS * perHour) / 3600), machine_seconds: Math.round(busyS * 1e6) / 1e6 };
}

export function costOf(prices: PriceTable, cacheHitTokens: number, cacheMissTokens: number, outputTokens: number): Cost {
  const miss = (cacheMissTokens * prices.inputCacheMissPerMillion) / 1e6;
  const hit = (cacheHitTokens * prices.inputCacheHitPerMillion) / 1e6;
  const output = (outputTokens * prices.outputPerMillion) / 1e6;
  return {
    currency: prices.currency,
    input_cache_miss: round(miss),
    input_cache_hit: round(hit),
    output: round(output),
    total: round(miss + hit + output),
  };
}

/** Twelve decimals: far below a millionth of a cent, and free of float noise like 2.8000000000000003e-7. */
function round(x: number): number {
  return Math.round(x * 1e12) / 1e12;
}
