// Concurrent calls on one model are batched by its engine automatically: no contexts to manage.
import { loadModel, type GenerationResult } from 'dseek';

const model = await loadModel();
const prompts = ['In the beginning', 'And the LORD said unto Moses', 'Blessed are the meek', 'The LORD is my shepherd'];
const started = performance.now();
const results: GenerationResult[] = await Promise.all(prompts.map((p) => model.generate(p, { maxTokens: 24, seed: 7 })));
results.forEach((r, i) => console.log(`${prompts[i]}${r.text}`));
const tokens = results.reduce((n, r) => n + r.usage.completionTokens, 0);
console.log(`${tokens} tokens for ${prompts.length} prompts in ${((performance.now() - started) / 1000).toFixed(2)} s`);
await model.close();
