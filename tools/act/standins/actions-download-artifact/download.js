// STAND-IN for actions/download-artifact@v4 in act runs (`nox -s workflow`); written for this project.
// Documented behaviour the workflow relies on:
// - with `name`: that artifact's files are extracted into `path` itself; no such artifact fails;
// - without `name`: every artifact of the run (latest of each name) whose name matches
//   `pattern` (a glob; all when empty) is extracted into `path/<artifact name>/`, or into `path`
//   itself with merge-multiple: true; matching none is not an error;
// - `path` defaults to the workspace, ~ is HOME; the output download-path is the resolved path.
// The glob subset here: * and ? (never across "/"); other characters match themselves.
"use strict";
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const { DefaultArtifactClient } = require("@actions/artifact");

const input = (name) => (process.env[`INPUT_${name.replace(/ /g, "_").toUpperCase()}`] || "").trim();
const fail = (msg) => { console.log(`::error::${msg}`); process.exit(1); };
const globRe = (glob) => new RegExp("^" + glob.split("").map((c) =>
  c === "*" ? "[^/]*" : c === "?" ? "[^/]" : c.replace(/[.+^${}()|[\]\\]/g, "\\$&")).join("") + "$");

(async () => {
  const raw = input("path");
  const dest = !raw ? process.env.GITHUB_WORKSPACE : raw.startsWith("~") ? path.join(os.homedir(), raw.slice(1)) : path.resolve(raw);
  const client = new DefaultArtifactClient();
  const name = input("name");
  let jobs;
  if (name) {
    let found;
    try { found = await client.getArtifact(name); } catch (e) { fail(`Unable to download artifact(s): Artifact not found for name: ${name}`); }
    jobs = [{ artifact: found.artifact, into: dest }];
  } else {
    const pattern = input("pattern");
    const merge = input("merge-multiple") === "true";
    const { artifacts } = await client.listArtifacts({ latest: true });
    const matched = pattern ? artifacts.filter((a) => globRe(pattern).test(a.name)) : artifacts;
    console.log(`Found ${matched.length} artifact(s)${pattern ? ` matching ${pattern}` : ""} (stand-in)`);
    jobs = matched.map((a) => ({ artifact: a, into: merge ? dest : path.join(dest, a.name) }));
  }
  for (const { artifact, into } of jobs) {
    fs.mkdirSync(into, { recursive: true });
    await client.downloadArtifact(artifact.id, { path: into });
    console.log(`Artifact ${artifact.name} downloaded to ${into} (stand-in)`);
  }
  fs.appendFileSync(process.env.GITHUB_OUTPUT, `download-path=${dest}\n`);
})().catch((e) => fail(`download-artifact stand-in: ${e.message}`));
