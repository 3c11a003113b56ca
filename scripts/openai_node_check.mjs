// The official Node SDK (`openai` on npm) against the server: a generation and an edit with
// two images. Run by scripts/openai_sdk_check.py, which checks what Google received.
import OpenAI, { toFile } from "openai";

const client = new OpenAI({ baseURL: process.env.NB_BASE_URL, apiKey: process.env.NB_API_KEY, maxRetries: 0 });
const png = Buffer.from(process.env.NB_PNG, "base64");
const jpeg = Buffer.from(process.env.NB_JPEG, "base64");

const generated = await client.images.generate({ prompt: "a banana", response_format: "b64_json", size: "1536x1024" });
if (Buffer.from(generated.data[0].b64_json, "base64").compare(png) !== 0) {
  throw new Error("the generated image differs from the provider's");
}
const edited = await client.images.edit({
  prompt: "combine them",
  image: [await toFile(png, "a.png", { type: "image/png" }), await toFile(jpeg, "b.jpg", { type: "image/jpeg" })],
});
if (!edited.data?.[0]?.url) {
  throw new Error("the edit gave no URL");
}
// Streamed, as apps show progress: one completed event each.
const stream = await client.images.generate({ prompt: "a banana", stream: true, partial_images: 1 });
const types = [];
for await (const event of stream) {
  types.push(event.type);
  if (event.type === "image_generation.completed" && Buffer.from(event.b64_json, "base64").compare(png) !== 0) {
    throw new Error("the streamed image differs from the provider's");
  }
}
if (types.join() !== "image_generation.completed") {
  throw new Error(`unexpected generation events: ${types}`);
}
const editStream = await client.images.edit({
  prompt: "a hat",
  image: await toFile(png, "a.png", { type: "image/png" }),
  stream: true,
});
const editTypes = [];
for await (const event of editStream) {
  editTypes.push(event.type);
}
if (editTypes.join() !== "image_edit.completed") {
  throw new Error(`unexpected edit events: ${editTypes}`);
}
console.log("node sdk: ok");
