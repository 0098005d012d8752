// Enqueues a job from Node.js and prints it as JSON.
//
//   node enqueue.js TASK ['{"json": "payload"}'] [--address 127.0.0.1:50051] [--queue Q]
"use strict";

const { parseArgs } = require("node:util");
const jw = require("./jobwheel.js");

const { values: opts, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    address: { type: "string", default: jw.address() },
    queue: { type: "string", default: "" },
  },
});
if (positionals.length < 1) {
  console.error("usage: node enqueue.js TASK [PAYLOAD_JSON] [--address HOST:PORT]");
  process.exit(2);
}
const [task, payloadJson = "{}"] = positionals;

async function main() {
  const client = jw.jobService(opts.address);
  const resp = await jw.call(client, "EnqueueJob", {
    task,
    queue: opts.queue,
    payload: jw.toStruct(JSON.parse(payloadJson)),
  });
  client.close();
  const job = resp.job;
  console.log(JSON.stringify({ id: job.id, task: job.task, state: job.state }));
}

main().catch((err) => {
  console.error(`EnqueueJob failed: ${err.message}`);
  process.exit(1);
});
