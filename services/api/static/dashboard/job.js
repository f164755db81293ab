// The job page of a moving job: poll its state every 2 s and reload the page when it changes.
(function () {
  "use strict";
  var INTERVAL_MS = 2000;
  var job = document.getElementById("job");
  if (!job || job.dataset.live !== "yes") { return; }
  var rendered = job.dataset.state;
  var url = "/jobs/job/" + encodeURIComponent(job.dataset.jobId) + "/state.json";

  function poll() {
    fetch(url, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (body) {
        if (body && body.state !== rendered) { window.location.reload(); return; }
        window.setTimeout(poll, INTERVAL_MS);
      })
      .catch(function () { window.setTimeout(poll, INTERVAL_MS); });
  }

  window.setTimeout(poll, INTERVAL_MS);
})();
