// Validates a Grafana dashboard file against Grafana's own dashboard type: the `Dashboard`
// interface of @grafana/schema (the classic JSON model that "Import dashboard" takes), turned
// into a JSON Schema by ts-json-schema-generator and checked with ajv.
//
//   node validate.mjs [llm-failover.json]     (from dashboards/, after `npm ci`)
//
// The export wrapper keys `__inputs`, `__requires` and `__elements` are not part of the
// Dashboard type (Grafana adds them on export and strips them on import), so they are checked
// against a small schema of their own here and removed before the Dashboard check.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { createGenerator } from "ts-json-schema-generator";
import Ajv from "ajv";

const here = dirname(fileURLToPath(import.meta.url));
const file = process.argv[2] ?? join(here, "llm-failover.json");
const types = join(here, "node_modules/@grafana/schema/dist/types/raw/dashboard/x/types.gen.d.ts");

const schema = createGenerator({ path: types, type: "Dashboard", skipTypeCheck: true }).createSchema("Dashboard");

const wrapper = {
  type: "object",
  required: ["__inputs", "__requires"],
  properties: {
    __inputs: {
      type: "array",
      minItems: 1,
      items: {
        type: "object",
        required: ["name", "type", "pluginId"],
        properties: {
          name: { type: "string", pattern: "^DS_[A-Z0-9_]+$" },
          label: { type: "string" },
          description: { type: "string" },
          type: { const: "datasource" },
          pluginId: { type: "string" },
          pluginName: { type: "string" },
        },
        additionalProperties: false,
      },
    },
    __requires: {
      type: "array",
      items: {
        type: "object",
        required: ["type", "id", "name", "version"],
        properties: {
          type: { enum: ["grafana", "datasource", "panel"] },
          id: { type: "string" },
          name: { type: "string" },
          version: { type: "string" },
        },
        additionalProperties: false,
      },
    },
    __elements: { type: "object" },
  },
};

const dashboard = JSON.parse(readFileSync(file, "utf8"));
const ajv = new Ajv({ allErrors: true, strict: false });
let ok = true;
for (const [name, s, value] of [
  ["export wrapper", wrapper, dashboard],
  ["Dashboard (@grafana/schema)", schema, (({ __inputs, __requires, __elements, ...rest }) => rest)(dashboard)],
]) {
  const validate = ajv.compile(s);
  if (!validate(value)) {
    ok = false;
    console.error(`${file}: not a valid ${name}:`);
    for (const e of validate.errors) console.error(`  ${e.instancePath || "/"} ${e.message} ${JSON.stringify(e.params)}`);
  }
}
// Every panel's datasource and every query's datasource goes through the DS_PROMETHEUS input.
const inputs = new Set(dashboard.__inputs.map((i) => "${" + i.name + "}"));
const panels = dashboard.panels.flatMap((p) => [p, ...(p.panels ?? [])]).filter((p) => p.type !== "row");
for (const p of panels) {
  for (const ds of [p.datasource, ...(p.targets ?? []).map((t) => t.datasource)]) {
    if (!ds || !inputs.has(ds.uid)) {
      ok = false;
      console.error(`${file}: panel "${p.title}" does not use a datasource input: ${JSON.stringify(ds)}`);
    }
  }
}
if (!ok) process.exit(1);
console.log(`${file}: valid Grafana dashboard (${panels.length} panels, @grafana/schema Dashboard type)`);
