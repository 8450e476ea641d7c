import { expect, it } from "vitest";
import { buildMode } from "./mode";

it("names a mode", () => {
  expect(buildMode()).toMatch(/^MODE_MARKER_/);
});
