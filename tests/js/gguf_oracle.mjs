// Independent GGUF parser for tests/gguf_test.cpp: @huggingface/gguf reads the file named on the command
// line and prints its header, typed metadata and tensor infos as one JSON object (64-bit integers as strings).
import { gguf } from "@huggingface/gguf";

const path = process.argv[2];
const { typedMetadata, tensorInfos, tensorDataOffset } = await gguf(path, { allowLocalFile: true, typedMetadata: true });
const plain = (v) => (typeof v === "bigint" ? v.toString() : Array.isArray(v) ? v.map(plain) : v);
const metadata = {};
for (const [k, v] of Object.entries(typedMetadata)) {
  metadata[k] = { type: v.type, value: plain(v.value) };
  if (v.subType !== undefined) metadata[k].subType = v.subType;
}
const tensors = tensorInfos.map((t) => ({ name: t.name, shape: plain(t.shape), dtype: t.dtype, offset: plain(t.offset) }));
process.stdout.write(JSON.stringify({ metadata, tensors, tensorDataOffset: plain(tensorDataOffset) }));
