// A batch's page keeps its progress current while the batch sends, by reading the page again
// in the background: a timed reload (meta refresh) would move a keyboard's focus and a
// screen reader's place every few seconds (WCAG 2.2.1). Only the numbers are replaced while
// the state stays the same, so a focused Pause or Cancel button keeps its focus.
(() => {
  const INTERVAL_MS = 5000;
  const status = document.getElementById("batch-status");
  if (!status || status.dataset.live !== "yes") return;

  const update = async () => {
    try {
      const response = await fetch(window.location.href, {
        credentials: "same-origin",
        headers: { Accept: "text/html" },
      });
      if (response.ok) {
        const page = new DOMParser().parseFromString(await response.text(), "text/html");
        const fresh = page.getElementById("batch-status");
        if (fresh && fresh.dataset.state === status.dataset.state) {
          document.getElementById("batch-numbers").innerHTML =
            page.getElementById("batch-numbers").innerHTML;
        } else if (fresh) {
          status.innerHTML = fresh.innerHTML;
          status.dataset.state = fresh.dataset.state;
          status.dataset.live = fresh.dataset.live;
        }
      }
    } catch (_) {
      // Offline for a moment: the next tick tries again.
    }
    if (status.dataset.live === "yes") window.setTimeout(update, INTERVAL_MS);
  };
  window.setTimeout(update, INTERVAL_MS);
})();
