// Takes the dashboard screenshot used by the docs (docs/img/dashboard.png):
//   NODE_PATH=build/browser/node_modules node tests/integration/browser/screenshot.js URL OUT.png [SECONDS]
// Waits for the live connection and the charts, lets SECONDS of live data
// arrive (default 20), and saves a 1280x860 screenshot.
"use strict";

const { chromium } = require("playwright-core");

const [url, out, secs] = process.argv.slice(2);

(async () => {
  const browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
    await page.goto(url);
    await page.waitForSelector("#conn.up", { timeout: 20000 });
    await page.waitForSelector("#charts .uplot", { timeout: 20000 });
    await page.waitForTimeout(1000 * Number(secs || 20));
    await page.screenshot({ path: out });
  } finally {
    await browser.close();
  }
})().catch((e) => {
  console.error("screenshot: " + e.message);
  process.exit(1);
});
