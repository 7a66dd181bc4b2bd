"""Downloads against a local HTTP server on 127.0.0.1 that honours Range requests, as PhysioNet does."""

import hashlib
import http.server
import threading

import pytest

from medfuse_hf.data.download import download_files

FILES = {"set-a.tar.gz": bytes(range(256)) * 4000, "Outcomes-a.txt": b"RecordID,In-hospital_death\n1,0\n"}


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    ranges_seen: list[str] = []

    def do_GET(self):
        body = self.server.files.get(self.path.lstrip("/"))
        if body is None:
            self.send_error(404)
            return
        start = 0
        if "Range" in self.headers:
            RangeHandler.ranges_seen.append(self.headers["Range"])
            start = int(self.headers["Range"].removeprefix("bytes=").rstrip("-"))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    files = dict(FILES)
    files["SHA256SUMS.txt"] = "".join(f"{hashlib.sha256(body).hexdigest()}  {name}\n"
                                      for name, body in FILES.items()).encode()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    httpd.files = files
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    RangeHandler.ranges_seen = []
    yield httpd
    httpd.shutdown()


def url(server):
    return f"http://127.0.0.1:{server.server_address[1]}/"


def test_downloads_and_verifies_every_file(server, tmp_path):
    paths = download_files(url(server), list(FILES), tmp_path)
    assert [path.read_bytes() for path in paths] == list(FILES.values())


def test_resumes_a_partial_download(server, tmp_path):
    (tmp_path / "set-a.tar.gz.part").write_bytes(FILES["set-a.tar.gz"][:300_000])
    download_files(url(server), ["set-a.tar.gz"], tmp_path)
    assert RangeHandler.ranges_seen == ["bytes=300000-"]
    assert (tmp_path / "set-a.tar.gz").read_bytes() == FILES["set-a.tar.gz"]
    assert not (tmp_path / "set-a.tar.gz.part").exists()


def test_a_corrupted_download_is_deleted_and_reported(server, tmp_path):
    server.files["set-a.tar.gz"] = b"tampered" + FILES["set-a.tar.gz"][8:]
    with pytest.raises(ValueError, match="set-a.tar.gz: SHA-256 .* does not match the published"):
        download_files(url(server), ["set-a.tar.gz"], tmp_path)
    assert not list(tmp_path.iterdir())


def test_files_without_a_published_checksum_are_refused(server, tmp_path):
    server.files["extra.txt"] = b"x"
    with pytest.raises(ValueError, match="lists no checksum for extra.txt"):
        download_files(url(server), ["extra.txt"], tmp_path)


def test_an_existing_verified_file_is_not_downloaded_again(server, tmp_path):
    download_files(url(server), ["Outcomes-a.txt"], tmp_path)
    server.files["Outcomes-a.txt"] = b"changed on the server"
    assert download_files(url(server), ["Outcomes-a.txt"], tmp_path)[0].read_bytes() == FILES["Outcomes-a.txt"]
