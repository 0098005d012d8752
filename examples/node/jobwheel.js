// Loads the jobwheel contract straight from ../../proto (no code generation) and converts
// between plain JavaScript values and the protobuf well-known types it uses.
"use strict";

const fs = require("node:fs");
const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const PROTO_DIR = path.resolve(__dirname, "..", "..", "proto");

// google/protobuf/{struct,duration,timestamp}.proto are not in PROTO_DIR: proto-loader
// resolves them from the copies protobufjs bundles.
const definition = protoLoader.loadSync(
  ["jobwheel/v1/job_service.proto", "jobwheel/v1/worker_service.proto"],
  {
    includeDirs: [PROTO_DIR],
    keepCase: true, // field names as in the .proto: job_id, max_jobs, ...
    longs: String, // int64 fields (execution_count) as strings: no precision loss
    enums: String, // JOB_STATE_COMPLETED rather than 5
    defaults: true,
    oneofs: true,
  },
);
const v1 = grpc.loadPackageDefinition(definition).jobwheel.v1;

function address() {
  return process.env.JOBWHEEL_SERVER || "127.0.0.1:50051";
}

// TLS when JOBWHEEL_TLS_CA is set (with JOBWHEEL_TLS_CERT and JOBWHEEL_TLS_KEY: mutual TLS).
function channelCredentials() {
  const ca = process.env.JOBWHEEL_TLS_CA;
  if (!ca) return grpc.credentials.createInsecure();
  const read = (file) => (file ? fs.readFileSync(file) : null);
  return grpc.credentials.createSsl(
    read(ca),
    read(process.env.JOBWHEEL_TLS_KEY),
    read(process.env.JOBWHEEL_TLS_CERT),
  );
}

// JOBWHEEL_TOKEN goes on every call as `authorization: Bearer ...`. An interceptor rather
// than call credentials, which grpc-js only allows over TLS.
function clientOptions() {
  const token = process.env.JOBWHEEL_TOKEN;
  if (!token) return {};
  const bearer = (options, nextCall) =>
    new grpc.InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        metadata.set("authorization", `Bearer ${token}`);
        next(metadata, listener);
      },
    });
  return { interceptors: [bearer] };
}

function jobService(addr = address()) {
  return new v1.JobService(addr, channelCredentials(), clientOptions());
}

function workerService(addr = address()) {
  return new v1.WorkerService(addr, channelCredentials(), clientOptions());
}

// google.protobuf.Value <-> JSON value. The bundled well-known types keep protobufjs's
// camelCase field names (numberValue, structValue) even with keepCase: jobwheel's own
// messages use the .proto names (job_id), these do not.
function toValue(x) {
  if (x === null || x === undefined) return { nullValue: "NULL_VALUE" };
  if (typeof x === "number") return { numberValue: x };
  if (typeof x === "string") return { stringValue: x };
  if (typeof x === "boolean") return { boolValue: x };
  if (Array.isArray(x)) return { listValue: { values: x.map(toValue) } };
  if (typeof x === "object") return { structValue: toStruct(x) };
  throw new TypeError(`not a JSON value: ${typeof x}`);
}

function fromValue(v) {
  if (!v) return null;
  switch (v.kind) {
    case "numberValue":
      return v.numberValue;
    case "stringValue":
      return v.stringValue;
    case "boolValue":
      return v.boolValue;
    case "structValue":
      return fromStruct(v.structValue);
    case "listValue":
      return (v.listValue.values || []).map(fromValue);
    default:
      return null;
  }
}

// google.protobuf.Struct <-> plain object
function toStruct(obj) {
  const fields = {};
  for (const [k, x] of Object.entries(obj || {})) fields[k] = toValue(x);
  return { fields };
}

function fromStruct(s) {
  const out = {};
  for (const [k, v] of Object.entries((s && s.fields) || {})) out[k] = fromValue(v);
  return out;
}

// seconds (may be fractional) -> google.protobuf.Duration
function duration(seconds) {
  const whole = Math.floor(seconds);
  return { seconds: String(whole), nanos: Math.round((seconds - whole) * 1e9) };
}

// Promise wrapper of a unary call with a deadline in seconds.
function call(client, method, request, timeoutSeconds = 10) {
  const deadline = new Date(Date.now() + timeoutSeconds * 1000);
  return new Promise((resolve, reject) => {
    client[method](request, { deadline }, (err, response) =>
      err ? reject(err) : resolve(response),
    );
  });
}

module.exports = {
  grpc,
  address,
  jobService,
  workerService,
  toValue,
  fromValue,
  toStruct,
  fromStruct,
  duration,
  call,
};
