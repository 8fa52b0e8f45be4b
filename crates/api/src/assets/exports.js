// The dashboard's export jobs (/exports): a form that queues one, and the job list,
// polled every 2 s, with each job's status, progress, a cancel button and a download
// link. With a token (when the API asks for one) every call sends it, and downloads go
// through fetch so they can carry it.
(() => {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const list = $("export-jobs");
  const note = $("export-message");
  if (!list) return;
  const token = () => $("export-token").value.trim();
  const headers = (extra = {}) => (token() ? { ...extra, Authorization: `Bearer ${token()}` } : extra);
  const cell = (text) => { const td = document.createElement("td"); td.textContent = text; return td; };

  async function call(method, url, body) {
    const init = { method, headers: headers(body ? { "Content-Type": "application/json" } : {}) };
    if (body) init.body = JSON.stringify(body);
    const response = await fetch(url, init);
    const json = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(json.error || `${response.status} ${response.statusText}`);
    return json;
  }

  async function download(job) {
    const response = await fetch(`/exports/${job.id}/file`, { headers: headers() });
    if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
    const url = URL.createObjectURL(await response.blob());
    const a = document.createElement("a");
    a.href = url; a.download = `weathervane-${job.what}-${job.from}-${job.to}.csv`;
    document.body.append(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  function row(job) {
    const tr = document.createElement("tr");
    tr.dataset.id = job.id; tr.dataset.status = job.status;
    const range = job.from === job.to ? job.from : `${job.from} – ${job.to}`;
    tr.append(cell(job.what), cell(range), cell(job.states.length ? job.states.join(", ") : "all"),
      cell(job.status), cell(`${Math.round(job.progress * 100)} %`), cell(String(job.rows)));
    const actions = document.createElement("td");
    if (job.status === "done") {
      if (token()) {
        const get = document.createElement("button");
        get.type = "button"; get.textContent = "Download";
        get.addEventListener("click", () => download(job).catch((e) => { note.textContent = e.message; }));
        actions.append(get);
      } else {
        const a = document.createElement("a");
        a.href = `/exports/${job.id}/file`; a.textContent = "Download"; a.setAttribute("download", "");
        actions.append(a);
      }
    }
    if (job.status === "queued" || job.status === "running" || job.status === "done") {
      const cancel = document.createElement("button");
      cancel.type = "button";
      cancel.textContent = job.status === "done" ? "Delete" : "Cancel";
      cancel.addEventListener("click", () => call("DELETE", `/exports/${job.id}`).then(refresh, (e) => { note.textContent = e.message; }));
      actions.append(" ", cancel);
    }
    tr.append(actions);
    return tr;
  }

  async function refresh() {
    try {
      const jobs = await call("GET", "/exports?limit=20");
      list.replaceChildren(...jobs.map(row));
      note.textContent = jobs.length ? "" : "No export jobs yet.";
    } catch (error) {
      note.textContent = `Export jobs: ${error.message}`;
    }
  }

  $("export-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const states = $("export-states").value.split(/[\s,]+/).filter(Boolean);
    const body = { what: $("export-what").value, from: $("export-from").value, to: $("export-to").value || $("export-from").value, format: "csv" };
    if (states.length) body.states = states;
    try {
      await call("POST", "/exports", body);
      await refresh();
    } catch (error) {
      note.textContent = error.message;
    }
  });
  // Start from the date the dashboard shows, once it has one.
  const date = $("date");
  const fill = () => { if (date && date.value && !$("export-from").value) { $("export-from").value = date.value; $("export-to").value = date.value; } };
  if (date) date.addEventListener("change", fill);
  setTimeout(fill, 1500);
  refresh();
  setInterval(() => { if (!document.hidden) refresh(); }, 2000);
})();
