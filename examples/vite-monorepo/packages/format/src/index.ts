import { type Money, CORE_VERSION } from "@demo/core";

const SYMBOLS: Record<string, string> = { EUR: "€", USD: "$" };

export function formatMoney(m: Money): string {
  const units = Math.trunc(m.cents / 100);
  const cents = String(Math.abs(m.cents % 100)).padStart(2, "0");
  return `${SYMBOLS[m.currency] ?? m.currency + " "}${units}.${cents}`;
}

export const FORMAT_INFO = `format-v1 (on ${CORE_VERSION})`;
