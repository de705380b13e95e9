// Type-checks ../swimd.json against Grafana's own dashboard type, in two ways (`npm run
// check`, or `node generate.mjs && npx tsc --noEmit`; tests/dashboards.rs runs them).
//
// Here the JSON file is imported as it is. TypeScript types an imported JSON file with
// widened primitives (every string is `string`), which can never satisfy the schema's string
// enums and literal unions (`thresholds.mode`, a mapping's `type`), so this compares against
// `AsJson<Dashboard>`: every required field present, every field of the right kind (a
// number where a number belongs, an array where an array belongs), at every depth.
//
// swimd.gen.ts (written by generate.mjs) adds what an import cannot check: the same JSON as
// an object literal, so that every enum and literal value must be one the schema lists and
// every key one it knows (a misspelled key fails).
import type { Dashboard } from "@grafana/schema";
import type { AsJson } from "./types.js";
import dashboard from "../swimd.json" with { type: "json" };

export const imported: AsJson<Dashboard> = dashboard;
