// Drives Debian's Firefox ESR (WebDriver BiDi, puppeteer-core) for tests/browser/test_push_firefox.py.
// argv: web/ (whose node_modules has puppeteer-core), firefox path, push service ws URL,
// page URL.  Prints one JSON line per step on
// stdout: {"subscription": ...}, then for each line "expect" on stdin, {"received": base64}.
import { createRequire } from "node:module";
import readline from "node:readline";

const [web, executablePath, serverURL, pageURL] = process.argv.slice(2);
const puppeteer = createRequire(`${web}/package.json`)("puppeteer-core");
const browser = await puppeteer.launch({
  browser: "firefox",
  executablePath,
  headless: true,
  extraPrefsFirefox: {
    "dom.push.enabled": true,
    "dom.push.connection.enabled": true,
    "dom.push.serverURL": serverURL,
    "dom.push.testing.allowInsecureServerURL": true,
    "dom.push.testing.ignorePermission": true,
    "dom.serviceWorkers.enabled": true,
    "permissions.default.desktop-notification": 1,
  },
});
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
try {
  const page = await browser.newPage();
  await page.goto(pageURL);
  out({ subscription: JSON.parse(await page.evaluate(() => window.subscribe())) });
  const lines = readline.createInterface({ input: process.stdin });
  let seen = 0;
  for await (const line of lines) {
    if (line.trim() !== "expect") break;
    await page.waitForFunction((n) => window.received.length > n, { timeout: 30000 }, seen);
    out({ received: await page.evaluate((n) => window.received[n], seen) });
    seen += 1;
  }
  lines.close();
} catch (err) {
  out({ error: String(err && err.stack ? err.stack : err) });
  process.exitCode = 1;
} finally {
  await browser.close();
  process.exit(process.exitCode ?? 0); // stdin may still be open
}
