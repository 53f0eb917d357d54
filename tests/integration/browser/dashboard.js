// End-to-end test of the dashboard in headless Chromium (Debian's
// /usr/bin/chromium, driven by playwright-core). Run by test_dashboard.sh:
//   node dashboard.js URL TOKEN SCREENSHOT_DIR CONTROL_DIR ENGINEER_TOKEN
// Opens the dashboard, sees a live value change, writes a setpoint,
// acknowledges the alarm the test plant raises, asks for the plant to be
// restarted (creates CONTROL_DIR/restart) and sees the dashboard reconnect by
// itself, checks the tablet layout, and saves screenshots.
"use strict";

const fs = require("fs");
const path = require("path");
const { chromium } = require("playwright-core");

const [url, token, outDir, controlDir, engToken] = process.argv.slice(2);

function check(cond, what) {
  if (!cond) throw new Error("check failed: " + what);
  console.log("ok: " + what);
}

(async () => {
  const browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
    timeout: 60000,
  });
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
    await context.addInitScript((t) => localStorage.setItem("doppel.token", t), token);
    const page = await context.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    page.setDefaultTimeout(20000);

    await page.goto(url);
    await page.waitForSelector("#conn.up");
    check((await page.textContent("#conn")) === "live", "live stream connected");
    // The plant's name comes from its own request, which may answer after
    // the stream connected (a slow, sanitized build): wait for it, bounded.
    await page.waitForFunction(() => document.querySelector("#plant-name").textContent === "e2e")
      .catch(() => {});
    check((await page.textContent("#plant-name")) === "e2e", "plant name shown");
    check((await page.textContent("#who")).includes("olga"), "signed in with the token");

    // A live value changes in the twin's tag table without a reload.
    const cell = 'tr[data-tag="P1.flow"] td.v';
    await page.waitForSelector(cell);
    const first = await page.textContent(cell);
    await page.waitForFunction(
      ([sel, v]) => document.querySelector(sel).textContent !== v, [cell, first]);
    check(true, "P1.flow changed live from " + first + " to " + (await page.textContent(cell)));
    await page.waitForSelector("#charts .uplot");
    check(await page.locator("#charts .uplot").count() >= 2, "charts drawn with history");

    // A setpoint through the guard, with its outcome shown.
    const sp = 'tr[data-tag="P1.speed_sp"]';
    await page.fill(sp + " input", "1500");
    await page.click(sp + " button.set");
    await page.waitForFunction((sel) => document.querySelector(sel + " .outcome").textContent === "done", sp);
    await page.waitForFunction((sel) => document.querySelector(sel + " td.v").textContent === "1500", sp);
    check(true, "setpoint P1.speed_sp = 1500 written through the guard");
    await page.fill(sp + " input", "5000");
    await page.click(sp + " button.set");
    await page.waitForFunction((sel) => document.querySelector(sel + " .outcome").textContent.includes("max"), sp);
    check(true, "setpoint above max refused: " + (await page.textContent(sp + " .outcome")));

    // The vibration alarm is raised; the badge shows it; acknowledge it.
    await page.waitForSelector("#alarm-badge:not(.hidden)");
    await page.click("#alarm-badge");
    const row = 'tr[data-alarm="P1.vibration_high"]';
    await page.waitForSelector(row + " button.ack");
    check((await page.textContent(row + " td.state")).startsWith("unacked"), "alarm unacknowledged");
    await page.click(row + " button.ack");
    await page.waitForFunction(
      (sel) => document.querySelector(sel + " td.state").textContent.startsWith("acked"), row);
    check((await page.textContent(row + " td.state")).includes("http:olga"),
      "alarm acknowledged by olga");
    await page.waitForSelector("#alarm-badge.hidden", { state: "attached" });
    await page.screenshot({ path: path.join(outDir, "dashboard-alarms.png") });

    // The plant restarts: the dashboard notices and reconnects by itself.
    fs.writeFileSync(path.join(controlDir, "restart"), "");
    await page.waitForSelector("#conn.down", { timeout: 30000 });
    check(true, "connection loss shown: " + (await page.textContent("#conn")));
    await page.waitForSelector("#conn.up", { timeout: 60000 });
    await page.click('button[data-tab="plant"]');
    const again = await page.textContent(cell);
    await page.waitForFunction(
      ([sel, v]) => document.querySelector(sel).textContent !== v, [cell, again], { timeout: 30000 });
    check(true, "reconnected by itself; live values flow again");

    // Driver health.
    await page.click('button[data-tab="drivers"]');
    await page.waitForSelector('.card[data-device="sim"] .health.ok');
    check(true, "driver sim healthy");

    // Back to the plant for the main screenshot.
    await page.click('button[data-tab="plant"]');
    await page.waitForTimeout(1500);
    await page.screenshot({ path: path.join(outDir, "dashboard.png") });

    // A tablet in portrait: one column, nothing wider than the screen.
    await page.setViewportSize({ width: 768, height: 1024 });
    // Charts follow their boxes (ResizeObserver); give a busy machine time.
    const fits = await page.waitForFunction(
      () => document.documentElement.scrollWidth <= window.innerWidth &&
        [...document.querySelectorAll(".chart")].every(
          (h) => h.querySelector(".uplot").offsetWidth <= h.clientWidth),
      null, { timeout: 10000 })
      .then(() => true, () => false);
    const layout = await page.evaluate(() => ({
      overflow: document.documentElement.scrollWidth - window.innerWidth,
      charts: [...document.querySelectorAll(".chart")].map(
        (h) => h.querySelector(".uplot").offsetWidth + "/" + h.clientWidth),
    }));
    check(fits, "tablet layout fits the width (overflow " + layout.overflow + " px, charts " +
      layout.charts.join(" ") + ")");
    await page.screenshot({ path: path.join(outDir, "dashboard-tablet.png") });

    check(await page.locator("#reload-btn").isHidden(), "an operator gets no Reload button");

    // An engineer reloads the twin and switches shadow mode from the page.
    const eng = await browser.newContext({ viewport: { width: 1280, height: 860 } });
    await eng.addInitScript((t) => localStorage.setItem("doppel.token", t), engToken);
    const ep = await eng.newPage();
    ep.on("pageerror", (e) => errors.push(String(e)));
    ep.setDefaultTimeout(20000);
    await ep.goto(url);
    await ep.waitForSelector("#conn.up");
    await ep.waitForSelector("#reload-btn:not(.hidden)");
    await ep.click("#reload-btn");
    await ep.waitForFunction(() => document.querySelector("#reload-out").textContent === "reloaded");
    check(true, "engineer reloaded P1 from the dashboard");
    await ep.click("#shadow-btn");
    await ep.waitForSelector("#guard-badge:not(.hidden)");
    check((await ep.textContent("#guard-badge")) === "shadow mode", "shadow mode shown after the switch");
    await ep.click("#shadow-btn");
    await ep.waitForSelector("#guard-badge.hidden", { state: "attached" });
    check(true, "shadow mode left");
    await eng.close();

    check(errors.length === 0, "no script errors on the page" + (errors.length ? ": " + errors : ""));
  } finally {
    await browser.close();
  }
})().catch((e) => {
  console.error("FAIL: " + e.message);
  process.exit(1);
});
