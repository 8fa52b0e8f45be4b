// The dashboard's upload box: a small tus 1.0 client (core, creation, termination) that
// sends a CSV in chunks to the streamer's upload server, whose base URL comes from
// /dashboard/config.json (no URL: the box stays hidden). POST creates the upload
// (Upload-Length, Upload-Metadata filename), each chunk is a PATCH at Upload-Offset, and a
// pause, a reload or a dropped connection resumes from the offset HEAD reports: the
// upload's URL is kept in localStorage under the file's name, size and modification time.
// Cancel is a DELETE. Once the bytes are in, GET /uploads/{id} shows the upload's way
// through the pipeline; the last upload is remembered so a reload shows it again. If the
// server wants a token, the box asks for it and keeps it in sessionStorage only.
(() => {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const box = $("uploads");
  if (!box) return;
  const params = new URLSearchParams(location.search);
  const CHUNK = Math.max(1024, Number(params.get("upload_chunk")) || 4 * 1024 * 1024);
  const TOKEN_KEY = "weathervane-upload-token";
  const LAST_KEY = "weathervane-upload-last";
  const fingerprint = (file) => `weathervane-upload:${file.name}:${file.size}:${file.lastModified}`;
  let base = null;
  let current = null; // { file, url, offset, controller, paused }
  let watching = null;

  const note = (text) => { $("upload-message").textContent = text; };
  const token = () => sessionStorage.getItem(TOKEN_KEY) || "";
  function askToken(why) {
    $("upload-token-label").hidden = false;
    if (why) note(why);
  }

  async function tus(method, url, headers = {}, body, signal) {
    const all = { "Tus-Resumable": "1.0.0", ...headers };
    if (token()) all.Authorization = `Bearer ${token()}`;
    const response = await fetch(url, { method, headers: all, body, signal, cache: "no-store" });
    if (response.status === 401) {
      askToken("The upload server needs its token: enter it and press Resume.");
      throw Object.assign(new Error("the upload token is missing or wrong"), { quiet: true });
    }
    return response;
  }

  async function failure(response, what) {
    const json = await response.json().catch(() => ({}));
    return new Error(`${what}: ${json.error || `${response.status} ${response.statusText}`}`);
  }

  function show(state) {
    box.dataset.state = state;
    const uploading = state === "uploading";
    $("upload-pause").disabled = !uploading;
    $("upload-resume").disabled = !(state === "paused" || state === "error") || !current;
    $("upload-cancel").disabled = !current || state === "uploaded";
    $("upload-state").textContent = state;
  }

  function drawBytes(offset, size) {
    const bar = $("upload-bar");
    bar.max = Math.max(size, 1);
    bar.value = size === 0 ? 1 : offset;
    box.dataset.offset = String(offset);
    box.dataset.size = String(size);
    const pct = size === 0 ? 100 : Math.floor((offset / size) * 100);
    $("upload-bytes").textContent = `${offset.toLocaleString()} of ${size.toLocaleString()} bytes (${pct} %)`;
  }

  const encode = (text) => btoa(String.fromCharCode(...new TextEncoder().encode(text)));

  // Where the file's upload is: resumed from localStorage if the server still has it,
  // else created.
  async function locate(file) {
    const key = fingerprint(file);
    const known = localStorage.getItem(key);
    if (known) {
      const response = await tus("HEAD", known);
      if (response.ok) return { url: known, offset: Number(response.headers.get("Upload-Offset")) };
      localStorage.removeItem(key);
    }
    const response = await tus("POST", `${base}/uploads`, {
      "Upload-Length": String(file.size),
      "Upload-Metadata": `filename ${encode(file.name)}`,
    });
    if (response.status !== 201) throw await failure(response, "creating the upload");
    const url = new URL(response.headers.get("Location"), `${base}/`).href;
    localStorage.setItem(key, url);
    return { url, offset: Number(response.headers.get("Upload-Offset") || 0) };
  }

  async function send(file) {
    if (watching) { clearTimeout(watching); watching = null; }
    current = { file, url: null, offset: 0, controller: new AbortController(), paused: false };
    const upload = current;
    show("uploading");
    $("upload-name").textContent = file.name;
    drawBytes(0, file.size);
    try {
      Object.assign(upload, await locate(file));
      box.dataset.url = upload.url;
      drawBytes(upload.offset, file.size);
      while (upload.offset < file.size) {
        if (upload.paused) return;
        const chunk = file.slice(upload.offset, upload.offset + CHUNK);
        const response = await tus("PATCH", upload.url, {
          "Upload-Offset": String(upload.offset),
          "Content-Type": "application/offset+octet-stream",
        }, chunk, upload.controller.signal);
        if (response.status === 409) {
          // Our offset is stale (another tab, a lost answer): ask where the upload is.
          const head = await tus("HEAD", upload.url);
          if (!head.ok) throw await failure(head, "asking the upload's offset");
          upload.offset = Number(head.headers.get("Upload-Offset"));
        } else if (response.status === 204) {
          upload.offset = Number(response.headers.get("Upload-Offset"));
        } else {
          throw await failure(response, `sending bytes from ${upload.offset}`);
        }
        drawBytes(upload.offset, file.size);
      }
      localStorage.removeItem(fingerprint(file));
      localStorage.setItem(LAST_KEY, JSON.stringify({ url: upload.url, name: file.name, size: file.size }));
      show("uploaded");
      note("");
      watch(upload.url);
    } catch (error) {
      if (upload.paused) return;
      show("error");
      if (!error.quiet) note(`Upload of ${file.name}: ${error.message}`);
    }
  }

  // The upload's way through the pipeline, polled until it is done or failed.
  async function watch(url) {
    let progress;
    try {
      const response = await fetch(url, { headers: token() ? { Authorization: `Bearer ${token()}` } : {}, cache: "no-store" });
      if (response.status === 404 || response.status === 410) {
        localStorage.removeItem(LAST_KEY);
        return;
      }
      if (!response.ok) throw await failure(response, "the upload's progress");
      progress = await response.json();
    } catch (error) {
      note(error.message);
      watching = setTimeout(() => watch(url), 5000);
      return;
    }
    box.dataset.url = url;
    box.dataset.pipeline = progress.state;
    $("upload-name").textContent = progress.file_name;
    drawBytes(progress.bytes_received, progress.bytes_total);
    if (!current) show(progress.state === "uploading" ? "paused" : "uploaded");
    const facts = {
      "upload-pipeline": progress.state,
      "upload-rows-read": progress.rows_read,
      "upload-rows-rejected": progress.rows_rejected,
      "upload-hours-streamed": `${progress.hours_streamed} of ${progress.hours}`,
      "upload-hours-reported": `${progress.hours_reported} of ${progress.hours}`,
    };
    for (const [id, value] of Object.entries(facts)) $(id).textContent = String(value);
    $("upload-facts").dataset.rowsRead = String(progress.rows_read);
    $("upload-facts").dataset.rowsRejected = String(progress.rows_rejected);
    $("upload-facts").dataset.hoursReported = String(progress.hours_reported);
    $("upload-facts").hidden = false;
    if (progress.error) note(`Upload ${progress.file_name}: ${progress.error}`);
    const finished = progress.state === "failed" || (progress.state === "done" && progress.hours_reported >= progress.hours);
    if (!finished && !document.hidden) watching = setTimeout(() => watch(url), 2000);
  }

  function pause() {
    if (!current) return;
    current.paused = true;
    current.controller.abort();
    show("paused");
  }

  async function cancel() {
    if (!current) return;
    const upload = current;
    upload.paused = true;
    upload.controller.abort();
    current = null;
    localStorage.removeItem(fingerprint(upload.file));
    try {
      if (upload.url) {
        // The aborted PATCH may still hold the upload on the server for a moment (423).
        let response = await tus("DELETE", upload.url);
        for (let tries = 0; response.status === 423 && tries < 10; tries += 1) {
          await new Promise((resolve) => setTimeout(resolve, 300));
          response = await tus("DELETE", upload.url);
        }
        if (!response.ok && response.status !== 404 && response.status !== 410) throw await failure(response, "cancelling the upload");
      }
      note(`Upload of ${upload.file.name} cancelled: nothing of it is streamed.`);
    } catch (error) {
      if (!error.quiet) note(error.message);
    }
    delete box.dataset.url;
    drawBytes(0, upload.file.size);
    show("cancelled");
  }

  async function setup() {
    const config = await fetch("/dashboard/config.json").then((r) => r.json()).catch(() => ({}));
    if (!config.upload_url) return;
    base = config.upload_url.replace(/\/+$/, "");
    box.hidden = false;
    $("upload-target").textContent = base;
    $("upload-token").value = token();
    $("upload-token").addEventListener("change", (event) => {
      const value = event.target.value.trim();
      if (value) sessionStorage.setItem(TOKEN_KEY, value); else sessionStorage.removeItem(TOKEN_KEY);
    });
    $("upload-file").addEventListener("change", (event) => {
      const file = event.target.files[0];
      if (file) send(file);
    });
    $("upload-pause").addEventListener("click", pause);
    $("upload-resume").addEventListener("click", () => { if (current) send(current.file); });
    $("upload-cancel").addEventListener("click", cancel);
    show("idle");
    // Does the server want a token? A HEAD on no upload answers 401 before 404 if so.
    try {
      await tus("HEAD", `${base}/uploads/0`);
    } catch (error) {
      if (!error.quiet) note(`The upload server at ${base} does not answer: ${error.message}`);
    }
    const last = JSON.parse(localStorage.getItem(LAST_KEY) || "null");
    if (last && last.url) watch(last.url);
    // Tests feed a file from a URL (only when the api runs with --dashboard-test-hooks).
    const from = params.get("upload_from");
    if (config.test_hooks && from) {
      const response = await fetch(from);
      const blob = await response.blob();
      const name = decodeURIComponent(new URL(from).pathname.split("/").pop());
      send(new File([blob], name, { type: "text/csv", lastModified: 0 }));
    }
  }

  setup();
})();
