/** The OpenAI-compatible HTTP server: `createServer({ engine, tokenizer, modelName, contextLength })`. */
export { createServer, DEFAULT_ALIASES, type DseekServer, type ServerOptions } from './server.js';
export { DEEPSEEK_V2_LAUNCH_PRICES, costOf, type Cost, type PriceTable } from './prices.js';
export { HttpError, QUEUE_FULL, type ErrorBody, type OpenAiErrorType } from './httpError.js';
export type { CacheIsolation, ModelFacts } from './types.js';
export type { StatusBody } from './routes/status.js';
export type { Extras, RoutingBody, Timings } from './extras.js';
