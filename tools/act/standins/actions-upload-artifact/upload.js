// STAND-IN for actions/upload-artifact@v4 in act runs (`nox -s workflow`); written for this project.
// Documented behaviour the workflow relies on:
// - `path` is one or more lines, each a file or a folder (relative to the workspace, ~ = HOME);
//   a folder contributes every file below it, except hidden files and folders (names starting
//   with ".") unless include-hidden-files is true;
// - the artifact's root is the least common ancestor of the given paths (a single folder: the
//   folder itself; a single file: its folder), so the files keep their paths below that root;
// - no file found: if-no-files-found says warn (a warning, success), error (the step fails) or
//   ignore;
// - the files are uploaded as one artifact named `name` (@actions/artifact, v4 protocol);
//   a second upload of the same name in one run fails unless overwrite is true.
// Wildcards are not implemented here: a path with * ? [ fails clearly instead of matching wrongly.
"use strict";
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const { DefaultArtifactClient } = require("@actions/artifact");

const input = (name) => (process.env[`INPUT_${name.replace(/ /g, "_").toUpperCase()}`] || "").trim();
const fail = (msg) => { console.log(`::error::${msg}`); process.exit(1); };

function filesUnder(root, hidden) {
  const out = [];
  for (const entry of fs.readdirSync(root, { withFileTypes: true })) {
    if (!hidden && entry.name.startsWith(".")) continue;
    const full = path.join(root, entry.name);
    if (entry.isDirectory()) out.push(...filesUnder(full, hidden));
    else if (entry.isFile()) out.push(full);
  }
  return out;
}

function commonAncestor(dirs) {
  const split = dirs.map((d) => d.split(path.sep));
  const first = split[0];
  let n = 0;
  while (n < first.length && split.every((parts) => parts[n] === first[n])) n++;
  return first.slice(0, n).join(path.sep) || path.sep;
}

(async () => {
  const name = input("name") || "artifact";
  const hidden = input("include-hidden-files") === "true";
  const specs = input("path").split("\n").map((s) => s.trim()).filter(Boolean);
  if (!specs.length) fail("upload-artifact stand-in: input path is empty");
  const searched = [];
  let files = [];
  for (const spec of specs) {
    if (/[*?[]/.test(spec)) fail(`upload-artifact stand-in: wildcards are not implemented (${spec}); name files or folders`);
    const full = spec.startsWith("~") ? path.join(os.homedir(), spec.slice(1)) : path.resolve(spec);
    if (!fs.existsSync(full)) continue;
    const stat = fs.statSync(full);
    searched.push(stat.isDirectory() ? full : path.dirname(full));
    files.push(...(stat.isDirectory() ? filesUnder(full, hidden) : [full]));
  }
  files = [...new Set(files)].sort();
  if (!files.length) {
    const how = input("if-no-files-found") || "warn";
    const msg = `No files were found with the provided path: ${specs.join(", ")}. No artifacts will be uploaded.`;
    if (how === "error") fail(msg);
    if (how === "warn") console.log(`::warning::${msg}`); else console.log(msg);
    return;
  }
  const root = commonAncestor(searched);
  const client = new DefaultArtifactClient();
  if (input("overwrite") === "true") {
    try { await client.deleteArtifact(name); } catch { /* none to replace */ }
  }
  const options = { compressionLevel: Number(input("compression-level") || 6) };
  const days = Number(input("retention-days") || 0);
  if (days > 0) options.retentionDays = days;
  const result = await client.uploadArtifact(name, files, root, options);
  fs.appendFileSync(process.env.GITHUB_OUTPUT, `artifact-id=${result.id}\n`);
  console.log(`Artifact ${name} (${files.length} file(s), root ${root}) uploaded, id ${result.id} (stand-in)`);
})().catch((e) => fail(`upload-artifact stand-in: ${e.message}`));
