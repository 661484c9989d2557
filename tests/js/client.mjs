// A Job Monitor client built on the official socket.io-client, driven by tests/test_realtime_js.py.
//
//   node client.mjs '{"url": "http://127.0.0.1:8000", "token": "jm_..."}'     (or "cookie": "...")
//
// Prints one JSON line per thing it sees: {"type": "connect"}, {"type": "connect_error", "message",
// "data"}, {"type": "event", "name", "data"}, {"type": "ack", "id", "data"}, {"type": "disconnect"}.
// Reads commands as JSON lines on stdin: {"id": 1, "emit": "subscribe", "data": {...}} emits with
// an ack (printed as {"type": "ack", "id": 1, ...}); without "data" it sends no argument; with
// "noAck": true it emits without asking for an ack (printed as {"type": "sent", "id": 1}).
// Option "path" connects to another Socket.IO path (default /socket.io). {"quit": true} or the end
// of stdin exits.
import { createInterface } from "node:readline";
import { io } from "socket.io-client";

const options = JSON.parse(process.argv[2]);
const print = (line) => process.stdout.write(JSON.stringify(line) + "\n");

const socket = io(options.url, {
  path: options.path ?? "/socket.io",
  transports: options.transports ?? ["polling", "websocket"],
  auth: options.token ? { token: options.token } : undefined,
  extraHeaders: options.cookie ? { Cookie: options.cookie } : undefined,
  reconnection: false,
});

socket.on("connect", () => print({ type: "connect", transport: socket.io.engine.transport.name }));
socket.on("connect_error", (err) => print({ type: "connect_error", message: err.message, data: err.data ?? null }));
socket.on("disconnect", (reason) => print({ type: "disconnect", reason }));
socket.onAny((name, data) => print({ type: "event", name, data }));

const lines = createInterface({ input: process.stdin });
lines.on("line", async (line) => {
  const command = JSON.parse(line);
  if (command.quit) {
    socket.close();
    process.exit(0);
  }
  const args = "data" in command ? [command.data] : [];
  if (command.noAck) {
    socket.emit(command.emit, ...args);
    print({ type: "sent", id: command.id });
    return;
  }
  const data = await socket.timeout(5000).emitWithAck(command.emit, ...args).catch((err) => ({ timeout: String(err) }));
  print({ type: "ack", id: command.id, data });
});
lines.on("close", () => {
  socket.close();
  process.exit(0);
});
