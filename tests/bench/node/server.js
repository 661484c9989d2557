// The Node.js socket.io server that tests/bench/bench_vs_node.py measures Job Monitor's delivery
// against: what a team would write in Node for the same job. One process, socket.io's defaults
// (in-memory adapter), WebSocket without compression; each socket joins `user:<id>` from its
// handshake's `auth.user` (no authentication: the Python side bypasses it too).
//
//   node server.js PORT JOB_JSON
//
// GET /bench/ready answers 200. POST /bench/emit?mode=per-user|broadcast&rate=R&seconds=S&users=U
// emits `job-update` events for S seconds: R a second (0: as fast as possible, yielding to the
// event loop after each), each with the job of JOB_JSON (a real job's fields) and `at`, the time
// of the emit; per-user to one user's room at a time (round robin, ids counting per user), or
// broadcast to every socket (ids counting over the server).
"use strict";

const http = require("http");
const { Server } = require("socket.io");

const port = Number(process.argv[2]);
const job = JSON.parse(process.argv[3]);

const httpServer = http.createServer((req, res) => {
  const url = new URL(req.url, "http://localhost");
  if (url.pathname === "/bench/ready") {
    res.writeHead(200).end("ok");
  } else if (url.pathname === "/bench/emit" && req.method === "POST") {
    const q = url.searchParams;
    run(q.get("mode"), Number(q.get("rate")), Number(q.get("seconds")), Number(q.get("users")));
    res.writeHead(202).end("started");
  } else if (!url.pathname.startsWith("/socket.io/")) {
    res.writeHead(404).end();
  }
});

const io = new Server(httpServer, { transports: ["websocket", "polling"], perMessageDeflate: false });
io.on("connection", (socket) => {
  socket.join(`user:${socket.handshake.auth.user}`);
});

const perUser = new Map(); // user -> last event id
let broadcastId = 0;

function emitOne(mode, n, users) {
  if (mode === "broadcast") {
    broadcastId += 1;
    io.emit("job-update", { event_id: broadcastId, kind: "progress", job: { ...job, done: n }, at: new Date().toISOString() });
  } else {
    const user = n % users;
    const id = (perUser.get(user) || 0) + 1;
    perUser.set(user, id);
    io.to(`user:${user}`).emit("job-update", {
      event_id: id, kind: "progress", job: { ...job, user_id: user, done: n }, at: new Date().toISOString(),
    });
  }
}

function run(mode, rate, seconds, users) {
  const start = Date.now();
  const end = start + seconds * 1000;
  let sent = 0;
  if (rate > 0) {
    const tick = () => {
      const now = Date.now();
      const due = Math.min(Math.floor(((now - start) / 1000) * rate), Math.floor(seconds * rate));
      while (sent < due) emitOne(mode, sent++, users);
      if (now < end) setTimeout(tick, 2);
    };
    tick();
  } else {
    const step = () => {
      emitOne(mode, sent++, users);
      if (Date.now() < end) setImmediate(step);
    };
    step();
  }
}

httpServer.listen(port, "127.0.0.1");
