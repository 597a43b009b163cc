// The `aria2` npm package (aria2.js) driving `haul daemon` over WebSocket: add, status,
// pause and unpause, notifications, multicall. Run by tests/it/daemon.rs with NODE_PATH set to where .ci/run
// installed the package. Any failed check exits non-zero.
"use strict";

const assert = require("assert");
const Aria2 = require("aria2");

async function main() {
  const aria2 = new Aria2({
    host: "127.0.0.1",
    port: Number(process.env.HAUL_RPC_PORT),
    secure: false,
    secret: process.env.HAUL_RPC_SECRET,
    path: "/jsonrpc",
  });
  await aria2.open();
  const completed = new Set();
  const started = new Set();
  const paused = new Set();
  aria2.on("onDownloadComplete", ([{ gid }]) => completed.add(gid));
  aria2.on("onDownloadStart", ([{ gid }]) => started.add(gid));
  aria2.on("onDownloadPause", ([{ gid }]) => paused.add(gid));
  const until = async (what, condition) => {
    const deadline = Date.now() + 30000;
    while (!condition()) {
      assert(Date.now() < deadline, `timed out waiting for ${what}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  };

  const version = await aria2.call("getVersion");
  assert(Array.isArray(version.enabledFeatures), JSON.stringify(version));
  const notifications = await aria2.listNotifications();
  assert(notifications.includes("onDownloadComplete"), notifications);

  const url = process.env.HAUL_TEST_URL;
  const gid = await aria2.call("addUri", [url], { dir: "node", out: "ws.bin" });
  assert.strictEqual(gid.length, 16);
  const deadline = Date.now() + 30000;
  while (!completed.has(gid)) {
    assert(Date.now() < deadline, "no onDownloadComplete notification");
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  assert(started.has(gid), "no onDownloadStart notification");
  const status = await aria2.call("tellStatus", gid);
  assert.strictEqual(status.status, "complete");
  assert.strictEqual(status.completedLength, process.env.HAUL_TEST_SIZE);
  assert.strictEqual(typeof status.totalLength, "string");

  // Pause mid-body (forcePause, as front-ends do), resume, and it finishes whole.
  const slow = await aria2.call("addUri", [process.env.HAUL_SLOW_URL], { out: "slow.bin" });
  await until("the slow download's first bytes", () => started.has(slow));
  for (let tries = 0; ; tries++) {
    const { completedLength } = await aria2.call("tellStatus", slow, ["completedLength"]);
    if (Number(completedLength) > 100000) break;
    assert(tries < 600, "the slow download did not progress");
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  assert.strictEqual(await aria2.call("forcePause", slow), slow);
  await until("onDownloadPause", () => paused.has(slow));
  assert.strictEqual((await aria2.call("tellStatus", slow, ["status"])).status, "paused");
  assert.strictEqual(await aria2.call("unpause", slow), slow);
  await until("the resumed download to complete", () => completed.has(slow));
  const slowStatus = await aria2.call("tellStatus", slow, ["completedLength", "totalLength"]);
  assert.strictEqual(slowStatus.completedLength, slowStatus.totalLength);

  const [[stat], [stopped]] = await aria2.multicall([
    ["getGlobalStat"],
    ["tellStopped", 0, 10, ["gid", "status"]],
  ]);
  assert.strictEqual(stat.numActive, "0");
  assert.deepStrictEqual(stopped, [
    { gid, status: "complete" },
    { gid: slow, status: "complete" },
  ]);

  await aria2.close();
  console.log(JSON.stringify({ ok: true, gid }));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
