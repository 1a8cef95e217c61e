/**
 * dseek as a library — the front door (`import { loadModel } from 'dseek'`):
 *
 *   const model = await loadModel();                         // the bundled model, or a folder / .gguf / hub id
 *   const r = await model.chat([{ role: 'user', content: 'Hi' }], { maxTokens: 32 });
 *   for await (const d of model.generate('And God said', { stream: true })) process.stdout.write(d.text);
 *   await model.close();
 *
 * The CLI (`dseek run`, `chat`, `generate`, `serve`) is a client of exactly these calls.
 */
export { loadModel, type LoadModelOptions, type LoadProgress } from './library/load.js';
export { CACHE_TYPES, type CacheType } from './cache/pagePool.js';
export {
  Model,
  type ChatMessage,
  type Cost,
  type EngineSnapshot,
  type GenerateOptions,
  type GenerationDelta,
  type GenerationResult,
  type GenerationStream,
  type ModelInfo,
  type TokenLogprobs,
  type Usage,
} from './library/model.js';
export { createHandler, createServer, type DseekHttpServer, type HandlerOptions, type ServeOptions } from './library/serve.js';
export type { AnswerFinishReason, ContextStoreStats, FinishReason, JsonSchema, TokenLogprob } from './engine/types.js';
export type { ModelConfig, YarnScaling } from './model/config.js';
export type { ParameterCounts } from './model/params.js';
export type { PriceTable } from './server/prices.js';
export { DEEPSEEK_V2_LAUNCH_PRICES } from './server/prices.js';
export { SUPPORTED_MODEL_TYPES, GGUF_ARCHITECTURE, type ArchFamily, type SupportedModelType } from './model/registry.js';

// Errors. Every one is a DseekError with a stable `code`; messages name the file, field or limit at fault.
export {
  /** Base class of every error dseek throws on purpose; `code` is machine-readable. */
  DseekError,
  /** loadModel: a model file (config.json, safetensors, GGUF, tokenizer) is missing, truncated or inconsistent. */
  ModelFormatError,
  /** loadModel: a config value or GGUF key dseek does not support (e.g. a model_type outside SUPPORTED_MODEL_TYPES). */
  UnsupportedConfigError,
  /** loadModel: a tensor has the wrong shape or type for the config. */
  TensorShapeError,
  /** Any call given an argument that cannot work: an empty prompt, a bad option value, text for a model without a tokenizer. */
  InvalidInputError,
  /** generate/chat: the prompt alone fills the context (loadModel's `contextSize`). */
  ContextLengthExceededError,
  /** generate/chat: the engine's queue is full (`maxQueue` calls already wait): retry later. */
  QueueFullError,
  /** loadModel/generate/chat: the call's AbortSignal fired; the call's cache pages are freed. */
  AbortError,
  /** A call on a closed Model, or one still running when close() ended it. */
  ModelClosedError,
} from './errors.js';
/** loadModel: a hub id could not be downloaded (network, HF_ENDPOINT, HF_TOKEN, or no such repository). */
export { HubDownloadError } from './formats/hub.js';
/** generate/chat: the latent cache budget is held by other calls and nothing can be evicted (raise cacheBudgetBytes). */
export { CacheFullError } from './cache/pagePool.js';
