// The overview's realtime graph and counters: poll /jobs/realtime.json every 2 s and redraw the SVG.
// Only textContent and setAttribute are used, so nothing from the server is ever parsed as HTML.
(function () {
  "use strict";
  var INTERVAL_MS = 2000;
  var figure = document.getElementById("realtime-chart");
  var status = document.getElementById("live-status");
  if (!figure) { return; }
  var width = Number(figure.dataset.width);
  var height = Number(figure.dataset.height);

  function points(series, key, peak, step) {
    return series.map(function (point, index) {
      return (index * step).toFixed(1) + "," + (height - point[key] * height / peak).toFixed(1);
    }).join(" ");
  }

  // Mirrors services/api/dashboard/formatting.py nice_ceiling: 2, 3, 4, 5, 6, 8, 10 times a power of ten.
  function niceCeiling(value) {
    var magnitude = 1;
    for (;;) {
      var steps = [1, 2, 3, 4, 5, 6, 8];
      for (var i = 0; i < steps.length; i += 1) {
        if (steps[i] * magnitude >= Math.max(value, 2)) { return steps[i] * magnitude; }
      }
      magnitude *= 10;
    }
  }

  function pad(number) { return number < 10 ? "0" + number : String(number); }

  function label(iso) {
    var at = new Date(iso);
    return pad(at.getUTCHours()) + ":" + pad(at.getUTCMinutes()) + ":" + pad(at.getUTCSeconds());
  }

  function draw(series) {
    var highest = 0;
    var totals = { succeeded: 0, failed: 0 };
    series.forEach(function (point) {
      highest = Math.max(highest, point.succeeded, point.failed);
      totals.succeeded += point.succeeded;
      totals.failed += point.failed;
    });
    var peak = niceCeiling(highest);
    var step = series.length > 1 ? width / (series.length - 1) : 0;
    var okLine = points(series, "succeeded", peak, step);
    figure.querySelector(".line-succeeded").setAttribute("points", okLine);
    figure.querySelector(".line-failed").setAttribute("points", points(series, "failed", peak, step));
    figure.querySelector(".area-succeeded").setAttribute(
      "points", "0," + height + " " + okLine + " " + ((series.length - 1) * step).toFixed(1) + "," + height);
    figure.querySelector(".yaxis .peak").textContent = String(peak);
    figure.querySelector(".yaxis .half").textContent = String(peak / 2);
    figure.querySelector(".total-succeeded").textContent = String(totals.succeeded);
    figure.querySelector(".total-failed").textContent = String(totals.failed);
    var labels = figure.querySelectorAll(".xaxis text");
    labels.forEach(function (text, index) {
      var point = series[index * 10];
      if (point) { text.textContent = label(point.at); }
    });
  }

  function update(body) {
    draw(body.series);
    Object.keys(body.counts).forEach(function (state) {
      var cell = document.querySelector('[data-count="' + state + '"]');
      if (cell) {
        cell.textContent = String(body.counts[state]);
        cell.classList.toggle("zero", body.counts[state] === 0);
      }
    });
    var servers = document.querySelector('[data-count="servers_alive"]');
    if (servers) { servers.textContent = String(body.servers_alive); }
  }

  function poll() {
    fetch("/jobs/realtime.json", { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();
      })
      .then(function (body) {
        update(body);
        if (status) { status.classList.remove("stale"); status.textContent = "live"; }
      })
      .catch(function () {
        if (status) { status.classList.add("stale"); status.textContent = "offline, retrying"; }
      })
      .finally(function () { window.setTimeout(poll, INTERVAL_MS); });
  }

  window.setTimeout(poll, INTERVAL_MS);
})();
