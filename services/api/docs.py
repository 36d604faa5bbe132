"""The interactive docs page at /docs: self-contained (no CDN), built from /openapi.json in the browser.

Lists every operation with its parameters and body schema, and a try-it form that sends the
request with the API key typed at the top and shows the response.
"""

from __future__ import annotations

from typing import Final

DOCS_HTML: Final = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>clickwire API</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:980px;padding:1rem 1.5rem;color:#222}
h1{margin:.2rem 0}.op{border:1px solid #ccd;border-radius:6px;margin:.8rem 0;padding:.4rem .8rem}
.op summary{cursor:pointer;font-weight:600}.m{display:inline-block;min-width:4.5em;font-family:monospace;
text-transform:uppercase;color:#fff;border-radius:3px;padding:0 .3em;margin-right:.5em;text-align:center}
.get{background:#2a7}.post{background:#27c}.patch{background:#c82}.delete{background:#c33}.put{background:#86c}
code,pre,textarea,input{font-family:ui-monospace,monospace;font-size:13px}pre{background:#f5f5f8;padding:.5rem;
overflow:auto;max-height:24rem}textarea{width:100%;min-height:7rem}label{display:block;margin:.2rem 0}
input[type=text]{width:22rem}#key{width:32rem}.status{font-weight:600}
</style></head><body>
<h1>clickwire control API</h1>
<p id="desc"></p>
<p><label>API key: <input id="key" type="text" placeholder="cw_..." autocomplete="off"></label>
<small>Create one with <code>clickwire keys create --workspace ws_x</code>. Machine-readable:
<a href="/openapi.json">/openapi.json</a> (OpenAPI 3.1).</small></p>
<div id="ops">loading /openapi.json…</div>
<script>
"use strict";
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) (k === "class" ? e.className = v : e.setAttribute(k, v));
  for (const k of kids) e.append(k);
  return e;
};
const resolve = (spec, s) => s && s.$ref ? spec.components.schemas[s.$ref.split("/").pop()] : s;
function example(spec, schema, depth = 0) {
  schema = resolve(spec, schema) || {};
  if (depth > 4) return null;
  if (schema.oneOf) return example(spec, schema.oneOf[0], depth + 1);
  if (schema.anyOf) return example(spec, schema.anyOf.find(s => s.type !== "null") || schema.anyOf[0], depth + 1);
  if (schema.type === "object" || schema.properties) {
    const out = {};
    for (const name of schema.required || []) out[name] = example(spec, schema.properties[name], depth + 1);
    return out;
  }
  if (schema.type === "array") return [];
  if (schema.type === "integer" || schema.type === "number") return schema.default ?? 0;
  if (schema.type === "boolean") return false;
  if (schema.type === "string") return schema.default ?? (schema.title === "Destination" ? "https://example.com/" : "");
  return null;
}
function render(spec) {
  document.getElementById("desc").textContent = spec.info.description || "";
  const root = document.getElementById("ops"); root.textContent = "";
  for (const [path, ops] of Object.entries(spec.paths)) for (const [method, op] of Object.entries(ops)) {
    const params = op.parameters || [];
    const inputs = params.map(p => el("label", {}, `${p.name} (${p.in}${p.required ? ", required" : ""}) `,
      el("input", {type: "text", "data-name": p.name, "data-in": p.in})));
    const bodySchema = op.requestBody && op.requestBody.content["application/json"].schema;
    const body = bodySchema ? el("textarea", {}) : null;
    if (body) body.value = JSON.stringify(example(spec, bodySchema), null, 2);
    const out = el("pre", {}), status = el("div", {class: "status"});
    const send = el("button", {}, "Send");
    send.onclick = async () => {
      let url = path; const query = new URLSearchParams();
      for (const i of root.ownerDocument.querySelectorAll(`[data-op="${method} ${path}"] input`)) {
        if (!i.value) continue;
        if (i.dataset.in === "path") url = url.replace(`{${i.dataset.name}}`, encodeURIComponent(i.value));
        else query.set(i.dataset.name, i.value);
      }
      if ([...query].length) url += "?" + query;
      const headers = {}; const key = document.getElementById("key").value.trim();
      if (key) headers.Authorization = "Bearer " + key;
      if (body) headers["Content-Type"] = "application/json";
      const started = performance.now();
      try {
        const r = await fetch(url, {method: method.toUpperCase(), headers, body: body ? body.value : undefined});
        const text = await r.text();
        const ms = (performance.now() - started).toFixed(0);
        status.textContent = `${r.status} ${r.statusText} · ${ms} ms · ${r.headers.get("content-type") || ""}`;
        try { out.textContent = JSON.stringify(JSON.parse(text), null, 2); } catch { out.textContent = text; }
      } catch (err) { status.textContent = "request failed: " + err; }
    };
    const responses = el("ul", {}, ...Object.entries(op.responses || {}).map(([code, r]) =>
      el("li", {}, el("code", {}, code), " " + (r.description || ""))));
    const schemaView = bodySchema ? el("details", {}, el("summary", {}, "body schema"),
      el("pre", {}, JSON.stringify(resolve(spec, bodySchema), null, 2))) : "";
    root.append(el("details", {class: "op", "data-op": `${method} ${path}`},
      el("summary", {}, el("span", {class: `m ${method}`}, method), el("code", {}, path), "  " + (op.summary || "")),
      ...inputs, schemaView, body || "", el("p", {}, send), status, out, el("div", {}, "Responses:"), responses));
  }
}
fetch("/openapi.json").then(r => r.json()).then(render)
  .catch(err => { document.getElementById("ops").textContent = "could not load /openapi.json: " + err; });
</script></body></html>
"""
