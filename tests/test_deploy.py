"""The production files: docker-compose.yml, the two Dockerfiles and .dockerignore.

No Docker needed: the compose file is read with ``yaml.safe_load``, the Dockerfiles with a small
line parser, and both are checked against ``pyproject.toml`` and the service's settings.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILES = {
    "api": ROOT / "docker" / "Dockerfile.api",
    "worker": ROOT / "docker" / "Dockerfile.worker",
}
IMAGES = {"api": "featureviz/api:0.1.0", "worker": "featureviz/worker:0.1.0"}
COMMANDS = {"api": ["featureviz", "serve"], "worker": ["featureviz", "worker"]}
ROOT_USERS = {"root", "0"}


# ---------------------------------------------------------------------------------------------
# pyproject.toml


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def requirement_name(req: str) -> str:
    return re.split(r"[\[<>=!~;\s]", req, maxsplit=1)[0].strip().lower().replace("_", "-")


def exact_pins(reqs: list[str]) -> dict[str, str]:
    """``name -> version`` of every requirement pinned with ``==``."""
    pins = {}
    for req in reqs:
        m = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?\s*==\s*([^\s,;]+)\s*(?:;.*)?", req)
        if m:
            pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    return pins


# ---------------------------------------------------------------------------------------------
# Dockerfiles


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str | None:
        found = self.all(keyword)
        return found[-1] if found else None


def parse_dockerfile(path: Path) -> list[Stage]:
    """A Dockerfile's stages: continuations joined, comments dropped, FROM ARGs resolved."""
    logical: list[str] = []
    current = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1].strip() + " "
            continue
        logical.append(current + line)
        current = ""
    assert not current, f"{path.name}: dangling line continuation"

    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            words = args.split()
            words = [w for w in words if not w.startswith("--")]
            base = re.sub(
                r"\$\{?(\w+)\}?", lambda m: global_args.get(m.group(1), m.group(0)), words[0]
            )
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=base, name=name))
        elif not stages:
            if keyword == "ARG" and "=" in args:
                key, _, value = args.partition("=")
                global_args[key.strip()] = value.strip().strip("\"'")
        else:
            stages[-1].instructions.append((keyword, args))
    return stages


def argv_of(form: str) -> list[str]:
    """The argv of a CMD / ENTRYPOINT / HEALTHCHECK CMD, exec (JSON) or shell form."""
    form = form.strip()
    if form.startswith("["):
        argv = json.loads(form)
        assert all(isinstance(a, str) for a in argv)
        return argv
    return shlex.split(form)


def env_of(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in stage.all("ENV"):
        words = shlex.split(args)
        if words and "=" not in words[0]:  # legacy `ENV key value`
            env[words[0]] = " ".join(words[1:])
            continue
        for word in words:
            key, _, value = word.partition("=")
            env[key] = value
    return env


def pip_installs(stage: Stage) -> list[list[str]]:
    """Arguments (options dropped) of every ``pip install`` in the stage's RUN lines."""
    found = []
    for run in stage.all("RUN"):
        for command in re.split(r"&&|;|\|\|", run):
            words = shlex.split(command)
            for i in range(len(words) - 1):
                if words[i].endswith("pip") and words[i + 1] == "install":
                    found.append([w for w in words[i + 2 :] if not w.startswith("-")])
                    break
                if words[i : i + 3] == ["-m", "pip", "install"]:
                    found.append([w for w in words[i + 3 :] if not w.startswith("-")])
                    break
    return found


def copied_sources(stage: Stage) -> set[str]:
    """Build-context paths copied into the stage (``COPY --from`` excluded)."""
    sources: set[str] = set()
    for args in stage.all("COPY") + stage.all("ADD"):
        words = shlex.split(args)
        if any(w.startswith("--from") for w in words):
            continue
        words = [w for w in words if not w.startswith("--")]
        sources.update(w.rstrip("/").removeprefix("./") for w in words[:-1])
    return sources


@pytest.fixture(scope="module", params=["api", "worker"])
def image(request: pytest.FixtureRequest) -> tuple[str, list[Stage]]:
    path = DOCKERFILES[request.param]
    assert path.is_file(), f"{path} is missing"
    stages = parse_dockerfile(path)
    assert stages, f"{path.name} has no FROM"
    return request.param, stages


def test_dockerfile_base_is_python_311_slim(image, pyproject) -> None:
    _, stages = image
    assert pyproject["project"]["requires-python"] == ">=3.11"
    for stage in stages:
        assert stage.base.startswith("python:3.11-slim"), stage.base
        assert "@sha256" not in stage.base


def test_dockerfile_runs_as_non_root_user_owning_data(image) -> None:
    name, stages = image
    final = stages[-1]
    user = final.last("USER")
    assert user is not None, f"{name}: no USER in the final stage"
    uid = user.split(":")[0]
    assert uid not in ROOT_USERS, f"{name} runs as {user}"
    assert uid == "10001", f"{name}: uid {uid}; api and worker share /data as uid 10001"
    runs = " ".join(final.all("RUN"))
    assert re.search(r"useradd\b[^&]*--uid 10001", runs), f"{name}: no user with uid 10001"
    assert re.search(r"chown [^&]*10001[^&]*/data", runs), f"{name}: /data not owned by 10001"
    assert final.last("WORKDIR") == "/app"


def test_dockerfile_env(image) -> None:
    name, stages = image
    env = env_of(stages[-1])
    assert env.get("FEATUREVIZ_DATA_DIR") == "/data"
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1"
    assert env.get("PYTHONUNBUFFERED") == "1"
    assert env.get("TF_CPP_MIN_LOG_LEVEL") == "2"
    if name == "worker":
        assert env.get("NVIDIA_VISIBLE_DEVICES") == "all"
        assert set(env.get("NVIDIA_DRIVER_CAPABILITIES", "").split(",")) >= {"compute", "utility"}


def test_dockerfile_command(image) -> None:
    name, stages = image
    final = stages[-1]
    entrypoint = final.last("ENTRYPOINT")
    cmd = final.last("CMD")
    argv = (argv_of(entrypoint) if entrypoint else []) + (argv_of(cmd) if cmd else [])
    assert argv[:2] == COMMANDS[name], argv
    options = dict(zip(argv[2::2], argv[3::2], strict=False))
    if name == "api":
        assert options.get("--host") == "0.0.0.0"
        assert options.get("--port") == "8000"
        assert "8000" in final.all("EXPOSE")
    else:
        assert options.get("--concurrency", "1") == "1"
        assert options.get("--name", "gpu") == "gpu"


def test_dockerfile_healthcheck(image) -> None:
    name, stages = image
    check = stages[-1].last("HEALTHCHECK")
    assert check is not None, f"{name}: no HEALTHCHECK"
    assert check.upper() != "NONE"
    m = re.search(r"(?:^|\s)CMD\s+(.*)$", check)
    assert m, check
    argv = argv_of(m.group(1))
    assert argv[0] in {"python", "python3", "celery"}, argv  # slim images have no curl
    script = " ".join(argv)
    assert "--timeout=" in check or "timeout" in script
    if name == "api":
        assert "http://127.0.0.1:8000/healthz" in script
    else:
        assert "ping" in script and "gpu@" in script
        assert "workers.celery_app" in script


def test_dockerfile_installs_the_project_with_its_pins(image, pyproject) -> None:
    name, stages = image
    installs_by_stage = {i: pip_installs(s) for i, s in enumerate(stages)}
    project = [(i, args) for i, found in installs_by_stage.items() for args in found if "." in args]
    assert project, f"{name}: no `pip install ... .` of the project"
    stage_index, args = project[-1]
    stage = stages[stage_index]

    # What `pip install .` needs from the build context is copied in first.
    sources = copied_sources(stage)
    needed = {"pyproject.toml", pyproject["project"]["readme"]}
    needed |= {
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    assert needed <= sources, f"{name}: not copied: {needed - sources}"

    # The final stage has what that stage installed.
    if stage_index != len(stages) - 1:
        donor = {stage.name, str(stage_index)}
        copies = [shlex.split(c) for c in stages[-1].all("COPY")]
        assert any(f"--from={d}" in words for words in copies for d in donor), (
            f"{name}: the final stage does not copy the installed environment from its builder"
        )

    # Nothing in the Dockerfile pins a pyproject requirement to another version.
    pins = exact_pins(pyproject["project"]["dependencies"])
    assert pins.get("tensorflow"), "pyproject pins tensorflow with =="
    all_args = [a for found in installs_by_stage.values() for call in found for a in call]
    for req in all_args:
        if req == ".":
            continue
        extra_pins = exact_pins([req])
        pkg = requirement_name(req)
        assert pkg in pins or pkg not in {
            requirement_name(d) for d in pyproject["project"]["dependencies"]
        }, f"{name}: {req} overrides a pyproject requirement"
        for pkg, version in extra_pins.items():
            if pkg in pins:
                assert version == pins[pkg], f"{name}: {req} but pyproject pins {pkg}=={pins[pkg]}"
        assert not pkg.startswith("tensorflow-"), f"{name}: a second TensorFlow ({req})"

    tf = [a for a in all_args if requirement_name(a) == "tensorflow"]
    if name == "worker":
        assert tf == [f"tensorflow[and-cuda]=={pins['tensorflow']}"], tf
        assert [a for a in args if requirement_name(a) == "tensorflow"] == tf, (
            "the CUDA TensorFlow and the project are resolved in one pip run"
        )
    else:
        assert tf == [], f"api: TensorFlow comes from the project's own pin, not {tf}"


def test_same_uid_and_data_dir_in_both_images() -> None:
    finals = {name: parse_dockerfile(path)[-1] for name, path in DOCKERFILES.items()}
    assert finals["api"].last("USER") == finals["worker"].last("USER")
    assert (
        env_of(finals["api"])["FEATUREVIZ_DATA_DIR"]
        == env_of(finals["worker"])["FEATUREVIZ_DATA_DIR"]
    )


# ---------------------------------------------------------------------------------------------
# .dockerignore


def dockerignore_patterns() -> list[str]:
    path = ROOT / ".dockerignore"
    assert path.is_file()
    lines = [ln.strip() for ln in path.read_text().splitlines()]
    return [ln for ln in lines if ln and not ln.startswith("#")]


def ignored(path: str, patterns: list[str]) -> bool:
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern.lstrip("!").strip("/")
        hit = fnmatch.fnmatch(path, pat) or fnmatch.fnmatch(path.split("/")[0], pat)
        if hit:
            result = not negate
    return result


def test_dockerignore_excludes_local_state() -> None:
    patterns = dockerignore_patterns()
    for path in (".venv", ".git", "var", ".pytest_cache", ".ruff_cache", ".env"):
        assert ignored(path, patterns), f"{path} is sent to the Docker build context"


def test_dockerignore_keeps_what_the_images_copy() -> None:
    patterns = dockerignore_patterns()
    sources = set()
    for path in DOCKERFILES.values():
        for stage in parse_dockerfile(path):
            sources |= copied_sources(stage)
    assert "pyproject.toml" in sources
    for source in sorted(sources):
        assert (ROOT / source).exists(), f"the Dockerfiles copy {source}, which does not exist"
        assert not ignored(source, patterns), f".dockerignore drops {source}, which an image copies"


# ---------------------------------------------------------------------------------------------
# docker-compose.yml


@pytest.fixture(scope="module")
def compose() -> dict:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {str(k): str(v) for k, v in env.items()}


def mounts(service: dict) -> dict[str, str]:
    """``target -> source`` of the service's volumes."""
    found = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            found[volume["target"]] = volume.get("source", "")
        else:
            parts = volume.split(":")
            found[parts[1]] = parts[0]
    return found


def test_compose_services(compose) -> None:
    assert "version" not in compose
    assert set(compose["services"]) == {"redis", "api", "worker"}
    for name, service in compose["services"].items():
        assert not service.get("privileged", False), f"{name} is privileged"
        assert service.get("network_mode") != "host", name
        assert service.get("restart") == "unless-stopped", name


def test_compose_redis_persists(compose) -> None:
    redis = compose["services"]["redis"]
    assert redis["image"] == "redis:7.4-alpine"
    command = redis["command"]
    argv = command if isinstance(command, list) else shlex.split(command)
    options = dict(zip(argv[1::2], argv[2::2], strict=False))
    assert argv[0] == "redis-server"
    assert options.get("--appendonly") == "yes"
    assert options.get("--appendfsync") == "everysec"
    assert "--maxmemory-policy" not in options or options["--maxmemory-policy"] == "noeviction"
    assert mounts(redis) == {"/data": "redis-data"}
    assert "redis-cli" in redis["healthcheck"]["test"] and "ping" in redis["healthcheck"]["test"]
    assert "ports" not in redis, "Redis is reachable from the host"


def test_compose_builds_and_images(compose) -> None:
    for name in ("api", "worker"):
        service = compose["services"][name]
        assert service["image"] == IMAGES[name]
        assert service["build"]["context"] == "."
        dockerfile = ROOT / service["build"]["dockerfile"]
        assert dockerfile == DOCKERFILES[name] and dockerfile.is_file()
        assert IMAGES[name].endswith(
            ":" + tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
        )


def test_compose_shared_model_store(compose) -> None:
    api, worker = compose["services"]["api"], compose["services"]["worker"]
    api_dir = environment(api)["FEATUREVIZ_DATA_DIR"]
    worker_dir = environment(worker)["FEATUREVIZ_DATA_DIR"]
    assert api_dir == worker_dir == "/data"
    source = mounts(api).get(api_dir)
    assert source, f"api has no volume at {api_dir}"
    assert mounts(worker).get(worker_dir) == source
    assert "/" not in source and not source.startswith("."), f"{source} is not a named volume"
    assert source in compose["volumes"]
    assert "redis-data" in compose["volumes"]
    assert source != mounts(compose["services"]["redis"])["/data"]


def test_compose_environment(compose) -> None:
    for name in ("api", "worker"):
        env = environment(compose["services"][name])
        url = urlparse(env["REDIS_URL"])
        assert url.scheme == "redis" and url.hostname == "redis" and (url.port or 6379) == 6379
        assert url.hostname in compose["services"]
        assert env["API_KEYS"] == "${API_KEYS:-}"
        assert env["FEATUREVIZ_WEBHOOK_SECRET"].startswith("${FEATUREVIZ_WEBHOOK_SECRET")
        for key in env:
            assert key in {"REDIS_URL", "API_KEYS"} or key.startswith("FEATUREVIZ_"), key
    api_env = environment(compose["services"]["api"])
    assert api_env == environment(compose["services"]["worker"]), "api and worker disagree"


def test_compose_depends_on_healthy_redis(compose) -> None:
    for name in ("api", "worker"):
        depends = compose["services"][name]["depends_on"]
        assert isinstance(depends, dict), f"{name}: depends_on without a condition"
        assert depends["redis"]["condition"] == "service_healthy"


def test_compose_api_port(compose) -> None:
    ports = compose["services"]["api"]["ports"]
    published = []
    for port in ports:
        if isinstance(port, dict):
            published.append((str(port.get("published")), str(port["target"])))
        else:
            parts = str(port).split(":")
            published.append((parts[-2], parts[-1]))
    assert ("8000", "8000") in published, ports


def test_compose_worker_gpu(compose) -> None:
    worker = compose["services"]["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    gpus = [
        d for d in devices if d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", [])
    ]
    assert len(gpus) == 1, devices
    assert gpus[0].get("count") == 1 or gpus[0].get("device_ids")
    assert "api" in compose["services"] and "deploy" not in compose["services"]["api"]


def seconds(value: str) -> float:
    m = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", str(value))
    assert m and any(m.groups()), value
    return int(m.group(1) or 0) * 60 + int(m.group(2) or 0)


def test_compose_graceful_stop(compose) -> None:
    api, worker = compose["services"]["api"], compose["services"]["worker"]
    # uvicorn shuts down gracefully within 30 s (service/cli.py); the worker warm-shuts down.
    assert seconds(api["stop_grace_period"]) >= 30
    assert seconds(worker["stop_grace_period"]) >= 60
