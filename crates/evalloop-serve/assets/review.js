// The review page's keyboard shortcuts: 1-5 rate, u / d thumbs up / down, a / b / t the left
// output, the right one or a tie (preference queues), s skip. Each presses
// the button that carries the key in data-key, so the page works the same without JavaScript.
// Keys typed into the comment box stay there.
(function () {
  "use strict";
  var form = document.getElementById("answer-form");
  if (!form) {
    return;
  }
  var sent = false;
  form.addEventListener("submit", function (ev) {
    // One answer per page: a second key press before the next item arrives is dropped.
    if (sent) {
      ev.preventDefault();
    }
    sent = true;
  });
  document.addEventListener("keydown", function (ev) {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) {
      return;
    }
    var t = ev.target;
    if (t && (t.tagName === "TEXTAREA" || t.tagName === "INPUT")) {
      if (ev.key === "Escape") {
        t.blur();
      }
      return;
    }
    var button = form.querySelector('button[data-key="' + ev.key.toLowerCase() + '"]');
    if (!button) {
      return;
    }
    ev.preventDefault();
    button.click();
  });
})();
