// Live guidance on the set-password form: length in characters (code points) and whether the
// two entries match. The server checks everything again; this only helps while typing.
(function () {
  var password = document.getElementById("password");
  var confirm = document.getElementById("confirm");
  var meter = document.getElementById("password-meter");
  var confirmMeter = document.getElementById("confirm-meter");
  if (!password || !confirm) { return; }
  var min = parseInt(password.getAttribute("data-min-length"), 10) || 15;
  function length(text) { return Array.from(text).length; }
  function update() {
    var n = length(password.value);
    if (n === 0) { meter.textContent = ""; }
    else if (n < min) { meter.textContent = (min - n) + " more character" + (min - n === 1 ? "" : "s") + " needed (" + n + " so far)."; }
    else if (n > 256) { meter.textContent = "Too long: at most 256 characters."; }
    else { meter.textContent = "Length is fine (" + n + " characters). We'll also check it isn't a common or personal password."; }
    if (confirm.value.length === 0) { confirmMeter.textContent = ""; }
    else { confirmMeter.textContent = confirm.value === password.value ? "The passwords match." : "The passwords don't match yet."; }
  }
  password.addEventListener("input", update);
  confirm.addEventListener("input", update);
}());
