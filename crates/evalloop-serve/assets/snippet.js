/* evalloop feedback snippet: thumbs up/down and an optional comment on each element that
 * carries data-request-id and data-feedback-token (a token from POST /v1/feedback-tokens).
 * No dependencies. Include it with
 *   <script src="https://FEEDBACK-HOST/v1/snippet.js" defer></script>
 * The service is the script's own origin unless the tag has data-endpoint="https://...".
 * Each widget's state is in its data-evalloop-state attribute: idle, sending, sent, error.
 */
(function () {
  "use strict";
  var script = document.currentScript;
  var endpoint = (script && script.getAttribute("data-endpoint")) ||
    (script && script.src ? new URL(script.src, document.baseURI).origin : "");

  function post(el, event) {
    var token = el.getAttribute("data-feedback-token");
    el.setAttribute("data-evalloop-state", "sending");
    return fetch(endpoint + "/v1/feedback", {
      method: "POST",
      headers: { "Content-Type": "application/json", "Authorization": "Bearer " + token },
      body: JSON.stringify(event)
    }).then(function (r) {
      return r.json().then(function (body) {
        var ok = r.ok && body.rejected === 0;
        el.setAttribute("data-evalloop-state", ok ? "sent" : "error");
        status(el, ok ? "Thanks for the feedback." : "Feedback not saved.");
      });
    }).catch(function () {
      el.setAttribute("data-evalloop-state", "error");
      status(el, "Feedback not saved (network).");
    });
  }

  function status(el, text) {
    var s = el.querySelector(".evalloop-status");
    if (s) { s.textContent = text; }
  }

  function button(label, title, onClick) {
    var b = document.createElement("button");
    b.type = "button";
    b.textContent = label;
    b.title = title;
    b.setAttribute("aria-label", title);
    b.addEventListener("click", onClick);
    return b;
  }

  function mount(el) {
    if (el.getAttribute("data-evalloop-state")) { return; }
    el.setAttribute("data-evalloop-state", "idle");
    var requestId = el.getAttribute("data-request-id");
    var box = document.createElement("span");
    box.className = "evalloop-feedback";
    box.appendChild(button("\uD83D\uDC4D", "Good answer", function () {
      post(el, { request_id: requestId, feedback_type: "explicit_thumbs_up", value: true });
    }));
    box.appendChild(button("\uD83D\uDC4E", "Bad answer", function () {
      post(el, { request_id: requestId, feedback_type: "explicit_thumbs_down", value: true });
    }));
    if (el.getAttribute("data-comment") !== "off") {
      var input = document.createElement("input");
      input.type = "text";
      input.placeholder = "Comment (optional)";
      input.className = "evalloop-comment";
      box.appendChild(input);
      box.appendChild(button("Send", "Send comment", function () {
        if (input.value.trim() === "") { return; }
        post(el, { request_id: requestId, feedback_type: "explicit_text_comment", value: input.value });
      }));
    }
    var s = document.createElement("span");
    s.className = "evalloop-status";
    s.setAttribute("role", "status");
    box.appendChild(s);
    el.appendChild(box);
  }

  function mountAll() {
    var els = document.querySelectorAll("[data-request-id][data-feedback-token]");
    for (var i = 0; i < els.length; i++) { mount(els[i]); }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", mountAll);
  } else {
    mountAll();
  }
  window.evalloopFeedback = { mount: mountAll };
})();
