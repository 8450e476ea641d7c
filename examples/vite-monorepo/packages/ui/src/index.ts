import { add, type Money } from "@demo/core";
import { formatMoney } from "@demo/format";

export function priceTag(items: Money[]): string {
  const total = items.reduce((sum, m) => add(sum, m), { cents: 0, currency: items[0]?.currency ?? "EUR" });
  return `<span class="price">${formatMoney(total)}</span>`;
}
