// A jobwheel remote worker in Node.js: leases jobs of one task, runs them, reports back.
//
//   node worker.js --task node.echo [--address 127.0.0.1:50051] [--worker-id ID]
//                  [--concurrency 10] [--prefetch 500] [--lease 30] [--max-jobs N]
//
// The batched path of worker_service.proto: LeaseJobs takes jobs ahead of the handlers (up
// to --prefetch wait in memory, no more than finished in the last second), outcomes go out
// in CompleteJobs/FailJobs calls of up to 500 items (a call waits at most 2 ms for
// neighbours), and one HeartbeatJobs call every lease/3 keeps every held lease alive.
// --max-jobs N exits after N jobs were reported (used by the tests). SIGTERM/SIGINT stop
// leasing, give the prefetched jobs not begun back (ReleaseJobs) and exit once the running
// ones are reported.
"use strict";

const os = require("node:os");
const { parseArgs } = require("node:util");
const jw = require("./jobwheel.js");

const { values: opts } = parseArgs({
  options: {
    address: { type: "string", default: jw.address() },
    task: { type: "string", default: "node.echo" },
    "worker-id": { type: "string", default: `node-${os.hostname()}-${process.pid}` },
    concurrency: { type: "string", default: "10" },
    prefetch: { type: "string", default: "500" },
    lease: { type: "string", default: "30" },
    "max-jobs": { type: "string", default: "0" },
  },
});
const workerId = opts["worker-id"];
const concurrency = Number(opts.concurrency);
const prefetch = Number(opts.prefetch);
const leaseSeconds = Number(opts.lease);
const maxJobs = Number(opts["max-jobs"]);
const client = jw.workerService(opts.address);
const REPORT_BATCH = 500; // the server takes up to 1000 items per call
const REPORT_DELAY_MS = 2;
const OK = 0;

// The handler: whatever it returns (any JSON value) becomes the job's result; a throw fails
// the attempt and the job's retry policy decides what follows.
async function handle(payload, lease) {
  if (payload.fail) throw new Error(String(payload.fail));
  return { echo: payload, by: workerId, attempt: lease.job.attempt };
}

const held = new Map(); // job id -> { lease, abandoned }: leased and not yet reported
const waiting = []; // leased, waiting for a free handler slot
let active = 0; // handlers running
let reported = 0;
let stopping = false;
const finished = { second: 0, previous: 0, current: 0 }; // handlers finished per second
let wake = () => {};

function errorText(err) {
  return `${(err && err.name) || "Error"}: ${(err && err.message) || String(err)}`;
}

function tick() {
  const second = Math.floor(Date.now() / 1000);
  if (second !== finished.second) {
    finished.previous = second === finished.second + 1 ? finished.current : 0;
    finished.current = 0;
    finished.second = second;
  }
}

// Outcomes of one kind ("CompleteJobs" with `completions`, "FailJobs" with `failures`)
// queue up while a call is out and go together in the next one.
function reporter(method, field) {
  let pending = [];
  let flushing = false;
  async function flush() {
    flushing = true;
    await new Promise((r) => setTimeout(r, REPORT_DELAY_MS));
    while (pending.length > 0) {
      const batch = pending.splice(0, REPORT_BATCH);
      let results;
      try {
        const resp = await jw.call(client, method, {
          worker_id: workerId,
          [field]: batch.map((p) => p.item),
        });
        results = resp.results;
      } catch (err) {
        console.error(`${method} failed: ${err.message}`);
        results = batch.map(() => ({ status: { code: err.code, message: err.message } }));
      }
      batch.forEach((p, i) => p.done(results[i]));
    }
    flushing = false;
  }
  return (item) =>
    new Promise((done) => {
      pending.push({ item, done });
      if (!flushing) flush();
    });
}
const complete = reporter("CompleteJobs", "completions");
const fail = reporter("FailJobs", "failures");

async function run(lease) {
  const id = lease.job.id;
  const ids = { job_id: id, epoch: lease.epoch };
  let report;
  try {
    const result = await handle(jw.fromStruct(lease.job.payload), lease);
    report = () => complete({ ...ids, result: jw.toValue(result) });
  } catch (err) {
    report = () => fail({ ...ids, error: errorText(err) });
  }
  active -= 1;
  tick();
  finished.current += 1;
  startWaiting();
  try {
    if (!held.get(id).abandoned) {
      const res = await report();
      if (res.status && res.status.code !== OK) {
        console.error(`report of job ${id} refused: ${res.status.reason} ${res.status.message}`);
      } else {
        console.log(JSON.stringify({ job: id, state: res.state }));
      }
    }
  } finally {
    held.delete(id);
    reported += 1;
    wake();
  }
}

function startWaiting() {
  while (waiting.length > 0 && active < concurrency) {
    const lease = waiting.shift();
    if (held.get(lease.job.id).abandoned) {
      held.delete(lease.job.id);
      continue;
    }
    active += 1;
    run(lease);
  }
  wake();
}

// On a stop, the prefetched jobs not begun go back at once (ReleaseJobs): another worker
// takes them, and their attempts are not charged.
async function releaseWaiting() {
  const give = waiting.splice(0);
  for (let start = 0; start < give.length; start += 1000) {
    const chunk = give.slice(start, start + 1000);
    try {
      await jw.call(client, "ReleaseJobs", {
        worker_id: workerId,
        releases: chunk.map((l) => ({ job_id: l.job.id, epoch: l.epoch })),
        reason: "the worker stopped",
      });
    } catch (err) {
      console.error(`ReleaseJobs failed: ${err.message}; the leases will expire`);
    }
    for (const lease of chunk) held.delete(lease.job.id);
  }
}

// One HeartbeatJobs call for every lease held; a cancelled job or a lost lease is dropped
// (the handler of this example is too quick to stop; a real one would be told).
async function beatAll() {
  const ids = [...held.entries()].filter(([, h]) => !h.abandoned);
  for (let start = 0; start < ids.length; start += 1000) {
    const chunk = ids.slice(start, start + 1000);
    try {
      const resp = await jw.call(client, "HeartbeatJobs", {
        worker_id: workerId,
        lease_duration: jw.duration(leaseSeconds),
        heartbeats: chunk.map(([, h]) => ({ job_id: h.lease.job.id, epoch: h.lease.epoch })),
      });
      resp.results.forEach((r, i) => {
        const gone = r.status && r.status.code !== OK;
        if (gone || r.cancel_requested) chunk[i][1].abandoned = true;
      });
    } catch (err) {
      console.error(`HeartbeatJobs failed: ${err.message}; retrying`);
    }
  }
}

// How many to lease now: free slots plus prefetch (at most what finished in the last
// second); nothing while more than half of that prefetch still waits.
function room() {
  tick();
  const ahead = Math.min(prefetch, Math.max(finished.previous, finished.current));
  if (waiting.length > 0 && waiting.length > Math.floor(ahead / 2)) return 0;
  let free = concurrency + ahead - active - waiting.length;
  if (maxJobs > 0) free = Math.min(free, maxJobs - reported - held.size);
  return Math.min(free, 1000);
}

async function main() {
  process.on("SIGTERM", () => (stopping = true));
  process.on("SIGINT", () => (stopping = true));
  const beats = setInterval(beatAll, (leaseSeconds * 1000) / 3);
  while (!stopping && (maxJobs === 0 || reported + held.size < maxJobs)) {
    const free = room();
    if (free <= 0) {
      await new Promise((r) => {
        wake = r;
        setTimeout(r, 100);
      });
      continue;
    }
    let resp;
    try {
      resp = await jw.call(
        client,
        "LeaseJobs",
        {
          worker_id: workerId,
          tasks: [opts.task],
          max_jobs: free,
          lease_duration: jw.duration(leaseSeconds),
          wait: jw.duration(5),
        },
        15,
      );
    } catch (err) {
      console.error(`LeaseJobs failed: ${err.message}; retrying`);
      await new Promise((r) => setTimeout(r, 500));
      continue;
    }
    for (const lease of resp.leases) {
      held.set(lease.job.id, { lease, abandoned: false });
      waiting.push(lease);
    }
    startWaiting();
  }
  if (stopping) await releaseWaiting();
  while (held.size > 0) await new Promise((r) => setTimeout(r, 10));
  clearInterval(beats);
  client.close();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
