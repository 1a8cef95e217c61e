// Every call takes an AbortSignal: here a deadline. The call rejects with an AbortError, and its
// cache pages are freed at the engine's next step.
import { AbortError, loadModel } from 'dseek';

const model = await loadModel();
try {
  const r = await model.generate('And it came to pass', { maxTokens: 200, ignoreEos: true, signal: AbortSignal.timeout(300) });
  console.log(`finished before the deadline: ${r.text}`);
} catch (err) {
  if (!(err instanceof AbortError)) throw err;
  console.log(`aborted: ${err.message}`);
}
await model.close();
