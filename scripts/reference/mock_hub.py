# Minimal stand-in for the Hugging Face hub's resolve endpoint, serving one model directory under
# any repo id: `python3 scripts/reference/mock_hub.py DIR [PORT]`. Used by scripts/reference/check-hub-download.sh.
import hashlib, http.server, os, re, sys
ROOT = sys.argv[1]  # directory holding the model files
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        m = re.match(r"^/([^/]+/[^/]+)/resolve/main/(.+)$", self.path)
        f = os.path.join(ROOT, m.group(2)) if m else None
        if not f or not os.path.isfile(f):
            self.send_response(404); self.end_headers(); return
        data = open(f, "rb").read()
        rng = self.headers.get("Range")
        start, end = 0, len(data) - 1
        if rng:
            a, b = rng.split("=")[1].split("-")
            start = int(a); end = int(b) if b else len(data) - 1
        body = data[start:end + 1]
        self.send_response(206 if rng else 200)
        self.send_header("etag", '"' + hashlib.sha256(data).hexdigest() + '"')
        self.send_header("x-repo-commit", "0123456789abcdef0123456789abcdef01234567")
        self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2]) if len(sys.argv) > 2 else 8765), H).serve_forever()
