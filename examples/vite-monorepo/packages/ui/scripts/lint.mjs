// A tiny lint: no `console.log` in sources.
import { readFileSync, readdirSync } from "node:fs";
let bad = 0;
for (const f of readdirSync("src")) {
  if (readFileSync(`src/${f}`, "utf8").includes("console.log")) {
    console.error(`src/${f}: console.log is not allowed`);
    bad++;
  }
}
if (bad) process.exit(1);
console.log("lint ok");
