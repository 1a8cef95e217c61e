/**
 * The one registry of what dseek runs: the Hugging Face `model_type`s it accepts, the family of
 * reference code that defines each one's numerics, and the GGUF architecture it reads. The config
 * parser, the GGUF reader, `dseek inspect` and the errors all name these entries, so adding a
 * model type means adding a row here (and nothing elsewhere if its numerics match a family).
 */

/** Which generation of the reference gate code defines weight normalisation (SPEC.md §5.2–5.3). */
export type ArchFamily = 'deepseek_v2' | 'deepseek_v3';

export interface SupportedModelType {
  /** `model_type` as config.json writes it. */
  readonly modelType: string;
  readonly family: ArchFamily;
  /** What users know it as. */
  readonly models: string;
}

export const SUPPORTED_MODEL_TYPES: readonly SupportedModelType[] = [
  { modelType: 'deepseek_v2', family: 'deepseek_v2', models: 'DeepSeek-V2, V2-Lite, V2.5, Coder-V2' },
  { modelType: 'deepseek_v3', family: 'deepseek_v3', models: 'DeepSeek-V3, R1, Moonlight' },
  { modelType: 'kimi_k2', family: 'deepseek_v3', models: 'Kimi-K2 (text)' },
];

/** `general.architecture` of the GGUF files dseek reads (llama.cpp's name for the whole family). */
export const GGUF_ARCHITECTURE = 'deepseek2';

export const FAMILY_NAMES: Readonly<Record<ArchFamily, string>> = {
  deepseek_v2: 'DeepSeek-V2',
  deepseek_v3: 'DeepSeek-V3',
};

/** The registry entry of a model_type, or undefined when dseek does not run it. */
export function supportedModelType(modelType: unknown): SupportedModelType | undefined {
  return typeof modelType === 'string' ? SUPPORTED_MODEL_TYPES.find((t) => t.modelType === modelType) : undefined;
}

/** One line naming everything dseek runs, for error messages ("dseek runs …"). */
export function supportedSummary(): string {
  const types = SUPPORTED_MODEL_TYPES.map((t) => `${t.modelType} (${t.models})`).join(', ');
  return `dseek runs Hugging Face checkpoints with model_type ${types}, and GGUF files of architecture ${GGUF_ARCHITECTURE}`;
}
