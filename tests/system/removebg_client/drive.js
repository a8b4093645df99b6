// Drives remove.bg's own npm client (package.json) against this service.
//
// The client has no option for its address: API_ENDPOINT is a constant in
// its module. This loads the module's source with that one constant
// replaced by the local server's URL, and changes nothing else.
//
// usage: node drive.js URL API_KEY PHOTO OUT_DIR
// prints one JSON object: what the client resolved or rejected, per call.
"use strict";
const fs = require("fs");
const path = require("path");
const Module = require("module");

const [endpoint, apiKey, photo, outDir] = process.argv.slice(2);

function clientAt(url) {
  const file = require.resolve("remove.bg");
  const source = fs.readFileSync(file, "utf8");
  const pointed = source.replace(/const API_ENDPOINT = "[^"]*";/,
                                 `const API_ENDPOINT = ${JSON.stringify(url)};`);
  if (pointed === source) throw new Error(`no API_ENDPOINT constant in ${file}`);
  const client = new Module(file, module);
  client.filename = file;
  client.paths = Module._nodeModulePaths(path.dirname(file));
  client._compile(pointed, file);
  return client.exports;
}

async function outcome(call) {
  try {
    const result = await call();
    return {resolved: {...result, base64img: undefined,
                       base64Length: (result.base64img || "").length}};
  } catch (errors) {
    return {rejected: errors};
  }
}

async function main() {
  const removebg = clientAt(endpoint);
  const base64img = fs.readFileSync(photo).toString("base64");
  const report = {
    file: await outcome(() => removebg.removeBackgroundFromImageFile({
      path: photo, apiKey, size: "regular", type: "person",
      outputFile: path.join(outDir, "from-file.png")})),
    base64: await outcome(() => removebg.removeBackgroundFromImageBase64({
      base64img, apiKey, size: "preview", crop: true, crop_margin: "10px",
      bg_color: "81d4fa", outputFile: path.join(outDir, "from-base64.jpg")})),
    wrongKey: await outcome(() => removebg.removeBackgroundFromImageBase64({
      base64img, apiKey: "not-the-key"})),
    url: await outcome(() => removebg.removeBackgroundFromImageUrl({
      url: "http://192.0.2.1/photo.jpg", apiKey})),
  };
  process.stdout.write(JSON.stringify(report));
}

main().catch(error => { console.error(error); process.exit(1); });
