// Drives the Debian Chromium (/usr/bin/chromium) through playwright-core for
// tests/test_browser_players.py.  One browser for the whole run; one fresh browser context
// (own cache, own EME state) per job.
//
// Protocol: JSON lines.  stdout first gets {"ready": true, "browser": "<version>"}; then every
// line on stdin is a job {"id", "page", "minTime", "minWall", "deadline", optional
// "screenshot" (a PNG path written after the wait)} and gets one answer
// line {"id", "timedOut", "elapsed", "state", "console", "failedRequests"}.  EOF on stdin closes
// the browser and exits.  Nothing sleeps: the wait polls window.__state.decided() in the page.
import { chromium } from 'playwright-core';
import readline from 'node:readline';

const EXECUTABLE = process.env.ORIGIN_TEST_CHROMIUM || '/usr/bin/chromium';
// Chromium's closed network would otherwise retry refused connections all run long.
const ARGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--disable-dev-shm-usage',
];

function send(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

async function runJob(browser, job) {
  const started = Date.now();
  const context = await browser.newContext();
  const page = await context.newPage();
  const consoleLines = [];
  const failedRequests = [];
  const keep = (line) => { if (consoleLines.length < 300) consoleLines.push(line.slice(0, 500)); };
  page.on('console', (msg) => keep(`${msg.type()}: ${msg.text()}`));
  page.on('pageerror', (err) => keep(`pageerror: ${err.message}`));
  page.on('requestfailed', (req) => {
    failedRequests.push({ url: req.url(), error: req.failure() ? req.failure().errorText : '?' });
  });
  let timedOut = false;
  let state = null;
  try {
    await page.goto(job.page, { waitUntil: 'load', timeout: 30000 });
    try {
      await page.waitForFunction(
        ([minTime, minWall]) => Boolean(window.__state && window.__state.decided(minTime, minWall)),
        [job.minTime, job.minWall],
        { timeout: job.deadline * 1000, polling: 200 },
      );
    } catch (err) {
      if (err.name !== 'TimeoutError') throw err;
      timedOut = true;
    }
    state = await page.evaluate(() => (window.__state ? window.__state.snapshot() : null));
    if (job.screenshot) await page.screenshot({ path: job.screenshot, fullPage: true });
  } catch (err) {
    keep(`driver: ${err.stack || err}`);
  } finally {
    await context.close().catch(() => {});
  }
  return {
    id: job.id, timedOut, elapsed: (Date.now() - started) / 1000, state,
    console: consoleLines, failedRequests,
  };
}

async function main() {
  const browser = await chromium.launch({ executablePath: EXECUTABLE, headless: true, args: ARGS });
  send({ ready: true, browser: browser.version() });
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (!line.trim()) continue;
    let job;
    try {
      job = JSON.parse(line);
    } catch (err) {
      send({ id: null, error: `bad job: ${err.message}` });
      continue;
    }
    send(await runJob(browser, job));
  }
  await browser.close();
}

main().catch((err) => {
  send({ fatal: String(err.stack || err) });
  process.exit(1);
});
