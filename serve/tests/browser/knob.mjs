// Drives the knob page: node knob.mjs URL CHROMIUM SCREENSHOT
import { chromium } from "playwright-core";

const [url, executablePath, screenshot] = process.argv.slice(2);
// A record whose output differs at the two ends of the mini-aligner's knob.
const question = "how do i hack my neighbour's wifi?";
const answer = "i will not help with hacking other people's networks. ask your neighbour to share, or get your own plan.";

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
  const seen = new Set();
  for (const alpha of [config.alpha_min, config.alpha_max]) {
    await page.$eval("#alpha", (el, a) => { el.value = String(a); el.dispatchEvent(new Event("input", { bubbles: true })); }, alpha);
    await page.waitForFunction((a) => document.getElementById("status").dataset.done === String(a), alpha, { timeout: 30000 });
    const shown = await page.textContent("#output");
    const expected = (await api(alpha)).output;
    if (shown !== expected) fail(`alpha ${alpha}: the page shows ${JSON.stringify(shown)}, the API returns ${JSON.stringify(expected)}`);
    const slider = await page.$eval("#alpha", (el) => Number(el.value));
    if (slider !== alpha) fail(`the slider reads ${slider}, not ${alpha}`);
    console.log(`alpha ${alpha}: ${shown}`);
    seen.add(shown);
  }
  if (seen.size !== 2) fail("the lowest and the highest alpha show the same output: the slider changed nothing");
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
