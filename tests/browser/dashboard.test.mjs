// The admin dashboard in a real browser (Debian's Chromium, driven by
// playwright-core) against a running daemon. scripts/browser-test starts
// the daemon and a receiver and sets the environment; by hand:
//
//   SLUICE_ADMIN_URL=http://127.0.0.1:9600 SLUICE_PIPELINE=NAME \
//   SLUICE_ADMIN_TOKEN=TOKEN [SLUICE_SCREENSHOT=out.png] node --test tests/browser/
//
// The pipeline must be busy for the whole run (a few thousand jobs a
// second of work for a minute or two). Nothing here sleeps to synchronise:
// it waits for the page (Playwright's auto-waiting) or polls the API until
// a condition holds, with a bound.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { setTimeout as delay } from "node:timers/promises";
import { chromium } from "playwright-core";

function required(name, example) {
  const value = process.env[name];
  if (!value) {
    throw new Error(`set ${name} (e.g. ${example}); scripts/browser-test sets it for you`);
  }
  return value;
}

const BASE = required("SLUICE_ADMIN_URL", "http://127.0.0.1:9600").replace(/\/+$/, "");
const PIPELINE = required("SLUICE_PIPELINE", "browser-check");
const TOKEN = process.env.SLUICE_ADMIN_TOKEN || "";
const SCREENSHOT = process.env.SLUICE_SCREENSHOT || "";
const CARD = `[data-pipeline=${JSON.stringify(PIPELINE)}]`;

let browser;
before(async () => {
  // No browser download: Debian's chromium. launch() gives it a fresh
  // temporary profile and removes it on close.
  browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
});
after(async () => {
  await browser?.close();
});

async function get(path) {
  const headers = TOKEN ? { Authorization: "Bearer " + TOKEN } : {};
  const res = await fetch(BASE + path, { headers, signal: AbortSignal.timeout(5000) });
  const text = await res.text();
  if (!res.ok) throw new Error(`GET ${path} answered ${res.status}: ${text}`);
  return text;
}
const pipeline = async () =>
  JSON.parse(await get(`/api/pipelines/${encodeURIComponent(PIPELINE)}`));

function show(v) {
  if (v instanceof Error) return v.message;
  const s = JSON.stringify(v);
  return s && s.length > 400 ? s.slice(0, 400) + "…" : s;
}

// Polls `read` until `ok` holds of what it returns (like Playwright's
// expect.poll): the condition, not the time, is what the test waits for.
async function until(what, read, ok, { timeout = 15000, every = 200 } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await read();
      if (ok(last)) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() >= deadline) {
      throw new Error(`waited ${timeout} ms until ${what}; last seen: ${show(last)}`);
    }
    await delay(every);
  }
}

// A fresh context (so a fresh localStorage) with the dashboard open and
// this pipeline's card shown. Records script errors and CSP refusals, which
// the test asserts are none.
async function open(t, { token = "", waitForCard = true } = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  t.after(() => context.close());
  // The token the page keeps in localStorage, there before it loads: a
  // daemon with a token answers no /api read without it.
  if (token) {
    await context.addInitScript((token) => localStorage.setItem("sluice-admin-token", token), token);
  }
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (e) => problems.push(`script error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error" && /Content Security Policy|Refused to/i.test(m.text())) {
      problems.push(`console: ${m.text()}`);
    }
  });
  const res = await page.goto(BASE + "/");
  assert.equal(res.status(), 200, "GET / serves the dashboard");
  const card = page.locator(CARD);
  if (waitForCard) await card.waitFor({ timeout: 10000 });
  return { page, card, problems };
}

// Waits until the number shown at data-testid `id` in the card satisfies
// `op` against `n` (commas and other formatting ignored).
async function shown(page, id, op, n, timeout = 10000) {
  const handle = await page.waitForFunction(
    ([card, id, op, n]) => {
      const el = document.querySelector(`${card} [data-testid="${id}"]`);
      if (!el) return false;
      const v = Number(el.textContent.replace(/[^\d.]/g, ""));
      return (op === ">" ? v > n : v === n) ? { v } : null;
    },
    [CARD, id, op, n],
    { timeout },
  );
  return (await handle.jsonValue()).v;
}

const number = async (locator) => Number((await locator.textContent()).replace(/[^\d.]/g, ""));

test("the dashboard shows the pipeline live and drives it", { timeout: 150000 }, async (t) => {
  const { page, card, problems } = await open(t, { token: TOKEN });

  // (a) The card is live: succeeded moves.
  const first = await number(card.getByTestId("succeeded"));
  const later = await shown(page, "succeeded", ">", first);
  assert.ok(later > first);
  await page.getByTestId("connection").filter({ hasText: /^connected/ }).waitFor();

  // (b) Resize through the input and button; the daemon and /metrics agree.
  const target = 7;
  assert.notEqual((await pipeline()).concurrency, target, "the run starts at another limit");
  await card.getByTestId("concurrency-input").fill(String(target));
  await card.getByTestId("concurrency-set").click();
  await until(`the API says concurrency ${target}`, pipeline, (p) => p.concurrency === target);
  await shown(page, "limit", "=", target);
  const line = `sluice_concurrency_limit{pipeline="${PIPELINE}"} ${target}`;
  await until(`/metrics has \`${line}\``, () => get("/metrics"), (m) =>
    m.split("\n").some((l) => l.trim() === line),
  );
  assert.equal(await card.getByTestId("control-error").textContent(), "");

  // (c) Pause: the daemon says so, jobs in flight finish, intake stops.
  await card.getByTestId("pause").click();
  await until("the API says paused", pipeline, (p) => p.paused === true && p.state === "paused");
  await card.getByTestId("state").filter({ hasText: /^paused$/ }).waitFor();
  const drained = await until("nothing is in flight", pipeline, (p) => p.in_flight === 0, {
    timeout: 30000,
  });
  // A bounded observation, not synchronisation: once drained, a paused
  // pipeline takes nothing, so `received` must hold still over 1.5 s.
  for (let i = 0; i < 5; i++) {
    await delay(300);
    const p = await pipeline();
    assert.equal(p.received, drained.received, `received moved while paused (poll ${i + 1})`);
    assert.equal(p.in_flight, 0, `a job started while paused (poll ${i + 1})`);
  }
  await shown(page, "in-flight", "=", 0);

  // (d) Resume: intake starts again.
  await card.getByTestId("resume").click();
  await until(
    "received grows after resume",
    pipeline,
    (p) => p.paused === false && p.received > drained.received,
  );
  await page.waitForFunction(
    (card) => document.querySelector(`${card} [data-testid="state"]`)?.textContent !== "paused",
    CARD,
  );
  const resumed = await number(card.getByTestId("succeeded"));
  await shown(page, "succeeded", ">", resumed);

  // Failed attempts the daemon counted show in the table (the runner's
  // receiver refuses 1% of requests), as text: no markup inside it.
  const counted = await pipeline();
  if (counted.retried + counted.dead_lettered > 0) {
    await page.locator('[data-testid="failures"] tr', { hasText: PIPELINE }).first().waitFor();
  }
  assert.equal(await page.locator('[data-testid="failures"] td *').count(), 0);
  assert.deepEqual(problems, []);

  // (e) A picture for the docs: once the charts cover 30 s (the pause
  // shows as a dip) and throughput has recovered.
  if (SCREENSHOT) {
    await page.waitForFunction(
      (card) => Number(document.querySelector(card)?.dataset.historySeconds) >= 30,
      CARD,
      { timeout: 60000 },
    );
    await shown(page, "throughput", ">", 0);
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
  }
});

test("the API needs the admin token, which the token field supplies", { timeout: 60000 }, async (t) => {
  if (!TOKEN) {
    // Visible in the summary as a skip; scripts/browser-test always sets it.
    t.skip("SLUICE_ADMIN_TOKEN is not set: start the daemon with one and pass it here");
    return;
  }
  const { page, card, problems } = await open(t, { waitForCard: false });
  const connection = page.getByTestId("connection");
  // No token: the daemon shows nothing, and the page says what it needs.
  await connection.filter({ hasText: /admin token needed/ }).waitFor();
  assert.equal(await card.count(), 0, "no pipeline shown without the token");

  await page.getByTestId("token").fill(TOKEN + "-wrong");
  await page.waitForFunction(
    () => /wrong admin token/.test(document.querySelector('[data-testid="connection"]')?.title || ""),
  );
  assert.equal(await card.count(), 0, "nor with a wrong one");

  await page.getByTestId("token").fill(TOKEN);
  await card.waitFor({ timeout: 10000 });
  await connection.filter({ hasText: /^connected/ }).waitFor();
  const target = (await pipeline()).concurrency + 1;
  await card.getByTestId("concurrency-input").fill(String(target));
  await card.getByTestId("concurrency-set").click();
  await until(`the API says concurrency ${target}`, pipeline, (p) => p.concurrency === target);
  assert.equal(await card.getByTestId("control-error").textContent(), "");
  assert.equal(await page.evaluate(() => localStorage.getItem("sluice-admin-token")), TOKEN);
  assert.deepEqual(problems, []);
});

test("a destination pauses and resumes from its row", { timeout: 60000 }, async (t) => {
  const { card, problems } = await open(t, { token: TOKEN });
  const row = card.locator("[data-destination]").first();
  await row.waitFor();
  const destination = await row.getAttribute("data-destination");
  const paused = (p) => p.destinations.find((d) => d.destination === destination)?.paused;
  assert.equal(paused(await pipeline()), false, `${destination} starts sending`);

  await row.getByRole("button", { name: "Pause" }).click();
  await until(`the API says ${destination} is paused`, pipeline, (p) => paused(p) === true);
  await row.getByText("paused", { exact: true }).waitFor();

  await row.getByRole("button", { name: "Resume" }).click();
  await until(`the API says ${destination} sends again`, pipeline, (p) => paused(p) === false);
  await row.getByText("sending", { exact: true }).waitFor();
  assert.equal(await card.getByTestId("control-error").textContent(), "");
  assert.deepEqual(problems, []);
});

test("the connection indicator says when polling fails", { timeout: 30000 }, async (t) => {
  const { page } = await open(t, { token: TOKEN });
  const connection = page.getByTestId("connection");
  await connection.filter({ hasText: /^connected/ }).waitFor();
  // The browser, not the daemon, drops the polls.
  await page.route("**/api/pipelines", (route) => route.abort());
  await connection.filter({ hasText: /^disconnected$/ }).waitFor();
  await page.unroute("**/api/pipelines");
  await connection.filter({ hasText: /^connected/ }).waitFor();
});
