import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Sampler, validateSamplingOptions, type SamplingOptions } from '../../src/engine/sampler.js';
import { Rng } from '../../src/engine/random.js';
import { InvalidInputError } from '../../src/errors.js';

const N_DRAWS = 20_000;
// With 20k draws a frequency's standard error is at most 0.0036; 0.015 is > 4 sigma.
const TOL = 0.015;

function softmax(logits: number[], temperature = 1): number[] {
  const m = Math.max(...logits);
  const e = logits.map((x) => Math.exp((x - m) / temperature));
  const z = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / z);
}

function frequencies(s: Sampler, logits: Float32Array | Float64Array, vocab: number, history: number[] = []): number[] {
  const counts = new Array<number>(vocab).fill(0);
  for (let i = 0; i < N_DRAWS; i++) counts[s.sample(logits, history)]!++;
  return counts.map((c) => c / N_DRAWS);
}

function assertClose(actual: number[], expected: number[], tol = TOL): void {
  assert.equal(actual.length, expected.length);
  actual.forEach((a, i) => assert.ok(Math.abs(a - expected[i]!) < tol, `id ${i}: got ${a}, expected ${expected[i]}`));
}

function randomLogits(n: number, seed: number): Float32Array {
  const r = new Rng(seed);
  return Float32Array.from({ length: n }, () => (r.next() - 0.5) * 8);
}

function argmax(a: ArrayLike<number>, n = a.length): number {
  let best = 0;
  for (let i = 1; i < n; i++) if (a[i]! > a[best]!) best = i;
  return best;
}

test('same seed → same token sequence; different seeds → different', () => {
  const logits = randomLogits(1000, 1);
  const run = (seed: number) => {
    const s = new Sampler({ seed, temperature: 1.5 }, 1000);
    return Array.from({ length: 200 }, () => s.sample(logits, []));
  };
  assert.deepEqual(run(42), run(42));
  assert.notDeepEqual(run(42), run(43));
});

test('unseeded sampler reports a seed that replays it', () => {
  const logits = randomLogits(500, 2);
  const a = new Sampler({ temperature: 2 }, 500);
  const b = new Sampler({ temperature: 2, seed: a.seed }, 500);
  for (let i = 0; i < 50; i++) assert.equal(b.sample(logits, []), a.sample(logits, []));
});

test('greedy (temperature 0) is argmax; ties go to the lowest id', () => {
  for (let seed = 0; seed < 20; seed++) {
    const logits = randomLogits(777, seed);
    assert.equal(new Sampler({ temperature: 0 }, 777).sample(logits, []), argmax(logits));
  }
  const tied = new Float64Array([1, 3, 2, 3, 3]);
  assert.equal(new Sampler({ temperature: 0 }, 5).sample(tied, []), 1);
});

test('padding rows past validVocab are never sampled, even when largest', () => {
  const valid = 8;
  const logits = new Float32Array(16).fill(-1);
  logits[3] = 0.5;
  for (let i = valid; i < logits.length; i++) logits[i] = 100;
  assert.equal(new Sampler({ temperature: 0 }, valid).sample(logits, []), 3);
  const hot = new Sampler({ temperature: 5, seed: 1 }, valid);
  for (let i = 0; i < 2000; i++) assert.ok(hot.sample(logits, []) < valid);
});

test('logits shorter than validVocab are rejected', () => {
  assert.throws(
    () => new Sampler({}, 10).sample(new Float32Array(9), []),
    (e: unknown) => e instanceof InvalidInputError && e.field === 'logits',
  );
});

test('topK = 1 is greedy', () => {
  const logits = randomLogits(300, 5);
  const s = new Sampler({ topK: 1, temperature: 3, seed: 9 }, 300);
  for (let i = 0; i < 500; i++) assert.equal(s.sample(logits, []), argmax(logits));
});

test('topK keeps the k most likely, renormalized', () => {
  const raw = [0.5, 2, -1, 1.5, 0, 1];
  const s = new Sampler({ topK: 3, seed: 3 }, raw.length);
  const top = softmax([2, 1.5, 1]);
  assertClose(frequencies(s, Float64Array.from(raw), raw.length), [0, top[0]!, 0, top[1]!, 0, top[2]!]);
});

test('tiny topP keeps only the best token', () => {
  const logits = randomLogits(400, 6);
  const s = new Sampler({ topP: 1e-9, temperature: 2, seed: 4 }, 400);
  for (let i = 0; i < 500; i++) assert.equal(s.sample(logits, []), argmax(logits));
});

test('topP keeps the smallest set reaching p, renormalized', () => {
  const probs = [0.2, 0.5, 0.3];
  const logits = Float64Array.from(probs, Math.log);
  // 0.5 < 0.75, 0.5 + 0.3 ≥ 0.75 → keep ids 1 and 2.
  const s = new Sampler({ topP: 0.75, seed: 5 }, 3);
  assertClose(frequencies(s, logits, 3), [0, 0.5 / 0.8, 0.3 / 0.8]);
});

test('topK then topP: top-p cuts within the renormalized top-k set', () => {
  // top-3 of [0.05, 0.4, 0.1, 0.25, 0.2] → ids 1, 3, 4 with probabilities [0.47, 0.29, 0.24];
  // topP 0.7: 0.47 < 0.7, 0.76 ≥ 0.7 → keep ids 1 and 3.
  const probs = [0.05, 0.4, 0.1, 0.25, 0.2];
  const logits = Float64Array.from(probs, Math.log);
  const s = new Sampler({ topK: 3, topP: 0.7, seed: 15 }, 5);
  assertClose(frequencies(s, logits, 5), [0, 0.4 / 0.65, 0, 0.25 / 0.65, 0]);
});

test('minP drops tokens below minP × the top probability', () => {
  const probs = [0.05, 0.5, 0.3, 0.15];
  const logits = Float64Array.from(probs, Math.log);
  // Bar = 0.2 × 0.5 = 0.1 → id 0 goes, the rest are renormalized.
  const s = new Sampler({ minP: 0.2, seed: 6 }, 4);
  assertClose(frequencies(s, logits, 4), [0, 0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95]);
});

test('temperature → 0+ approaches greedy without overflow', () => {
  const logits = randomLogits(1000, 7);
  const best = argmax(logits);
  logits[best]! += 0.05; // a clear gap: at T = 1e-3 the runner-up has weight < e^-50
  for (const t of [1e-3, 1e-30, 1e-300, Number.MIN_VALUE]) {
    const s = new Sampler({ temperature: t, seed: 8 }, 1000);
    for (let i = 0; i < 200; i++) assert.equal(s.sample(logits, []), best, `temperature ${t}`);
  }
});

test('empirical frequencies match softmax(logits / T)', () => {
  const raw = [1, 2, 0.5, 3, -1, 2.2];
  const logits = Float32Array.from(raw);
  for (const t of [0.7, 1, 1.8]) {
    const s = new Sampler({ temperature: t, seed: 2024 }, raw.length);
    assertClose(frequencies(s, logits, raw.length), softmax(Array.from(logits), t));
  }
});

test('top-p and min-p cut on temperature-scaled probabilities', () => {
  // At T = 0.5 the probabilities are softmax([2, 1, 0] / 0.5) ≈ [0.867, 0.117, 0.016].
  const logits = new Float64Array([2, 1, 0]);
  const p = softmax([2, 1, 0], 0.5);
  // topP 0.9: 0.867 < 0.9, then 0.984 ≥ 0.9 → keep ids 0, 1.
  const s1 = new Sampler({ temperature: 0.5, topP: 0.9, seed: 1 }, 3);
  assertClose(frequencies(s1, logits, 3), [p[0]! / (p[0]! + p[1]!), p[1]! / (p[0]! + p[1]!), 0]);
  // minP 0.1: bar 0.087 keeps id 1 (0.117) but not id 2 (0.016).
  const s2 = new Sampler({ temperature: 0.5, minP: 0.1, seed: 1 }, 3);
  assertClose(frequencies(s2, logits, 3), [p[0]! / (p[0]! + p[1]!), p[1]! / (p[0]! + p[1]!), 0]);
});

test('repetitionPenalty divides positive and multiplies non-positive logits of seen ids', () => {
  const g = (o: SamplingOptions, logits: number[], history: number[]) =>
    new Sampler({ temperature: 0, ...o }, logits.length).sample(Float64Array.from(logits), history);
  // 2.0 / 1.1 = 1.818 < 1.9
  assert.equal(g({}, [2, 1.9], [0]), 0);
  assert.equal(g({ repetitionPenalty: 1.1 }, [2, 1.9], [0]), 1);
  // -1 × 1.1 = -1.1 < -1.05
  assert.equal(g({ repetitionPenalty: 1.1 }, [-1, -1.05], [0]), 1);
  // Applied once per distinct id, not per occurrence: 2 / 1.1 stays above 1.7.
  assert.equal(g({ repetitionPenalty: 1.1 }, [2, 1.7], [0, 0, 0, 0]), 0);
  // Distribution: logits [ln 2, 0] with id 0 seen and penalty 2 → [ln 2 / 2, 0].
  const s = new Sampler({ repetitionPenalty: 2, seed: 11 }, 2);
  assertClose(frequencies(s, Float64Array.from([Math.LN2, 0]), 2, [0]), softmax([Math.LN2 / 2, 0]));
});

test('frequencyPenalty scales with count, presencePenalty does not', () => {
  const g = (o: SamplingOptions, history: number[]) =>
    new Sampler({ temperature: 0, ...o }, 2).sample(new Float64Array([3, 2.5]), history);
  assert.equal(g({ frequencyPenalty: 0.2 }, [0, 0]), 0); // 3 - 0.4 = 2.6
  assert.equal(g({ frequencyPenalty: 0.2 }, [0, 0, 0]), 1); // 3 - 0.6 = 2.4
  assert.equal(g({ presencePenalty: 0.4 }, [0, 0, 0]), 0); // 3 - 0.4 = 2.6
  assert.equal(g({ presencePenalty: 0.6 }, [0]), 1); // 3 - 0.6 = 2.4
  // Negative penalties encourage repetition.
  assert.equal(g({ presencePenalty: -1 }, [1]), 1); // 2.5 + 1 = 3.5
  // Distribution: logit -= count × freq + presence → [0 - 3×0.5 - 0.25, 0, 0 - 0.25].
  const s = new Sampler({ frequencyPenalty: 0.5, presencePenalty: 0.25, seed: 12 }, 3);
  assertClose(frequencies(s, new Float64Array(3), 3, [0, 2, 0, 0]), softmax([-1.75, 0, -0.75]));
});

test('penaltyLastN limits the window: default 64, -1 = all, 0 = off', () => {
  const logits = new Float64Array([3, 2.5, 0]);
  const g = (o: SamplingOptions, history: number[]) =>
    new Sampler({ temperature: 0, presencePenalty: 1, ...o }, 3).sample(logits, history);
  const old = [0, ...new Array<number>(64).fill(2)]; // id 0 is 65 tokens back
  assert.equal(g({}, old), 0);
  assert.equal(g({ penaltyLastN: -1 }, old), 1);
  assert.equal(g({ penaltyLastN: 2 }, [0, 2]), 1);
  assert.equal(g({ penaltyLastN: 1 }, [0, 2]), 0);
  assert.equal(g({ penaltyLastN: 0 }, [0]), 0);
});

test('sample never modifies the caller logits', () => {
  const opts: SamplingOptions = { repetitionPenalty: 1.3, frequencyPenalty: 1, presencePenalty: 1, topK: 10, topP: 0.9, minP: 0.05, seed: 1 };
  for (const logits of [randomLogits(256, 13), Float64Array.from(randomLogits(256, 14))]) {
    const before = Array.from(logits);
    const s = new Sampler(opts, 200);
    const g = new Sampler({ ...opts, temperature: 0 }, 200);
    for (let i = 0; i < 50; i++) {
      s.sample(logits, [1, 2, 3, 3, 150]);
      g.sample(logits, [1, 2, 3, 3, 150]);
    }
    assert.deepEqual(Array.from(logits), before);
  }
});

test('-Infinity masks a token; all masked or NaN logits throw', () => {
  const logits = new Float64Array([5, -Infinity, 1]);
  const s = new Sampler({ temperature: 10, seed: 2 }, 3);
  for (let i = 0; i < 500; i++) assert.notEqual(s.sample(logits, []), 1);
  const isLogitsError = (e: unknown) => e instanceof InvalidInputError && e.field === 'logits';
  const masked = new Float64Array([-Infinity, -Infinity]);
  assert.throws(() => new Sampler({ temperature: 0 }, 2).sample(masked, []), isLogitsError);
  assert.throws(() => new Sampler({}, 2).sample(masked, []), isLogitsError);
  assert.throws(() => new Sampler({}, 2).sample(new Float64Array([0, NaN]), []), isLogitsError);
});

test('bad history ids throw and leave the sampler usable', () => {
  const s = new Sampler({ temperature: 0, presencePenalty: 1 }, 3);
  const logits = new Float64Array([3, 2.5, 0]);
  for (const bad of [[1, 3], [-1], [0.5]]) {
    assert.throws(() => s.sample(logits, bad), (e: unknown) => e instanceof InvalidInputError && e.field === 'history');
  }
  // No counts left behind by the failed calls: with empty history, id 0 still wins.
  assert.equal(s.sample(logits, []), 0);
  assert.equal(s.sample(logits, [0]), 1);
});

test('invalid options throw InvalidInputError naming the field', () => {
  const cases: [SamplingOptions, string][] = [
    [{ temperature: NaN }, 'temperature'],
    [{ temperature: -0.1 }, 'temperature'],
    [{ temperature: Infinity }, 'temperature'],
    [{ topK: -1 }, 'topK'],
    [{ topK: 1.5 }, 'topK'],
    [{ topK: NaN }, 'topK'],
    [{ topP: 0 }, 'topP'],
    [{ topP: 1.01 }, 'topP'],
    [{ topP: NaN }, 'topP'],
    [{ minP: -0.01 }, 'minP'],
    [{ minP: 1.5 }, 'minP'],
    [{ minP: NaN }, 'minP'],
    [{ repetitionPenalty: 0 }, 'repetitionPenalty'],
    [{ repetitionPenalty: -1 }, 'repetitionPenalty'],
    [{ repetitionPenalty: NaN }, 'repetitionPenalty'],
    [{ frequencyPenalty: 2.5 }, 'frequencyPenalty'],
    [{ frequencyPenalty: -2.5 }, 'frequencyPenalty'],
    [{ frequencyPenalty: NaN }, 'frequencyPenalty'],
    [{ presencePenalty: 3 }, 'presencePenalty'],
    [{ presencePenalty: NaN }, 'presencePenalty'],
    [{ penaltyLastN: -2 }, 'penaltyLastN'],
    [{ penaltyLastN: 1.5 }, 'penaltyLastN'],
    [{ seed: 1.5 }, 'seed'],
    [{ seed: NaN }, 'seed'],
    [{ seed: 2 ** 53 }, 'seed'],
  ];
  for (const [opts, field] of cases) {
    const named = (e: unknown) => e instanceof InvalidInputError && e.field === field;
    assert.throws(() => validateSamplingOptions(opts), named, JSON.stringify(opts));
    assert.throws(() => new Sampler(opts, 10), named, JSON.stringify(opts));
  }
  assert.throws(() => new Sampler({}, 0), (e: unknown) => e instanceof InvalidInputError && e.field === 'validVocab');
  // Boundary values and defaults are accepted.
  validateSamplingOptions({});
  validateSamplingOptions({ temperature: 0, topK: 0, topP: 1, minP: 1, repetitionPenalty: 1, frequencyPenalty: -2, presencePenalty: 2, penaltyLastN: -1, seed: -5 });
});

test('topK larger than the vocabulary is the same as off', () => {
  const logits = randomLogits(50, 21);
  const a = new Sampler({ topK: 1000, seed: 3 }, 50);
  const b = new Sampler({ seed: 3 }, 50);
  for (let i = 0; i < 200; i++) assert.equal(a.sample(logits, []), b.sample(logits, []));
});
