// Sends the test's known events through one real Node SDK, flushes, and prints one line of JSON saying what
// the SDK reported. Usage: node driver.js <segment|rudderstack|posthog> <collector url> <write key> <run> [flush at]
// Exit status: 0 every event delivered, 1 the SDK reported failures, 2 bad usage, 3 the SDK did not settle in time.
'use strict'

const [sdk, url, writeKey, run, flushAtArg] = process.argv.slice(2)
const flushAt = Number(flushAtArg || 20)
const SETTLE_MS = Number(process.env.DRIVER_SETTLE_MS || 120000)
const userId = `u-${run}`
const started = Date.now()
const report = { sdk, version: null, sent: 4, delivered: 0, failed: 0, errors: [], timed_out: false }

function reason(err) {
  if (err === undefined || err === null) return 'unknown error'
  if (err.reason !== undefined) return `${err.code || 'error'}: ${reason(err.reason)}`
  return err.message || String(err)
}

function settled() {
  return report.delivered + report.failed >= report.sent
}

async function waitSettled() {
  while (!settled() && Date.now() - started < SETTLE_MS) await new Promise((r) => setTimeout(r, 20))
}

function finish() {
  report.timed_out = !settled()
  report.seconds = (Date.now() - started) / 1000
  process.stdout.write(JSON.stringify(report) + '\n')
  process.exit(report.timed_out ? 3 : report.failed || report.delivered < report.sent ? 1 : 0)
}

const counted = (err) => (err ? (report.failed += 1) : (report.delivered += 1))

async function segment() {
  const { Analytics } = require('@segment/analytics-node')
  report.version = require('@segment/analytics-node/package.json').version
  const analytics = new Analytics({ writeKey, host: url, flushAt })
  analytics.on('error', (err) => report.errors.push(reason(err)))
  analytics.identify({ userId, traits: { plan: 'pro', run } }, counted)
  analytics.track({ userId, event: 'Product Viewed', properties: { product_id: 'sku-1', run } }, counted)
  const order = { order_id: `o-${run}`, revenue: 42.5, currency: 'EUR', run }
  analytics.track({ userId, event: 'Order Completed', properties: order }, counted)
  analytics.page({ userId, name: 'Home', properties: { path: '/home', run } }, counted)
  await analytics.closeAndFlush({ timeout: SETTLE_MS })
  await waitSettled()
}

async function rudderstack() {
  const Analytics = require('@rudderstack/rudder-sdk-node')
  report.version = require('@rudderstack/rudder-sdk-node/package.json').version
  const errorHandler = (err) => report.errors.push(reason(err))
  const client = new Analytics(writeKey, { dataPlaneUrl: url, flushAt, errorHandler, logLevel: 'error' })
  client.identify({ userId, traits: { plan: 'pro', run } }, counted)
  client.track({ userId, event: 'Product Viewed', properties: { product_id: 'sku-1', run } }, counted)
  const order = { order_id: `o-${run}`, revenue: 42.5, currency: 'EUR', run }
  client.track({ userId, event: 'Order Completed', properties: order }, counted)
  client.page({ userId, name: 'Home', properties: { path: '/home', run } }, counted)
  await client.flush()
  await waitSettled()
}

async function posthog() {
  const { PostHog } = require('posthog-node')
  const client = new PostHog(writeKey, { host: url, flushAt, flushInterval: 500 })
  report.version = client.getLibraryVersion()
  client.on('flush', (messages) => (report.delivered += messages.length))
  client.on('error', (err) => report.errors.push(reason(err)))
  client.identify({ distinctId: userId, properties: { plan: 'pro', run } })
  client.capture({ distinctId: userId, event: 'Product Viewed', properties: { product_id: 'sku-1', run } })
  const order = { order_id: `o-${run}`, revenue: 42.5, currency: 'EUR', run }
  client.capture({ distinctId: userId, event: 'Order Completed', properties: order })
  client.capture({ distinctId: userId, event: '$pageview', properties: { $current_url: 'https://shop.example/home', run } })
  await client.shutdown(SETTLE_MS)
  // posthog-node reports deliveries ('flush') and errors, not failures per event: what was not delivered failed.
  report.failed = report.sent - report.delivered
}

const drivers = { segment, rudderstack, posthog }
if (!drivers[sdk] || !url || !writeKey || !run || !(flushAt >= 1)) {
  process.stderr.write('usage: node driver.js <segment|rudderstack|posthog> <collector url> <write key> <run> [flush at]\n')
  process.exit(2)
}
drivers[sdk]().then(finish, (err) => {
  report.errors.push(`driver: ${reason(err)}`)
  finish()
})
