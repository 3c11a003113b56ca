# Captures the body google-genai sends for an image with imageConfig.imageSize, written to
# gemini_generate_content_request_4k.json (pip install google-genai; python3 this > that).
import json, threading, http.server, base64
from google import genai
from google.genai import types
captured = []
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAEElEQVR4nGP4f4IBiBggFAA1zgcdmk6h0gAAAABJRU5ErkJggg=="
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers['content-length']))
        captured.append((self.path, json.loads(body)))
        out = json.dumps({"candidates":[{"content":{"role":"model","parts":[{"inlineData":{"mimeType":"image/png","data":PNG}}]},"finishReason":"STOP"}]}).encode()
        self.send_response(200); self.send_header('content-type','application/json'); self.send_header('content-length',str(len(out))); self.end_headers(); self.wfile.write(out)
    def log_message(self,*a): pass
srv = http.server.HTTPServer(('127.0.0.1',0),H)
threading.Thread(target=srv.serve_forever,daemon=True).start()
client = genai.Client(api_key="AIza-capture", http_options=types.HttpOptions(base_url=f"http://127.0.0.1:{srv.server_port}", api_version="v1beta"))
client.models.generate_content(model="gemini-3-pro-image", contents="a banana",
    config=types.GenerateContentConfig(response_modalities=["IMAGE"], image_config=types.ImageConfig(aspect_ratio="16:9", image_size="4K")))
assert captured[0][0] == "/v1beta/models/gemini-3-pro-image:generateContent", captured[0][0]
print(json.dumps(captured[0][1], indent=2))
