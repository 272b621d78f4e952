"""The ``featureviz`` client commands as a user runs them: subprocesses against the stack."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from service.embedded import free_port
from tests import builders
from tests.e2e.conftest import Stack

ROOT = Path(__file__).resolve().parents[2]


def run(stack: Stack, *args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
    command, *rest = args
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEATUREVIZ_")}
    return subprocess.run(
        [sys.executable, "-m", "service.cli", command, "--url", url or stack.api.url, *rest],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
    )


def ok(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    done = run(stack, *args)
    assert done.returncode == 0, done.stderr
    return done


def as_json(done: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cli")
    cat = d / "cat.png"
    cat.write_bytes(builders.png_bytes(builders.photo((32, 32))))
    coffee = d / "coffee.jpg"
    coffee.write_bytes(builders.jpeg_bytes(builders.photo((48, 40), name="coffee")))
    return {
        "model": builders.tiny_convnet(d / "tiny.keras", size=32, filters=8),
        "cat": cat,
        "coffee": coffee,
        "dir": d,
    }


@pytest.fixture(scope="module")
def model_id(stack: Stack, files: dict[str, Path]) -> str:
    record = as_json(ok(stack, "upload", str(files["model"]), "--name", "tiny-cli", "--json"))
    assert record["name"] == "tiny-cli"
    return record["id"]


def test_upload_models_model_delete(stack: Stack, files: dict[str, Path], model_id: str):
    human = ok(stack, "upload", str(files["model"]), "--preprocess", "rescale").stdout
    assert human.startswith(model_id)  # same bytes, one model
    listed = as_json(ok(stack, "models", "--json"))
    assert model_id in [m["id"] for m in listed]
    table = ok(stack, "models").stdout
    assert table.splitlines()[0].split()[:2] == ["id", "name"] and model_id in table
    record = as_json(ok(stack, "model", model_id, "--json"))
    assert [r["path"] for r in record["layers"]][:3] == ["conv1", "pool1", "conv2"]
    assert "conv2" in ok(stack, "model", model_id).stdout

    other = files["dir"] / "other.keras"
    builders.tiny_convnet(other, size=32, filters=4)
    other_id = as_json(ok(stack, "upload", str(other), "--json"))["id"]
    assert as_json(ok(stack, "delete", other_id, "--json")) == {"deleted": other_id}
    assert run(stack, "model", other_id).returncode == 1


def test_activations_writes_npz(stack: Stack, files: dict[str, Path], model_id: str):
    out = files["dir"] / "acts.npz"
    args = [str(files["cat"]), str(files["coffee"]), "--layers", "conv1,conv2"]
    done = ok(stack, "activations", str(files["model"]), *args, "--channels", "0-1", "-o", str(out))
    assert f"wrote {out}" in done.stdout and "conv2  (2, 16, 16, 2)" in done.stdout
    with np.load(out, allow_pickle=False) as data:
        assert data["conv1"].shape == (2, 32, 32, 2) and data["conv2"].shape == (2, 16, 16, 2)
    info = as_json(ok(stack, "activations", model_id, str(files["cat"]), "-o", str(out), "--json"))
    assert info["model_id"] == model_id and info["arrays"]["conv1"]["shape"] == [1, 32, 32, 8]


def test_render_and_filters_write_png(stack: Stack, files: dict[str, Path], model_id: str):
    grid = files["dir"] / "grid.png"
    info = as_json(
        ok(
            stack,
            "render",
            model_id,
            str(files["cat"]),
            "--layer",
            "conv1",
            "--channels",
            "0-3",
            "--cmap",
            "magma",
            "--cols",
            "2",
            "-o",
            str(grid),
            "--json",
        )
    )
    with Image.open(grid) as im:
        assert im.format == "PNG" and im.size == (info["width"], info["height"])
    kernels = files["dir"] / "kernels.png"
    assert "wrote" in ok(stack, "filters", model_id, "--layer", "conv1", "-o", str(kernels)).stdout
    assert kernels.read_bytes()[:4] == b"\x89PNG"


def test_visualize_wait_writes_grid_and_gif(stack: Stack, files: dict[str, Path], model_id: str):
    grid, gif = files["dir"] / "ascent.png", files["dir"] / "ascent.gif"
    done = ok(
        stack,
        "visualize",
        str(files["model"]),
        "--layer",
        "conv2",
        "--channels",
        "0-1",
        "--steps",
        "10",
        "--size",
        "32",
        "--wait",
        "-o",
        str(grid),
        "--gif",
        str(gif),
        "--json",
    )
    record = as_json(done)
    assert record["status"] == "succeeded" and record["output"] == str(grid)
    assert f"{record['id'][:8]} succeeded [" in done.stderr and "10/10" in done.stderr  # the bar
    with Image.open(grid) as im:
        assert im.format == "PNG" and im.width > 32
    assert gif.read_bytes()[:3] == b"GIF"

    table = ok(stack, "jobs").stdout
    assert record["id"] in table and "succeeded" in table
    assert record["id"] in [j["id"] for j in as_json(ok(stack, "jobs", "--json"))]
    cancelled = run(stack, "cancel", record["id"])
    assert cancelled.returncode == 1 and "409" in cancelled.stderr
    assert "already succeeded" in cancelled.stderr


def test_visualize_without_wait_then_job_and_cancel(
    stack: Stack, files: dict[str, Path], model_id: str
):
    args = ["--layer", "conv2", "--channels", "0-1", "--size", "32", "--seed", "7"]
    quick = as_json(ok(stack, "visualize", model_id, *args, "--steps", "10", "--json"))
    assert quick["status"] in ("queued", "running", "succeeded") and "output" not in quick
    out = files["dir"] / "later.png"
    shown = ok(stack, "job", quick["id"], "--wait", "--no-progress", "-o", str(out))
    assert quick["id"] in shown.stdout and "succeeded" in shown.stdout and out.exists()
    assert shown.stderr == ""

    long = as_json(ok(stack, "visualize", model_id, *args, "--steps", "5000", "--json"))
    assert as_json(ok(stack, "cancel", long["id"], "--json"))["id"] == long["id"]
    failed = run(stack, "job", long["id"], "--wait", "--no-progress", "--wait-timeout", "60")
    assert failed.returncode == 1 and "cancelled" in failed.stderr


def test_errors_exit_1_with_the_detail(stack: Stack, files: dict[str, Path], model_id: str):
    missing = run(stack, "model", "nosuchmodel0", "--json")
    assert missing.returncode == 1 and missing.stdout == ""
    assert "404" in missing.stderr and "nosuchmodel0" in missing.stderr
    bad_layer = run(stack, "render", model_id, str(files["cat"]), "--layer", "nope", "-o", "x.png")
    assert bad_layer.returncode == 1 and "422" in bad_layer.stderr and "nope" in bad_layer.stderr
    no_file = run(stack, "upload", str(files["dir"] / "absent.keras"))
    assert no_file.returncode == 1 and "absent.keras" in no_file.stderr
    down = f"http://127.0.0.1:{free_port()}"
    refused = run(stack, "models", "--retries", "0", url=down)
    assert refused.returncode == 1 and "cannot talk to" in refused.stderr
    usage = run(stack, "render", model_id)  # argparse: missing arguments
    assert usage.returncode == 2


def test_report_is_one_self_contained_page(stack: Stack, files: dict[str, Path], model_id: str):
    page_path = files["dir"] / "report.html"
    done = ok(
        stack,
        "report",
        str(files["model"]),
        str(files["cat"]),
        "-o",
        str(page_path),
        "--visualize",
        "conv2",
        "--visualize-channels",
        "2",
        "--steps",
        "10",
        "--size",
        "32",
        "--max-channels",
        "4",
        "--json",
    )
    assert as_json(done)["model_id"] == model_id
    page = page_path.read_text()
    assert page.startswith("<!doctype html>")
    assert page.count('<img src="data:image/png;base64,') == 5  # input, 2 grids, kernels, ascent
    for name in ("conv1", "conv2", "pool1", "gap", "head"):
        assert f">{name}<" in page
    assert "first 4 shown" in page and "Gradient ascent" in page
    assert "http://" not in page and "https://" not in page and "<script" not in page
