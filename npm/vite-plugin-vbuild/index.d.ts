import type { Plugin } from "vite";

export interface VbuildPluginOptions {
  /**
   * Report the build's module graph to vbuild as the exact set of source
   * files used, so edits to staged files Vite never loaded do not rerun the
   * build. Only safe when `vite build` is the only tool of the action.
   * Default: `true` when the action sets `VBUILD_VITE_REPORT_INPUTS=1`
   * (`vbuild migrate` does so for targets whose command is a lone `vite build`).
   */
  reportUsedInputs?: boolean;
}

export default function vbuild(options?: VbuildPluginOptions): Plugin;
