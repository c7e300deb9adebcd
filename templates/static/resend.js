// "Send a new code" arrives disabled while the server would refuse it (too soon after the
// last code); this enables it at the moment the server will take it. Counted from the page's
// arrival, not the clock, so a phone whose clock is off still waits the right time. The
// server checks again: this only saves a refusal.
(function () {
  var button = document.getElementById("resend");
  if (!button) { return; }
  var wait = parseInt(button.getAttribute("data-wait-seconds"), 10);
  if (!(wait > 0)) { return; }
  window.setTimeout(function () { button.disabled = false; }, wait * 1000);
}());
