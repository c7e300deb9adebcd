// Live guidance on the set-password forms: length in characters (code points), the words the
// server takes out before judging (the person's name parts, email and the brand, given in
// data-personal; core/passwords.py), and whether the two entries match. The server checks
// everything again; this only helps while typing.
(function () {
  var password = document.getElementById("password");
  var confirm = document.getElementById("confirm");
  var meter = document.getElementById("password-meter");
  var confirmMeter = document.getElementById("confirm-meter");
  if (!password || !confirm) { return; }
  var min = parseInt(password.getAttribute("data-min-length"), 10) || 15;
  var MIN_WORD = 3; // core/passwords.py: shorter words match inside too many unrelated ones
  var personal = [];
  try { personal = JSON.parse(password.getAttribute("data-personal") || "[]"); } catch (e) { personal = []; }
  personal = personal.filter(function (w) { return typeof w === "string" && Array.from(w).length >= MIN_WORD; })
    .map(function (w) { return w.toLowerCase(); })
    .sort(function (a, b) { return b.length - a.length; });
  function length(text) { return Array.from(text).length; }
  // core/passwords.py's without_words on the NFKC-folded, lower-cased password.
  function withoutPersonal(text) {
    var rest = text.normalize("NFKC").toLowerCase();
    personal.forEach(function (word) { rest = rest.split(word).join(""); });
    return rest;
  }
  function update() {
    var n = length(password.value);
    var folded = password.value.normalize("NFKC").toLowerCase();
    var rest = withoutPersonal(password.value);
    if (n === 0) { meter.textContent = ""; }
    else if (n < min) { meter.textContent = (min - n) + " more character" + (min - n === 1 ? "" : "s") + " needed (" + n + " so far)."; }
    else if (n > 256) { meter.textContent = "Too long: at most 256 characters."; }
    else if (rest !== folded && length(rest) < min) {
      meter.textContent = "Don't build your password from your name, email address or the company name. Without them, what is left is too short.";
    }
    else { meter.textContent = "Length is fine (" + n + " characters). We'll also check it isn't a common or personal password."; }
    if (confirm.value.length === 0) { confirmMeter.textContent = ""; }
    else { confirmMeter.textContent = confirm.value === password.value ? "The passwords match." : "The passwords don't match yet."; }
  }
  password.addEventListener("input", update);
  confirm.addEventListener("input", update);
}());
