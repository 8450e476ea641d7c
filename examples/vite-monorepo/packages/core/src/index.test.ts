import { describe, expect, it } from "vitest";
import { add, money } from "./index";

describe("money", () => {
  it("adds amounts of one currency", () => {
    expect(add(money(150), money(250))).toEqual({ cents: 400, currency: "EUR" });
  });
  it("refuses mixed currencies", () => {
    expect(() => add(money(1, "EUR"), money(1, "USD"))).toThrow(/cannot add/);
  });
});
