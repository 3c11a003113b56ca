// NanoBanana's console: a client of the public API only. The session is an HttpOnly cookie
// (`?session=cookie` on register/login); every state-changing request sends the CSRF cookie's
// value back in `X-CSRF-Token`. No inline scripts or styles: the page's CSP forbids them.

const STYLES = ["natural", "artistic"];

const state = {
  me: null,
  isAdmin: false,
  // The last full key shown, kept in this page's memory only (for the playground).
  lastKey: "",
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

function secretPanel(key) {
  const input = h("input", { type: "text", readonly: true, value: key, "aria-label": "Your new API key" });
  const copied = h("span", { role: "status", class: "muted" });
  const copy = h("button", { type: "button", id: "copy-key" }, "Copy");
  copy.addEventListener("click", async () => {
    input.select();
    try {
      await navigator.clipboard.writeText(key);
    } catch {
      document.execCommand("copy");
    }
    copied.textContent = "Copied.";
  });
  return h(
    "div",
    { class: "notice secret", id: "new-key" },
    h("p", {}, h("strong", {}, "Copy this key now: you will not see it again."), " It is stored only as a hash."),
    h("div", { class: "row" }, input, copy, copied),
  );
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
      state.lastKey = result.data.key;
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
  const result = await api("GET", "/v1/keys?limit=100");
  if (!result.ok) {
    list.replaceChildren(h("p", { class: "error" }, errorOf(result).message));
    return;
  }
  const keys = result.data.keys || result.data.data || [];
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
          state.lastKey = answer.data.key;
          created.replaceChildren(secretPanel(answer.data.key));
        }
        announce(answer.ok ? "Key rolled. Copy the new key now." : errorOf(answer).message);
        await renderKeys(list, created);
      });
      actions.append(roll, revoke);
    }
    return h(
      "tr",
      {},
      h("td", {}, h("code", {}, `${key.prefix}…`)),
      h("td", {}, key.name || "—"),
      h("td", {}, key.mode),
      h("td", {}, limitsText(key.limits || {})),
      h("td", { class: "num spend" }, dollars(micros(key.usage && key.usage.spend_this_month_usd))),
      h("td", {}, formatDate(key.last_used_at)),
      h("td", {}, formatDate(key.expires_at)),
      h("td", {}, key.is_active ? "active" : "revoked"),
      h("td", {}, actions),
    );
  });
  list.replaceChildren(
    h(
      "table",
      { id: "keys" },
      h("thead", {}, h("tr", {}, ["Prefix", "Name", "Mode", "Limits", "Spent this month", "Last used", "Expires", "Status", ""].map((title) => h("th", { scope: "col" }, title)))),
      h("tbody", {}, rows),
    ),
  );
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

// Bars of one value a day over the last 30 days; `shown` writes a value, `name` says what
// the chart counts ("images", "spend").
function chart(counts, { id, name, shown = String, unit = (value) => ` image${value === 1 ? "" : "s"}` }) {
  const days = lastDays(30);
  const values = days.map((day) => counts.get(day) || 0);
  const max = Math.max(1, ...values);
  const width = 600;
  const height = 200;
  const barWidth = width / days.length;
  const plot = height - 30;
  // A label near either end is anchored inside the chart, so that it is never cut off.
  const anchored = (index, left, right) =>
    index < 3 ? { x: left, "text-anchor": "start" } : index >= days.length - 3 ? { x: right, "text-anchor": "end" } : { x: (left + right) / 2, "text-anchor": "middle" };
  const bars = values.map((value, index) => {
    const barHeight = (value / max) * (plot - 14);
    const x = index * barWidth + 2;
    return svg(
      "g",
      { "data-day": days[index], "data-count": value },
      svg("rect", { class: "bar", x, y: plot - barHeight, width: barWidth - 4, height: barHeight }),
      value ? svg("text", { class: "value", y: plot - barHeight - 3, ...anchored(index, x, x + barWidth - 4) }, shown(value)) : [],
      svg("title", {}, `${days[index]}: ${shown(value)}${unit(value)}`),
    );
  });
  const labels = [0, 10, 20, 29].map((index) =>
    svg("text", { y: height - 10, ...anchored(index, index * barWidth + 2, (index + 1) * barWidth - 2) }, days[index].slice(5)),
  );
  const total = values.reduce((sum, value) => sum + value, 0);
  return svg(
    "svg",
    { class: "chart", id, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": `${name} per day over the last 30 days: ${shown(total)} in all` },
    svg("line", { class: "axis", x1: 0, y1: plot, x2: width, y2: plot }),
    bars,
    labels,
  );
}

async function usagePage() {
  const [byDay, byKey, keys] = await Promise.all([
    api("GET", "/v1/usage?days=30&group_by=day"),
    api("GET", "/v1/usage?days=30&group_by=key"),
    api("GET", "/v1/keys?limit=100"),
  ]);
  if (!byDay.ok || !byKey.ok) {
    show("Usage", h("p", { class: "error" }, errorOf(byDay.ok ? byKey : byDay).message));
    return;
  }
  const counts = new Map(byDay.data.usage.map((row) => [row.day, row.count]));
  const total = byDay.data.usage.reduce((sum, row) => sum + row.count, 0);
  const spendByDay = new Map(byDay.data.usage.map((row) => [row.day, micros(row.cost_usd)]));
  const spent = byDay.data.usage.reduce((sum, row) => sum + micros(row.cost_usd), 0);
  const names = new Map(((keys.ok && (keys.data.keys || keys.data.data)) || []).map((key) => [key.id, key]));
  const rows = byKey.data.usage.map((row) => {
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
  show(
    "Usage",
    h("p", {}, h("strong", { id: "usage-total" }, String(total)), ` image${total === 1 ? "" : "s"} in the last 30 days (UTC days).`),
    chart(counts, { id: "usage-chart", name: "Images" }),
    h("h2", {}, "Spend"),
    h("p", {}, h("strong", { id: "spend-total" }, dollars(spent)), " spent in the last 30 days (test keys' images are free)."),
    chart(spendByDay, { id: "spend-chart", name: "Spend", shown: dollars, unit: () => "" }),
    h("h2", {}, "Per key"),
    rows.length
      ? h("div", { class: "table-wrap" }, h("table", { id: "usage-keys" }, h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Key"), h("th", { scope: "col" }, "Name"), h("th", { scope: "col", class: "num" }, "Images"), h("th", { scope: "col", class: "num" }, "Spent"))), h("tbody", {}, rows)))
      : h("p", { class: "muted" }, "No images yet."),
  );
}

function readAsDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.addEventListener("load", () => resolve(reader.result));
    reader.addEventListener("error", () => reject(reader.error));
    reader.readAsDataURL(file);
  });
}

async function playgroundPage() {
  const key = h("input", { type: "password", autocomplete: "off", value: state.lastKey, placeholder: "nb_live_… or nb_test_…" });
  const prompt = h("textarea", { required: true });
  const model = h("select", {});
  const ratio = h("select", {});
  const resolution = h("select", {});
  const style = h("select", {}, STYLES.map((value) => h("option", { value }, value)));
  const images = h("input", { type: "file", accept: "image/png,image/jpeg,image/webp", multiple: true });
  const result = h("div", { class: "result", id: "result", "aria-live": "polite" });
  // The models the server offers, with what each can make (the model catalog).
  const listed = await api("GET", "/v1/models");
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
  const afresh = h("button", { type: "button" }, "Start afresh");
  afresh.addEventListener("click", () => {
    state.continueFrom = null;
    continuing.replaceChildren();
  });
  if (state.continueFrom) {
    continuing.replaceChildren(`Continuing from ${state.continueFrom}: the earlier prompts and images are sent again. `, afresh);
  }
  const form = h(
    "form",
    { class: "stack" },
    field("api-key", "API key", key, "Generations are made (and counted) with an API key."),
    continuing,
    field("prompt", "Prompt", prompt),
    field("model", "Model", model),
    field("aspect-ratio", "Aspect ratio", ratio),
    field("resolution", "Resolution", resolution),
    field("style", "Style", style),
    field("images", "Images to edit (optional)", images),
    h("p", { class: "error form-error" }),
    h("button", { type: "submit" }, "Generate"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    submitting(form, async () => {
      const body = { prompt: prompt.value, style: style.value };
      if (model.value) body.model = model.value;
      if (ratio.value) body.aspect_ratio = ratio.value;
      if (resolution.value) body.resolution = resolution.value;
      if (state.continueFrom) body.previous_generation_id = state.continueFrom;
      if (images.files.length) body.images = await Promise.all([...images.files].map(readAsDataUrl));
      if (!key.value.trim()) {
        form.querySelector("#api-key-error").textContent = "Paste an API key (create one on the Keys page).";
        key.setAttribute("aria-invalid", "true");
        key.focus();
        return;
      }
      result.replaceChildren(h("p", {}, "Generating…"));
      const started = performance.now();
      const answer = await api("POST", "/v1/generate", body, { apiKey: key.value.trim() });
      const seconds = ((performance.now() - started) / 1000).toFixed(2);
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
        state.continueFrom = made.id;
        continuing.replaceChildren(`Continuing from ${made.id}: the earlier prompts and images are sent again. `, afresh);
        prompt.value = "";
        prompt.focus();
      });
      result.replaceChildren(
        image,
        h("p", {}, `Made in ${seconds} s · ${pixels} · ${made.aspect_ratio || "the model's ratio"} · ${made.resolution} · ${made.model} · ${dollars(micros(made.cost_usd))}`),
        h("p", { class: "row" }, h("a", { href: made.url, target: "_blank", rel: "noopener" }, "Open the image"), keepEditing),
      );
      announce(`Image generated in ${seconds} seconds.`);
    });
  });
  show("Playground", form, result);
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

async function historyPage() {
  const gallery = h("ul", { class: "gallery", id: "history" });
  show("History", gallery);
  await renderHistory(gallery);
}

// While jobs are queued or running, the history is read again every two seconds (as long as it
// is on the page).
let historyRefresh = null;

function refreshWhilePending(gallery, generations) {
  clearTimeout(historyRefresh);
  if (!generations.some((generation) => generation.status === "queued" || generation.status === "running")) return;
  historyRefresh = setTimeout(async () => {
    if (gallery.isConnected) await renderHistory(gallery);
  }, 2000);
}

const STATUS_TEXT = {
  queued: "Queued: waiting for a worker…",
  running: "Running…",
  canceled: "Canceled",
  deleted: "Deleted",
};

async function renderHistory(gallery) {
  const result = await api("GET", "/v1/generations?limit=100");
  if (!result.ok) {
    gallery.replaceChildren(h("li", { class: "error" }, errorOf(result).message));
    return;
  }
  const generations = result.data.generations || [];
  if (!generations.length) {
    gallery.replaceChildren(h("li", { class: "muted" }, "Nothing generated yet."));
    return;
  }
  gallery.replaceChildren(
    ...generations.map((generation) => {
      const remove = h("button", { type: "button", class: "danger" }, "Delete");
      remove.addEventListener("click", async () => {
        if (!window.confirm("Delete this image? The record stays; the image is gone for good.")) return;
        const answer = await api("DELETE", `/v1/generations/${generation.id}`);
        announce(answer.ok ? "Image deleted." : errorOf(answer).message);
        await renderHistory(gallery);
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
        await renderHistory(gallery);
      });
      return h(
        "li",
        { class: "card", "data-status": generation.status },
        picture,
        h("p", {}, generation.prompt),
        h(
          "p",
          { class: "muted" },
          `${generation.width && generation.height ? `${generation.width}×${generation.height}` : generation.size}` +
            `${generation.resolution ? ` · ${generation.resolution}` : ""}` +
            `${generation.status === "failed" ? "" : ` · ${dollars(micros(generation.cost_usd))}`} · ${formatDate(generation.created_at)}`,
        ),
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
  refreshWhilePending(gallery, generations);
}

// ---- Webhooks ----

const EVENTS = ["generation.succeeded", "generation.failed", "generation.canceled"];

function webhookSecretPanel(secret) {
  const input = h("input", { type: "text", readonly: true, value: secret, "aria-label": "The webhook's signing secret" });
  const copied = h("span", { role: "status", class: "muted" });
  const copy = h("button", { type: "button", id: "copy-secret" }, "Copy");
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
    { class: "notice secret", id: "new-secret" },
    h("p", {}, h("strong", {}, "Copy this signing secret now: you will not see it again."), " Verify each delivery's webhook-signature with it (Standard Webhooks)."),
    h("div", { class: "row" }, input, copy, copied),
  );
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
            { class: "deliveries" },
            h("thead", {}, h("tr", {}, ["When", "Event", "Attempt", "Result", "Time"].map((title) => h("th", { scope: "col" }, title)))),
            h(
              "tbody",
              {},
              deliveries.map((delivery) =>
                h(
                  "tr",
                  { "data-delivered": String(delivery.delivered) },
                  h("td", {}, formatDate(delivery.attempted_at)),
                  h("td", {}, delivery.event),
                  h("td", { class: "num" }, delivery.attempt),
                  h("td", {}, delivery.delivered ? `delivered (${delivery.status_code})` : delivery.error || `HTTP ${delivery.status_code}`),
                  h("td", { class: "num" }, `${delivery.duration_ms} ms`),
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
    { id: "new-webhook" },
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
  list.replaceChildren(
    ...endpoints.map((endpoint) => {
      const deliveries = h("div", { class: "deliveries-of" });
      const showDeliveries = h("button", { type: "button", class: "secondary" }, "Deliveries");
      showDeliveries.addEventListener("click", () => webhookDeliveries(endpoint, deliveries));
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
        h("div", { class: "row" }, showDeliveries, rotate, remove),
        deliveries,
      );
    }),
  );
}

// The account's quotas: empty means none.
function limitsForm(user) {
  const limits = user.limits || {};
  const number = (label, value) =>
    h("input", { type: "number", min: 1, step: 1, inputmode: "numeric", value: value ?? "", "aria-label": `${label} for ${user.email}`, class: "limit" });
  const perDay = number("Images per day", limits.per_day);
  const perMonth = number("Images per month", limits.per_month);
  // Dollars as the server sends them ("50.000000"), shown without the trailing zeros.
  const shownBudget = limits.budget_usd_per_month ? limits.budget_usd_per_month.replace(/\.?0+$/, "") : "";
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
        { id: "users" },
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
              h("td", {}, user.email),
              h("td", { class: "num" }, user.usage ? user.usage.today : 0),
              h("td", { class: "num" }, user.usage ? user.usage.this_month : 0),
              h("td", { class: "num" }, dollars(micros(user.spend_today_usd))),
              h("td", { class: "num spend" }, dollars(micros(user.spend_this_month_usd))),
              h("td", {}, limitsForm(user)),
              h("td", {}, user.disabled ? "disabled" : "active"),
              h("td", {}, user.id === (state.me && state.me.id) ? "" : toggle),
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
  state.isAdmin = Boolean(state.me && state.me.is_admin);
  document.getElementById("nav-admin").hidden = !state.isAdmin;
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
    state.lastKey = "";
    await refreshNav();
    location.hash = "#/login";
    announce("Logged out.");
  });
  window.addEventListener("hashchange", route);
  await route();
}

start();
