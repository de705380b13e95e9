// Type-checks ../swimd.json against Grafana's own dashboard type (`tsc --noEmit`; run by
// tests/dashboards.rs).
//
// TypeScript types an imported JSON file with widened primitives: every string is `string`,
// every number `number`. Grafana's schema types fields such as `thresholds.mode` or a
// mapping's `type` as string enums or literal unions, which a widened `string` can never
// satisfy, so the check compares against `AsJson<Dashboard>`: the same structure (required
// fields, nesting, arrays, objects) with those literals widened to their primitive. A missing
// required field or a field of the wrong kind (a string where a number belongs, an object
// where an array belongs) still fails.
import type { Dashboard } from "@grafana/schema";
import dashboard from "../swimd.json" with { type: "json" };

type AsJson<T> = T extends string
  ? string
  : T extends number
    ? number
    : T extends boolean
      ? boolean
      : T extends null | undefined
        ? T
        : T extends Array<infer Item>
          ? Array<AsJson<Item>>
          : T extends object
            ? { [Key in keyof T]: AsJson<T[Key]> }
            : T;

export const checked: AsJson<Dashboard> = dashboard;
