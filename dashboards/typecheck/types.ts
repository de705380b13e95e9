// The two views of Grafana's `Dashboard` type that check.ts and swimd.gen.ts hold
// dashboards/swimd.json to.

/** What TypeScript infers for a JSON file of type `T`: every string `string`, every number
 * `number`, so string enums and literal unions widen to their primitive. */
export type AsJson<T> = T extends string
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

/** `T` with each string enum replaced by the union of its values (`ThresholdsMode` becomes
 * `"absolute" | "percentage"`), so that a JSON literal can match it. */
export type Literal<T> = T extends string
  ? `${T}`
  : T extends number | boolean | null | undefined
    ? T
    : T extends Array<infer Item>
      ? Array<Literal<Item>>
      : T extends object
        ? { [Key in keyof T]: Literal<T[Key]> }
        : T;
