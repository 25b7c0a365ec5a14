//! The review page's HTML, rendered on the server: every value from the store or the reviewer
//! passes through [`html_escape`]; the only script is `/review/assets/review.js`.

use std::fmt::Write as _;

use evalloop_core::queue::{QueueItem, QueueKind, QueueSpec};
use evalloop_core::report::html_escape;

const STYLE: &str = "body{font:16px/1.5 system-ui,sans-serif;max-width:56rem;margin:2rem auto;padding:0 1rem;color:#1d2430}\
h1{font-size:1.3rem}pre{white-space:pre-wrap;word-wrap:break-word;background:#f4f6f8;padding:.75rem;border-radius:4px;\
font:15px/1.5 ui-monospace,monospace}progress{width:100%;height:1rem}.answers button{font-size:1.1rem;margin:.2rem;\
padding:.4rem .9rem}kbd{border:1px solid #aab;border-radius:3px;padding:0 .3rem;font-size:.8rem}.muted{color:#667}\
textarea{width:100%;min-height:3rem}table{border-collapse:collapse}td,th{padding:.2rem .6rem;text-align:left}\
.error{color:#a01818}.notice{background:#fff4d6;padding:.5rem .75rem;border-radius:4px}\
.pair{display:grid;grid-template-columns:1fr 1fr;gap:1rem}.pair h2{margin:.2rem 0}";

/// A whole page around `body`.
fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n",
        html_escape(title)
    )
}

/// The login form, with an error message when a login failed.
pub fn login(message: Option<&str>) -> String {
    let msg = message.map(|m| format!("<p class=\"error\" id=\"error\">{}</p>", html_escape(m))).unwrap_or_default();
    page(
        "evalloop review: log in",
        &format!(
            "<h1>evalloop review</h1>{msg}\
             <form method=\"post\" action=\"/review/login\">\
             <label>API key of scope <code>annotate</code><br>\
             <input type=\"password\" name=\"key\" id=\"key\" autocomplete=\"off\" size=\"56\" autofocus></label> \
             <button type=\"submit\" id=\"login\">Log in</button></form>"
        ),
    )
}

/// One queue on the index: its spec, items done and the reviewer's own count.
pub struct QueueRow {
    pub spec: QueueSpec,
    pub done: usize,
    pub items: usize,
    pub mine: usize,
}

/// The queues a reviewer may label.
pub fn index(reviewer: &str, rows: &[QueueRow]) -> String {
    let mut body = format!(
        "<h1>evalloop review</h1><p>Logged in as <strong id=\"reviewer\">{}</strong>.</p>",
        html_escape(reviewer)
    );
    if rows.is_empty() {
        body.push_str("<p>No queues yet: make one with <code>evalloop queue create</code>.</p>");
    } else {
        body.push_str("<table><tr><th>queue</th><th>kind</th><th>items done</th><th>your answers</th></tr>");
        for r in rows {
            let name = html_escape(&r.spec.name);
            let _ = write!(
                body,
                "<tr><td><a href=\"/review/queues/{name}\">{name}</a></td><td>{}</td><td>{} of {}</td><td>{}</td></tr>",
                r.spec.kind.as_str(),
                r.done,
                r.items,
                r.mine
            );
        }
        body.push_str("</table>");
    }
    body.push_str(LOGOUT);
    page("evalloop review", &body)
}

const LOGOUT: &str =
    "<form method=\"post\" action=\"/review/logout\"><button type=\"submit\" class=\"muted\">Log out</button></form>";

/// Where a reviewer stands on a queue.
pub struct Standing {
    /// Items this reviewer labelled or skipped.
    pub answered: usize,
    pub labelled: usize,
    pub skipped: usize,
    /// Items this reviewer may still answer.
    pub open: usize,
}

fn progress(s: &Standing) -> String {
    let total = s.answered + s.open;
    format!(
        "<progress id=\"progress\" value=\"{}\" max=\"{}\"></progress>\
         <p id=\"progress-text\" class=\"muted\">{} of {} answered ({} labelled, {} skipped)</p>",
        s.answered,
        total.max(1),
        s.answered,
        total,
        s.labelled,
        s.skipped
    )
}

/// A notice above an item (an answer that was not stored), escaped.
fn notice_html(notice: Option<&str>) -> String {
    notice.map(|n| format!("<p class=\"notice\" id=\"notice\">{}</p>", html_escape(n))).unwrap_or_default()
}

/// The answer form around `question` and `buttons`: the item's position, skip, a comment box.
fn answer_form(name: &str, item: &QueueItem, question: &str, buttons: &str) -> String {
    format!(
        "<form method=\"post\" action=\"/review/queues/{name}/answer\" id=\"answer-form\">\
         <input type=\"hidden\" name=\"position\" value=\"{}\">\
         <p>{question}</p><div class=\"answers\">{buttons}\
         <button type=\"submit\" name=\"answer\" value=\"skip\" data-key=\"s\" id=\"skip\">Skip <kbd>s</kbd></button></div>\
         <p><label>Comment (optional)<br><textarea name=\"comment\" id=\"comment\" maxlength=\"4000\"></textarea></label></p>\
         </form><p class=\"muted\"><a href=\"/review\">All queues</a></p>{LOGOUT}\
         <script src=\"/review/assets/review.js\"></script>",
        item.position
    )
}

/// A pair to judge (preference queues): the prompt and the two outputs side by side (escaped;
/// `shown` the (prompt, output) of each side in the order shown, left as A; the prompt once
/// when both outputs answer the same text, above each output otherwise), A / B / tie buttons
/// (keys `a`, `b`, `t`), skip and a comment; no score.
pub fn pair(
    spec: &QueueSpec,
    item: &QueueItem,
    shown: [(&str, &str); 2],
    s: &Standing,
    notice: Option<&str>,
) -> String {
    let name = html_escape(&spec.name);
    let question = match &spec.dimension {
        Some(d) => format!("Which output is better on {}?", html_escape(d)),
        None => "Which output is better?".to_string(),
    };
    let buttons = "<button type=\"submit\" name=\"answer\" value=\"a\" data-key=\"a\" id=\"answer-a\">A is better <kbd>a</kbd></button>\
                   <button type=\"submit\" name=\"answer\" value=\"tie\" data-key=\"t\" id=\"answer-tie\">About the same <kbd>t</kbd></button>\
                   <button type=\"submit\" name=\"answer\" value=\"b\" data-key=\"b\" id=\"answer-b\">B is better <kbd>b</kbd></button>";
    let [(prompt_a, output_a), (prompt_b, output_b)] = shown;
    let (common, own_a, own_b) = if prompt_a == prompt_b {
        (format!("<h2>Prompt</h2><pre id=\"prompt\">{}</pre>", html_escape(prompt_a)), String::new(), String::new())
    } else {
        let own = |side: &str, p: &str| format!("<h3>Prompt</h3><pre id=\"prompt-{side}\">{}</pre>", html_escape(p));
        (String::new(), own("a", prompt_a), own("b", prompt_b))
    };
    let body = format!(
        "<h1>Queue {name}</h1>{}{}{common}\
         <div class=\"pair\"><div><h2>A</h2>{own_a}<pre id=\"output-a\">{}</pre></div>\
         <div><h2>B</h2>{own_b}<pre id=\"output-b\">{}</pre></div></div>{}",
        notice_html(notice),
        progress(s),
        html_escape(output_a),
        html_escape(output_b),
        answer_form(&name, item, &question, buttons),
    );
    page(&format!("evalloop review: {}", spec.name), &body)
}

/// One item to label: the prompt and output (escaped), the controls of the queue's kind, a
/// comment box, skip; the evaluator's score is not shown.
pub fn item(
    spec: &QueueSpec,
    item: &QueueItem,
    prompt: &str,
    output: &str,
    s: &Standing,
    notice: Option<&str>,
) -> String {
    let name = html_escape(&spec.name);
    let (question, buttons) = match spec.kind {
        QueueKind::Thumbs => (
            "Is this output good?".to_string(),
            "<button type=\"submit\" name=\"answer\" value=\"up\" data-key=\"u\">&#128077; Good <kbd>u</kbd></button>\
             <button type=\"submit\" name=\"answer\" value=\"down\" data-key=\"d\">&#128078; Bad <kbd>d</kbd></button>"
                .to_string(),
        ),
        _ => (
            match &spec.dimension {
                Some(d) => format!("Rate the output's {} from 1 (worst) to 5 (best).", html_escape(d)),
                None => "Rate the output from 1 (worst) to 5 (best).".to_string(),
            },
            (1..=5)
                .map(|r| {
                    format!("<button type=\"submit\" name=\"answer\" value=\"{r}\" data-key=\"{r}\">{r} <kbd>{r}</kbd></button>")
                })
                .collect::<String>(),
        ),
    };
    let body = format!(
        "<h1>Queue {name}</h1>{}{}\
         <h2>Prompt</h2><pre id=\"prompt\">{}</pre><h2>Output</h2><pre id=\"output\">{}</pre>{}",
        notice_html(notice),
        progress(s),
        html_escape(prompt),
        html_escape(output),
        answer_form(&name, item, &question, &buttons),
    );
    page(&format!("evalloop review: {}", spec.name), &body)
}

/// Nothing left for this reviewer on the queue.
pub fn done(spec: &QueueSpec, s: &Standing, notice: Option<&str>) -> String {
    page(
        "evalloop review: done",
        &format!(
            "<h1>Queue {}</h1>{}{}<p id=\"done\">Nothing left for you in this queue. Thank you!</p>\
             <p><a href=\"/review\">All queues</a></p>{LOGOUT}",
            html_escape(&spec.name),
            notice_html(notice),
            progress(s)
        ),
    )
}

/// An error page with `message`.
pub fn error(message: &str) -> String {
    page(
        "evalloop review: error",
        &format!(
            "<h1>evalloop review</h1><p class=\"error\" id=\"error\">{}</p><p><a href=\"/review\">All queues</a></p>",
            html_escape(message)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use evalloop_core::queue::Strategy;

    #[test]
    fn prompt_output_and_names_are_escaped() {
        let spec = QueueSpec {
            name: "q".into(),
            kind: QueueKind::Rating,
            strategy: Strategy::Random,
            size: 1,
            reviewers_per_item: 1,
            dimension: None,
            evaluator: "e".into(),
            against: None,
            members: vec![],
            group_key: None,
            whole_groups: false,
            floor: 1.0,
            population: 1,
            seed: 1,
            since: None,
            until: None,
            created_at: String::new(),
        };
        let it = QueueItem {
            queue: "q".into(),
            position: 0,
            request_id: "r".into(),
            other_request_id: None,
            probability: 1.0,
            priority: 1.0,
        };
        let s = Standing { answered: 0, labelled: 0, skipped: 0, open: 1 };
        let html = item(&spec, &it, "<script>alert(1)</script>", "a & \"b\"", &s, Some("<i>n</i>"));
        assert!(html.contains("&lt;i&gt;n&lt;/i&gt;"));
        assert!(!html.contains("<script>alert"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("a &amp; &quot;b&quot;"));
        assert!(!html.contains("probability"), "the page shows no score or probability");
        assert!(index("<b>", &[]).contains("&lt;b&gt;"));
        let spec = QueueSpec { kind: QueueKind::Preference, ..spec };
        let html = pair(&spec, &it, [("p", "<b>left</b>"), ("p", "x < y")], &s, None);
        assert!(html.contains("<pre id=\"output-a\">&lt;b&gt;left&lt;/b&gt;</pre>"), "{html}");
        assert!(html.contains("<pre id=\"output-b\">x &lt; y</pre>"));
        assert!(html.contains("<pre id=\"prompt\">p</pre>") && !html.contains("prompt-a"), "one shared prompt");
        let html = pair(&spec, &it, [("p1", "o"), ("<p2>", "o")], &s, None);
        assert!(
            html.contains("<pre id=\"prompt-a\">p1</pre>") && html.contains("<pre id=\"prompt-b\">&lt;p2&gt;</pre>")
        );
        for key in ["a", "b", "t", "s"] {
            assert!(html.contains(&format!("data-key=\"{key}\"")), "no button for key {key}");
        }
    }
}
