// exchange local interface: progressive enhancement only (the pages work as plain forms).
// No third-party code, nothing fetched from elsewhere; served under a strict CSP.
"use strict";

(function () {
  const $ = (sel, root) => (root || document).querySelector(sel);
  const el = (tag, attrs, text) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  };

  // -- language switch: submit on change (the button stays for keyboards without JS) --
  const lang = $("#language");
  if (lang) lang.addEventListener("change", () => $("#language-form").submit());

  // -- sizes, rates and time left ------------------------------------------------------
  const docLang = document.documentElement.lang || "en";
  const number = new Intl.NumberFormat(docLang, { maximumFractionDigits: 1 });
  function size(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return number.format(n) + " " + units[i];
  }
  function duration(s) {
    if (!isFinite(s)) return "–";
    s = Math.max(0, Math.round(s));
    const m = Math.floor(s / 60);
    return m ? m + " min " + (s % 60) + " s" : s + " s";
  }

  // -- transfers (uploads, pulls, verification) ------------------------------------------
  const transfers = $("#transfers");
  const T = (name) => (transfers ? transfers.dataset["t" + name] || "" : "");
  const items = new Map(); // key -> {li, bar, text}

  function transfer(key, label) {
    if (items.has(key)) return items.get(key);
    const li = el("li", { "data-transfer": key });
    const name = el("span", { class: "name" }, label);
    const bar = el("progress", { max: "1", value: "0", "aria-label": label });
    const text = el("span", { class: "state" }, T("Waiting"));
    li.append(name, bar, text);
    transfers.append(li);
    const item = { li, bar, text, phase: "" };
    items.set(key, item);
    return item;
  }

  function show(item, phase, done, total, elapsed) {
    item.bar.max = total || 1;
    item.bar.value = Math.min(done, total || 1);
    const rate = elapsed > 0 ? done / elapsed : 0;
    const left = rate > 0 ? (total - done) / rate : Infinity;
    item.text.textContent = [phase, size(done) + " / " + size(total),
      size(rate) + "/s", duration(left) + " " + T("Left")].filter(Boolean).join(" · ");
  }

  const jobs = new Map(); // job id -> transfer item
  const waiters = new Map(); // job id -> resolve(job)

  function onJob(job) {
    let item = jobs.get(job.id);
    if (!item && transfers && (job.kind === "pull" || job.kind === "verify" || job.kind === "pull-all")) {
      item = transfer(job.id, job.label);
      jobs.set(job.id, item);
    }
    if (item) {
      item.li.dataset.state = job.state;
      if (job.state === "running") {
        if (job.total) show(item, job.message || T("Sending"), job.done, job.total, job.elapsed);
        else item.text.textContent = job.message || "…";
      } else {
        item.bar.max = 1; item.bar.value = job.state === "done" ? 1 : 0;
        item.text.textContent = (job.state === "done" ? T("Done") : T("Failed")) +
          (job.message ? " · " + job.message : "");
        item.li.classList.add(job.state === "done" ? "good" : "bad");
      }
    }
    if (job.state !== "running" && waiters.has(job.id)) {
      waiters.get(job.id)(job);
      waiters.delete(job.id);
    }
  }

  function waitJob(id) {
    return new Promise((resolve) => {
      waiters.set(id, resolve);
      // the job may have ended before we started waiting: ask once
      fetch("/jobs/" + id).then((r) => r.json()).then((job) => {
        if (job.state !== "running" && waiters.has(id)) { waiters.delete(id); resolve(job); }
      }).catch(() => {});
    });
  }

  // -- the event stream -----------------------------------------------------------------
  const handlers = { job: onJob };
  let stream = null;
  if (document.body.dataset.unlocked === "yes") {
    stream = new EventSource("/events");
    stream.onmessage = (msg) => {
      let event;
      try { event = JSON.parse(msg.data); } catch (e) { return; }
      if (event.type === "locked") { window.location.assign("/"); return; }
      const handler = handlers[event.type];
      if (handler) handler(event);
    };
  }

  // -- drop zones -------------------------------------------------------------------------
  function readEntries(reader) {
    return new Promise((resolve, reject) => reader.readEntries(resolve, reject));
  }
  async function walk(entry, prefix, out) {
    if (entry.isFile) {
      const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
      out.push({ file, path: prefix + entry.name });
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch = await readEntries(reader);
        if (!batch.length) break;
        for (const child of batch) await walk(child, prefix + entry.name + "/", out);
      }
    }
  }
  async function dropped(dataTransfer) {
    const out = [];
    const entries = [];
    for (const item of dataTransfer.items || []) {
      const entry = item.webkitGetAsEntry ? item.webkitGetAsEntry() : null;
      if (entry) entries.push(entry);
    }
    if (entries.length) {
      for (const entry of entries) await walk(entry, "", out);
    } else {
      for (const file of dataTransfer.files || []) out.push({ file, path: file.name });
    }
    return out;
  }
  function dropZone(zone, onFiles) {
    // Keyboard users: Enter or Space on the zone opens its (first) file picker.
    zone.addEventListener("keydown", (e) => {
      if ((e.key === "Enter" || e.key === " ") && e.target === zone) {
        e.preventDefault();
        const picker = zone.querySelector("input[type=file]");
        if (picker) picker.click();
      }
    });
    zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", async (e) => {
      e.preventDefault();
      zone.classList.remove("over");
      onFiles(await dropped(e.dataTransfer));
    });
  }

  // -- prosecutor: upload dropped files and folders, one after the other ----------------
  const dropzone = $("#dropzone");
  if (dropzone) {
    const caseId = dropzone.dataset.case;
    let queue = Promise.resolve();
    let pending = 0, failed = 0;

    function send(entry) {
      const item = transfer("up:" + entry.path + ":" + Math.random(), entry.path);
      return new Promise((resolve) => {
        const xhr = new XMLHttpRequest();
        const started = performance.now();
        xhr.open("POST", "/cases/" + encodeURIComponent(caseId) + "/files");
        xhr.setRequestHeader("X-Relative-Path", encodeURIComponent(entry.path));
        xhr.setRequestHeader("X-Last-Modified", String(entry.file.lastModified || 0));
        xhr.setRequestHeader("Content-Type", "application/octet-stream");
        xhr.upload.onprogress = (e) => show(item, T("Copying"), e.loaded, e.total,
          (performance.now() - started) / 1000);
        xhr.onload = async () => {
          let answer = {};
          try { answer = JSON.parse(xhr.responseText); } catch (e) { /* shown below */ }
          if (xhr.status !== 200 || !answer.job) {
            item.text.textContent = T("Failed") + " · " + (answer.error || xhr.status);
            item.li.classList.add("bad"); failed++; resolve(); return;
          }
          jobs.set(answer.job, item);
          const job = await waitJob(answer.job);
          onJob(job);
          if (job.state !== "done") failed++;
          resolve();
        };
        xhr.onerror = () => { item.text.textContent = T("Failed"); item.li.classList.add("bad"); failed++; resolve(); };
        xhr.send(entry.file);
      });
    }
    function enqueue(entries) {
      for (const entry of entries) {
        pending++;
        queue = queue.then(() => send(entry)).then(() => {
          pending--;
          if (pending === 0 && failed === 0) window.location.reload();
        });
      }
    }
    dropZone(dropzone, enqueue);
    $("#pick-files").addEventListener("change", (e) =>
      enqueue([...e.target.files].map((file) => ({ file, path: file.name }))));
    $("#pick-folder").addEventListener("change", (e) =>
      enqueue([...e.target.files].map((file) => ({ file, path: file.webkitRelativePath || file.name }))));
  }

  // -- coordination centre: live rows and pull all -------------------------------------
  const live = $("#live");
  if (live) {
    const body = live.tBodies[0];
    const liveState = $("#live-state");
    function badge(row, kind, text, title) {
      const cell = row.querySelector(".badge-cell");
      cell.textContent = "";
      cell.append(el("span", { class: "badge " + kind, title: title || "" }, text));
    }
    function addRow(r) {
      if (body.querySelector('tr[data-evidence="' + CSS.escape(r.evidence_id) + '"]')) return;
      const tr = el("tr", { "data-evidence": r.evidence_id, class: "new" });
      for (const value of [r.case_title, r.file_name, r.size, r.uploader, r.uploaded_at]) {
        tr.append(el("td", {}, value));
      }
      tr.append(el("td", { class: "badge-cell" }));
      badge(tr, r.badge, r.badge_text, r.plaintext_sha256);
      body.prepend(tr);
    }
    handlers.evidence = addRow;
    handlers.pulled = (p) => {
      const tr = body.querySelector('tr[data-evidence="' + CSS.escape(p.evidence_id) + '"]');
      if (tr) badge(tr, "good", p.badge_text, p.path);
    };
    handlers["feed-failed"] = (p) => {
      liveState.textContent = p.case_id + ": " + p.message;
      liveState.dataset.live = "no";
    };
    handlers.membership = () => {
      liveState.textContent = liveState.dataset.tLive + " · " + liveState.dataset.tMembers;
    };
    handlers["evidence-failed"] = (p) => {
      const tr = body.querySelector('tr[data-evidence="' + CSS.escape(p.evidence_id) + '"]');
      if (tr) badge(tr, "bad", p.message);
    };
    if (stream) {
      stream.onopen = () => {
        liveState.textContent = liveState.dataset.tLive;
        liveState.dataset.live = "yes";
        fetch("/dashboard/rows").then((r) => r.json()).then((d) => d.rows.forEach(addRow)).catch(() => {});
      };
      stream.onerror = () => { liveState.textContent = liveState.dataset.tOffline; liveState.dataset.live = "no"; };
    }
    $("#pull-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const form = new FormData(e.target);
      await fetch("/pull", { method: "POST", body: new URLSearchParams(form),
        headers: { Accept: "application/json" } });
    });
  }

  // -- auditor: verify with progress, check dropped receipts ---------------------------
  const verify = $("#verify");
  if (verify) {
    verify.addEventListener("click", async () => {
      verify.disabled = true;
      const answer = await (await fetch("/audit/verify", { method: "POST" })).json();
      const job = await waitJob(answer.job);
      onJob(job);
      verify.disabled = false;
      $("#verify-state").textContent = job.message;
      if (job.state === "done") window.location.reload();
    });
  }
  const checkzone = $("#checkzone");
  if (checkzone) {
    const results = $("#check-results");
    async function check(file) {
      const answer = await (await fetch("/audit/check", { method: "POST", body: file })).json();
      results.textContent = "";
      for (const r of answer.results) {
        const box = el("div", { class: "result " + (r.ok ? "good" : "bad") });
        box.append(el("strong", {}, (r.what ? r.what + ": " : "") +
          (r.ok ? checkzone.dataset.tOk : checkzone.dataset.tBad)));
        if (r.ok) {
          const list = el("ul");
          for (const line of r.lines) list.append(el("li", {}, line));
          box.append(list);
        } else {
          box.append(el("p", {}, r.message));
        }
        results.append(box);
      }
    }
    dropZone(checkzone, (entries) => { if (entries.length) check(entries[0].file); });
    $("#pick-receipt").addEventListener("change", (e) => { if (e.target.files.length) check(e.target.files[0]); });
  }
})();
