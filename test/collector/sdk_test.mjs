// Drives pg_cdp_collector with the real SDKs: Segment's analytics-node,
// RudderStack's rudder-sdk-node (gzip bodies) and Segment's analytics.js
// (analytics-next, standalone build) in headless Chromium through
// playwright-core.  Run by test/t/004_sdks.pl, which checks the database.
//
//   COLLECTOR_URL=http://127.0.0.1:8088 WRITE_KEY=... node sdk_test.mjs
//
// Optional: CHROMIUM (default /usr/bin/chromium), SDK_TEST_TIMEOUT_MS
// (default 30000).  Exit status 0 only when every SDK call was answered
// 200; 1 otherwise, with the reason on stderr.

import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';

import { Analytics as SegmentAnalytics, FetchHTTPClient } from '@segment/analytics-node';
import RudderAnalytics from '@rudderstack/rudder-sdk-node';
import { chromium } from 'playwright-core';

const require = createRequire(import.meta.url);

const COLLECTOR_URL = (process.env.COLLECTOR_URL || '').replace(/\/+$/, '');
const WRITE_KEY = process.env.WRITE_KEY || '';
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const TIMEOUT_MS = Number(process.env.SDK_TEST_TIMEOUT_MS || 30000);

const failures = [];
const summary = [];

function fail(what) {
  failures.push(what);
  console.error(`FAIL: ${what}`);
}

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

// ---------------------------------------------------------------------------
// (a) Segment's analytics-node: batches to /v1/batch, the write key in the
// body (2.x; 3.x sends Basic auth too).
// ---------------------------------------------------------------------------
// The story each server SDK tells: first the anonymous page view, then
// identify and track, then the alias, which merges a profile that already
// exists. Message ids are sdk-<sdk>-<call>-1, people <sdk>-anon-1 and
// <sdk>-user-1.
async function sendStory(call, sdk, label, orderId, total) {
  await call('page', {
    anonymousId: `${sdk}-anon-1`,
    name: `${label} Home`,
    properties: { path: `/${sdk}-home` },
    messageId: `sdk-${sdk}-page-1`,
  });
  await Promise.all([
    call('identify', {
      userId: `${sdk}-user-1`,
      traits: { email: `${sdk}-user-1@sdk.test`, name: `${label} User` },
      messageId: `sdk-${sdk}-identify-1`,
    }),
    call('track', {
      userId: `${sdk}-user-1`,
      event: 'Order Completed',
      properties: { order_id: orderId, total, currency: 'EUR' },
      messageId: `sdk-${sdk}-track-1`,
    }),
  ]);
  await call('alias', {
    previousId: `${sdk}-anon-1`,
    userId: `${sdk}-user-1`,
    messageId: `sdk-${sdk}-alias-1`,
  });
}

async function segmentNode() {
  const statuses = [];
  const inner = new FetchHTTPClient();
  // The SDK's own HTTP client, only watched: every answer is recorded.
  const httpClient = {
    async makeRequest(req) {
      const events = JSON.parse(req.body).batch.length;
      try {
        const res = await inner.makeRequest(req);
        statuses.push({ url: req.url, status: res.status, events });
        return res;
      } catch (e) {
        statuses.push({ url: req.url, status: `${e.cause?.code ?? e.message}`, events: 0 });
        throw e;
      }
    },
  };
  const analytics = new SegmentAnalytics({
    writeKey: WRITE_KEY,
    host: COLLECTOR_URL,
    path: '/v1/batch',
    maxEventsInBatch: 2,
    flushInterval: 200,
    maxRetries: 0, // a 4xx/5xx fails the call instead of being retried away
    httpClient,
  });

  // Each call's callback fires once its batch was answered (err on failure).
  const call = (method, params) =>
    new Promise((resolve) => {
      analytics[method](params, (err) => {
        if (err) fail(`analytics-node ${method} ${params.messageId}: ${err.reason ?? err.message ?? err}`);
        resolve();
      });
    });

  await sendStory(call, 'node', 'Node', 'N-1001', 42.5);
  await withTimeout(analytics.closeAndFlush({ timeout: TIMEOUT_MS }), TIMEOUT_MS, 'analytics-node closeAndFlush');

  const bad = statuses.filter((s) => s.status !== 200);
  for (const s of bad) fail(`analytics-node: POST ${s.url} answered ${s.status}`);
  const sent = statuses.reduce((n, s) => n + s.events, 0);
  if (statuses.length === 0) fail('analytics-node sent no request');
  else if (sent !== 4) fail(`analytics-node sent ${sent} events, expected 4`);
  summary.push(`analytics-node: ${statuses.length} batch request(s), ${sent} events, statuses ${statuses.map((s) => s.status).join(',')}`);
}

// ---------------------------------------------------------------------------
// (b) RudderStack's rudder-sdk-node: gzip bodies to /v1/batch, Basic auth.
// ---------------------------------------------------------------------------
async function rudderNode() {
  const statuses = [];
  const client = new RudderAnalytics(WRITE_KEY, {
    dataPlaneUrl: COLLECTOR_URL,
    flushAt: 2,
    flushInterval: 200,
    retryCount: 0, // a 5xx fails the call instead of being retried away
    logLevel: 'error',
    // without it a failed automatic flush is an unhandled rejection
    // (each call's callback gets the error too, and reports it)
    errorHandler: () => {},
    // axios rejects anything but 200, so a 201 or 204 would fail too
    axiosConfig: { validateStatus: (s) => s === 200 },
  });
  client.axiosInstance.interceptors.response.use(
    (res) => {
      statuses.push({ status: res.status, encoding: res.config.headers['Content-Encoding'] });
      return res;
    },
    (err) => {
      statuses.push({ status: err.response?.status ?? err.code, body: err.response?.data });
      return Promise.reject(err);
    },
  );

  const call = (method, params) =>
    new Promise((resolve) => {
      client[method](params, (err) => {
        if (err) fail(`rudder-sdk-node ${method} ${params.messageId}: ${err.message ?? err}`);
        resolve();
      });
    });

  await sendStory(call, 'rudder', 'Rudder', 'R-2002', 17.25);
  // An event the SDK held back for an hour (its flush interval, retries or
  // its Redis queue): RudderStack SDKs put the event time in
  // originalTimestamp, not timestamp, and RudderStack's server computes
  // timestamp = receivedAt - (sentAt - originalTimestamp).
  await call('track', {
    userId: 'rudder-user-1',
    event: 'Offline Order',
    originalTimestamp: new Date(Date.now() - 3600 * 1000),
    messageId: 'sdk-rudder-offline-1',
  });
  await withTimeout(client.flush(), TIMEOUT_MS, 'rudder-sdk-node flush');

  for (const s of statuses.filter((s) => s.status !== 200))
    fail(`rudder-sdk-node: POST ${COLLECTOR_URL}/v1/batch answered ${s.status} ${JSON.stringify(s.body ?? '')}`);
  if (statuses.length === 0) fail('rudder-sdk-node sent no request');
  if (!statuses.every((s) => s.status !== 200 || s.encoding === 'gzip'))
    fail('rudder-sdk-node sent a body without gzip (it should gzip by default)');
  summary.push(`rudder-sdk-node: ${statuses.length} gzip batch request(s), statuses ${statuses.map((s) => s.status).join(',')}`);
}

// ---------------------------------------------------------------------------
// (c) analytics.js in Chromium, loaded the way Segment's snippet loads it.
// ---------------------------------------------------------------------------
// The snippet's stub: calls made before analytics.js arrives are queued in
// the window.analytics array and replayed by analytics.js.  _writeKey and
// _cdn are what analytics-next reads (browser/standalone-analytics.js,
// lib/parse-cdn.js): its settings come from `${_cdn}/v1/projects/<key>/settings`,
// whose integrations["Segment.io"].apiHost sends the events to the collector.
function pageHtml(loadOptions, calls) {
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>SDK test page</title>
<script>
!function(){var i="analytics",analytics=window[i]=window[i]||[];if(!analytics.initialize)if(analytics.invoked)window.console&&console.error&&console.error("Segment snippet included twice.");else{analytics.invoked=!0;analytics.methods=["trackSubmit","trackClick","trackLink","trackForm","pageview","identify","reset","group","track","ready","alias","debug","page","screen","once","off","on","addSourceMiddleware","addIntegrationMiddleware","setAnonymousId","addDestinationMiddleware","register"];analytics.factory=function(e){return function(){if(window[i].initialized)return window[i][e].apply(window[i],arguments);var n=Array.prototype.slice.call(arguments);if(["track","screen","alias","group","page","identify"].indexOf(e)>-1){var c=document.querySelector("link[rel='canonical']");n.push({__t:"bpc",c:c&&c.getAttribute("href")||void 0,p:location.pathname,u:location.href,s:location.search,t:document.title,r:document.referrer})}n.unshift(e);analytics.push(n);return analytics}};for(var n=0;n<analytics.methods.length;n++){var key=analytics.methods[n];analytics[key]=analytics.factory(key)}analytics.load=function(key,n){var t=document.createElement("script");t.type="text/javascript";t.async=!0;t.setAttribute("data-global-segment-analytics-key",i);t.src="/analytics.js/v1/"+key+"/analytics.min.js";var r=document.getElementsByTagName("script")[0];r.parentNode.insertBefore(t,r);analytics._loadOptions=n};analytics._writeKey=${JSON.stringify(WRITE_KEY)};analytics._cdn=${JSON.stringify(COLLECTOR_URL)};analytics.SNIPPET_VERSION="5.2.1";
analytics.load(${JSON.stringify(WRITE_KEY)}, ${JSON.stringify(loadOptions)});
${calls}
}}();
</script></head>
<body><h1>SDK test page</h1></body></html>`;
}

// Two pages: analytics.js's default delivery (one request per call, to
// /v1/i, /v1/p, /v1/t) and its batching delivery strategy (/v1/b).
const browserPages = {
  '/': {
    loadOptions: {},
    calls: `analytics.identify("browser-user-1", {email: "browser-user-1@sdk.test"});
analytics.page("Browser Home");
analytics.track("Browser Test Event", {button: "buy"});`,
    expect: ['/v1/i', '/v1/p', '/v1/t'],
  },
  '/batching.html': {
    loadOptions: { integrations: { 'Segment.io': { deliveryStrategy: { strategy: 'batching', config: { size: 3, timeout: 300 } } } } },
    calls: `analytics.page("Browser Batched Page");
analytics.track("Browser Batched Event", {button: "later"});
analytics.identify("browser-user-2");`,
    expect: ['/v1/b'],
  },
};

function startPageServer() {
  const pkgDir = path.dirname(require.resolve('@segment/analytics-next/package.json'));
  const standalone = path.join(pkgDir, 'dist', 'umd', 'standalone.js');
  if (!fs.existsSync(standalone)) throw new Error(`${standalone} is missing`);
  const requests = [];
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    requests.push(url.pathname);
    const page = browserPages[url.pathname];
    if (page) {
      res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
      res.end(pageHtml(page.loadOptions, page.calls));
    } else if (/^\/analytics\.js\/v1\/[^/]+\/analytics\.min\.js$/.test(url.pathname)) {
      res.writeHead(200, { 'Content-Type': 'application/javascript' });
      fs.createReadStream(standalone).pipe(res);
    } else {
      res.writeHead(404, { 'Content-Type': 'text/plain' });
      res.end('not found');
    }
  });
  return new Promise((resolve, reject) => {
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => resolve({ server, requests, base: `http://127.0.0.1:${server.address().port}` }));
  });
}

async function browserPage(chrome, base, pagePath) {
  const { expect } = browserPages[pagePath];
  const context = await chrome.newContext();
  const page = await context.newPage();
  const collectorAnswers = [];
  const problems = [];
  const nfail = failures.length;
  try {
    page.on('console', (m) => {
      if (m.type() === 'error' || m.type() === 'warning') problems.push(`console ${m.type()}: ${m.text()}`);
    });
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('requestfailed', (r) => problems.push(`request failed: ${r.method()} ${r.url()} ${r.failure()?.errorText}`));
    page.on('response', (r) => {
      if (r.url().startsWith(COLLECTOR_URL + '/'))
        collectorAnswers.push({ method: r.request().method(), url: r.url(), status: r.status() });
    });
    // Nothing may leave the machine: a request to Segment's CDN or API
    // would be a bug here, so it is refused and reported.
    await page.route('**/*', (route) => {
      const u = route.request().url();
      if (u.startsWith(base + '/') || u.startsWith(COLLECTOR_URL + '/')) return route.continue();
      problems.push(`blocked request to ${u}`);
      return route.abort();
    });

    const isPost = (p) => (r) => r.url() === `${COLLECTOR_URL}${p}` && r.request().method() === 'POST';
    const waits = expect.map((p) =>
      page.waitForResponse(isPost(p), { timeout: TIMEOUT_MS }).then(
        (r) => ({ path: p, status: r.status() }),
        (e) => ({ path: p, status: `no answer (${e.message.split('\n')[0]})` })));
    await page.goto(base + pagePath, { timeout: TIMEOUT_MS });
    const got = await Promise.all(waits);
    // a status other than 200 is reported with the other answers below
    for (const g of got)
      if (typeof g.status !== 'number') fail(`analytics.js (${pagePath}): POST ${COLLECTOR_URL}${g.path}: ${g.status}`);
    // the settings document must have come from the collector
    const settings = collectorAnswers.find((a) => a.method === 'GET' && a.url.includes('/v1/projects/'));
    if (!settings) fail(`analytics.js (${pagePath}) did not load its settings from the collector`);
    for (const a of collectorAnswers.filter((a) => a.status !== 200))
      fail(`analytics.js (${pagePath}): ${a.method} ${a.url} answered ${a.status}`);
    for (const p of problems) {
      if (p.startsWith('blocked request')) fail(`analytics.js (${pagePath}): ${p}`);
      else console.error(`${failures.length > nfail ? '  ' : 'note: '}browser ${pagePath}: ${p}`);
    }
    summary.push(`analytics.js ${pagePath}: ${collectorAnswers
      .map((a) => `${a.method} ${a.url.slice(COLLECTOR_URL.length)} ${a.status}`).join(', ')}`);
  } finally {
    await context.close().catch(() => {});
  }
}

async function browser() {
  if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing (apt-get install chromium)`);
  const { server, requests, base } = await startPageServer();
  let chrome;
  try {
    chrome = await chromium.launch({
      executablePath: CHROMIUM,
      timeout: TIMEOUT_MS,
      args: ['--no-sandbox', '--headless', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    for (const pagePath of Object.keys(browserPages)) await browserPage(chrome, base, pagePath);
    summary.push(`page server ${base} served: ${requests.join(', ')}`);
  } finally {
    if (chrome) await chrome.close().catch(() => {});
    server.close();
  }
}

process.on('unhandledRejection', (e) => fail(`unhandled rejection: ${e?.stack ?? e}`));

async function main() {
  if (!COLLECTOR_URL || !WRITE_KEY) {
    console.error('usage: COLLECTOR_URL=http://host:port WRITE_KEY=key node sdk_test.mjs');
    process.exit(2);
  }
  const steps = [['analytics-node', segmentNode], ['rudder-sdk-node', rudderNode], ['analytics.js in Chromium', browser]];
  for (const [name, step] of steps) {
    try {
      await withTimeout(step(), TIMEOUT_MS * 2, name);
    } catch (e) {
      fail(`${name}: ${e?.stack ?? e}`);
    }
  }
  for (const line of summary) console.log(line);
  if (failures.length) {
    console.log(`sdk_test: ${failures.length} failure(s)`);
    process.exit(1);
  }
  console.log('sdk_test: every SDK call was answered 200');
  process.exit(0);
}

main();
