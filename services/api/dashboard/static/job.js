// The job page of a moving job: poll its state every 2 s, update its progress bar, and reload the page when
// the state or the number of log lines changes. A job that just finished is followed a little longer (the
// server says how long with "live"), so the lines its last run wrote with its outcome are shown too.
(function () {
  "use strict";
  var INTERVAL_MS = 2000;
  var job = document.getElementById("job");
  if (!job || job.dataset.live !== "yes") { return; }
  var rendered = job.dataset.state;
  var renderedLogs = Number(job.dataset.logs || "0");
  var url = "/jobs/job/" + encodeURIComponent(job.dataset.jobId) + "/state.json";

  function showProgress(progress) {
    var panel = document.getElementById("progress");
    if (!panel || !progress || progress.done === null) { return; }
    var bar = document.getElementById("progress-bar");
    panel.hidden = false;
    if (progress.total) {
      bar.max = progress.total;
      bar.value = progress.done;
    } else {
      bar.removeAttribute("value");  // an indeterminate bar: the total is not known
    }
    document.getElementById("progress-text").textContent = progress.text;
  }

  function poll() {
    fetch(url, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (body) {
        if (body && (body.state !== rendered || body.logs !== renderedLogs)) { window.location.reload(); return; }
        if (body) { showProgress(body.progress); }
        if (body && body.live === false) { return; }  // final and settled: nothing more will come
        window.setTimeout(poll, INTERVAL_MS);
      })
      .catch(function () { window.setTimeout(poll, INTERVAL_MS); });
  }

  window.setTimeout(poll, INTERVAL_MS);
})();
