// NanoBanana's console: a client of the public API only. The session is an HttpOnly cookie
// (`?session=cookie` on register/login); every state-changing request sends the CSRF cookie's
// value back in `X-CSRF-Token`. No inline scripts or styles: the page's CSP forbids them.

const STYLES = ["natural", "artistic"];

const state = {
  me: null,
  // The generation the playground continues ("Edit this image" in the history), if any.
  continueFrom: null,
};

// ---- DOM helpers (text only: nothing from the API is ever parsed as HTML) ----

function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (value === true) element.setAttribute(name, "");
    else element.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

function svg(tag, attributes = {}, ...children) {
  const element = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, String(value));
  for (const child of children.flat()) {
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

function show(title, ...content) {
  const view = document.getElementById("view");
  const heading = h("h1", { tabindex: "-1" }, title);
  view.replaceChildren(heading, ...content);
  document.title = `${title} · NanoBanana console`;
  heading.focus();
}

function announce(message) {
  document.getElementById("status").textContent = message;
}

function formatDate(text) {
  return text ? new Date(text).toLocaleString() : "—";
}

// ---- The API ----

function csrfToken() {
  const found = document.cookie.split("; ").find((pair) => pair.startsWith("nb_csrf="));
  return found ? decodeURIComponent(found.slice("nb_csrf=".length)) : "";
}

async function api(method, path, body, { apiKey } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (apiKey) headers.Authorization = `Bearer ${apiKey}`;
  else if (method !== "GET") headers["X-CSRF-Token"] = csrfToken();
  const response = await fetch(path, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = response.status === 204 ? null : await response.json().catch(() => null);
  return { ok: response.ok, status: response.status, data, response };
}

function errorOf(result) {
  const error = (result.data && result.data.error) || {};
  return {
    field: error.field || null,
    message: error.message || `The server answered ${result.status}.`,
  };
}

// The user's keys (up to 100, newest first): `keys` is empty when the answer is not ok.
async function listKeys() {
  const answer = await api("GET", "/v1/keys?limit=100");
  return { answer, keys: (answer.ok && answer.data.keys) || [] };
}

// A form whose fields show the API's errors next to themselves.
function field(id, label, control, hint) {
  const errorId = `${id}-error`;
  control.id = id;
  control.setAttribute("aria-describedby", errorId);
  return h(
    "div",
    { class: "field" },
    h("label", { for: id }, label),
    hint ? h("span", { class: "muted" }, hint) : null,
    control,
    h("p", { class: "error", id: errorId }),
  );
}

function clearErrors(form) {
  for (const error of form.querySelectorAll(".error")) error.textContent = "";
  for (const control of form.querySelectorAll("[aria-invalid]")) control.removeAttribute("aria-invalid");
}

function showError(form, result, fieldIds = {}) {
  const { field: name, message } = errorOf(result);
  const id = name && fieldIds[name];
  const target = (id && form.querySelector(`#${id}-error`)) || form.querySelector(".form-error");
  target.textContent = message;
  if (id) {
    const control = form.querySelector(`#${id}`);
    control.setAttribute("aria-invalid", "true");
    control.focus();
  }
  announce(message);
}

async function submitting(form, work) {
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  clearErrors(form);
  try {
    await work();
  } finally {
    button.disabled = false;
  }
}

// ---- Pages ----

function authPage(kind) {
  const signup = kind === "signup";
  const email = h("input", { type: "email", autocomplete: "email", required: true });
  const password = h("input", {
    type: "password",
    autocomplete: signup ? "new-password" : "current-password",
    required: true,
  });
  const form = h(
    "form",
    { class: "stack", novalidate: true },
    field("email", "Email", email),
    field("password", "Password", password, signup ? "At least 8 characters." : null),
    h("p", { class: "error form-error" }),
    h("button", { type: "submit" }, signup ? "Create account" : "Log in"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    submitting(form, async () => {
      const path = signup ? "/v1/auth/register?session=cookie" : "/v1/auth/login?session=cookie";
      const result = await api("POST", path, { email: email.value, password: password.value });
      if (!result.ok) {
        showError(form, result, { email: "email", password: "password" });
        return;
      }
      // `/v1/auth/me` also says whether the user is an operator.
      const me = await api("GET", "/v1/auth/me");
      state.me = me.ok ? me.data : result.data.user;
      await refreshNav();
      location.hash = "#/keys";
    });
  });
  const other = signup
    ? h("p", {}, "Have an account? ", h("a", { href: "#/login" }, "Log in"))
    : h("p", {}, "New here? ", h("a", { href: "#/signup" }, "Create an account"));
  show(signup ? "Create an account" : "Log in", form, other);
}

// Dollars as the server sends them ("0.067200"): micro-dollars, to add without float error.
function micros(usd) {
  const [whole, fraction = ""] = String(usd || "0").split(".");
  return Number(whole) * 1e6 + Number(fraction.padEnd(6, "0").slice(0, 6));
}

// Micro-dollars shown as dollars: cents when that is exact enough, else 4 decimals.
function dollars(amount) {
  const value = amount / 1e6;
  return value === 0 || value >= 1 ? `$${value.toFixed(2)}` : `$${value.toFixed(4)}`;
}

function limitsText(limits) {
  const parts = [];
  if (limits.per_minute) parts.push(`${limits.per_minute}/min`);
  if (limits.per_day) parts.push(`${limits.per_day}/day`);
  if (limits.per_month) parts.push(`${limits.per_month}/month`);
  if (limits.budget_usd_per_day) parts.push(`${dollars(micros(limits.budget_usd_per_day))}/day`);
  if (limits.budget_usd_per_month) parts.push(`${dollars(micros(limits.budget_usd_per_month))}/month`);
  return parts.length ? parts.join(", ") : "defaults";
}

// A secret shown this once (a new key, a webhook's signing secret), with a Copy button.
function shownOnce(secret, { id, copyId, label, warning, detail }) {
  const input = h("input", { type: "text", readonly: true, value: secret, "aria-label": label });
  const copied = h("span", { role: "status", class: "muted" });
  const copy = h("button", { type: "button", id: copyId }, "Copy");
  copy.addEventListener("click", async () => {
    input.select();
    try {
      await navigator.clipboard.writeText(secret);
    } catch {
      document.execCommand("copy");
    }
    copied.textContent = "Copied.";
  });
  return h(
    "div",
    { class: "notice secret", id },
    h("p", {}, h("strong", {}, warning), ` ${detail}`),
    h("div", { class: "row" }, input, copy, copied),
  );
}

function secretPanel(key) {
  return shownOnce(key, {
    id: "new-key",
    copyId: "copy-key",
    label: "Your new API key",
    warning: "Copy this key now: you will not see it again.",
    detail: "It is stored only as a hash.",
  });
}

async function keysPage() {
  const name = h("input", { type: "text", maxlength: 100 });
  const mode = h("select", {}, h("option", { value: "live" }, "live (calls the model)"), h("option", { value: "test" }, "test (free, deterministic images)"));
  const budget = h("input", { type: "text", inputmode: "decimal", autocomplete: "off", placeholder: "e.g. 50" });
  const created = h("div");
  const form = h(
    "form",
    { class: "stack" },
    field("key-name", "Name", name, "Optional: where the key is used."),
    field("key-mode", "Mode", mode),
    field("key-budget", "Monthly budget (USD)", budget, "Optional: once its images cost this much in a calendar month (UTC), the key is refused until the 1st."),
    h("p", { class: "error form-error" }),
    h("button", { type: "submit" }, "Create key"),
  );
  const list = h("div", { class: "table-wrap" });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    submitting(form, async () => {
      const body = { name: name.value || null, mode: mode.value };
      const dollars = budget.value.trim();
      if (dollars) {
        // Checked here as the server would (it checks again), so a typo costs no request.
        if (!/^\d*\.?\d+$/.test(dollars) || !/^\d*(\.\d{1,9})?$/.test(dollars)) {
          showError(form, { ok: false, data: { error: { field: "limits.budget_usd_per_month", message: 'The budget must be an amount of US dollars, e.g. 50 or 12.50 (at most 9 decimals).' } } }, { "limits.budget_usd_per_month": "key-budget" });
          return;
        }
        body.limits = { budget_usd_per_month: dollars };
      }
      const result = await api("POST", "/v1/keys", body);
      if (!result.ok) {
        showError(form, result, { name: "key-name", mode: "key-mode", "limits.budget_usd_per_month": "key-budget" });
        return;
      }
      budget.value = "";
      rememberKey(result.data.id, result.data.key);
      created.replaceChildren(secretPanel(result.data.key));
      name.value = "";
      announce("Key created. Copy it now: you will not see it again.");
      await renderKeys(list, created);
    });
  });
  show("API keys", h("h2", {}, "New key"), form, created, h("h2", {}, "Your keys"), list);
  await renderKeys(list, created);
}

async function renderKeys(list, created) {
  const { answer, keys } = await listKeys();
  if (!answer.ok) {
    list.replaceChildren(h("p", { class: "error" }, errorOf(answer).message));
    return;
  }
  if (!keys.length) {
    list.replaceChildren(h("p", { class: "muted" }, "No keys yet."));
    return;
  }
  const rows = keys.map((key) => {
    const actions = h("div", { class: "row" });
    if (key.is_active) {
      const revoke = h("button", { type: "button", class: "danger", "data-key": key.prefix }, "Revoke");
      revoke.addEventListener("click", async () => {
        if (!window.confirm(`Revoke ${key.prefix}…? Requests with it will be refused at once.`)) return;
        const answer = await api("DELETE", `/v1/keys/${key.id}`);
        announce(answer.ok ? `Key ${key.prefix}… revoked.` : errorOf(answer).message);
        await renderKeys(list, created);
      });
      const roll = h("button", { type: "button", class: "secondary" }, "Roll");
      roll.addEventListener("click", async () => {
        if (!window.confirm(`Replace ${key.prefix}… with a new key? The old one keeps working for 24 hours.`)) return;
        const answer = await api("POST", `/v1/keys/${key.id}/roll`, {});
        if (answer.ok) {
          rememberKey(answer.data.id, answer.data.key);
          created.replaceChildren(secretPanel(answer.data.key));
        }
        announce(answer.ok ? "Key rolled. Copy the new key now." : errorOf(answer).message);
        await renderKeys(list, created);
      });
      actions.append(roll, revoke);
    }
    if (key.is_active) actions.append(keyLimitsEditor(key, () => renderKeys(list, created)));
    return h(
      "tr",
      { "data-key-id": key.id },
      labelled("Prefix", h("code", {}, `${key.prefix}…`)),
      labelled("Name", key.name || "—"),
      labelled("Mode", key.mode),
      labelled("Limits", limitsText(key.limits || {}), { class: "limits" }),
      labelled("Spent this month", dollars(micros(key.usage && key.usage.spend_this_month_usd)), { class: "num spend" }),
      labelled("Last used", formatDate(key.last_used_at)),
      labelled("Expires", formatDate(key.expires_at)),
      labelled("Status", key.is_active ? "active" : "revoked"),
      labelled("Actions", actions, { class: "actions" }),
    );
  });
  list.replaceChildren(
    h(
      "table",
      { id: "keys", class: "cards-narrow" },
      h("thead", {}, h("tr", {}, ["Prefix", "Name", "Mode", "Limits", "Spent this month", "Last used", "Expires", "Status", "Actions"].map((title) => h("th", { scope: "col" }, title)))),
      h("tbody", {}, rows),
    ),
  );
}

// A cell that says its column's name, shown beside it where a narrow screen makes the table's
// rows cards (`table.cards-narrow`).
function labelled(label, content, attributes = {}) {
  return h("td", { "data-label": label, ...attributes }, h("div", {}, content));
}

// Dollars as the server sends them ("50.000000"), shown without trailing zeros.
function plainDollars(usd) {
  return usd ? usd.replace(/\.?0+$/, "") : "";
}

// A key's quotas and budgets, changed in place (`PATCH /v1/keys/{id}`): an empty field
// removes that limit.
function keyLimitsEditor(key, saved) {
  const limits = key.limits || {};
  const number = (id, label, value) => field(`${id}-${key.id}`, label, h("input", { type: "number", min: 1, step: 1, inputmode: "numeric", value: value ?? "", class: "limit" }));
  const money = (id, label, value) => field(`${id}-${key.id}`, label, h("input", { type: "text", inputmode: "decimal", value: plainDollars(value), class: "budget" }));
  const fields = {
    per_minute: number("per-minute", "Images per minute", limits.per_minute),
    per_day: number("per-day", "Images per day", limits.per_day),
    per_month: number("per-month", "Images per month", limits.per_month),
    budget_usd_per_day: money("budget-day", "$ per day", limits.budget_usd_per_day),
    budget_usd_per_month: money("budget-month", "$ per month", limits.budget_usd_per_month),
  };
  const form = h("form", { class: "limits-editor" }, Object.values(fields), h("p", { class: "error form-error" }), h("button", { type: "submit", class: "secondary" }, "Save limits"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    submitting(form, async () => {
      const patch = {};
      for (const [name, wrapper] of Object.entries(fields)) {
        const value = wrapper.querySelector("input").value.trim();
        patch[name] = value === "" ? null : name.startsWith("budget") ? value : Number(value);
      }
      const answer = await api("PATCH", `/v1/keys/${key.id}`, { limits: patch });
      if (!answer.ok) {
        const ids = Object.fromEntries(Object.entries(fields).map(([name, wrapper]) => [`limits.${name}`, wrapper.querySelector("input").id]));
        showError(form, answer, ids);
        return;
      }
      announce(`Limits of ${key.prefix}… saved.`);
      await saved();
    });
  });
  return h("details", { class: "edit-limits" }, h("summary", {}, "Edit limits"), form);
}

function lastDays(count) {
  const days = [];
  const today = new Date();
  for (let back = count - 1; back >= 0; back -= 1) {
    const day = new Date(Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), today.getUTCDate() - back));
    days.push(day.toISOString().slice(0, 10));
  }
  return days;
}

// A round step for about `ticks` ticks up to `max`: 1, 2 or 5 times a power of ten.
function niceStep(max, ticks) {
  const raw = max / ticks;
  const power = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((factor) => factor * power).find((step) => step >= raw);
}

// Bars of one value a day over the last 30 days, drawn at the width it is shown at (so its
// text stays 13 px on a phone): a y-axis with a few ticks, the first, middle and last days
// under it. `shown` writes a value (a tick, a bar's title), `unit` ends a bar's title, and
// `whole` says whether values are whole (images) so ticks are too.
function chart(counts, { id, name, width, shown = String, unit = (value) => ` image${value === 1 ? "" : "s"}`, whole = true }) {
  const days = lastDays(30);
  const values = days.map((day) => counts.get(day) || 0);
  const height = 220;
  const right = 8;
  const top = 12;
  const plot = height - 28;
  const peak = Math.max(...values);
  const step = peak ? Math.max(whole ? 1 : 0, niceStep(peak, 4)) : 1;
  const max = Math.max(step, Math.ceil(peak / step) * step);
  const tickValues = [];
  for (let value = 0; value <= max + step / 2; value += step) tickValues.push(value);
  // Room for the longest tick label (about 8 px a character at 13 px).
  const left = 14 + 8 * Math.max(...tickValues.map((value) => shown(value).length));
  const y = (value) => plot - (value / max) * (plot - top);
  const barWidth = (width - left - right) / days.length;
  const ticks = tickValues.map((value) =>
    svg(
      "g",
      { class: "tick" },
      svg("line", { class: "grid", x1: left, y1: y(value), x2: width - right, y2: y(value) }),
      svg("text", { x: left - 6, y: y(value) + 4, "text-anchor": "end" }, shown(value)),
    ),
  );
  const bars = values.map((value, index) =>
    svg(
      "g",
      { "data-day": days[index], "data-count": value },
      svg("rect", { class: "bar", x: left + index * barWidth + 1, y: y(value), width: Math.max(1, barWidth - 2), height: plot - y(value) }),
      svg("title", {}, `${days[index]}: ${shown(value)}${unit(value)}`),
    ),
  );
  // Day labels: the first anchored at its start, the last at its end, so neither is cut off.
  const labels = [
    [0, "start", left],
    [15, "middle", left + 15.5 * barWidth],
    [29, "end", width - right],
  ].map(([index, anchor, x]) => svg("text", { class: "day", x, y: height - 8, "text-anchor": anchor }, days[index].slice(5)));
  const total = values.reduce((sum, value) => sum + value, 0);
  return svg(
    "svg",
    { class: "chart", id, width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": `${name} per day over the last 30 days: ${shown(total)} in all` },
    ticks,
    svg("line", { class: "axis", x1: left, y1: plot, x2: width - right, y2: plot }),
    bars,
    labels,
  );
}

// A bar showing `used` of `limit`, labelled in words.
function progress(label, used, limit, shown = String) {
  const text = `${label}: ${shown(used)} of ${shown(limit)}`;
  return h(
    "div",
    { class: "progress" },
    h("span", {}, text),
    h("progress", { max: String(limit), value: String(Math.min(used, limit)), "aria-label": text }),
  );
}

// Quotas and budgets that count (a per-minute rate is not one: nothing to show progress of).
const COUNTED = ["per_day", "per_month", "budget_usd_per_day", "budget_usd_per_month"];

// One card of progress bars: `limits` against `usage` (a key's, or the account's).
function limitsCard(title, limits, usage) {
  return h(
    "li",
    { class: "card" },
    h("p", {}, title),
    limits.per_day ? progress("Images today", usage.today || 0, limits.per_day) : null,
    limits.per_month ? progress("Images this month", usage.this_month || 0, limits.per_month) : null,
    limits.budget_usd_per_day ? progress("Spent today", micros(usage.spend_today_usd), micros(limits.budget_usd_per_day), dollars) : null,
    limits.budget_usd_per_month ? progress("Spent this month", micros(usage.spend_this_month_usd), micros(limits.budget_usd_per_month), dollars) : null,
  );
}

// The account's quotas and budgets (an operator's) and each active key's, as progress.
function limitsProgress(me, keys) {
  const limited = (limits) => limits && COUNTED.some((name) => limits[name]);
  const cards = [];
  if (me && limited(me.limits)) cards.push(limitsCard(h("strong", {}, "Your account (all keys)"), me.limits, me.usage || {}));
  for (const key of keys) {
    if (key.is_active && limited(key.limits)) {
      cards.push(limitsCard([h("strong", {}, key.name || "unnamed"), " ", h("code", {}, `${key.prefix}…`)], key.limits, key.usage || {}));
    }
  }
  if (!cards.length) return h("p", { class: "muted" }, "No quota or budget applies (set a key's on the Keys page).");
  return h("ul", { class: "limits-list", id: "usage-limits" }, cards);
}

function usageTable(id, head, rows) {
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { id },
      h("thead", {}, h("tr", {}, head.map(([title, numeric]) => h("th", { scope: "col", class: numeric ? "num" : null }, title)))),
      h("tbody", {}, rows),
    ),
  );
}

// The chart's width: the page's content box (the charts are drawn again when it changes).
function chartWidth() {
  const view = document.getElementById("view");
  const style = getComputedStyle(view);
  return Math.max(280, Math.floor(view.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight)));
}

let usageResize = null;

async function usagePage() {
  const [byDay, byKey, byModel, keys, me] = await Promise.all([
    api("GET", "/v1/usage?days=30&group_by=day"),
    api("GET", "/v1/usage?days=30&group_by=key"),
    api("GET", "/v1/usage?days=30&group_by=model"),
    listKeys(),
    api("GET", "/v1/auth/me"),
  ]);
  if (!byDay.ok || !byKey.ok || !byModel.ok) {
    const failed = [byDay, byKey, byModel].find((answer) => !answer.ok);
    show("Usage", h("p", { class: "error" }, errorOf(failed).message));
    return;
  }
  const counts = new Map(byDay.data.usage.map((row) => [row.day, row.count]));
  const total = byDay.data.usage.reduce((sum, row) => sum + row.count, 0);
  const spendByDay = new Map(byDay.data.usage.map((row) => [row.day, micros(row.cost_usd)]));
  const spent = byDay.data.usage.reduce((sum, row) => sum + micros(row.cost_usd), 0);
  const keyList = keys.keys;
  const names = new Map(keyList.map((key) => [key.id, key]));
  const keyRows = byKey.data.usage.map((row) => {
    const key = names.get(row.api_key_id);
    return h(
      "tr",
      {},
      h("td", {}, key ? h("code", {}, `${key.prefix}…`) : row.api_key_id),
      h("td", {}, key && key.name ? key.name : "—"),
      h("td", { class: "num" }, row.count),
      h("td", { class: "num" }, dollars(micros(row.cost_usd))),
    );
  });
  const modelRows = byModel.data.usage.map((row) =>
    h("tr", {}, h("td", {}, row.model), h("td", { class: "num" }, row.count), h("td", { class: "num" }, dollars(micros(row.cost_usd)))),
  );
  // One chart at a time: images or dollars per day.
  const charts = h("div", { class: "charts" });
  const images = h("input", { type: "radio", name: "chart-of", value: "images", id: "chart-images", checked: true });
  const spend = h("input", { type: "radio", name: "chart-of", value: "spend", id: "chart-spend" });
  const draw = () => {
    const width = chartWidth();
    const imagesChart = chart(counts, { id: "usage-chart", name: "Images", width });
    const spendChart = chart(spendByDay, { id: "spend-chart", name: "Spend", width, shown: dollars, unit: () => "", whole: false });
    // (An SVG element has no `hidden` property: the attribute is set.)
    imagesChart.toggleAttribute("hidden", !images.checked);
    spendChart.toggleAttribute("hidden", !spend.checked);
    charts.replaceChildren(imagesChart, spendChart);
  };
  for (const radio of [images, spend]) radio.addEventListener("change", draw);
  const toggle = h(
    "fieldset",
    { class: "toggle", id: "chart-toggle" },
    h("legend", {}, "Per day"),
    h("label", { class: "check" }, images, " Images"),
    h("label", { class: "check" }, spend, " Dollars"),
  );
  show(
    "Usage",
    h(
      "div",
      { class: "totals" },
      h("p", {}, h("strong", { id: "usage-total" }, String(total)), ` image${total === 1 ? "" : "s"} in the last 30 days (UTC days).`),
      h("p", {}, h("strong", { id: "spend-total" }, dollars(spent)), " spent in the last 30 days (test keys' images are free)."),
    ),
    toggle,
    charts,
    h("h2", {}, "Quotas and budgets"),
    limitsProgress(me.ok ? me.data : null, keyList),
    h("h2", {}, "Per key"),
    keyRows.length ? usageTable("usage-keys", [["Key"], ["Name"], ["Images", true], ["Spent", true]], keyRows) : h("p", { class: "muted" }, "No images yet."),
    h("h2", {}, "Per model"),
    modelRows.length ? usageTable("usage-models", [["Model"], ["Images", true], ["Spent", true]], modelRows) : h("p", { class: "muted" }, "No images yet."),
  );
  draw();
  window.removeEventListener("resize", usageResize);
  usageResize = () => {
    if (charts.isConnected) draw();
    else window.removeEventListener("resize", usageResize);
  };
  window.addEventListener("resize", usageResize);
}

function readAsDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.addEventListener("load", () => resolve(reader.result));
    reader.addEventListener("error", () => reject(reader.error));
    reader.readAsDataURL(file);
  });
}

// ---- API keys the playground may use ----
//
// The server never shows a key twice, so the playground keeps the full keys it has seen (made
// or rolled here, or pasted once) in this tab's sessionStorage, by key id: they survive a
// reload, never leave the tab, and are gone when it closes or on log out. See docs/console.md
// for why that is acceptable beside the HttpOnly session cookie.

const KEY_STORE = "nb_playground_keys";

function storedKeys() {
  try {
    return JSON.parse(sessionStorage.getItem(KEY_STORE) || "{}");
  } catch {
    return {};
  }
}

function rememberKey(id, key) {
  const keys = storedKeys();
  keys[id] = key;
  sessionStorage.setItem(KEY_STORE, JSON.stringify(keys));
}

function forgetKeys() {
  sessionStorage.removeItem(KEY_STORE);
}

const IMAGE_TYPES = ["image/png", "image/jpeg", "image/webp"];

// Input images, from the file picker or dropped on the zone; listed with a Remove button each.
function imagePicker() {
  const chosen = [];
  const input = h("input", { type: "file", accept: IMAGE_TYPES.join(","), multiple: true });
  const list = h("ul", { class: "chosen", id: "chosen-images" });
  const render = () => {
    list.replaceChildren(
      ...chosen.map((file, index) => {
        const remove = h("button", { type: "button", class: "link" }, "Remove");
        remove.addEventListener("click", () => {
          chosen.splice(index, 1);
          render();
        });
        return h("li", {}, `${file.name} (${Math.ceil(file.size / 1024)} KB) `, remove);
      }),
    );
  };
  const add = (files) => {
    for (const file of files) if (IMAGE_TYPES.includes(file.type)) chosen.push(file);
    render();
  };
  input.addEventListener("change", () => {
    add(input.files);
    input.value = "";
  });
  const zone = h("div", { class: "dropzone", id: "dropzone" }, h("p", { class: "muted" }, "Drop PNG, JPEG or WebP images here, or choose files:"), input, list);
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    add(event.dataTransfer.files);
  });
  return { zone, input, files: () => chosen };
}

function detailList(entries) {
  return h("dl", { class: "details" }, entries.flatMap(([term, value]) => [h("dt", {}, term), h("dd", {}, value)]));
}

async function playgroundPage() {
  const keyChoice = h("select", {});
  const pasted = h("input", { type: "password", autocomplete: "off", placeholder: "nb_live_… or nb_test_…" });
  const pasteField = field("api-key", "Paste this key once", pasted, "It was shown once, when it was made; this tab keeps it until it closes.");
  const prompt = h("textarea", { required: true });
  const model = h("select", {});
  const ratio = h("select", {});
  const resolution = h("select", {});
  const style = h("select", {}, STYLES.map((value) => h("option", { value }, value)));
  const images = imagePicker();
  const result = h("section", { class: "result", id: "result", "aria-live": "polite", "aria-label": "Result" });
  // The user's active keys, and the models the server offers (the model catalog).
  const [mine, listed] = await Promise.all([listKeys(), api("GET", "/v1/models")]);
  const keys = mine.keys.filter((key) => key.is_active);
  const known = storedKeys();
  keyChoice.replaceChildren(
    ...keys.map((key) => h("option", { value: key.id }, `${key.name || "unnamed"} · ${key.prefix}… · ${key.mode}${known[key.id] ? "" : " (paste once)"}`)),
  );
  // The newest key this tab holds, else the newest key.
  const held = keys.find((key) => known[key.id]);
  if (held) keyChoice.value = held.id;
  const chosenKey = () => keys.find((key) => key.id === keyChoice.value);
  const needsPaste = () => {
    const key = chosenKey();
    pasteField.hidden = !key || Boolean(storedKeys()[key.id]);
  };
  keyChoice.addEventListener("change", needsPaste);
  needsPaste();
  const models = listed.ok ? (listed.data.data || []).filter((entry) => !entry.retired) : [];
  if (models.length) {
    model.replaceChildren(...models.map((entry) => h("option", { value: entry.id }, entry.id)));
  } else {
    model.replaceChildren(h("option", { value: "" }, "the server's default"));
  }
  const offer = () => {
    const chosen = models.find((entry) => entry.id === model.value);
    const ratios = chosen ? chosen.aspect_ratios : [];
    const resolutions = chosen ? chosen.resolutions : [];
    ratio.replaceChildren(
      h("option", { value: "" }, "auto (the model's choice)"),
      ...ratios.map((value) => h("option", { value }, value)),
    );
    resolution.replaceChildren(...resolutions.map((value) => h("option", { value }, value)));
    resolution.disabled = resolutions.length < 2;
  };
  model.addEventListener("change", offer);
  offer();
  const continuing = h("p", { id: "continuing", class: "muted" });
  const afresh = h("button", { type: "button", class: "secondary" }, "Start afresh");
  afresh.addEventListener("click", () => {
    state.continueFrom = null;
    continuing.replaceChildren();
  });
  const continueFrom = (id) => {
    state.continueFrom = id;
    continuing.replaceChildren(`Continuing from ${id}: the earlier prompts and images are sent again. `, afresh);
  };
  if (state.continueFrom) continueFrom(state.continueFrom);
  const form = h(
    "form",
    { class: "stack" },
    keys.length
      ? field("key-choice", "API key", keyChoice, "Generations are made (and counted) with one of your keys.")
      : h("p", { class: "notice" }, "Generations are made with an API key: ", h("a", { href: "#/keys" }, "create one on the Keys page"), " first."),
    pasteField,
    continuing,
    field("prompt", "Prompt", prompt),
    field("model", "Model", model),
    h("div", { class: "pair" }, field("aspect-ratio", "Aspect ratio", ratio), field("resolution", "Resolution", resolution)),
    field("style", "Style", style),
    h("div", { class: "field" }, h("span", { class: "label" }, "Images to edit (optional)"), images.zone, h("p", { class: "error", id: "images-error" })),
    h("p", { class: "error form-error" }),
    h("button", { type: "submit", disabled: !keys.length }, "Generate"),
  );
  images.input.id = "images";
  images.input.setAttribute("aria-label", "Images to edit");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    submitting(form, async () => {
      const key = chosenKey();
      if (!key) return;
      let secret = storedKeys()[key.id];
      if (!secret) {
        const typed = pasted.value.trim();
        if (!typed.startsWith(key.prefix)) {
          form.querySelector("#api-key-error").textContent = `Paste the whole key that starts with ${key.prefix}.`;
          pasted.setAttribute("aria-invalid", "true");
          pasted.focus();
          return;
        }
        secret = typed;
      }
      const body = { prompt: prompt.value, style: style.value };
      if (model.value) body.model = model.value;
      if (ratio.value) body.aspect_ratio = ratio.value;
      if (resolution.value) body.resolution = resolution.value;
      if (state.continueFrom) body.previous_generation_id = state.continueFrom;
      if (images.files().length) body.images = await Promise.all(images.files().map(readAsDataUrl));
      result.replaceChildren(h("p", {}, "Generating…"));
      const started = performance.now();
      const answer = await api("POST", "/v1/generate", body, { apiKey: secret });
      const seconds = ((performance.now() - started) / 1000).toFixed(2);
      if (answer.status !== 401 && !storedKeys()[key.id]) {
        // The key was taken: this tab keeps it.
        rememberKey(key.id, secret);
        pasted.value = "";
        needsPaste();
      }
      if (!answer.ok) {
        result.replaceChildren();
        showError(form, answer, {
          prompt: "prompt",
          aspect_ratio: "aspect-ratio",
          resolution: "resolution",
          style: "style",
          model: "model",
          images: "images",
          mask: "images",
          previous_generation_id: "prompt",
        });
        return;
      }
      const made = answer.data;
      const image = h("img", { src: made.url, alt: made.prompt, id: "generated-image" });
      const pixels = made.width && made.height ? `${made.width}×${made.height}` : made.size;
      // Continuing is asked for, never assumed: each turn sends every earlier image again.
      const keepEditing = h("button", { type: "button", id: "keep-editing" }, "Edit this image");
      keepEditing.addEventListener("click", () => {
        continueFrom(made.id);
        prompt.value = "";
        prompt.focus();
      });
      result.replaceChildren(
        image,
        h("p", { class: "summary" }, `Made in ${seconds} s.`),
        detailList([
          ["Model", made.model],
          ["Aspect ratio", made.aspect_ratio || "the model's choice"],
          ["Resolution", made.resolution || "—"],
          ["Size", `${pixels} px${made.bytes ? `, ${Math.ceil(made.bytes / 1024)} KB` : ""}`],
          ["Time", `${seconds} s`],
          ["Cost", dollars(micros(made.cost_usd))],
        ]),
        h(
          "p",
          { class: "row" },
          h("a", { href: made.url, download: `${made.id}`, id: "download-image" }, "Download"),
          h("a", { href: made.url, target: "_blank", rel: "noopener" }, "Open"),
          keepEditing,
        ),
      );
      // Beside the form on a wide screen; below it on a narrow one, so brought into view.
      if (result.getBoundingClientRect().top > window.innerHeight / 2) result.scrollIntoView({ block: "start" });
      announce(`Image generated in ${seconds} seconds.`);
    });
  });
  result.replaceChildren(h("p", { class: "muted" }, "Your image appears here."));
  show("Playground", h("div", { class: "playground" }, form, result));
}

// "Edit this image": the playground continues the conversation this generation ends.
function editButton(generation) {
  const edit = h("button", { type: "button" }, "Edit this image");
  edit.addEventListener("click", () => {
    state.continueFrom = generation.id;
    location.hash = "#/playground";
  });
  return edit;
}

const STATUSES = ["queued", "running", "succeeded", "failed", "canceled", "deleted"];

async function historyPage() {
  const gallery = h("ul", { class: "gallery", id: "history" });
  const { keys } = await listKeys();
  const byKey = h("select", {}, h("option", { value: "" }, "All keys"), keys.map((key) => h("option", { value: key.id }, `${key.name || "unnamed"} · ${key.prefix}…`)));
  const byStatus = h("select", {}, h("option", { value: "" }, "Any status"), STATUSES.map((status) => h("option", { value: status }, status)));
  const filters = { key: byKey, status: byStatus };
  for (const select of [byKey, byStatus]) select.addEventListener("change", () => renderHistory(gallery, filters));
  show(
    "History",
    h("form", { class: "filters", id: "history-filters" }, field("filter-key", "Key", byKey), field("filter-status", "Status", byStatus)),
    gallery,
  );
  await renderHistory(gallery, filters);
}

// While jobs are queued or running, the history is read again every two seconds (as long as it
// is on the page).
let historyRefresh = null;

function refreshWhilePending(gallery, filters, generations) {
  clearTimeout(historyRefresh);
  if (!generations.some((generation) => generation.status === "queued" || generation.status === "running")) return;
  historyRefresh = setTimeout(async () => {
    if (gallery.isConnected) await renderHistory(gallery, filters);
  }, 2000);
}

const STATUS_TEXT = {
  queued: "Queued: waiting for a worker…",
  running: "Running…",
  canceled: "Canceled",
  deleted: "Deleted",
};

async function renderHistory(gallery, filters) {
  const query = new URLSearchParams({ limit: "100" });
  if (filters.key.value) query.set("key_id", filters.key.value);
  if (filters.status.value) query.set("status", filters.status.value);
  const result = await api("GET", `/v1/generations?${query}`);
  if (!result.ok) {
    gallery.replaceChildren(h("li", { class: "error" }, errorOf(result).message));
    return;
  }
  const generations = result.data.generations || [];
  if (!generations.length) {
    gallery.replaceChildren(h("li", { class: "muted" }, filters.key.value || filters.status.value ? "Nothing matches these filters." : "Nothing generated yet."));
    return;
  }
  gallery.replaceChildren(
    ...generations.map((generation) => {
      const remove = h("button", { type: "button", class: "danger" }, "Delete");
      remove.addEventListener("click", async () => {
        if (!window.confirm("Delete this image? The record stays; the image is gone for good.")) return;
        const answer = await api("DELETE", `/v1/generations/${generation.id}`);
        announce(answer.ok ? "Image deleted." : errorOf(answer).message);
        await renderHistory(gallery, filters);
      });
      const picture = generation.url
        ? h("img", { src: generation.url, alt: generation.prompt, loading: "lazy" })
        : h(
            "p",
            { class: "muted status" },
            generation.status === "failed"
              ? `Failed: ${(generation.error && generation.error.message) || generation.error_code}`
              : STATUS_TEXT[generation.status] || generation.status,
          );
      const cancel = h("button", { type: "button", class: "secondary" }, "Cancel");
      cancel.addEventListener("click", async () => {
        const answer = await api("POST", `/v1/generations/${generation.id}/cancel`);
        announce(answer.ok ? "Job canceled." : errorOf(answer).message);
        await renderHistory(gallery, filters);
      });
      const pixels = generation.width && generation.height ? `${generation.width}×${generation.height}` : generation.size;
      return h(
        "li",
        { class: "card", "data-status": generation.status, "data-id": generation.id },
        picture,
        h("p", { class: "row spread" }, h("span", { class: "badge", "data-status": generation.status }, generation.status), h("span", { class: "muted" }, formatDate(generation.created_at))),
        h("p", { class: "prompt" }, generation.prompt),
        detailList([
          ["Model", generation.model],
          ["Resolution", generation.resolution || "—"],
          ["Size", pixels],
          ["Cost", generation.status === "failed" ? "—" : dollars(micros(generation.cost_usd))],
        ]),
        generation.url
          ? h(
              "div",
              { class: "row" },
              h("a", { href: generation.url, target: "_blank", rel: "noopener" }, "Open"),
              h("a", { href: generation.url, download: `${generation.id}` }, "Download"),
              editButton(generation),
              remove,
            )
          : generation.status === "queued"
            ? h("div", { class: "row" }, cancel)
            : null,
      );
    }),
  );
  refreshWhilePending(gallery, filters, generations);
}

// ---- Webhooks ----

const EVENTS = ["generation.succeeded", "generation.failed", "generation.canceled"];

function webhookSecretPanel(secret) {
  return shownOnce(secret, {
    id: "new-secret",
    copyId: "copy-secret",
    label: "The webhook's signing secret",
    warning: "Copy this signing secret now: you will not see it again.",
    detail: "Verify each delivery's webhook-signature with it (Standard Webhooks).",
  });
}

async function webhookDeliveries(endpoint, into) {
  const result = await api("GET", `/v1/webhooks/${endpoint.id}/deliveries?limit=20`);
  if (!result.ok) {
    into.replaceChildren(h("p", { class: "error" }, errorOf(result).message));
    return;
  }
  const deliveries = result.data.deliveries || [];
  into.replaceChildren(
    deliveries.length
      ? h(
          "div",
          { class: "table-wrap" },
          h(
            "table",
            { class: "deliveries cards-narrow" },
            h("thead", {}, h("tr", {}, ["When", "Event", "Attempt", "Result", "Time"].map((title) => h("th", { scope: "col" }, title)))),
            h(
              "tbody",
              {},
              deliveries.map((delivery) =>
                h(
                  "tr",
                  { "data-delivered": String(delivery.delivered) },
                  labelled("When", formatDate(delivery.attempted_at)),
                  labelled("Event", delivery.event),
                  labelled("Attempt", delivery.attempt, { class: "num" }),
                  labelled("Result", delivery.delivered ? `delivered (${delivery.status_code})` : delivery.error || `HTTP ${delivery.status_code}`),
                  labelled("Time", `${delivery.duration_ms} ms`, { class: "num" }),
                ),
              ),
            ),
          ),
        )
      : h("p", { class: "muted" }, "No deliveries yet."),
  );
}

async function webhooksPage(created) {
  const url = h("input", { type: "url", required: true, placeholder: "https://example.com/nanobanana", autocomplete: "off" });
  const checks = EVENTS.map((event) => h("input", { type: "checkbox", value: event, checked: true, id: `event-${event.replace(".", "-")}` }));
  const form = h(
    "form",
    { id: "new-webhook", class: "stack" },
    field("webhook-url", "Endpoint URL", url, "https only; it receives a signed POST for each generation that ends"),
    h(
      "fieldset",
      { class: "events" },
      h("legend", {}, "Events"),
      checks.map((check) => h("label", { class: "check" }, check, ` ${check.value}`)),
      h("p", { class: "error", id: "webhook-events-error" }),
    ),
    h("p", { class: "error form-error" }),
    h("button", { type: "submit" }, "Add endpoint"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    submitting(form, async () => {
      const events = checks.filter((check) => check.checked).map((check) => check.value);
      const answer = await api("POST", "/v1/webhooks", { url: url.value.trim(), events });
      if (!answer.ok) {
        showError(form, answer, { url: "webhook-url", events: "webhook-events" });
        return;
      }
      announce("Endpoint added. Copy its signing secret now: you will not see it again.");
      await webhooksPage(answer.data.secret);
    });
  });
  const list = h("ul", { class: "webhooks", id: "webhooks" });
  show("Webhooks", created ? webhookSecretPanel(created) : null, form, h("h2", {}, "Endpoints"), list);
  const result = await api("GET", "/v1/webhooks");
  if (!result.ok) {
    list.replaceChildren(h("li", { class: "error" }, errorOf(result).message));
    return;
  }
  const endpoints = result.data.webhooks || [];
  if (!endpoints.length) {
    list.replaceChildren(h("li", { class: "muted" }, "No endpoints yet."));
    return;
  }
  const loads = [];
  list.replaceChildren(
    ...endpoints.map((endpoint) => {
      const deliveries = h("div", { class: "deliveries-of" });
      loads.push(() => webhookDeliveries(endpoint, deliveries));
      const tested = h("p", { class: "test-result", role: "status" });
      const sendTest = h("button", { type: "button", class: "secondary" }, "Send test event");
      sendTest.addEventListener("click", async () => {
        sendTest.disabled = true;
        tested.textContent = "Sending a test event…";
        const answer = await api("POST", `/v1/webhooks/${endpoint.id}/test`);
        sendTest.disabled = false;
        if (!answer.ok) {
          tested.textContent = errorOf(answer).message;
          return;
        }
        const outcome = answer.data;
        const how = outcome.status_code ? `HTTP ${outcome.status_code}` : outcome.error;
        tested.dataset.delivered = String(outcome.delivered);
        tested.textContent = `${outcome.delivered ? "Test event delivered" : "Test event not delivered"}: ${how} in ${outcome.duration_ms} ms.`;
        announce(tested.textContent);
      });
      const refresh = h("button", { type: "button", class: "secondary" }, "Refresh deliveries");
      refresh.addEventListener("click", () => webhookDeliveries(endpoint, deliveries));
      const rotate = h("button", { type: "button", class: "secondary" }, "Rotate secret");
      rotate.addEventListener("click", async () => {
        if (!window.confirm("Make a new signing secret? The current one keeps signing beside it for 24 hours.")) return;
        const answer = await api("POST", `/v1/webhooks/${endpoint.id}/rotate`);
        if (answer.ok) {
          announce("Secret rotated. Copy the new one now.");
          await webhooksPage(answer.data.secret);
        } else announce(errorOf(answer).message);
      });
      const remove = h("button", { type: "button", class: "danger" }, "Delete");
      remove.addEventListener("click", async () => {
        if (!window.confirm(`Delete the endpoint ${endpoint.url}? Its pending deliveries go with it.`)) return;
        const answer = await api("DELETE", `/v1/webhooks/${endpoint.id}`);
        announce(answer.ok ? "Endpoint deleted." : errorOf(answer).message);
        await webhooksPage();
      });
      return h(
        "li",
        { class: "card", "data-status": endpoint.status },
        h("p", { class: "url" }, endpoint.url),
        h("p", { class: "muted" }, `${endpoint.events.join(", ")} · ${endpoint.status}`),
        h("div", { class: "row" }, sendTest, rotate, remove),
        tested,
        h("h3", {}, "Recent deliveries"),
        deliveries,
        refresh,
      );
    }),
  );
  await Promise.all(loads.map((load) => load()));
}

// The account's quotas: empty means none.
function limitsForm(user) {
  const limits = user.limits || {};
  const number = (label, value) =>
    h("input", { type: "number", min: 1, step: 1, inputmode: "numeric", value: value ?? "", placeholder: label.replace("Images per ", "/ "), "aria-label": `${label} for ${user.email}`, class: "limit" });
  const perDay = number("Images per day", limits.per_day);
  const perMonth = number("Images per month", limits.per_month);
  const shownBudget = plainDollars(limits.budget_usd_per_month);
  const budgetPerMonth = h("input", { type: "text", inputmode: "decimal", value: shownBudget, placeholder: "$ / month", "aria-label": `Dollars per month for ${user.email}`, class: "budget" });
  const error = h("p", { class: "error" });
  const form = h("form", { class: "row limits" }, perDay, perMonth, budgetPerMonth, h("button", { type: "submit", class: "secondary" }, "Save"), error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const value = (input) => (input.value.trim() === "" ? null : Number(input.value));
    const answer = await api("PATCH", `/v1/admin/users/${user.id}`, {
      limits: { per_day: value(perDay), per_month: value(perMonth), budget_usd_per_month: budgetPerMonth.value.trim() || null },
    });
    error.textContent = answer.ok ? "" : errorOf(answer).message;
    announce(answer.ok ? `Limits of ${user.email} saved.` : errorOf(answer).message);
  });
  return form;
}

async function adminPage() {
  const result = await api("GET", "/v1/admin/users?limit=100");
  if (!result.ok) {
    show("Admin", h("p", { class: "error" }, errorOf(result).message));
    return;
  }
  const table = h("div", { class: "table-wrap" });
  const render = (users) => {
    table.replaceChildren(
      h(
        "table",
        { id: "users", class: "cards-narrow" },
        h("thead", {}, h("tr", {}, ["Email", "Today", "This month", "Spent today", "Spent this month", "Limits (images per day / month, $ per month)", "Status", ""].map((title) => h("th", { scope: "col" }, title)))),
        h(
          "tbody",
          {},
          users.map((user) => {
            const toggle = h("button", { type: "button", class: user.disabled ? "secondary" : "danger" }, user.disabled ? "Enable" : "Disable");
            toggle.addEventListener("click", async () => {
              if (!user.disabled && !window.confirm(`Disable ${user.email}? Their keys and sessions stop working.`)) return;
              const answer = await api("PATCH", `/v1/admin/users/${user.id}`, { disabled: !user.disabled });
              announce(answer.ok ? "Saved." : errorOf(answer).message);
              await adminPage();
            });
            return h(
              "tr",
              { "data-email": user.email },
              labelled("Email", user.email),
              labelled("Today", user.usage ? user.usage.today : 0, { class: "num" }),
              labelled("This month", user.usage ? user.usage.this_month : 0, { class: "num" }),
              labelled("Spent today", dollars(micros(user.spend_today_usd)), { class: "num" }),
              labelled("Spent this month", [
                dollars(micros(user.spend_this_month_usd)),
                user.limits && user.limits.budget_usd_per_month ? h("span", { class: "muted budget-of" }, ` of ${dollars(micros(user.limits.budget_usd_per_month))}`) : null,
              ], { class: "num spend" }),
              labelled("Limits", limitsForm(user)),
              labelled("Status", user.disabled ? "disabled" : "active"),
              labelled("Actions", user.id === (state.me && state.me.id) ? "" : toggle, { class: "actions" }),
            );
          }),
        ),
      ),
    );
  };
  render(result.data.users || []);
  show("Admin: users", table);
}

// ---- Navigation ----

const pages = {
  "#/login": { render: () => authPage("login"), public: true },
  "#/signup": { render: () => authPage("signup"), public: true },
  "#/keys": { render: keysPage },
  "#/usage": { render: usagePage },
  "#/playground": { render: playgroundPage },
  "#/history": { render: historyPage },
  "#/webhooks": { render: () => webhooksPage() },
  "#/admin": { render: adminPage },
};

async function refreshNav() {
  const nav = document.getElementById("nav");
  nav.hidden = !state.me;
  // `/v1/auth/me` says whether the user is an operator: no probing of an admin route.
  document.getElementById("nav-admin").hidden = !(state.me && state.me.is_admin);
}

async function route() {
  const hash = pages[location.hash] ? location.hash : state.me ? "#/keys" : "#/login";
  const page = pages[hash];
  if (!page.public && !state.me) {
    location.hash = "#/login";
    return;
  }
  for (const link of document.querySelectorAll("nav a")) {
    if (link.getAttribute("href") === hash) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  await page.render();
}

async function start() {
  const me = await api("GET", "/v1/auth/me");
  state.me = me.ok ? me.data : null;
  await refreshNav();
  document.getElementById("logout").addEventListener("click", async () => {
    await api("POST", "/v1/auth/logout");
    state.me = null;
    state.continueFrom = null;
    forgetKeys();
    await refreshNav();
    location.hash = "#/login";
    announce("Logged out.");
  });
  window.addEventListener("hashchange", route);
  await route();
}

start();
