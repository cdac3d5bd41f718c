"""A small client of Label Studio's REST API, and the smart-region contexts its editor sends.

Only what the end-to-end tests use. The contexts mirror what the Label Studio 1.23.2 editor
(LSF) serialises for a smart region: percent coordinates of the image's natural size,
`original_width`/`original_height`, and for key points a top-level `is_positive`.
"""

from __future__ import annotations

import http
import re
import time
import uuid
from pathlib import Path

import requests

# The smart regions as the editor serialises them live in the backend (the benchmark sends them too).
from sam2plus.contexts import context, keypoint_region, rectangle_region  # noqa: F401

# str(requests.HTTPError) as Label Studio keeps it: "<status> Client Error: <reason> for url: <url>"
HTTP_ERROR = re.compile(r"^(?P<status>\d{3}) (?:Client|Server) Error: (?P<reason>.*) for url: (?P<url>\S+)$")
STANDARD_REASONS = {phrase.lower() for status in http.HTTPStatus
                    for phrase in (status.phrase, status.phrase.upper(), status.name.replace("_", " "))}


class LabelStudioAPI:
    """Label Studio's REST API with one user's key: a legacy token or a personal access token."""

    def __init__(self, url: str, key: str, *, personal: bool = False):
        self.url = url.rstrip("/")
        self.key = key
        self.personal = personal
        self.session = requests.Session()
        self._access_expires = 0.0
        if not personal:
            self.session.headers["Authorization"] = f"Token {key}"

    # -- plumbing -------------------------------------------------------------------------------
    def _authorise(self) -> None:
        """A personal access token is a JWT refresh token: trade it for a short-lived access token."""
        if self.personal and time.time() > self._access_expires:
            answer = requests.post(f"{self.url}/api/token/refresh/", json={"refresh": self.key}, timeout=30)
            answer.raise_for_status()
            self.session.headers["Authorization"] = f"Bearer {answer.json()['access']}"
            self._access_expires = time.time() + 240  # access tokens live 300 s

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        self._authorise()
        kwargs.setdefault("timeout", 180)
        return self.session.request(method, f"{self.url}{path}", **kwargs)

    def ok(self, method: str, path: str, **kwargs):
        answer = self.request(method, path, **kwargs)
        assert answer.ok, f"{method} {path} -> {answer.status_code}: {answer.text[:2000]}"
        return answer.json() if answer.content else None

    # -- projects and tasks ---------------------------------------------------------------------
    def create_project(self, label_config: str, title: str | None = None) -> int:
        title = title or f"e2e-{uuid.uuid4().hex[:8]}"
        return self.ok("POST", "/api/projects", json={"title": title, "label_config": label_config})["id"]

    def upload_image(self, project: int, path: Path) -> dict:
        """Upload a file as Label Studio's importer does; returns the task it created."""
        with open(path, "rb") as file:
            answer = self.ok("POST", f"/api/projects/{project}/import",
                             files={"file": (path.name, file, "image/jpeg")})
        assert answer["task_count"] == 1, answer
        tasks = self.tasks(project)
        assert len(tasks) == 1, tasks
        return tasks[0]

    def import_tasks(self, project: int, data: list[dict]) -> list[dict]:
        self.ok("POST", f"/api/projects/{project}/import", json=[{"data": item} for item in data])
        return self.tasks(project)

    def tasks(self, project: int) -> list[dict]:
        return self.ok("GET", f"/api/tasks?project={project}&page_size=100")["tasks"]

    # -- cloud storage --------------------------------------------------------------------------
    def add_s3_storage(self, project: int, **fields) -> dict:
        """An S3 import storage (source storage) of the project; `fields` as Label Studio's form
        has them: bucket, prefix, use_blob_urls, presign, s3_endpoint, aws_access_key_id, ..."""
        return self.ok("POST", "/api/storages/s3/", json={"project": project, "title": "e2e S3", **fields})

    def sync_s3_storage(self, storage: int) -> dict:
        """Scan the bucket and create a task per object (synchronous without Redis)."""
        answer = self.ok("POST", f"/api/storages/s3/{storage}/sync")
        assert answer["status"] == "completed", answer
        return answer

    # -- ML backends ----------------------------------------------------------------------------
    def add_ml_backend(self, project: int, url: str, extra_params=None, *, is_interactive: bool = True,
                       title: str = "SAM2Plus") -> requests.Response:
        body = {"url": url, "project": project, "is_interactive": is_interactive, "title": title}
        if extra_params is not None:
            body["extra_params"] = extra_params
        return self.request("POST", "/api/ml", json=body)

    def edit_ml_backend(self, ml_backend: dict, **changes) -> requests.Response:
        """PATCH with the whole object, as Label Studio's UI does (a partial PATCH fails in 1.23.2)."""
        fields = ("url", "project", "is_interactive", "title", "description", "auth_method", "timeout",
                  "extra_params")
        body = {key: ml_backend[key] for key in fields if key in ml_backend}
        body.update(changes)
        return self.request("PATCH", f"/api/ml/{ml_backend['id']}", json=body)

    def ml_backend(self, ml_id: int) -> dict:
        """GET /api/ml/<id>; note that Label Studio re-runs /health and /setup for it."""
        return self.ok("GET", f"/api/ml/{ml_id}")

    def ml_backends(self, project: int) -> list[dict]:
        return self.ok("GET", f"/api/ml?project={project}")

    def interactive(self, ml_id: int, task: int, context: dict) -> dict:
        """What the editor gets back for a smart region: {"data": {...}} or {"errors": [...]}."""
        return self.ok("POST", f"/api/ml/{ml_id}/interactive-annotating", json={"task": task, "context": context})


def label_config(prompt_tag: str, output_tag: str, label: str = "Obj") -> str:
    """An image config with a smart prompt tag and an output tag; *Labels tags get one label."""
    def tag(name: str, kind: str, smart: bool) -> str:
        attributes = f'name="{name}" toName="image"' + (' smart="true"' if smart else "")
        if kind.endswith("Labels"):
            return f'<{kind} {attributes}><Label value="{label}"/></{kind}>'
        return f"<{kind} {attributes}/>"

    return ("<View>\n"
            '  <Image name="image" value="$image" zoom="true"/>\n'
            f"  {tag('prompt', prompt_tag, True)}\n"
            f"  {tag('output', output_tag, False)}\n"
            "</View>")
