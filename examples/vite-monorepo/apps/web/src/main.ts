import { money } from "@demo/core";
import { FORMAT_INFO } from "@demo/format";
import { priceTag } from "@demo/ui";
import { buildMode } from "./mode";

const app = document.querySelector<HTMLDivElement>("#app")!;
app.innerHTML = `${priceTag([money(1999), money(501)])}<footer>${FORMAT_INFO} ${buildMode()}</footer>`;
