"""The production stack runs what ``ironsight run`` runs, less the simulators."""

from __future__ import annotations

from pathlib import Path

import yaml

from core.settings import Settings
from ironsight.supervisor import SIMULATORS, Supervisor

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def test_compose_runs_every_service_the_supervisor_runs():
    supervisor = Supervisor(Settings(), controllers=1, fault_share=0.0, faults=(), interval_s=1.0,
                            diagnostics_workers=1)
    run_by_supervisor = {worker.argv[3] for worker in supervisor.plan(Path("logs"))} - set(SIMULATORS)
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    run_by_compose = {service["command"][0] for service in compose["services"].values()
                      if service.get("image", "").startswith("ironsight:")} - {"migrate"}
    assert run_by_compose == run_by_supervisor


def test_the_image_holds_every_package():
    import tomllib

    packages = tomllib.loads((DEPLOY.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    copied = {line.split()[1] for line in (DEPLOY / "Dockerfile").read_text().splitlines()
              if line.startswith("COPY ") and len(line.split()) == 3}
    assert {pattern.rstrip("*") for pattern in packages["include"]} <= copied
