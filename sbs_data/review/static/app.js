// sbs-data browse: keyboard review (j/k move, a/r judge, A/R with a reason, o open, n/p next/previous
// example, / search), the filter form, the Apply button.
// Teacher text only ever enters the page as text (textContent), never as markup.
(function () {
  "use strict";
  const body = document.body;
  const ref = body.dataset.ref;
  const toast = document.getElementById("toast");

  function say(msg, bad) {
    toast.textContent = msg;
    toast.className = "show" + (bad ? " err" : "");
    clearTimeout(say.t);
    say.t = setTimeout(() => { toast.className = ""; }, 2500);
  }

  async function post(url, data) {
    const r = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(data),
      credentials: "same-origin",
    });
    let out = {};
    try { out = await r.json(); } catch (e) { out = { error: "HTTP " + r.status }; }
    if (!r.ok) throw new Error(out.error || ("HTTP " + r.status));
    return out;
  }

  const rows = Array.from(document.querySelectorAll(".row[data-example]"));
  let cur = -1;

  function select(i) {
    if (!rows.length) return;
    i = Math.max(0, Math.min(rows.length - 1, i));
    if (cur >= 0 && rows[cur]) rows[cur].classList.remove("current");
    cur = i;
    rows[cur].classList.add("current");
    rows[cur].scrollIntoView({ block: "nearest" });
  }

  async function judge(verdict, withReason) {
    if (cur < 0) select(0);
    const row = rows[cur];
    if (!row) return;
    let reason = null;
    if (withReason) {
      reason = window.prompt("Reason for " + verdict + " (optional):", "");
      if (reason === null) return;
    }
    const data = { ref: ref, example_id: row.dataset.example, sample: parseInt(row.dataset.sample, 10), verdict: verdict };
    if (reason) data.reason = reason;
    try {
      await post("/api/verdicts", data);
      row.querySelectorAll(".verdict").forEach((cell) => {
        cell.textContent = verdict;
        cell.className = "verdict " + verdict;
        cell.title = reason || "";
      });
      row.dataset.verdict = verdict;
      say(verdict + ": " + row.dataset.example + " #" + row.dataset.sample);
      if (cur < rows.length - 1) select(cur + 1);
    } catch (e) {
      say("not saved: " + e.message, true);
    }
  }

  document.addEventListener("keydown", (ev) => {
    const t = ev.target;
    if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT")) return;
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const page = body.dataset.page;
    if (page !== "version" && page !== "row") return;
    switch (ev.key) {
      case "j": select(cur + 1); break;
      case "k": select(cur - 1); break;
      case "a": judge("keep", false); break;
      case "r": judge("drop", false); break;
      case "A": judge("keep", true); break;
      case "R": judge("drop", true); break;
      case "o":
        if (page === "version" && cur >= 0) window.location.href = rows[cur].dataset.href;
        else return;
        break;
      case "n": if (body.dataset.next) window.location.href = body.dataset.next; else return; break;
      case "p": if (body.dataset.prev) window.location.href = body.dataset.prev; else return; break;
      case "/": { const q = document.getElementById("q"); if (q) q.focus(); else return; break; }
      default: return;
    }
    ev.preventDefault();
  });

  rows.forEach((row, i) => row.addEventListener("click", () => select(i)));

  // Filters: drop empty fields, turn the signal picker into min.SIGNAL / max.SIGNAL.
  const form = document.getElementById("filters");
  if (form) {
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const params = new URLSearchParams();
      const sig = form.elements["_sig"] ? form.elements["_sig"].value : "";
      for (const [k, v] of new FormData(form).entries()) {
        if (k === "_sig" || k === "_lo" || k === "_hi" || v === "") continue;
        params.set(k, v);
      }
      const lo = form.elements["_lo"] ? form.elements["_lo"].value.trim() : "";
      const hi = form.elements["_hi"] ? form.elements["_hi"].value.trim() : "";
      if (sig && lo !== "") params.set("min." + sig, lo);
      if (sig && hi !== "") params.set("max." + sig, hi);
      const qs = params.toString();
      window.location.href = form.getAttribute("action") + (qs ? "?" + qs : "");
    });
  }

  const apply = document.getElementById("apply");
  if (apply) {
    apply.addEventListener("click", async () => {
      const name = document.getElementById("apply-name").value.trim();
      const out = document.getElementById("apply-result");
      try {
        const res = await post("/api/apply", { ref: ref, name: name });
        out.textContent = "made " + res.version + ": " + res.counts.dropped_by_review + " row(s) dropped by review, " + res.counts.kept + " kept";
        const a = document.createElement("a");
        a.href = "/v/" + res.version;  // NAME@N: letters, digits, . _ - and @ only
        a.textContent = " open it";
        a.id = "applied-link";
        out.appendChild(a);
      } catch (e) {
        out.textContent = "not applied: " + e.message;
      }
    });
  }
})();
