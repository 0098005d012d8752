// jobwheel dashboard: live rows over Server-Sent Events, live job page, charts.
// No inline scripts (the Content-Security-Policy forbids them): everything starts here.
"use strict";

function setStatus(text, state) {
  const el = document.getElementById("live-status");
  if (!el) return;
  el.textContent = text;
  el.dataset.state = state;
}

// The EventSource sends Last-Event-ID itself when it reconnects; the first connection
// starts at the revision the page was rendered at.
function openLive(url, since, onRows) {
  const source = new EventSource(url + (url.includes("?") ? "&" : "?") + "since=" + since);
  source.addEventListener("open", () => setStatus("live", "live"));
  source.addEventListener("error", () => setStatus("reconnecting…", "down"));
  source.addEventListener("rows", (msg) => onRows(JSON.parse(msg.data).rows));
  source.addEventListener("reset", () => { source.close(); window.location.reload(); });
  window.addEventListener("pagehide", () => source.close());
  return source;
}

function rowFromHtml(html) {
  const tbody = document.createElement("tbody");
  tbody.innerHTML = html; // rendered and escaped by the server's template
  return tbody.firstElementChild;
}

function liveJobsTable(table) {
  const tbody = table.tBodies[0];
  const firstPage = table.dataset.firstPage === "yes";
  const limit = parseInt(table.dataset.limit, 10) || 50;
  openLive(table.dataset.live, table.dataset.since, (rows) => {
    for (const row of rows) {
      const existing = tbody.querySelector(`tr[data-id="${CSS.escape(row.id)}"]`);
      if (existing && row.match) {
        const fresh = rowFromHtml(row.html);
        if (existing.innerHTML !== fresh.innerHTML) {
          fresh.classList.add("changed");
          existing.replaceWith(fresh);
        }
      } else if (existing) {
        existing.classList.add("gone");
        existing.title = "no longer matches the filter";
      } else if (row.match && firstPage) {
        const fresh = rowFromHtml(row.html);
        fresh.classList.add("changed");
        // newest first: before the first row with a smaller seq
        let before = null;
        for (const tr of tbody.rows) {
          if (parseInt(tr.dataset.seq, 10) < row.seq) { before = tr; break; }
        }
        tbody.insertBefore(fresh, before);
      }
    }
    if (firstPage) {
      while (tbody.rows.length > limit) tbody.deleteRow(tbody.rows.length - 1);
    }
    const empty = document.querySelector("p.empty");
    if (empty && tbody.rows.length) empty.remove();
  });
}

function liveJobPage(section) {
  let busy = false;
  let again = false;
  async function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    try {
      const response = await fetch(window.location.pathname, { credentials: "same-origin" });
      if (response.ok) {
        const doc = new DOMParser().parseFromString(await response.text(), "text/html");
        const fresh = doc.getElementById("job-live");
        if (fresh) section.replaceChildren(...fresh.childNodes);
      }
    } finally {
      busy = false;
      if (again) { again = false; refresh(); }
    }
  }
  openLive(section.dataset.live, section.dataset.since, refresh);
}

function chart(el, title, t, series, opts) {
  if (!el || typeof uPlot === "undefined") return;
  const width = Math.max(300, el.clientWidth);
  const config = {
    width, height: 220,
    series: [{}, ...series.map(({ data, ...style }) => style)],
    axes: [{ stroke: "#64748b", grid: { stroke: "#eef2f7" } },
           { stroke: "#64748b", grid: { stroke: "#eef2f7" }, size: 50 }],
    legend: { show: true },
    cursor: { drag: { x: false, y: false } },
    scales: opts && opts.scales ? opts.scales : {},
  };
  const plot = new uPlot(config, [t, ...series.map((s) => s.data)], el);
  new ResizeObserver(() => plot.setSize({ width: Math.max(300, el.clientWidth), height: 220 })).observe(el);
}

async function charts(box) {
  const response = await fetch(box.dataset.src, { credentials: "same-origin" });
  if (!response.ok) return;
  const d = await response.json();
  chart(document.getElementById("chart-throughput"), "Throughput", d.t, [
    { label: "succeeded", stroke: "#16a34a", fill: "rgba(22,163,74,0.12)", width: 2, data: d.succeeded },
    { label: "failed", stroke: "#dc2626", fill: "rgba(220,38,38,0.10)", width: 2, data: d.failed },
  ]);
  chart(document.getElementById("chart-failures"), "Failure rate", d.t, [
    { label: "failure %", stroke: "#ea580c", width: 2, spanGaps: false, data: d.failure_rate },
  ], { scales: { y: { range: [0, 100] } } });
  chart(document.getElementById("chart-lateness"), "Lateness", d.t, [
    { label: "max lateness ms", stroke: "#2563eb", width: 2, points: { show: true, size: 5 }, data: d.lateness_ms },
  ]);
}

// Empty filter inputs stay out of the URL, so links to a filter are short.
function tidyFilterForm(form) {
  form.addEventListener("submit", () => {
    for (const input of form.querySelectorAll("input")) {
      if (input.type !== "checkbox" && !input.value) input.disabled = true;
    }
  });
  window.addEventListener("pageshow", () => {
    for (const input of form.querySelectorAll("input")) input.disabled = false;
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const filters = document.querySelector("form.filters");
  if (filters) tidyFilterForm(filters);
  const table = document.getElementById("jobs-table");
  if (table && table.dataset.live) liveJobsTable(table);
  const job = document.getElementById("job-live");
  if (job && job.dataset.live) liveJobPage(job);
  const box = document.getElementById("charts");
  if (box) charts(box);
});
