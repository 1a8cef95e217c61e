/**
 * Weight files that change underneath a running engine. Weights are memory-mapped: a file
 * truncated in place would fault (SIGBUS) on the next read of a page past its new end, and one
 * rewritten in place would silently feed the model other bytes. So the engine checks its files
 * before and after every step — size, modification time and inode (a replaced file is a new
 * inode), one stat each — and native/guard.c turns the fault of a shrink that races a step into
 * zeros plus a count that the same check reads. Any change fails every request with
 * ModelFileChangedError naming the file: nothing is computed from bytes that cannot be trusted,
 * and the operator is asked to restart.
 */
import { statSync, readdirSync, type Stats } from 'node:fs';
import { join } from 'node:path';
import { ModelFileChangedError } from '../errors.js';
import { mappedFileFaults } from '../kernels/native/index.js';

interface Baseline {
  readonly file: string;
  readonly size: number;
  readonly mtimeMs: number;
  readonly ino: number;
}

/** The files whose bytes a loaded model uses: a GGUF file, or a folder's config and safetensors. */
export function weightFiles(modelPath: string): string[] {
  if (!statSync(modelPath).isDirectory()) return [modelPath];
  return readdirSync(modelPath)
    .filter((f) => f.endsWith('.safetensors'))
    .sort()
    .map((f) => join(modelPath, f));
}

export class ModelFileGuard {
  private readonly baselines: Baseline[];
  private readonly faultsAtLoad: number;

  /** Records the files as they are now: call right after loading the model from them. */
  constructor(readonly files: readonly string[]) {
    this.baselines = files.map((file) => {
      const st = statSync(file);
      return { file, size: st.size, mtimeMs: st.mtimeMs, ino: st.ino };
    });
    this.faultsAtLoad = mappedFileFaults();
  }

  static forModel(modelPath: string): ModelFileGuard {
    return new ModelFileGuard(weightFiles(modelPath));
  }

  /** Throws ModelFileChangedError for the first file that is not as it was at load. */
  check(): void {
    for (const b of this.baselines) {
      let st: Stats;
      try {
        st = statSync(b.file);
      } catch {
        throw new ModelFileChangedError(b.file, 'was removed');
      }
      if (st.size < b.size) throw new ModelFileChangedError(b.file, `shrank from ${b.size} to ${st.size} bytes`);
      if (st.size !== b.size) throw new ModelFileChangedError(b.file, `grew from ${b.size} to ${st.size} bytes`);
      if (st.ino !== b.ino) throw new ModelFileChangedError(b.file, 'was replaced by another file');
      if (st.mtimeMs !== b.mtimeMs) throw new ModelFileChangedError(b.file, 'was modified (rewritten in place)');
    }
    // A shrink that was undone before this check still left zeros in the mapping.
    if (mappedFileFaults() !== this.faultsAtLoad) {
      throw new ModelFileChangedError(this.files.length === 1 ? this.files[0]! : this.files.join(', '), 'shrank under a read');
    }
  }
}
