// A stand-in for mqtt-whisk-provider's feed API: a real HTTP server on 127.0.0.1, port 0,
// that records every request and answers what the test scripted.
//
// (Node 20's `node --test actions/test/` also runs this file as a test file, with no
// tests in it; `cargo test` passes only the *.test.js files.)
'use strict';

const http = require('node:http');

/**
 * Starts the server. `answer({status, json})` or `answer({status, text, contentType})`
 * scripts the reply to every later request; `answer({hang: true})` never replies.
 */
async function startFakeProvider() {
  const requests = [];
  let scripted = { status: 200, json: {} };
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => {
      requests.push({
        method: req.method,
        path: req.url,
        headers: req.headers,
        body: Buffer.concat(chunks).toString('utf8'),
      });
      const reply = scripted;
      if (reply.hang) return;
      const isJson = reply.json !== undefined;
      res.writeHead(reply.status, {
        'Content-Type': reply.contentType || (isJson ? 'application/json' : 'text/html'),
        ...reply.headers,
      });
      res.end(isJson ? JSON.stringify(reply.json) : reply.text || '');
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    endpoint: `http://127.0.0.1:${server.address().port}`,
    requests,
    answer(reply) {
      scripted = reply;
    },
    /** Forgets the requests so far. */
    reset() {
      requests.length = 0;
      scripted = { status: 200, json: {} };
    },
    /** Stops the server, dropping connections still open (a request left hanging). */
    close() {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

/** An endpoint nothing listens on: a port that was just bound and closed again. */
async function closedEndpoint() {
  const server = http.createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return `http://127.0.0.1:${port}`;
}

module.exports = { startFakeProvider, closedEndpoint };
