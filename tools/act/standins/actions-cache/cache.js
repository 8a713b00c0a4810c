// STAND-IN for actions/cache@v4 in act runs (`nox -s workflow`); written for this project.
// Documented behaviour the workflow relies on: the main step restores `path` from the entry
// of `key`, else from the newest entry whose key starts with one of `restore-keys` (in
// order), and sets the output cache-hit ("true" only for an exact key); the post step, run
// when the job ends, saves `path` under `key` unless the key was hit exactly (entries are
// immutable). Entries are tar files in ACT_STANDIN_CACHE_DIR, kept for the act run.
"use strict";
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const { execFileSync } = require("node:child_process");

const input = (name) => (process.env[`INPUT_${name.replace(/ /g, "_").toUpperCase()}`] || "").trim();
const lines = (text) => text.split("\n").map((s) => s.trim()).filter(Boolean);
const append = (file, line) => fs.appendFileSync(process.env[file], `${line}\n`);
const store = process.env.ACT_STANDIN_CACHE_DIR;
if (!store) { console.log("::error::cache stand-in: ACT_STANDIN_CACHE_DIR is not set"); process.exit(1); }
fs.mkdirSync(store, { recursive: true });
const entryFile = (key) => path.join(store, encodeURIComponent(key) + ".tar");
const keyOf = (file) => decodeURIComponent(path.basename(file, ".tar"));
const expand = (p) => (p.startsWith("~") ? path.join(os.homedir(), p.slice(1)) : path.resolve(p));
const key = input("key");
const paths = lines(input("path")).map(expand);

function restore() {
  let hit = fs.existsSync(entryFile(key)) ? entryFile(key) : null;
  let exact = Boolean(hit);
  if (!hit) {
    const entries = fs.readdirSync(store).filter((f) => f.endsWith(".tar")).map((f) => path.join(store, f));
    for (const prefix of lines(input("restore-keys"))) {
      const found = entries.filter((f) => keyOf(f).startsWith(prefix)).sort((a, b) => fs.statSync(b).mtimeMs - fs.statSync(a).mtimeMs);
      if (found.length) { hit = found[0]; break; }
    }
  }
  if (hit) {
    // --skip-old-files: a file already there is kept. On GitHub a job's runner is fresh, so nothing is;
    // here the run's jobs share one HOME and run side by side, and rewriting a file that another job
    // has open (ocloc's libraries, mapped by a running compile) would crash it (SIGBUS) or collide.
    execFileSync("tar", ["--skip-old-files", "-xPf", hit], { stdio: "inherit" });
    console.log(`Cache restored from key: ${keyOf(hit)} (stand-in)`);
  } else {
    console.log(`Cache not found for input keys: ${[key, ...lines(input("restore-keys"))].join(", ")} (stand-in)`);
  }
  append("GITHUB_OUTPUT", `cache-hit=${exact}`);
  append("GITHUB_STATE", `exact=${exact}`);
}

function save() {
  if (process.env.STATE_exact === "true") { console.log(`Cache hit on ${key}; not saving (stand-in)`); return; }
  const present = paths.filter((p) => fs.existsSync(p));
  if (!present.length) { console.log("::warning::cache stand-in: none of the paths exist; nothing saved"); return; }
  const tmp = entryFile(key) + `.${process.pid}.part`;
  // --posix, as actions/cache's tar does: file times keep their nanoseconds (GNU tar's own format keeps
  // whole seconds), so a restored file is the same file to what keys a cache on it (the device database).
  execFileSync("tar", ["--posix", "-cPf", tmp, ...present], { stdio: "inherit" });
  fs.renameSync(tmp, entryFile(key));
  console.log(`Cache saved with key: ${key} (stand-in)`);
}

if (process.env.STATE_exact === undefined) restore(); else save();
