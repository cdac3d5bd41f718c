"""Pre-annotate a whole Label Studio project with SAM2Plus's automatic masks, task by task.

    python -m sam2plus.annotate_project --label-studio URL --api-key KEY --project ID --backend URL
                                        [--limit N] [--time-budget SECONDS]

Label Studio's own *Retrieve predictions* sends every selected task in one /predict and waits
100 s for it, so a large project cannot depend on it. This command asks the backend for one task
at a time (its project's auto_annotation settings, stored by Label Studio's /setup) and stores
each answer through Label Studio's predictions endpoint (`POST /api/predictions`), with a
progress bar on stderr; `--time-budget` gives each task more time than the 90 s Label Studio's
own requests are held to (a CPU backend needs it for large images). It is resumable: a task that
already has a prediction of the backend's model version is skipped, so a run stopped (Ctrl-C, a
crash, `--limit`) goes on where it was; a task answered partially (the time budget ran out:
model version ending in ":partial") is done again and its partial prediction replaced.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime

import requests

from .preannotate import PARTIAL

__all__ = ["annotate_project", "main"]

PAGE = 100


class LabelStudio:
    """The few Label Studio API calls this command needs, with a legacy token or a personal access token."""

    def __init__(self, url: str, key: str, timeout: float = 60):
        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.timeout = timeout
        self.session.headers["Authorization"] = f"Token {key}"
        if key.count(".") == 2:  # a personal access token (a JWT refresh token): exchange it
            answer = requests.post(f"{self.url}/api/token/refresh/", json={"refresh": key}, timeout=timeout)
            answer.raise_for_status()
            self.session.headers["Authorization"] = f"Bearer {answer.json()['access']}"

    def call(self, method: str, path: str, **kwargs):
        answer = self.session.request(method, self.url + path, timeout=self.timeout, **kwargs)
        if not answer.ok:
            raise SystemExit(f"annotate_project: {method} {path} -> HTTP {answer.status_code}: {answer.text[:300]}")
        return answer.json() if answer.content else None

    def tasks(self, project: int):
        page = 1
        while True:
            answer = self.session.get(
                f"{self.url}/api/tasks",
                params={"project": project, "page": page, "page_size": PAGE},
                timeout=self.timeout,
            )
            if answer.status_code == 404:  # past the last page
                return
            answer.raise_for_status()
            tasks = answer.json()["tasks"]
            yield from tasks
            if len(tasks) < PAGE:
                return
            page += 1


def project_uid(project: dict) -> str:
    """The project id Label Studio gives ML backends: "<id>.<created_at as a Unix timestamp>"."""
    created = datetime.fromisoformat(project["created_at"].replace("Z", "+00:00"))
    return f"{project['id']}.{int(created.timestamp())}"


def annotate_project(
    ls: LabelStudio, backend: str, project_id: int, limit: int | None, budget: float | None = None
) -> dict:
    """Pre-annotate the project's tasks that lack a complete prediction of the backend's model version."""
    project = ls.call("GET", f"/api/projects/{project_id}")
    timeout = (budget or 90) + 60  # the backend answers within the budget, then the regions travel
    health = requests.get(backend.rstrip("/") + "/health", timeout=60)
    health.raise_for_status()
    version = health.json()["model_version"]
    stored = ls.call("GET", f"/api/predictions?project={project_id}") or []
    done = {p["task"] for p in stored if p.get("model_version") == version}
    partial = {p["task"]: p["id"] for p in stored if p.get("model_version") == version + PARTIAL}
    todo = [task for task in ls.tasks(project_id) if task["id"] not in done]
    if limit is not None:
        todo = todo[:limit]
    counts = {"skipped": len(done), "stored": 0, "partial": 0, "failed": 0, "regions": 0}
    started = time.monotonic()
    for index, task in enumerate(todo):
        _progress(index, len(todo), started, counts)
        body = {
            "tasks": [task],
            "project": project_uid(project),
            "label_config": project["label_config"],
            "params": {"context": None},
        }
        if budget is not None:
            body["time_budget"] = budget
        answer = requests.post(backend.rstrip("/") + "/predict", json=body, timeout=timeout)
        entry = (answer.json().get("results") or [{}])[0] if answer.ok else {"error": answer.text[:200]}
        if "result" not in entry:
            counts["failed"] += 1
            print(f"\ntask {task['id']}: no prediction ({entry.get('error', 'no result')})", file=sys.stderr)
            continue
        prediction = {"task": task["id"], "result": entry["result"], "score": entry.get("score")}
        ls.call("POST", "/api/predictions", json={**prediction, "model_version": entry["model_version"]})
        if task["id"] in partial:
            ls.call("DELETE", f"/api/predictions/{partial[task['id']]}")
        counts["partial" if entry["model_version"].endswith(PARTIAL) else "stored"] += 1
        counts["regions"] += len(entry["result"])
    _progress(len(todo), len(todo), started, counts)
    print(file=sys.stderr)
    return counts


def _progress(done: int, total: int, started: float, counts: dict) -> None:
    width = 30
    filled = width * done // total if total else width
    elapsed = time.monotonic() - started
    eta = elapsed / done * (total - done) if done else 0
    print(
        f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} tasks, {counts['regions']} regions, "
        f"{counts['failed']} failed, {elapsed:.0f} s elapsed, ~{eta:.0f} s left ",
        end="",
        file=sys.stderr,
        flush=True,
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sam2plus.annotate_project", description=__doc__.split("\n\n")[0])
    parser.add_argument("--label-studio", required=True, help="Label Studio's URL")
    parser.add_argument("--api-key", required=True, help="a legacy token or a personal access token")
    parser.add_argument("--project", type=int, required=True, help="the project's id")
    parser.add_argument("--backend", required=True, help="SAM2Plus's URL (user:password@ for basic auth)")
    parser.add_argument("--limit", type=int, help="at most this many tasks in this run")
    parser.add_argument(
        "--time-budget",
        type=float,
        help="seconds the backend may spend on one task (1 to 3600; default: the project's time_budget)",
    )
    args = parser.parse_args(argv)
    counts = annotate_project(
        LabelStudio(args.label_studio, args.api_key), args.backend, args.project, args.limit, args.time_budget
    )
    print(" ".join(f"{key}={value}" for key, value in counts.items()))
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
