"""The zoo's download path against a local HTTP server: atomic rename, resume, checksums, and
what the hub client it runs on does with broken connections."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import threading
from pathlib import Path

import pytest

from inceptionnext_pl.zoo import (
    ChecksumError,
    DownloadError,
    ZooError,
    cache_dir,
    download_url,
    fetch,
    get_entry,
)
from inceptionnext_pl.zoo import download as dl
from inceptionnext_pl.zoo.cli import main

PAYLOAD = os.urandom(3 * (1 << 20) + 12345)  # > 3 chunks, so progress has several steps
ATTO_FILE = "inceptionnext_atto.pth"


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``files`` under /<mode>/<name>.

    ok: honours Range; norange: ignores it; cutonce: the first response for a path stops halfway
    (then behaves like ok); cutonce-norange: the same without Range; cutalways: every response
    stops after 1000 bytes.
    """

    files: dict[str, bytes] = {}
    log: list[tuple[str, str | None]] = []
    cut_done: set[str] = set()

    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        _, mode, name = self.path.split("/", 2)
        rng = self.headers.get("Range")
        type(self).log.append((self.path, rng))
        data = self.files.get(name)
        if data is None:
            self.send_error(404)
            return
        start = 0
        if rng and mode in ("ok", "cutonce", "cutalways"):
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_error(416)
                return
        body = data[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = len(body)
        if mode.startswith("cutonce") and self.path not in self.cut_done:
            type(self).cut_done.add(self.path)
            cut = len(body) // 2
        elif mode == "cutalways":
            cut = min(cut, 1000)
        self.wfile.write(body[:cut])
        self.wfile.flush()
        self.close_connection = True


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch, server):
    """Fresh caches per test; the hub is the local server, which has no repos; a clean log.

    The hub client downloads in 64 KiB pieces here (10 MiB by default), so that a connection
    that breaks off halfway has delivered whole pieces to resume from."""
    import huggingface_hub.constants as hfc

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(hfc, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(hfc, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hfc, "ENDPOINT", f"{server}/hub")
    monkeypatch.setattr(
        hfc,
        "HUGGINGFACE_CO_URL_TEMPLATE",
        f"{server}/hub/{{repo_id}}/resolve/{{revision}}/{{filename}}",
    )
    monkeypatch.setattr(hfc, "DOWNLOAD_CHUNK_SIZE", 1 << 16)
    monkeypatch.delenv("INCEPTIONNEXT_ZOO_MIRROR", raising=False)
    Handler.files = {"payload.bin": PAYLOAD, ATTO_FILE: b"atto weights " * 50_000}
    Handler.log = []
    Handler.cut_done = set()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith((".part", ".tmp")))


@pytest.mark.parametrize("progress", [True, False])
def test_download_atomic_and_checksum_pass(server, tmp_path, progress):
    dst = tmp_path / "out" / "payload.bin"
    digest = download_url(
        f"{server}/ok/payload.bin",
        dst,
        sha256=hashlib.sha256(PAYLOAD).hexdigest(),
        progress=progress,
    )
    assert dst.read_bytes() == PAYLOAD
    assert digest == hashlib.sha256(PAYLOAD).hexdigest()
    assert _leftovers(dst.parent) == []


def test_checksum_mismatch_deletes_temp_and_names_both_hashes(server, tmp_path):
    dst = tmp_path / "payload.bin"
    wrong = "0" * 64
    with pytest.raises(ChecksumError) as info:
        download_url(f"{server}/ok/payload.bin", dst, sha256=wrong)
    msg = str(info.value)
    assert wrong in msg and hashlib.sha256(PAYLOAD).hexdigest() in msg and "payload.bin" in msg
    assert not dst.exists() and _leftovers(tmp_path) == []


def test_truncated_response_is_resumed_with_range(server, tmp_path):
    dst = tmp_path / "payload.bin"
    download_url(f"{server}/cutonce/payload.bin", dst)
    assert dst.read_bytes() == PAYLOAD
    (first, none), (second, resumed_at) = Handler.log
    assert none is None and resumed_at.startswith("bytes=")
    assert 0 < int(resumed_at[6:-1]) <= len(PAYLOAD) // 2  # whole pieces before the break


def test_truncated_response_without_range_support_restarts_cleanly(server, tmp_path):
    dst = tmp_path / "payload.bin"
    download_url(f"{server}/cutonce-norange/payload.bin", dst)
    assert dst.read_bytes() == PAYLOAD and len(Handler.log) == 2
    assert _leftovers(tmp_path) == []


def test_interrupted_earlier_run_resumes_from_part_file(server, tmp_path):
    dst = tmp_path / "payload.bin"
    (tmp_path / "payload.bin.part").write_bytes(PAYLOAD[:777])
    download_url(f"{server}/ok/payload.bin", dst)
    assert dst.read_bytes() == PAYLOAD
    assert Handler.log == [("/ok/payload.bin", "bytes=777-")]


def test_server_ignoring_range_gets_a_full_restart(server, tmp_path):
    dst = tmp_path / "payload.bin"
    (tmp_path / "payload.bin.part").write_bytes(b"garbage that is not a prefix")
    download_url(f"{server}/norange/payload.bin", dst)
    assert dst.read_bytes() == PAYLOAD


def test_persistent_truncation_fails_clearly_and_never_leaves_the_file(server, tmp_path):
    """Every answer breaks off after 1000 bytes, less than one piece: the hub client retries
    (5 times, a second apart), then gives up; nothing becomes the file."""
    dst = tmp_path / "payload.bin"
    with pytest.raises(DownloadError, match="RemoteProtocolError: peer closed connection"):
        download_url(f"{server}/cutalways/payload.bin", dst, progress=False)
    assert not dst.exists() and len(Handler.log) == 6
    download_url(f"{server}/ok/payload.bin", dst)  # the next run completes it
    assert dst.read_bytes() == PAYLOAD


def test_a_broken_run_leaves_a_part_file_the_next_run_resumes(server, tmp_path, monkeypatch):
    from huggingface_hub import file_download

    def breaks_off(url, temp_file, **kwargs):  # the process dies after 1 MiB arrived
        temp_file.write(PAYLOAD[: 1 << 20])
        raise KeyboardInterrupt

    monkeypatch.setattr(file_download, "http_get", breaks_off)
    dst = tmp_path / "payload.bin"
    with pytest.raises(KeyboardInterrupt):
        download_url(f"{server}/ok/payload.bin", dst)
    assert not dst.exists() and (tmp_path / "payload.bin.part").stat().st_size == 1 << 20
    monkeypatch.undo()
    download_url(f"{server}/ok/payload.bin", dst)
    assert dst.read_bytes() == PAYLOAD and Handler.log == [("/ok/payload.bin", "bytes=1048576-")]


def test_http_404_is_not_retried(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_url(f"{server}/ok/missing.bin", tmp_path / "missing.bin")
    assert len(Handler.log) == 1 and _leftovers(tmp_path) == []  # not even an empty .part


def test_registry_entry_via_mirror_records_then_verifies_hash(server, monkeypatch):
    monkeypatch.setenv("INCEPTIONNEXT_ZOO_MIRROR", f"{server}/ok")
    entry = get_entry("inceptionnext_atto")
    path = fetch("inceptionnext_atto", progress=False)
    assert path == cache_dir() / ATTO_FILE and path.read_bytes() == Handler.files[ATTO_FILE]
    assert Handler.log == [(f"/ok/{ATTO_FILE}", None)]
    store = json.loads((cache_dir() / dl.HASH_STORE_NAME).read_text())
    # Recorded under the real release URL, so any mirror must serve identical bytes.
    assert store[entry.sources[0].url]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()

    assert fetch("inceptionnext_atto.sail_in1k", progress=False) == path  # alias, cached
    assert len(Handler.log) == 1

    # The upstream file changes: a fresh download no longer matches the recorded hash.
    path.unlink()
    Handler.files[ATTO_FILE] = b"tampered" * 1000
    with pytest.raises(ChecksumError, match="recorded on the first download.*--forget-hash"):
        fetch("inceptionnext_atto", progress=False)
    assert not path.exists() and _leftovers(cache_dir()) == []

    # A cached file that was modified on disk is caught too.
    path.write_bytes(b"bit rot")
    with pytest.raises(ChecksumError, match="--force"):
        fetch("inceptionnext_atto", progress=False)


def test_cli_download_with_progress_and_forget_hash(server, monkeypatch, capsys):
    monkeypatch.setenv("INCEPTIONNEXT_ZOO_MIRROR", f"{server}/ok")
    assert main(["download", "inceptionnext_atto"]) == 0
    out = capsys.readouterr().out.strip()
    assert Path(out) == cache_dir() / ATTO_FILE and Path(out).exists()

    Handler.files[ATTO_FILE] = b"a legitimate upstream update" * 100
    assert main(["download", "inceptionnext_atto", "--force", "--no-progress"]) == 1
    assert "sha256 mismatch" in capsys.readouterr().err
    assert main(["download", "inceptionnext_atto", "--force", "--forget-hash"]) == 0
    assert Path(capsys.readouterr().out.strip()).read_bytes() == Handler.files[ATTO_FILE]


def test_second_source_is_used_when_the_first_is_missing(server, monkeypatch):
    # The Table 1 variants name their file two ways; the mirror has only the README's name.
    monkeypatch.setenv("INCEPTIONNEXT_ZOO_MIRROR", f"{server}/ok")
    Handler.files["convnext_tiny_k3_par1_4.pth"] = b"fb weights" * 100
    path = fetch("convnext_tiny_k3_par1_4", progress=False)
    assert path.name == "convnext_tiny_k3_par1_4.pth"
    assert [p for p, _ in Handler.log] == [
        "/ok/convnext_tiny_k3_par1_4_1k_224_ema.pth",
        "/ok/convnext_tiny_k3_par1_4.pth",
    ]


def test_offline_hub_source_gives_one_clear_error(monkeypatch):
    import huggingface_hub.constants as hfc

    monkeypatch.setattr(hfc, "HF_HUB_OFFLINE", True)
    with pytest.raises(DownloadError) as info:
        fetch("convnext_tiny.fb_in1k", progress=False)
    msg = str(info.value)
    assert "Could not fetch 'convnext_tiny.fb_in1k'" in msg
    assert "hf-hub:timm/convnext_tiny.fb_in1k" in msg and "offline" in msg
    assert "pass a local checkpoint path" in msg


def test_all_sources_failing_lists_each(server, monkeypatch):
    monkeypatch.setenv("INCEPTIONNEXT_ZOO_MIRROR", f"{server}/ok")
    del Handler.files[ATTO_FILE]
    with pytest.raises(DownloadError) as info:
        fetch("inceptionnext_atto", progress=False)
    lines = [x for x in str(info.value).splitlines() if x.startswith("  - ")]
    assert len(lines) == 2 and "HTTP 404" in lines[0] and "hf-hub:" in lines[1]


def test_cached_hub_file_is_checked_against_its_lfs_sha256(tmp_path, hub_cache_file):
    import huggingface_hub.constants as hfc

    data = b"hub weights" * 1000
    good = hashlib.sha256(data).hexdigest()
    hub_cache_file(Path(hfc.HF_HUB_CACHE), "timm/resnet50.a1_in1k", "model.safetensors", data, good)
    path = fetch("resnet50.a1_in1k", progress=False)
    assert path.read_bytes() == data

    hub_cache_file(
        Path(hfc.HF_HUB_CACHE), "timm/resnet50.a2_in1k", "model.safetensors", b"corrupt", good
    )
    with pytest.raises(ChecksumError, match="published"):
        fetch("resnet50.a2_in1k", progress=False)


def test_direct_url_and_hub_id_as_sources(server):
    from inceptionnext_pl.zoo import resolve

    path, entry = resolve(f"{server}/ok/payload.bin", progress=False)
    assert entry is None and path == cache_dir() / "payload.bin" and path.read_bytes() == PAYLOAD
    with pytest.raises(DownloadError, match=r"hf-hub:someone/model \(model.safetensors\): "):
        resolve("hf-hub:someone/model", progress=False)


def test_hf_hub_offline_stops_release_downloads_too(server, monkeypatch):
    import huggingface_hub.constants as hfc

    monkeypatch.setattr(hfc, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("INCEPTIONNEXT_ZOO_MIRROR", f"{server}/ok")
    with pytest.raises(DownloadError, match="OfflineModeIsEnabled") as info:
        fetch("inceptionnext_atto", progress=False)
    assert "Could not fetch 'inceptionnext_atto' from any source" in str(info.value)
    assert Handler.log == []


def test_concurrent_fetches_download_once(server, monkeypatch):
    monkeypatch.setenv("INCEPTIONNEXT_ZOO_MIRROR", f"{server}/ok")
    Handler.files[ATTO_FILE] = PAYLOAD
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(fetch("inceptionnext_atto", progress=False)))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3 and len(set(results)) == 1 and results[0].read_bytes() == PAYLOAD
    assert len(Handler.log) == 1


@pytest.mark.parametrize(
    "error, hint",
    [
        ("RemoteEntryNotFoundError", "no such file or revision"),
        ("GatedRepoError", "gated"),
        ("LocalEntryNotFoundError", "cannot be reached"),
    ],
)
def test_hub_errors_get_the_hint_of_their_kind(monkeypatch, error, hint):
    import huggingface_hub
    import huggingface_hub.errors as hub_errors

    cls = getattr(hub_errors, error)

    def fail(**kwargs):
        if issubclass(cls, hub_errors.HfHubHTTPError):
            import httpx2 as httpx

            response = httpx.Response(404, request=httpx.Request("GET", "https://hf.co/x"))
            raise cls("boom", response=response)
        raise cls("boom")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fail)
    with pytest.raises(DownloadError, match=hint) as info:
        resolve_hub("hf-hub:someone/model")
    assert ("offline" in str(info.value)) == (error == "LocalEntryNotFoundError")


def test_a_full_disk_during_a_hub_download_is_not_called_offline(monkeypatch):
    import huggingface_hub

    def fail(**kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fail)
    with pytest.raises(OSError, match="No space left") as info:
        resolve_hub("hf-hub:someone/model")
    assert not isinstance(info.value, DownloadError)


def resolve_hub(source: str):
    from inceptionnext_pl.zoo import resolve

    return resolve(source, progress=False)


def _official_atto() -> tuple[bytes, dict]:
    import io

    import torch

    from inceptionnext_pl import create_model

    torch.manual_seed(3)
    sd = create_model("inceptionnext_atto").state_dict()
    buf = io.BytesIO()
    torch.save(sd, buf)  # the release's layout: a flat state dict with timm's keys
    return buf.getvalue(), sd


def test_timm_pretrained_takes_the_mirror_the_registry_variable_and_the_hash(
    server, monkeypatch, tmp_path
):
    """``timm.create_model(..., pretrained=True)`` resolves as ``fetch`` and ``load_pretrained`` do."""
    import timm
    import torch
    import yaml

    from inceptionnext_pl.registry import registry_path

    data, sd = _official_atto()
    Handler.files[ATTO_FILE] = data
    raw = yaml.safe_load(registry_path().read_text())
    entry = raw["entries"]["inceptionnext_atto"]
    entry["sources"] = entry["sources"][:1]  # the release URL only: the mirror must serve it
    entry["sources"][0]["sha256"] = hashlib.sha256(data).hexdigest()
    own = tmp_path / "registry.yaml"
    own.write_text(yaml.safe_dump({"version": 1, "entries": {"inceptionnext_atto": entry}}))
    monkeypatch.setenv("INCEPTIONNEXT_ZOO_REGISTRY", str(own))
    monkeypatch.setenv("INCEPTIONNEXT_ZOO_MIRROR", f"{server}/ok")

    model = timm.create_model("inceptionnext_atto", pretrained=True, num_classes=7)
    assert Handler.log == [(f"/ok/{ATTO_FILE}", None)]
    got = model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in sd.items() if not k.startswith("head.fc2"))
    assert got["head.fc2.weight"].shape[0] == 7  # timm's own rule: a new classifier
    assert "state_dict" not in model.pretrained_cfg  # the tensors are not kept twice

    # The registry's published hash is checked on this path too.
    (cache_dir() / ATTO_FILE).unlink()
    entry["sources"][0]["sha256"] = "0" * 64
    own.write_text(yaml.safe_dump({"version": 1, "entries": {"inceptionnext_atto": entry}}))
    with pytest.raises(ChecksumError, match="published"):
        timm.create_model("inceptionnext_atto", pretrained=True)


def test_timm_pretrained_without_released_weights_says_how_to_give_a_file():
    import timm

    with pytest.raises(ZooError, match=r"pretrained_cfg_overlay=dict\(file=PATH\)"):
        timm.create_model("inceptionnext_small_iso", pretrained=True)


def test_a_part_file_the_server_cannot_extend_restarts_once(server, tmp_path):
    dst = tmp_path / "payload.bin"
    (tmp_path / "payload.bin.part").write_bytes(b"x" * (len(PAYLOAD) + 5))  # longer than the file
    download_url(f"{server}/ok/payload.bin", dst)
    assert dst.read_bytes() == PAYLOAD and [r for _, r in Handler.log] == [
        f"bytes={len(PAYLOAD) + 5}-",
        None,
    ]


def test_torch_hubs_download_keeps_a_short_body_which_ours_refuses(server, tmp_path):
    """Why release URLs go through the hub client and not ``torch.hub.download_url_to_file``:
    a body that breaks off after 1000 bytes is kept by torch.hub as if complete."""
    import torch.hub

    url = f"{server}/cutalways/payload.bin"
    torch.hub.download_url_to_file(url, str(tmp_path / "torch.bin"), progress=False)
    assert (tmp_path / "torch.bin").stat().st_size == 1000 < len(PAYLOAD)
    with pytest.raises(DownloadError, match="peer closed connection"):
        download_url(url, tmp_path / "ours.bin", progress=False)
    assert not (tmp_path / "ours.bin").exists()
