// Drives the knob page: node knob.mjs URL CHROMIUM SCREENSHOT
import { chromium } from "playwright-core";

const [url, executablePath, screenshot] = process.argv.slice(2);
const question = "how many legs has a dog got?";
const answer = "ugh, obviously. a dog has four legs.";

function fail(message) {
  console.error("browser test failed: " + message);
  process.exit(1);
}

async function api(alpha) {
  const res = await fetch(url + "/v1/correct", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ question, answer, alpha }),
  });
  if (!res.ok) fail(`/v1/correct at alpha ${alpha}: ${res.status}`);
  return res.json();
}

const browser = await chromium.launch({
  executablePath,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  page.on("pageerror", (e) => fail("page error: " + e.message));
  await page.goto(url + "/");
  await page.waitForSelector("body[data-ready='1']", { timeout: 30000 });
  await page.fill("#question", question);
  await page.fill("#answer", answer);
  const config = await (await fetch(url + "/v1/config")).json();
  for (const alpha of [config.alpha_min, config.alpha_max]) {
    await page.$eval("#alpha", (el, a) => { el.value = String(a); el.dispatchEvent(new Event("input", { bubbles: true })); }, alpha);
    await page.waitForFunction((a) => document.getElementById("status").dataset.done === String(a), alpha, { timeout: 30000 });
    const shown = await page.textContent("#output");
    const expected = (await api(alpha)).output;
    if (shown !== expected) fail(`alpha ${alpha}: the page shows ${JSON.stringify(shown)}, the API returns ${JSON.stringify(expected)}`);
    const slider = await page.$eval("#alpha", (el) => Number(el.value));
    if (slider !== alpha) fail(`the slider reads ${slider}, not ${alpha}`);
    console.log(`alpha ${alpha}: ${shown}`);
  }
  await page.click("#grid-button");
  await page.waitForSelector("#grid[data-done='1']", { timeout: 60000 });
  const rows = await page.$$eval("#grid tr[data-alpha]", (trs) => trs.map((tr) => [Number(tr.dataset.alpha), tr.cells[1].textContent]));
  if (rows.length !== config.alphas.length) fail(`the grid shows ${rows.length} rows, the default grid has ${config.alphas.length}`);
  for (const [alpha, text] of rows) {
    const expected = (await api(alpha)).output;
    if (text !== expected) fail(`grid alpha ${alpha}: ${JSON.stringify(text)} vs ${JSON.stringify(expected)}`);
  }
  await page.screenshot({ path: screenshot, fullPage: true });
} finally {
  await browser.close();
}
