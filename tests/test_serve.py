"""The browser instrument's server: HTTP API through Starlette's test client, and `timbre serve`."""

from __future__ import annotations

import asyncio
import io
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile
import torch
from starlette.testclient import TestClient

import timbre
from timbre import interpolate
from timbre.evaluation.metrics import pitch_scores
from timbre.serve import Instrument, corner_weights, create_app
from timbre.serve.app import MAX_BODY_BYTES
from timbre.serve.instrument import CORNER_POSITIONS

NOTE = "/api/v1/note"
CORNER_XY = [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0)]
PCM16_STEP = 1 / 32768


@pytest.fixture(scope="module")
def instrument() -> Instrument:
    return Instrument(timbre.load())


@pytest.fixture(scope="module")
def client(instrument: Instrument):
    with TestClient(create_app(instrument)) as client:
        yield client


def read_wav(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/wav"
    audio, rate = soundfile.read(io.BytesIO(response.content), dtype="float32")
    info = soundfile.info(io.BytesIO(response.content))
    assert (rate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    return audio


def test_timbres_lists_the_corners_and_the_bundled_set(client: TestClient, instrument: Instrument) -> None:
    info = client.get("/api/v1/timbres").json()
    names = [timbre["name"] for timbre in info["timbres"]]
    assert len(names) == len(set(names)) == len(instrument.timbre_set.entries)
    assert {timbre["program"] for timbre in info["timbres"]} == {e.program for e in instrument.timbre_set.entries}
    assert [corner["position"] for corner in info["corners"]] == list(CORNER_POSITIONS)
    assert [corner["name"] for corner in info["corners"]] == list(instrument.default_corners)
    # Four different timbres, each one of the bundled set with its GM program.
    assert len({corner["name"] for corner in info["corners"]}) == 4
    by_name = {timbre["name"]: timbre for timbre in info["timbres"]}
    for corner in info["corners"]:
        assert by_name[corner["name"]]["program"] == corner["program"]
    assert info["sample_rate"] == 16000 and info["weightings"] == ["nsynth", "bilinear"]


@pytest.mark.parametrize(
    "body",
    [
        {"x": 0.5, "y": 0.5, "pitch": 48, "seconds": 2.0},
        {"x": 0.2, "y": 0.7, "pitch": 60, "seconds": 1.5, "weighting": "bilinear"},
        {
            "x": 0.9,
            "y": 0.1,
            "pitch": 72,
            "seconds": 2.0,
            "velocity": 60,
            "corners": ["gm:40", "cello", "flute", "gm:71"],
        },
    ],
)
def test_a_note_is_a_16k_mono_wav_at_the_requested_pitch(client: TestClient, body: dict) -> None:
    audio = read_wav(client.post(NOTE, json=body))
    assert audio.shape == (round(body["seconds"] * 16000),)
    assert np.abs(audio).max() > 0.01, "the note is silent"
    # An independent tracker (PESTO) over the held part of the note.
    score = pitch_scores(audio[None], [body["pitch"]], 16000, tolerance_cents=50)[0]
    assert score.correct, f"pitch off by {score.cents:.0f} cents"


@pytest.mark.parametrize("weighting", ["nsynth", "bilinear"])
def test_the_corners_reproduce_the_corners_own_synthesis(
    client: TestClient, instrument: Instrument, weighting: str
) -> None:
    corners = ["trumpet", "cello", "clarinet", "vibraphone"]
    notes = []
    for name, (x, y) in zip(corners, CORNER_XY):
        body = {"x": x, "y": y, "pitch": 57, "seconds": 1.0, "velocity": 90, "corners": corners, "weighting": weighting}
        audio = read_wav(client.post(NOTE, json=body))
        own = instrument.model.synthesize(instrument.corner(name).embedding, pitch=57, seconds=1.0, velocity=90)
        # Equal up to the WAV's 16-bit quantization.
        assert np.abs(audio - np.clip(own, -1, 1)).max() <= 1.01 * PCM16_STEP, name
        notes.append(audio)
    # ... and a point between them is none of them.
    middle = read_wav(client.post(NOTE, json={"x": 0.5, "y": 0.5, "pitch": 57, "seconds": 1.0, "velocity": 90,
                                               "corners": corners, "weighting": weighting}))  # fmt: skip
    assert min(np.abs(middle - note).max() / np.abs(note).max() for note in notes) > 0.05


def test_the_embedding_is_the_weighted_blend_of_the_corners(client: TestClient, instrument: Instrument) -> None:
    corners = ["violin", "flute", "choir_aahs", "alto_sax"]
    tensors = [instrument.corner(name).embedding.tensor for name in corners]
    at_corner = client.post("/api/v1/embedding", json={"x": 1, "y": 0, "corners": corners}).json()
    assert at_corner["weights"] == [0.0, 1.0, 0.0, 0.0]
    assert torch.equal(torch.tensor(at_corner["embedding"]), tensors[1])
    # NSynth Super's weights: the middle of an edge mixes only that edge's two corners, half and half.
    edge = client.post("/api/v1/embedding", json={"x": 0.5, "y": 1, "corners": corners}).json()
    assert edge["weights"] == pytest.approx([0, 0, 0.5, 0.5])
    expected = interpolate.blend(tensors, [0, 0, 0.5, 0.5])
    assert torch.allclose(torch.tensor(edge["embedding"]), expected, atol=1e-6)
    assert edge["shape"] == list(expected.shape)


@pytest.mark.parametrize("weighting", ["nsynth", "bilinear"])
def test_pad_weights_agree_with_the_grid_weights_of_interpolate(weighting: str) -> None:
    grid = interpolate.grid_weights(5, {"nsynth": "distance", "bilinear": "bilinear"}[weighting])
    for row in range(5):
        for col in range(5):
            weights = corner_weights(col / 4, row / 4, weighting)
            assert torch.allclose(weights, grid[row, col], atol=1e-12), (row, col)


@pytest.mark.parametrize(
    "content, content_type, status, message",
    [
        ('{"x": 1.5, "y": 0}', "application/json", 422, "x 1.5 is outside [0, 1]"),
        ('{"y": 0}', "application/json", 422, "missing field 'x'"),
        ('{"x": 0, "y": 0, "pitch": 128}', "application/json", 422, "pitch 128 is outside [0, 127]"),
        ('{"x": 0, "y": 0, "pitch": 60.5}', "application/json", 422, "pitch must be an integer"),
        ('{"x": 0, "y": 0, "velocity": 0}', "application/json", 422, "velocity 0 is outside [1, 127]"),
        ('{"x": 0, "y": 0, "seconds": 9}', "application/json", 422, "seconds 9 is outside [0.1, 8]"),
        ('{"x": "left", "y": 0}', "application/json", 422, "x must be a number"),
        (
            '{"x": 0, "y": 0, "weighting": "cubic"}',
            "application/json",
            422,
            "weighting must be one of nsynth, bilinear",
        ),
        ('{"x": 0, "y": 0, "corners": ["flute"]}', "application/json", 422, "corners must be a list of 4"),
        (
            '{"x": 0, "y": 0, "corners": ["/etc/passwd", "flute", "flute", "flute"]}',
            "application/json",
            422,
            "unknown corner '/etc/passwd'",
        ),
        (
            '{"x": 0, "y": 0, "corners": ["gm:300", "flute", "flute", "flute"]}',
            "application/json",
            422,
            "General MIDI program 0-127",
        ),
        ('{"x": 0, "y": 0, "pich": 60}', "application/json", 422, "unknown field 'pich'"),
        ("[0.5, 0.5]", "application/json", 422, "must be a JSON object"),
        ('{"x": 0,', "application/json", 400, "not valid JSON"),
        ("[" * 2000, "application/json", 400, "nests JSON too deeply"),
        ('{"x": NaN, "y": 0}', "application/json", 422, "x must be a number"),
        ('{"x": 0, "y": 0}', "text/plain", 415, "Content-Type: application/json"),
        ('{"x": 0, "y": 0, "corners": ["' + "a" * MAX_BODY_BYTES + '"]}', "application/json", 413, "limit"),
    ],
)
def test_bad_requests_get_a_4xx_json_error(
    client: TestClient, content: str, content_type: str, status: int, message: str
) -> None:
    for path in (NOTE, "/api/v1/embedding"):
        response = client.post(path, content=content, headers={"content-type": content_type})
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/json"
        assert message in response.json()["error"]


def test_wrong_paths_and_methods_get_json_errors(client: TestClient) -> None:
    for response, status in ((client.get(NOTE), 405), (client.get("/api/v1/nothing"), 404), (client.delete("/"), 405)):
        assert response.status_code == status
        assert response.json()["status"] == status


def test_identical_requests_come_from_the_cache(client: TestClient) -> None:
    body = {"x": 0.31, "y": 0.62, "pitch": 65, "seconds": 0.5}
    first, second = client.post(NOTE, json=body), client.post(NOTE, json=body)
    assert (first.headers["x-timbre-cache"], second.headers["x-timbre-cache"]) == ("miss", "hit")
    assert first.content == second.content
    # Positions closer than the pad's resolution are the same request.
    assert client.post(NOTE, json={**body, "x": 0.31000001}).headers["x-timbre-cache"] == "hit"
    assert client.post(NOTE, json={**body, "pitch": 66}).headers["x-timbre-cache"] == "miss"


def test_concurrent_requests_are_batched_and_each_gets_its_own_note(instrument: Instrument) -> None:
    app = create_app(instrument)
    pitches = [48, 50, 53, 55, 57, 60, 62, 64]

    async def play_together() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            requests = [http.post(NOTE, json={"x": 0.4, "y": 0.6, "pitch": p, "seconds": 1.0}) for p in pitches]
            # Four copies of one request are decoded once.
            copies = [http.post(NOTE, json={"x": 0.1, "y": 0.1, "pitch": 70, "seconds": 1.0}) for _ in range(4)]
            return await asyncio.gather(*requests, *copies)

    responses = asyncio.run(play_together())
    notes = np.stack([read_wav(response) for response in responses[: len(pitches)]])
    scores = pitch_scores(notes, pitches, 16000, tolerance_cents=50)
    assert all(score.correct for score in scores), [round(score.cents) for score in scores]
    copies = responses[len(pitches) :]
    assert sorted(response.headers["x-timbre-cache"] for response in copies).count("miss") == 1
    assert len({response.content for response in copies}) == 1
    status = app.state.service.status()
    assert status["decoder"]["notes"] == len(pitches) + 1
    assert status["decoder"]["largest_batch"] > 1, "no two concurrent notes shared a decoder pass"


def test_the_page_is_served_and_references_nothing_outside_the_server(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)
    assert sorted(assets) == ["/static/instrument.js", "/static/style.css"]
    for text in [page.text] + [client.get(asset).text for asset in assets]:
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.IGNORECASE)
    for element in ('id="pad"', 'id="puck"', 'id="keyboard"', 'id="rainbowgram"', 'id="latency"'):
        assert element in page.text


def test_a_loopback_server_refuses_other_host_names(instrument: Instrument) -> None:
    app = create_app(instrument, allowed_hosts=["127.0.0.1", "localhost"])
    with TestClient(app, base_url="http://localhost") as local:
        assert local.get("/api/v1/timbres").status_code == 200
    with TestClient(app, base_url="http://attacker.example") as rebound:
        assert rebound.get("/api/v1/timbres").status_code == 400


def test_custom_corners_from_files(instrument: Instrument, tmp_path: Path) -> None:
    source = instrument.timbre_set.lookup(42)[0].path
    mine = tmp_path / "My Cello.wav"
    mine.write_bytes(source.read_bytes())
    custom = Instrument(
        instrument.model, corners=[str(mine), "flute", "gm:0", "gm:80"], timbre_set=instrument.timbre_set
    )
    assert custom.default_corners == ("my_cello", "flute", "acoustic_grand_piano", "lead_1_square")
    assert torch.equal(custom.corner("my_cello").embedding.tensor, instrument.corner("cello").embedding.tensor)
    with pytest.raises(timbre.TimbreError, match="no such file"):
        Instrument(
            instrument.model, corners=["missing.wav", "flute", "gm:0", "gm:80"], timbre_set=instrument.timbre_set
        )
    with pytest.raises(timbre.TimbreError, match="needs 4 corners"):
        Instrument(instrument.model, corners=["flute"], timbre_set=instrument.timbre_set)


@pytest.mark.slow
def test_timbre_serve_runs_the_app_and_reports_bad_flags_in_one_line() -> None:
    command = [sys.executable, "-m", "timbre.cli", "serve", "--port", "0"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        match = re.search(r"open (http://127\.0\.0\.1:\d+/)", line)
        assert match, line + server.stderr.read() if server.poll() is not None else line
        base = match.group(1)
        assert httpx.get(base, timeout=30).status_code == 200
        note = httpx.post(base + "api/v1/note", json={"x": 0.5, "y": 0.5, "pitch": 64, "seconds": 1}, timeout=30)
        assert read_wav(note).shape == (16000,)
        port = int(base.rstrip("/").rsplit(":", 1)[1])
        taken = subprocess.run([*command[:-1], str(port)], capture_output=True, text=True, timeout=60)
        assert taken.returncode == 1 and "cannot listen on --host 127.0.0.1 --port" in taken.stderr
    finally:
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=30) == 0
    bad = subprocess.run(
        [*command, "--corners", "nope", "flute", "violin", "cello"], capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 1
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("timbre serve: error: --corners: corner 'nope': no such file"), (
        bad.stderr
    )
