// Bundles src/codemirror.js (CodeMirror 6 with Python support, at the versions pinned in
// package-lock.json) into rooms/static/rooms/vendor/codemirror.bundle.js, the file the editor
// page loads. The bundle is committed, so running the server needs no Node.js.
//
//   cd frontend && npm ci && npm run build    rebuild the bundle
//   cd frontend && npm ci && npm run check    exit 1 unless the committed bundle is exactly what
//                                             the lock file builds (tests/browser runs this)
//
// esbuild's output depends only on its version, the sources and these options, so one lock file
// always gives the same bytes. The licences of the bundled packages go at the end of the file.
import {readFile, writeFile, mkdir} from "node:fs/promises";
import {dirname, join, relative, resolve} from "node:path";
import {fileURLToPath} from "node:url";
import {build} from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const outfile = resolve(here, "../rooms/static/rooms/vendor/codemirror.bundle.js");
const check = process.argv.includes("--check");
const BANNER =
  "// CodeMirror 6, bundled by frontend/build.mjs from frontend/package-lock.json: " +
  "do not edit, rebuild. Licences at the end.";

const result = await build({
  entryPoints: [resolve(here, "src/codemirror.js")],
  absWorkingDir: here,
  bundle: true,
  format: "esm",
  target: "es2020",
  minify: true,
  charset: "utf8",
  metafile: true,
  write: false,
  outfile,
  banner: {js: BANNER},
  logLevel: "warning",
});

/** The bundled packages (name@version), grouped by their licence text. */
async function licences(metafile) {
  const packages = new Set();
  for (const input of Object.keys(metafile.inputs)) {
    const match = input.match(/^(.*node_modules\/(?:@[^/]+\/)?[^/]+)\//);
    if (match) packages.add(match[1]);
  }
  const byText = new Map();
  for (const folder of [...packages].sort()) {
    const {name, version, license} = JSON.parse(await readFile(join(here, folder, "package.json")));
    const text = (await readFile(join(here, folder, "LICENSE"), "utf8")).trim();
    if (!byText.has(text)) byText.set(text, []);
    byText.get(text).push(`${name}@${version} (${license})`);
  }
  const sections = [...byText].map(([text, names]) => `${names.join("\n")}\n\n${text}`);
  return `\n/*\n${sections.join("\n\n----\n\n").replaceAll("*/", "* /")}\n*/\n`;
}

const bundle = Buffer.concat([
  Buffer.from(result.outputFiles[0].contents),
  Buffer.from(await licences(result.metafile)),
]);
const shown = relative(process.cwd(), outfile);

if (check) {
  const committed = await readFile(outfile).catch(() => Buffer.alloc(0));
  if (!bundle.equals(committed)) {
    console.error(`${shown} is not what package-lock.json builds: run \`npm ci && npm run build\``);
    process.exit(1);
  }
  console.log(`${shown} is what package-lock.json builds (${bundle.length} bytes)`);
} else {
  await mkdir(dirname(outfile), {recursive: true});
  await writeFile(outfile, bundle);
  console.log(`wrote ${shown} (${bundle.length} bytes)`);
}
