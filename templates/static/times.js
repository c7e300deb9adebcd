// The server writes each time in SSO_TIME_ZONE (core/times.py); here it becomes the reader's
// own zone. A file, not an inline script, so the Content-Security-Policy stays strict.
(function () {
  "use strict";
  var clock = { hour: "2-digit", minute: "2-digit", hourCycle: "h23", timeZoneName: "short" };
  var day = { day: "numeric", month: "short", year: "numeric" };
  var styles = {
    clock: [null, clock],
    day: [day, clock],
    seconds: [day, Object.assign({ second: "2-digit" }, clock)]
  };
  document.querySelectorAll("time[datetime][data-style]").forEach(function (element) {
    var style = styles[element.getAttribute("data-style")];
    var moment = new Date(element.getAttribute("datetime"));
    if (!style || isNaN(moment.getTime())) {
      return;
    }
    var parts = [];
    if (style[0]) {
      parts.push(new Intl.DateTimeFormat("en-GB", style[0]).format(moment));
    }
    parts.push(new Intl.DateTimeFormat("en-GB", style[1]).format(moment));
    element.textContent = parts.join(", ");
  });
})();
