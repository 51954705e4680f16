// The demo page: the same prompt to `/` (blocking) and `/stream` (SSE) at once, side by side,
// and a concurrent mode, run by the server (`POST /demo/run`), that charts each request's
// time to first text and total time from the events the server streams back.
// Plain browser JavaScript: fetch, a ReadableStream reader and a small SSE parser.
// The gateway key, when the server needs one, lives only in its input: never stored.
"use strict";

(() => {
  const root = document.getElementById("demo");
  const STREAM_URL = root.dataset.streamUrl;
  const BLOCKING_URL = root.dataset.blockingUrl;
  const RUN_URL = root.dataset.runUrl;
  const keyInput = document.getElementById("api-key"); // only when the server needs a key
  const KINDS = ["stream", "blocking"];
  const LABELS = { stream: "Streaming", blocking: "Blocking" };

  // ---- Talking to the service -------------------------------------------------------------

  /** A failure the person should read: the service's own message where it sent one. */
  class Failure extends Error {}

  async function failureFrom(response) {
    try {
      const body = await response.json();
      if (body && body.error && body.error.message) {
        return new Failure(`${body.error.message} (HTTP ${response.status}, ${body.error.type})`);
      }
    } catch (_) { /* not our JSON error shape: fall through */ }
    return new Failure(`The server answered HTTP ${response.status} ${response.statusText}.`.trim());
  }

  function networkFailure(error) {
    if (error instanceof Failure || error.name === "AbortError") return error;
    return new Failure(`The connection failed before the answer was complete (${error.message}).`);
  }

  async function post(url, body, accept, signal) {
    const headers = { "Content-Type": "application/json", Accept: accept };
    const key = keyInput ? keyInput.value.trim() : "";
    if (key) headers.Authorization = `Bearer ${key}`;
    let response;
    try {
      // credentials "omit": the key goes only where this page sends it, no cookie with it.
      response = await fetch(url, { method: "POST", signal, body: JSON.stringify(body), headers,
        credentials: "omit", cache: "no-store" });
    } catch (error) {
      throw networkFailure(error);
    }
    if (!response.ok) throw await failureFrom(response);
    return response;
  }

  /** The whole answer from the blocking endpoint. */
  async function blockingAnswer(body, { signal } = {}) {
    const response = await post(BLOCKING_URL, body, "text/plain", signal);
    try {
      return await response.text();
    } catch (error) {
      throw networkFailure(error);
    }
  }

  /** One SSE event block ("event: x\ndata: y") as {type, data}. */
  function parseEvent(block) {
    let type = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") type = value;
      else if (field === "data") data.push(value);
    }
    return { type, data: data.join("\n") };
  }

  /** Calls onEvent({type, data}) for each event of an SSE response, data parsed as JSON. */
  async function readEvents(response, onEvent) {
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n?/g, "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const event = parseEvent(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
          if (event.data) onEvent({ type: event.type, data: JSON.parse(event.data) });
        }
      }
    } catch (error) {
      throw networkFailure(error);
    }
  }

  /** Reads `/stream` as SSE, calling onText for each piece; resolves with the `done` event's data. */
  async function streamAnswer(body, { onText, signal } = {}) {
    const response = await post(STREAM_URL, { ...body, format: "sse" }, "text/event-stream", signal);
    let summary = null;
    await readEvents(response, ({ type, data }) => {
      if (type === "message") onText(data.text);
      else if (type === "done") summary = data;
      else if (type === "error") {
        const error = data.error || {};
        throw new Failure(`${error.message || "The stream failed."} (${error.type || "error"}, mid-stream)`);
      }
    });
    if (!summary) throw new Failure("The stream ended before the answer was complete.");
    return summary;
  }

  // ---- Formatting ---------------------------------------------------------------------------

  const seconds = (ms) => (ms == null ? "–" : `${(ms / 1000).toFixed(2)} s`);
  const countWords = (text) => (text.match(/\S+/g) || []).length;

  function median(values) {
    if (!values.length) return null;
    const sorted = [...values].sort((a, b) => a - b);
    const middle = sorted.length >> 1;
    return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
  }

  // ---- Side by side -------------------------------------------------------------------------

  /** One answer pane: its text, its live timers, its status and error lines. */
  class Pane {
    constructor(element) {
      this.element = element;
      this.output = element.querySelector('[data-role="output"]');
      this.status = element.querySelector('[data-role="status"]');
      this.error = element.querySelector('[data-role="error"]');
      this.metrics = {};
      for (const dd of element.querySelectorAll("[data-metric]")) this.metrics[dd.dataset.metric] = dd;
      this.text = document.createTextNode("");
      this.output.append(this.text);
      this.running = false;
    }

    start(startedAt) {
      Object.assign(this, { startedAt, firstAt: null, endedAt: null, running: true });
      this.text.data = "";
      this.error.hidden = true;
      this.error.textContent = "";
      this.element.classList.remove("failed", "done");
      this.element.setAttribute("aria-busy", "true");
      this.element.dataset.state = "waiting";
      this.status.textContent = "Waiting for the first text…";
      this.render();
    }

    append(piece) {
      if (!this.running || !piece) return;
      if (this.firstAt == null) {
        this.firstAt = performance.now();
        this.element.dataset.state = "receiving";
        this.status.textContent = "Text is arriving…";
      }
      const { output } = this;
      const atBottom = output.scrollHeight - output.scrollTop - output.clientHeight < 24;
      this.text.appendData(piece);
      if (atBottom) output.scrollTop = output.scrollHeight;
    }

    finish(message) {
      this.endedAt = performance.now();
      this.running = false;
      this.element.removeAttribute("aria-busy");
      this.element.classList.add("done");
      this.element.dataset.state = "done";
      this.status.textContent = message;
      this.render();
    }

    fail(error) {
      this.finish("Failed: the message is below the answer.");
      this.element.classList.add("failed");
      this.element.dataset.state = "failed";
      this.error.textContent = error.message;
      this.error.hidden = false;
    }

    stop() {
      if (this.running) this.finish("Stopped.");
    }

    /** Timers and counts; called on every animation frame while running. */
    render() {
      const now = this.endedAt ?? performance.now();
      this.metrics.first.textContent = seconds(this.firstAt == null ? null : this.firstAt - this.startedAt);
      this.metrics.total.textContent = seconds(now - this.startedAt);
      this.metrics.chars.textContent = this.text.length.toLocaleString("en");
      this.metrics.words.textContent = countWords(this.text.data).toLocaleString("en");
    }
  }

  const panes = Object.fromEntries(KINDS.map((kind) => [kind, new Pane(document.getElementById(`pane-${kind}`))]));
  const runForm = document.getElementById("run-form");
  const promptInput = document.getElementById("prompt");
  const maxTokensInput = document.getElementById("max-tokens");
  const runError = document.getElementById("run-error");
  let runController = null;

  function tick() {
    const active = KINDS.filter((kind) => panes[kind].running);
    for (const kind of active) panes[kind].render();
    if (active.length) requestAnimationFrame(tick);
  }

  function showFormError(element, input, message) {
    element.textContent = message;
    element.hidden = !message;
    if (input) input.setAttribute("aria-invalid", message ? "true" : "false");
    if (message && input) input.focus();
    return !message;
  }

  /** The request body from the form, or null after telling the person what is wrong. */
  function readRequest() {
    showFormError(runError, maxTokensInput, "");
    if (!promptInput.value.trim()) {
      showFormError(runError, promptInput, "Write a prompt first.");
      return null;
    }
    promptInput.removeAttribute("aria-invalid");
    const body = { prompt: promptInput.value };
    if (maxTokensInput.value !== "") {
      if (!maxTokensInput.checkValidity()) {
        showFormError(runError, maxTokensInput,
          `Max tokens must be a whole number from ${maxTokensInput.min} to ${maxTokensInput.max}.`);
        return null;
      }
      body.max_tokens = Number(maxTokensInput.value);
    }
    return body;
  }

  async function runStreaming(pane, body, signal) {
    try {
      const summary = await streamAnswer(body, { onText: (piece) => pane.append(piece), signal });
      const tokens = summary.usage ? summary.usage.completion_tokens : summary.chunks;
      pane.finish(`Done: ${tokens} tokens, finish reason “${summary.finish_reason}”.`);
    } catch (error) {
      if (error.name !== "AbortError") pane.fail(error);
    }
  }

  async function runBlocking(pane, body, signal) {
    try {
      pane.append(await blockingAnswer(body, { signal }));
      pane.finish("Done: the whole answer arrived at once.");
    } catch (error) {
      if (error.name !== "AbortError") pane.fail(error);
    }
  }

  runForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const body = readRequest();
    if (!body) return;
    if (runController) runController.abort();
    for (const pane of Object.values(panes)) pane.stop();
    runController = new AbortController();
    const { signal } = runController;
    const startedAt = performance.now();
    for (const pane of Object.values(panes)) pane.start(startedAt);
    runStreaming(panes.stream, body, signal);
    runBlocking(panes.blocking, body, signal);
    requestAnimationFrame(tick);
  });

  promptInput.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      runForm.requestSubmit();
    }
  });

  // ---- Under concurrent load ----------------------------------------------------------------

  const loadForm = document.getElementById("load-form");
  const loadCount = document.getElementById("load-count");
  const loadError = document.getElementById("load-error");
  const loadStatus = document.getElementById("load-status");
  const chart = document.getElementById("load-chart");
  const summaryRows = Object.fromEntries(
    KINDS.map((kind) => [kind, document.querySelector(`#load-summary tr[data-kind="${kind}"]`)]));
  let load = null; // the current run: {count, records, controller, now}
  let drawFrame = 0;

  /** The run's records as the server reports them; all times in ms of the server's clock. */
  function newRecords(count) {
    return KINDS.flatMap((kind) => Array.from({ length: count }, (_, index) => ({
      kind, index, id: null, sent: null, firstAt: null, lastAt: null, chunks: 0,
      first: null, total: null, tokens: null, done: false, error: null,
    })));
  }

  /** One event of the server's run (see flaskapp/web/demo_run.py) applied to its record. */
  function apply({ type, data }) {
    if (data.at != null) load.now = Math.max(load.now, data.at * 1000);
    const record = data.kind && load.records.find((r) => r.kind === data.kind && r.index === data.index);
    if (type === "sent" && record) {
      Object.assign(record, { id: data.id, sent: data.at * 1000 });
    } else if (type === "text" && record) {
      record.firstAt ??= data.at * 1000;
      record.lastAt = data.at * 1000;
      record.chunks = data.chunks;
    } else if (type === "done" && record) {
      Object.assign(record, {
        done: true, total: data.total * 1000, tokens: data.tokens,
        first: data.first == null ? null : data.first * 1000,
        error: data.error ? describe(data) : null,
      });
      summarise();
    } else if (type === "end") {
      load.ended = true;
    }
    if (!drawFrame) drawFrame = requestAnimationFrame(() => { drawFrame = 0; drawChart(); });
  }

  /** A failed request in words: the service's own message where its error body has one. */
  function describe({ error, status, detail }) {
    try {
      const body = JSON.parse(detail.replace(/^event: error\s*data: /, ""));
      if (body.error && body.error.message) return `${body.error.message} (${error})`;
    } catch (_) { /* not JSON, or cut short: the kind is enough */ }
    return status ? `${error} (HTTP ${status})` : error;
  }

  loadForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const count = Number(loadCount.value);
    if (!loadCount.checkValidity() || !Number.isInteger(count)) {
      showFormError(loadError, loadCount,
        `Choose a whole number of requests from ${loadCount.min} to ${loadCount.max}.`);
      return;
    }
    showFormError(loadError, loadCount, "");
    const body = readRequest();
    if (!body) return;
    // Leaving a run closes its response: the server then ends every request of it.
    if (load) load.controller.abort();
    const controller = new AbortController();
    load = { count, controller, records: newRecords(count), now: 0, ended: false };
    const current = load;
    document.getElementById("load-figure").hidden = false;
    loadStatus.textContent = `The server is running ${count} streaming and ${count} blocking requests…`;
    drawChart();
    summarise();
    try {
      const response = await post(`${RUN_URL}?count=${count}`, body, "text/event-stream", controller.signal);
      await readEvents(response, (item) => { if (load === current) apply(item); });
      if (!current.ended) throw new Failure("The run's event stream ended before the run was over.");
    } catch (error) {
      if (error.name === "AbortError" || load !== current) return;
      loadStatus.textContent = "The run failed.";
      showFormError(loadError, null, error.message);
      return;
    }
    const failed = current.records.filter((r) => r.error).length;
    loadStatus.textContent = `Done: ${current.records.length} requests in ${seconds(current.now)} ` +
      "by the server's clock" + (failed ? `, ${failed} failed.` : ".");
  });

  function summarise() {
    for (const kind of KINDS) {
      const mine = load.records.filter((r) => r.kind === kind);
      const done = mine.filter((r) => r.done);
      const ok = done.filter((r) => !r.error);
      const totals = ok.map((r) => r.total);
      const cells = summaryRows[kind].querySelectorAll("td");
      cells[0].textContent = `${done.length} of ${mine.length}`;
      cells[1].textContent = String(done.length - ok.length);
      cells[2].textContent = seconds(median(ok.map((r) => r.first)));
      cells[3].textContent = seconds(median(totals));
      cells[4].textContent = seconds(totals.length ? Math.max(...totals) : null);
    }
  }

  let resizeFrame = 0;
  window.addEventListener("resize", () => {
    cancelAnimationFrame(resizeFrame);
    resizeFrame = requestAnimationFrame(() => load && drawChart());
  });

  // The chart: one row per request, streaming above blocking, drawn in SVG as events arrive.
  // A request still running is drawn up to the latest time the server reported.
  const SVG = "http://www.w3.org/2000/svg";
  const LEFT = 84, RIGHT = 16, TOP = 8, GAP = 14, AXIS = 34;

  function svg(name, attributes, parent) {
    const element = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
    if (parent) parent.append(element);
    return element;
  }

  /** A round axis step (1, 2 or 5 times a power of ten) giving about five ticks. */
  function tickStep(maxSeconds) {
    const rough = maxSeconds / 5;
    const power = 10 ** Math.floor(Math.log10(rough));
    return [1, 2, 5, 10].map((m) => m * power).find((step) => step >= rough);
  }

  function drawChart() {
    const { records, count, now } = load;
    // Rows thin out past twenty of each, so 100 of each still fit about a screen.
    const ROW = count <= 20 ? 14 : Math.max(4, Math.floor(300 / count));
    const PAD = ROW >= 10 ? 2 : 0.5;
    // Drawn at the figure's own pixel width, so text in the chart stays at its CSS size.
    const WIDTH = Math.max(320, Math.round(chart.getBoundingClientRect().width) || 640);
    const maxSeconds = Math.max(0.5, now / 1000) * 1.02;
    const step = tickStep(maxSeconds);
    const axisEnd = Math.ceil(maxSeconds / step) * step;
    const plotWidth = WIDTH - LEFT - RIGHT;
    const x = (ms) => LEFT + (ms / 1000 / axisEnd) * plotWidth;
    const groupTop = (kind) => TOP + (kind === "stream" ? 0 : count * ROW + GAP);
    const height = TOP + 2 * count * ROW + GAP + AXIS;

    chart.replaceChildren();
    chart.setAttribute("viewBox", `0 0 ${WIDTH} ${height}`);
    const plotBottom = height - AXIS + 4;

    for (let i = 0; i <= Math.round(axisEnd / step); i += 1) {
      const t = i * step;
      const at = x(t * 1000);
      svg("line", { class: "grid", x1: at, x2: at, y1: TOP - 4, y2: plotBottom }, chart);
      const label = svg("text", { class: "tick", x: at, y: plotBottom + 14, "text-anchor": "middle" }, chart);
      label.textContent = `${+t.toFixed(3)}`;
    }
    const axisLabel = svg("text", { class: "tick", x: LEFT + plotWidth / 2, y: plotBottom + 28, "text-anchor": "middle" }, chart);
    axisLabel.textContent = "seconds since the server started the run";

    for (const kind of KINDS) {
      const top = groupTop(kind);
      const name = svg("text", { class: `group group-${kind}`, x: LEFT - 8, y: top + (count * ROW) / 2 + 4, "text-anchor": "end" }, chart);
      name.textContent = LABELS[kind];
      svg("rect", { class: "track", x: LEFT, y: top, width: plotWidth, height: count * ROW }, chart);
    }

    for (const record of records) {
      if (record.sent == null) continue;
      const y = groupTop(record.kind) + record.index * ROW + PAD;
      const h = ROW - 2 * PAD;
      const end = record.done ? record.sent + record.total : (record.lastAt ?? now);
      const group = svg("g", {
        class: `bar bar-${record.kind}${record.error ? " bar-error" : ""}${record.done ? "" : " bar-running"}`,
        "data-kind": record.kind, "data-index": record.index, "data-id": record.id,
        "data-sent": (record.sent / 1000).toFixed(3),
        "data-first": record.first == null ? "" : (record.first / 1000).toFixed(3),
        "data-total": record.done ? (record.total / 1000).toFixed(3) : "",
      }, chart);
      const title = svg("title", {}, group);
      title.textContent = `${LABELS[record.kind]} #${record.index + 1}: ` + (!record.done
        ? `running, ${record.chunks} pieces of text so far`
        : record.error
          ? `failed after ${seconds(record.total)}: ${record.error}`
          : `first text ${seconds(record.first)}, total ${seconds(record.total)}` +
            (record.tokens != null ? `, ${record.tokens} tokens` : ""));
      const firstAt = record.firstAt ?? (record.done && record.first != null ? record.sent + record.first : null);
      const waitingEnd = firstAt ?? (record.done ? end : now);
      svg("rect", { class: "waiting", x: x(record.sent), y, height: h, width: Math.max(0, x(waitingEnd) - x(record.sent)) }, group);
      if (record.error) {
        svg("path", { class: "cross", d: `M${x(end) - 4},${y} l8,${h} m0,-${h} l-8,${h}` }, group);
        continue;
      }
      if (firstAt == null) continue;
      svg("rect", { class: "receiving", x: x(firstAt), y, height: h, width: Math.max(1.5, x(end) - x(firstAt)) }, group);
      svg("circle", { class: "first", cx: x(firstAt), cy: y + h / 2, r: Math.min(3, h / 2 + 1) }, group);
    }
  }
})();
