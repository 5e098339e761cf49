// The Kumulus example job. It shows the whole contract: arguments arrive as
// argv, the job's config is in config.json, files written under output/ are
// kept, and stdout/stderr are captured.
const fs = require("fs");

const args = process.argv.slice(2);
console.log(`hello from kumulus; args: ${JSON.stringify(args)}`);

let config = {};
if (fs.existsSync("config.json")) {
  config = JSON.parse(fs.readFileSync("config.json", "utf8"));
}
console.error(`config keys: ${Object.keys(config).join(",")}`);

fs.mkdirSync("output", { recursive: true });
const result = { args, config, words: args.length };
fs.writeFileSync("output/result.json", JSON.stringify(result, null, 2) + "\n");
console.log("wrote output/result.json");
