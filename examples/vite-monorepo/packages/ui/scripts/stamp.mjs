// Writes dist/stamp.json: which files the build produced (run after vite build).
import { readdirSync, writeFileSync } from "node:fs";
const files = readdirSync("dist").filter((f) => f !== "stamp.json").sort();
writeFileSync("dist/stamp.json", JSON.stringify({ files }) + "\n");
console.log(`stamped ${files.length} files`);
