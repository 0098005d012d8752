// A jobwheel remote worker in Node.js: leases jobs of one task, runs them, reports back.
//
//   node worker.js --task node.echo [--address 127.0.0.1:50051] [--worker-id ID]
//                  [--concurrency 10] [--lease 30] [--max-jobs N]
//
// --max-jobs N exits after N jobs were reported (used by the tests). SIGTERM/SIGINT stop
// leasing and exit once running jobs are reported.
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
    lease: { type: "string", default: "30" },
    "max-jobs": { type: "string", default: "0" },
  },
});
const workerId = opts["worker-id"];
const concurrency = Number(opts.concurrency);
const leaseSeconds = Number(opts.lease);
const maxJobs = Number(opts["max-jobs"]);
const client = jw.workerService(opts.address);

// The handler: whatever it returns (any JSON value) becomes the job's result; a throw fails
// the attempt and the job's retry policy decides what follows.
async function handle(payload, lease) {
  if (payload.fail) throw new Error(String(payload.fail));
  return { echo: payload, by: workerId, attempt: lease.epoch };
}

let running = 0;
let reported = 0;
let stopping = false;

function errorText(err) {
  return `${(err && err.name) || "Error"}: ${(err && err.message) || String(err)}`;
}

async function run(lease) {
  const ids = { job_id: lease.job.id, epoch: lease.epoch, worker_id: workerId };
  let abandoned = false;
  // Heartbeats keep the lease while the handler runs, and tell us about a cancellation.
  const beat = setInterval(async () => {
    try {
      const resp = await jw.call(client, "HeartbeatJob", {
        ...ids,
        lease_duration: jw.duration(leaseSeconds),
      });
      if (resp.cancel_requested) abandoned = true;
    } catch (err) {
      if (err.code === jw.grpc.status.FAILED_PRECONDITION) abandoned = true; // lease lost
    }
  }, (leaseSeconds * 1000) / 3);
  try {
    let outcome;
    try {
      const result = await handle(jw.fromStruct(lease.job.payload), lease);
      outcome = ["CompleteJob", { ...ids, result: jw.toValue(result) }];
    } catch (err) {
      outcome = ["FailJob", { ...ids, error: errorText(err) }];
    }
    if (!abandoned) {
      const resp = await jw.call(client, outcome[0], outcome[1]);
      console.log(JSON.stringify({ job: lease.job.id, state: resp.job.state }));
    }
  } catch (err) {
    console.error(`reporting job ${lease.job.id} failed: ${err.message}`);
  } finally {
    clearInterval(beat);
    running -= 1;
    reported += 1;
  }
}

async function main() {
  process.on("SIGTERM", () => (stopping = true));
  process.on("SIGINT", () => (stopping = true));
  while (!stopping && (maxJobs === 0 || reported + running < maxJobs)) {
    let free = concurrency - running;
    if (maxJobs > 0) free = Math.min(free, maxJobs - reported - running);
    if (free <= 0) {
      await new Promise((r) => setTimeout(r, 10));
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
      running += 1;
      run(lease);
    }
  }
  while (running > 0) await new Promise((r) => setTimeout(r, 10));
  client.close();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
