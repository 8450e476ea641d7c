import { expect, it } from "vitest";
import { formatMoney } from "./index";

it("formats euros", () => {
  expect(formatMoney({ cents: 1234, currency: "EUR" })).toBe("€12.34");
});
