// The README's first library example: load the bundled model, stream a chat answer, print usage.
import { loadModel } from 'dseek';

const model = await loadModel(); // the bundled model; or a folder, a .gguf file, a hub id
const stream = model.chat([{ role: 'user', content: 'Who made the heaven and the earth?' }], { stream: true, maxTokens: 32, temperature: 0 });
for await (const delta of stream) process.stdout.write(delta.text);
const { finishReason, usage } = await stream.result;
console.log(`\n[${finishReason}] ${usage.promptTokens} prompt tokens (${usage.promptCacheHitTokens} from the cache), ${usage.completionTokens} generated, cost ${usage.cost.total} ${usage.cost.currency}`);
await model.close();
