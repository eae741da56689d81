// The replay progress page: polls /api/replays/<name> every second and updates the numbers
// in place until the replay has ended (done, interrupted or failed).
(function () {
  "use strict";
  const nameEl = document.getElementById("replay-name");
  if (!nameEl) return;
  const name = nameEl.dataset.name;
  const FIELDS = ["state", "sent", "matched", "scanned", "total", "remaining", "unroutable",
                  "not_sent", "rate", "elapsed_s"];

  function show(status) {
    for (const key of FIELDS) {
      const el = document.getElementById("replay-" + key.replace("_", "-"));
      const value = status[key];
      if (el) el.textContent = value === null || value === undefined ? "-" : String(value);
    }
    const bar = document.getElementById("replay-bar");
    if (bar) {
      bar.max = Math.max(1, status.total || 0);
      bar.value = status.scanned || 0;
    }
    const error = document.getElementById("replay-error");
    if (error && status.error) {
      error.textContent = status.error;
      error.hidden = false;
    }
    const stop = document.getElementById("stop-replay");
    if (stop && !status.running) stop.closest("form").remove();
    document.body.dataset.replayState = status.state;
  }

  async function poll() {
    try {
      const response = await fetch("/api/replays/" + encodeURIComponent(name),
                                   { headers: { Accept: "application/json" } });
      if (response.ok) {
        const status = await response.json();
        show(status);
        if (!status.running) return;
      }
    } catch (err) {
      console.warn("progress poll failed", err);
    }
    setTimeout(poll, 1000);
  }

  poll();
})();
