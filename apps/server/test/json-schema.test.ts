/** The json_schema matcher on hand-written documents: prefixes accepted, breaks rejected, completion, refusals. */
import { describe, expect, it } from "vitest";
import { compileSchema, compileSchemaCached, schemaAccepts, schemaCanFeed, schemaComplete, schemaFeed, schemaStart, SchemaError, MAX_NUMBER } from "../src/json-schema.js";

const PERSON = {
  type: "object",
  properties: {
    name: { type: "string" },
    age: { type: "integer" },
    role: { enum: ["captain", "mate", null] },
    tags: { type: "array", items: { type: "string" }, minItems: 1, maxItems: 2 },
    ship: { $ref: "#/$defs/ship" },
    note: { anyOf: [{ type: "number" }, { type: "boolean" }, { type: "null" }] },
  },
  required: ["name", "age", "tags"],
  additionalProperties: false,
  $defs: { ship: { type: "object", properties: { name: { const: "Pequod" } }, required: ["name"] } },
};

function feed(schema: unknown, text: string) {
  return schemaFeed(schemaStart(compileSchema(schema)), text);
}
const complete = (schema: unknown, text: string) => {
  const s = feed(schema, text);
  return s !== null && schemaComplete(s);
};

describe("json_schema matcher", () => {
  it.each([
    '{"name": "Ahab", "age": 58, "tags": ["one"]}',
    '{"name":"Ahab","age":-3,"role":"captain","tags":["a","b"],"ship":{"name":"Pequod"},"note":1.5e3}',
    '{"name": "\\u0041\\n", "age": 0, "role": null, "tags": ["x"], "note": false}',
    '{\n  "name": "Ishmael",\n  "age": 20,\n  "tags": [ "sailor" ]\n}',
  ])("accepts the whole document %s, and every prefix of it", (doc) => {
    expect(JSON.parse(doc)).toBeTypeOf("object");
    for (let i = 0; i < doc.length; i++) expect(feed(PERSON, doc.slice(0, i)), doc.slice(0, i)).not.toBeNull();
    expect(complete(PERSON, doc)).toBe(true);
  });

  it.each([
    ['{"age"', "a required key may not be skipped"],
    ['{"name": "A", "age": 1.5', "an integer has no fraction"],
    ['{"name": "A", "age": 01', "no leading zeros"],
    ['{"name": "A", "age": 1, "tags": []', "minItems"],
    ['{"name": "A", "age": 1, "tags": ["a", "b", ', "maxItems"],
    ['{"name": "A", "age": 1, "tags": ["a"], "role": "cook"', "enum (and order: role before tags)"],
    ['{"name": "A", "age": 1, "tags": ["a"], "ship": {"name": "Rachel"', "const"],
    ['{"name": "A", "age": 1, "tags": ["a"], "captain": 1', "no additional properties"],
    ['{"name": "A", "age": 1, "tags": ["a"]}x', "nothing after the document"],
    ['{"name": "A", "age": 1}', "a required key missing at the close"],
    ['{"name": "A",}', "no trailing comma"],
    ['{"name": 5', "a string is expected"],
    ['{"name": "a\nb"', "control characters in strings"],
    ['{"name": "A", "age": 1, "tags": ["a"], "note": "x"', "anyOf"],
    ['{      "name"', "whitespace is bounded"],
  ])("rejects %s (%s)", (text) => {
    expect(feed(PERSON, text)).toBeNull();
  });

  it("knows when a document is complete, and when one may end", () => {
    expect(complete(PERSON, '{"name": "A", "age": 1, "tags": ["a"]')).toBe(false);
    const top = feed({ type: "integer" }, "12");
    expect([schemaAccepts(top!), schemaComplete(top!)]).toEqual([true, false]); // 12 may go on: 123
    expect(complete({ type: "boolean" }, "true")).toBe(true);
    expect(complete({ enum: ["a", "ab"] }, '"a"')).toBe(true);
    expect(feed({ type: "number" }, "1".repeat(MAX_NUMBER + 1))).toBeNull();
    expect(feed({ type: "number" }, "1".repeat(MAX_NUMBER - 2) + ".5")).not.toBeNull();
    expect(feed({ type: "number" }, "1".repeat(MAX_NUMBER - 1) + ".")).toBeNull(); // no room left for a digit after '.'
    expect(feed({ type: "number" }, "1".repeat(MAX_NUMBER - 1))).not.toBeNull();
    const pair = { type: ["string", "null"] };
    expect([complete(pair, "null"), complete(pair, '"x"'), feed(pair, "1")]).toEqual([true, true, null]);
  });

  it("tests a token without moving, and shares one compiled tree per schema text", () => {
    const start = schemaStart(compileSchema(PERSON));
    expect([schemaCanFeed(start, '{"na'), schemaCanFeed(start, '{"age'), schemaFeed(start, "")?.key]).toEqual([true, false, start.key]);
    expect(compileSchemaCached(PERSON)).toBe(compileSchemaCached(structuredClone(PERSON)));
  });

  it.each([
    [{ type: "string", pattern: "^a" }, "pattern"],
    [{ type: "object", properties: { a: { type: "string", format: "date" } } }, "format"],
    [{ type: "integer", minimum: 0 }, "minimum"],
    [{ type: "object", additionalProperties: true }, "additionalProperties"],
    [{ allOf: [{ type: "string" }] }, "allOf"],
    [{ $ref: "#/$defs/a", $defs: { a: { type: "object", properties: { a: { $ref: "#/$defs/a" } } } } }, "$ref"],
    [{ $ref: "#/$defs/missing" }, "$ref"],
    [{}, "type"],
    [{ type: "object", required: ["x"] }, "required"],
    [{ type: "array" }, "items"],
    [JSON.parse('{"type":"array","items":'.repeat(100) + '{"type":"null"}' + "}".repeat(100)) as unknown, "schema"],
  ])("refuses %j naming %s", (schema, keyword) => {
    expect(() => compileSchema(schema)).toThrow(SchemaError);
    try {
      compileSchema(schema);
    } catch (err) {
      expect((err as SchemaError).keyword).toBe(keyword);
      expect((err as SchemaError).message).toContain(`'${keyword}'`);
    }
  });
});
