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
console.log("node sdk: ok");
