// The job page of a moving job: poll its state every 2 s, update its progress bar, and reload the page when
// the state changes.
(function () {
  "use strict";
  var INTERVAL_MS = 2000;
  var job = document.getElementById("job");
  if (!job || job.dataset.live !== "yes") { return; }
  var rendered = job.dataset.state;
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
        if (body && body.state !== rendered) { window.location.reload(); return; }
        if (body) { showProgress(body.progress); }
        window.setTimeout(poll, INTERVAL_MS);
      })
      .catch(function () { window.setTimeout(poll, INTERVAL_MS); });
  }

  window.setTimeout(poll, INTERVAL_MS);
})();
