// The seed's web stack with no backends: a bare Express 4 server with the
// seed's two cheapest routes, for scripts/bench-api.sh to measure beside
// Kumulus. `addJob` parses the body and answers an id, storing nothing.
const express = require("express");
const crypto = require("crypto");

const app = express();
app.use(express.json());
app.get("/health", (_req, res) => res.send("<h1>Server is Running</h1>"));
app.post("/api/addJob", (req, res) => {
  if (!req.body || typeof req.body.url !== "string") {
    return res.status(400).json({ error: "url is required" });
  }
  res.status(201).json({ jobId: crypto.randomUUID() });
});
const server = app.listen(Number(process.env.PORT || 0), "127.0.0.1", () => {
  console.log(`listening on http://127.0.0.1:${server.address().port}`);
});
