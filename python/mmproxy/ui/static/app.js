// The dashboard's script: reads the gateway's JSON (the /ui/api/* feeds and the admin API, with the page's
// session), draws tables and uPlot charts. Data never goes through innerHTML: every value is set as text.

const admin = document.body.dataset.admin === "true";
const view = document.getElementById("view");
const statusLine = document.getElementById("status");
const periodSelect = document.getElementById("period");
const groupSelect = document.getElementById("group");
const PALETTE = ["#2563eb", "#16a34a", "#dc2626", "#9333ea", "#ea580c", "#0891b2", "#64748b"];
const TOP_GROUPS = 6;
let live = null; // the live feed's EventSource while the Live tab is open
let charts = []; // uPlot instances of the current tab, destroyed when it is left

// -- helpers --------------------------------------------------------------------------------------------------
function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "on") for (const [event, fn] of Object.entries(value)) node.addEventListener(event, fn);
    else if (value !== null && value !== undefined && value !== false) node.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    credentials: "same-origin",
    headers: { "x-mmproxy-ui": "1", "Content-Type": "application/json", ...(options.headers || {}) },
  });
  const body = await response.json().catch(() => ({}));
  if (response.status === 401) {
    location.assign("/ui");
    throw new Error("the session has ended");
  }
  if (!response.ok) throw new Error((body.error && body.error.message) || response.statusText);
  return body;
}

const usd = (v) => (v === null || v === undefined ? "–" : "$" + (Math.abs(v) >= 1 ? v.toFixed(2) : Math.abs(v) >= 0.01 ? v.toFixed(4) : v.toPrecision(3)));
const int = (v) => (v === null || v === undefined ? "–" : Math.round(v).toLocaleString("en"));
const ms = (v) => (v === null || v === undefined ? "–" : v.toFixed(1) + " ms");
const pct = (part, whole) => (whole ? ((100 * part) / whole).toFixed(1) + " %" : "–");
const label = (row) => (row.group === null ? "(none)" : row.key_alias || row.group);

function table(columns, rows, empty = "No requests in this period.") {
  if (!rows.length) return h("p", { class: "muted" }, empty);
  return h("table", {},
    h("thead", {}, h("tr", {}, columns.map(([title]) => h("th", {}, title)))),
    h("tbody", {}, rows.map((row) => h("tr", {}, columns.map(([, cell]) => h("td", {}, cell(row)))))));
}

function tile(title, value, note) {
  return h("div", { class: "tile" }, h("span", { class: "tile-title" }, title), h("strong", {}, value),
    note ? h("span", { class: "muted" }, note) : null);
}

function section(title, ...body) {
  return h("section", {}, h("h2", {}, title), ...body);
}

// A stacked time series: per bucket, ``measure`` summed per group, the top groups apart and the rest as "other".
function chart(title, report, measure, format) {
  const box = h("div", { class: "chart", role: "img", "aria-label": title });
  const buckets = [];
  for (let t = report.start; t <= Date.now() / 1000; t += report.bucket_s) buckets.push(t);
  const top = report.totals.slice().sort((a, b) => measure(b) - measure(a)).slice(0, TOP_GROUPS).map(label);
  const names = [...top];
  if (report.totals.length > TOP_GROUPS) names.push("other");
  const index = new Map(buckets.map((t, i) => [t, i]));
  const values = names.map(() => buckets.map(() => 0));
  for (const row of report.series) {
    const i = index.get(row.bucket);
    if (i === undefined) continue;
    const g = top.indexOf(label(row));
    values[g === -1 ? names.length - 1 : g][i] += measure(row);
  }
  for (let g = 1; g < values.length; g++) for (let i = 0; i < buckets.length; i++) values[g][i] += values[g - 1][i];
  const series = [{}, ...names.map((name, g) => ({
    label: name, stroke: PALETTE[g % PALETTE.length], fill: PALETTE[g % PALETTE.length] + "33", width: 1.5,
    value: (u, v) => (v === null ? "–" : format(v)),
  }))];
  requestAnimationFrame(() => {
    const width = Math.max(320, box.clientWidth || 720);
    charts.push(new uPlot({ title, width, height: 240, series, axes: [{}, { size: 80, values: (u, ticks) => ticks.map(format) }] },
      [buckets, ...values], box));
  });
  return box;
}

async function report(groupBy) {
  return api(`/ui/api/report?group_by=${encodeURIComponent(groupBy)}&period=${periodSelect.value}`);
}

// -- forms that create keys and teams --------------------------------------------------------------------------
// A form that creates a record through the API, then reloads its tab with ``shown(record)`` as a notice, or shows
// the API's error: the page applies no rule of its own.
function createForm(id, url, tab, note, toBody, shown, ...controls) {
  const form = h("form", { class: "inline", id, on: { submit: async (event) => {
    event.preventDefault();
    try {
      const made = await api(url, { method: "POST", body: JSON.stringify(toBody(new FormData(form))) });
      note.replaceChildren(h("p", { class: "notice", role: "status" }, ...shown(made)));
      await show(tab, note);
    } catch (error) {
      note.replaceChildren(h("p", { class: "error", role: "alert" }, error.message));
    }
  } } }, ...controls);
  return form;
}

// ``body`` with the budget, the model list and the ``names`` fields the form filled in (an empty one is left out).
function optional(fields, body, ...names) {
  if (fields.get("max_budget")) body.max_budget = Number(fields.get("max_budget"));
  if (fields.get("models")) body.models = String(fields.get("models")).split(",").map((m) => m.trim()).filter(Boolean);
  for (const name of names) if (fields.get(name)) body[name] = fields.get(name);
  return body;
}

const budgetInput = () => h("input", { name: "max_budget", placeholder: "budget USD", type: "number", step: "any",
  min: "0", "aria-label": "budget" });
const modelsInput = () => h("input", { name: "models", placeholder: "models (comma-separated)", "aria-label": "models" });

// -- tabs -----------------------------------------------------------------------------------------------------
const tabs = {
  async overview() {
    const data = await report(groupSelect.value);
    const sum = (f) => data.totals.reduce((s, r) => s + (f(r) || 0), 0);
    const requests = sum((r) => r.requests), successes = sum((r) => r.successes), cost = sum((r) => r.cost_usd);
    const saved = data.savings.exact.usd + data.savings.semantic.usd + data.savings.prompt.usd;
    return [
      h("div", { class: "tiles" },
        tile("Requests", int(requests), `${pct(requests - successes, requests)} failed or rated bad`),
        tile("Spend", usd(cost)),
        tile("Cost per successful answer", successes ? usd(cost / successes) : "–"),
        tile("Saved by caching", usd(saved), `${int(data.savings.exact.requests + data.savings.semantic.requests)} cached answers`)),
      section(`Spend by ${groupSelect.selectedOptions[0].text}`, chart("Spend (USD)", data, (r) => r.cost_usd, usd),
        chart("Requests", data, (r) => r.requests, int)),
      section("Totals", table([
        ["Group", label], ["Requests", (r) => int(r.requests)], ["Failures", (r) => int(r.failures)],
        ["Spend", (r) => usd(r.cost_usd)], ["Per success", (r) => usd(r.cost_per_success_usd)],
        ["Tokens in", (r) => int(r.prompt_tokens)], ["Tokens out", (r) => int(r.completion_tokens)],
        ["Avg latency", (r) => ms(r.avg_latency_ms)], ["Avg feedback", (r) => (r.avg_feedback_score ?? "–")],
      ], data.totals)),
    ];
  },

  async routing() {
    const [tiers, served, decisions] = await Promise.all([report("tier"), report("model_group"),
      api(`/ui/api/decisions?period=${periodSelect.value}`)]);
    const share = (rows) => (r) => pct(r.requests, rows.reduce((s, x) => s + x.requests, 0));
    return [
      section("Which tier answered", chart("Requests by tier", tiers, (r) => r.requests, int),
        table([["Tier", label], ["Requests", (r) => int(r.requests)], ["Share", share(tiers.totals)],
          ["Spend", (r) => usd(r.cost_usd)], ["Per success", (r) => usd(r.cost_per_success_usd)]], tiers.totals)),
      section("Model that served", table([["Model", label], ["Requests", (r) => int(r.requests)],
        ["Share", share(served.totals)], ["Retries", (r) => int(r.retries)], ["Fallbacks", (r) => int(r.fallbacks)],
        ["Spend", (r) => usd(r.cost_usd)]], served.totals)),
      section("Virtual models' decisions", h("p", { class: "muted" }, `From the latest ${int(decisions.rows_read)} requests.`),
        table([["Virtual model", (d) => `${d.name} (${d.kind})`], ["Requests", (d) => int(d.requests)],
          ["Escalated", (d) => (d.escalated === null ? "–" : pct(d.escalated, d.requests))],
          ["Outcomes", (d) => Object.entries(d.outcomes).map(([o, n]) => `${o}: ${pct(n, d.requests)}`).join(" · ")]],
        decisions.virtual_models, "No learned router, cascade, verifier, consensus or review answered in this period.")),
    ];
  },

  async cache() {
    const data = await report("cache");
    const total = data.totals.reduce((s, r) => s + r.requests, 0);
    const count = (name) => (data.totals.find((r) => r.group === name) || { requests: 0 }).requests;
    const s = data.savings;
    return [
      h("div", { class: "tiles" },
        tile("Exact hits", int(count("hit")), pct(count("hit"), total)),
        tile("Semantic hits", int(count("semantic-hit")), pct(count("semantic-hit"), total)),
        tile("Explorations", int(count("explore")), "forwarded to check a cached answer"),
        tile("Saved", usd(s.exact.usd + s.semantic.usd + s.prompt.usd), `${int(s.prompt.tokens)} provider-cached prompt tokens`)),
      section("Cache outcomes over time", chart("Requests by cache outcome", data, (r) => r.requests, int)),
      section("Outcomes", table([["Outcome", label], ["Requests", (r) => int(r.requests)], ["Share", (r) => pct(r.requests, total)],
        ["Spend", (r) => usd(r.cost_usd)], ["Avg latency", (r) => ms(r.avg_latency_ms)]], data.totals)),
    ];
  },

  async deployments() {
    const [health, usage] = await Promise.all([api("/health"), report("deployment")]);
    const byId = new Map(usage.totals.map((r) => [r.group, r]));
    return [
      h("div", { class: "tiles" }, tile("Healthy", int(health.healthy_count)), tile("Cooling down", int(health.unhealthy_count))),
      section("Deployments", table([
        ["Deployment", (d) => d.id], ["Model", (d) => d.model_name], ["State", (d) => h("span",
          { class: d.healthy ? "ok" : "bad" }, d.healthy ? "healthy" : `cooling down ${d.cooldown_remaining_s}s`)],
        ["Recent failures", (d) => int(d.recent_failures)],
        ["Requests", (d) => int((byId.get(d.id) || {}).requests || 0)],
        ["Avg latency", (d) => ms((byId.get(d.id) || {}).avg_latency_ms)],
        ["Avg first token", (d) => ms((byId.get(d.id) || {}).avg_ttft_ms)],
        ["Spend", (d) => usd((byId.get(d.id) || {}).cost_usd || 0)],
      ], health.deployments, "No deployments.")),
    ];
  },

  async live() {
    const body = h("tbody");
    const counter = h("span", { class: "muted" }, "waiting for requests…");
    let seen = 0, dropped = 0;
    live = new EventSource("/ui/api/live");
    live.onmessage = (event) => {
      const batch = JSON.parse(event.data);
      seen += batch.lines.length;
      dropped += batch.dropped;
      // Each line is the values of live_log.LINE, in that order.
      for (const [started, status, model, deployment, latency, ttft, tokensIn, tokensOut, cost, cache, key, error, prompt] of batch.lines) {
        const row = h("tr", { class: status >= 400 ? "bad" : null },
          [new Date(started * 1000).toISOString().slice(11, 23), status, model, deployment, ms(latency), ms(ttft),
            `${int(tokensIn)} → ${int(tokensOut)}`, usd(cost), cache, key, error].map((v) => h("td", {}, v ?? "")));
        if (prompt) row.append(h("td", { class: "prompt", title: prompt }, prompt));
        body.prepend(row);
      }
      while (body.rows.length > 500) body.deleteRow(-1);
      counter.textContent = `${int(seen)} requests since the page opened` + (dropped ? `, ${int(dropped)} not shown (too fast)` : "");
    };
    return [section("Live requests", h("p", { class: "muted" },
      "Finished requests as they happen on the worker this page reached; never keys, and prompts only where the " +
      "operator turned them on (general_settings.ui_log_prompts). ", counter),
      h("table", { class: "live" }, h("thead", {}, h("tr", {}, ["Time", "Status", "Model", "Deployment", "Latency",
        "First token", "Tokens", "Cost", "Cache", "Key", "Error"].map((t) => h("th", {}, t)))), body))];
  },

  async keys() {
    const [listing, teams] = await Promise.all([api("/key/list?return_full_object=true&size=1000"), api("/team/list")]);
    const created = h("div");
    const form = createForm("new-key", "/key/generate", "keys", created,
      (fields) => optional(fields, { key_alias: fields.get("key_alias") || null }, "duration", "team_id"),
      (key) => ["New key (shown once): ", h("code", { id: "created-key" }, key.key)],
      h("input", { name: "key_alias", placeholder: "alias", "aria-label": "alias" }),
      budgetInput(), modelsInput(),
      h("input", { name: "duration", placeholder: "expires after (e.g. 30d)", "aria-label": "duration" }),
      h("select", { name: "team_id", "aria-label": "team" }, h("option", { value: "" }, "no team"),
        teams.map((t) => h("option", { value: t.team_id }, t.team_alias || t.team_id))),
      h("button", { type: "submit" }, "Create key"));
    const revoke = (key) => async () => {
      if (!confirm(`Revoke ${key.key_alias || key.key_name}? Requests with it will be refused at once.`)) return;
      await api("/key/delete", { method: "POST", body: JSON.stringify({ keys: [key.token] }) });
      await show("keys", created);
    };
    return [section("Create a key", form, created),
      section("Keys", table([["Alias", (k) => k.key_alias || "–"], ["Key", (k) => k.key_name], ["Team", (k) => k.team_id || "–"],
        ["Models", (k) => (k.models.length ? k.models.join(", ") : "all")], ["Spend", (k) => usd(k.spend)],
        ["Budget", (k) => usd(k.max_budget)], ["Expires", (k) => k.expires || "never"],
        ["", (k) => h("button", { class: "danger", "data-key": k.key_alias || k.key_name, on: { click: revoke(k) } }, "Revoke")]],
      listing.keys, "No virtual keys yet."))];
  },
};

tabs.teams = async function teams() {
  const listing = await api("/team/list");
  const note = h("div");
  const form = createForm("new-team", "/team/new", "teams", note,
    (fields) => optional(fields, { team_alias: fields.get("team_alias") || null }, "budget_duration"),
    (team) => ["Team created: ", h("code", {}, team.team_id)],
    h("input", { name: "team_alias", placeholder: "team name", "aria-label": "team name" }),
    budgetInput(),
    h("input", { name: "budget_duration", placeholder: "resets every (e.g. 30d)", "aria-label": "budget period" }),
    modelsInput(),
    h("button", { type: "submit" }, "Create team"));
  const remove = (team) => async () => {
    if (!confirm(`Delete team ${team.team_alias || team.team_id} and its keys?`)) return;
    await api("/team/delete", { method: "POST", body: JSON.stringify({ team_ids: [team.team_id] }) });
    await show("teams", note);
  };
  return [section("Create a team", form, note),
    section("Teams", table([["Team", (t) => t.team_alias || t.team_id], ["Id", (t) => t.team_id],
      ["Models", (t) => (t.models.length ? t.models.join(", ") : "all")], ["Spend", (t) => usd(t.spend)],
      ["Budget", (t) => usd(t.max_budget)], ["Resets", (t) => t.budget_duration || "never"],
      ["State", (t) => (t.blocked ? h("span", { class: "bad" }, "blocked") : "active")],
      ["", (t) => h("button", { class: "danger", "data-team": t.team_alias || t.team_id, on: { click: remove(t) } }, "Delete")]],
    listing, "No teams yet."))];
};

// -- navigation -----------------------------------------------------------------------------------------------
let shown = 0; // the latest show(): an earlier one still loading must not draw over it

async function show(name, keep) {
  const turn = ++shown;
  if (!tabs[name] || ((name === "keys" || name === "teams") && !admin)) name = "overview";
  if (live) { live.close(); live = null; }
  for (const c of charts) c.destroy();
  charts = [];
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.dataset.tab === name);
  groupSelect.parentElement.hidden = name !== "overview";
  statusLine.textContent = "loading…";
  try {
    const content = await tabs[name]();
    if (turn !== shown) {
      if (live && name === "live") { live.close(); live = null; }
      return;
    }
    view.replaceChildren(...(keep ? [keep] : []), ...content);
    statusLine.textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    if (turn !== shown) return;
    view.replaceChildren(h("p", { class: "error", role: "alert" }, error.message));
    statusLine.textContent = "";
  }
}

const current = () => location.hash.slice(1) || "overview";
window.addEventListener("hashchange", () => show(current()));
for (const control of [periodSelect, groupSelect]) control.addEventListener("change", () => show(current()));
document.getElementById("refresh").addEventListener("click", () => show(current()));
show(current());
