// Progressive enhancement only: every page works without this file.
// A running job's page polls its progress and reloads itself when the job has ended.
"use strict";
(function () {
  var job = document.getElementById("job");
  if (!job || job.dataset.finished === "true") return;
  var url = job.dataset.progressUrl;
  var bar = document.getElementById("job-progress");
  var count = document.getElementById("job-count");
  var percent = document.getElementById("job-percent");
  var state = document.getElementById("job-state");
  var delay = 400;
  function show(data) {
    var value = data.total ? Math.round((100 * data.done) / data.total) : (data.finished ? 100 : 0);
    bar.value = value;
    bar.textContent = value + " %";
    percent.textContent = value;
    count.textContent = data.done + " of " + data.total + " rows";
    state.textContent = data.state;
    state.className = "state state-" + data.state;
  }
  function poll() {
    fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (data) {
        show(data);
        if (data.finished) {
          window.location.reload();
        } else {
          setTimeout(poll, delay);
        }
      })
      .catch(function () {
        delay = Math.min(delay * 2, 10000); // back off while the server is unreachable
        setTimeout(poll, delay);
      });
  }
  setTimeout(poll, delay);
})();
