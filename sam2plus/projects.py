"""Label Studio's project API as the backend reads it: a project's label config and its tasks in
the labelling stream's sequential order (by id, not yet labelled).

Read only: it never calls `/api/projects/<id>/next`, which locks a task for the caller, and
never assigns or changes anything. The tasks come from the Data Manager's task list
(`GET /api/tasks/?project=<id>`) filtered to ids above a given one and ordered by id, with
Label Studio's key (`LabelStudioAuth`), through the backend's own HTTP client; an answer is
read up to MAX_ANSWER bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import urlencode

from .fetch import LabelStudioAuth
from .urls import Target, parse_origin

__all__ = ["MAX_ANSWER", "LabelStudioProjects", "project_number"]

MAX_ANSWER = 32 << 20


class LabelStudioError(RuntimeError):
    """Label Studio's API did not answer as expected (a status, a body that is not JSON)."""


def project_number(project) -> int | None:
    """Label Studio's numeric project id from what /predict carries ("12.1795599678" or 12)."""
    text = str(project).split(".", 1)[0].strip() if isinstance(project, (int, str)) else ""
    return int(text) if text.isdigit() and len(text) <= 12 else None


class LabelStudioProjects:
    """A project's label config and its tasks, read from Label Studio's API."""

    def __init__(self, auth: LabelStudioAuth):
        self.auth = auth
        self._origin = parse_origin(auth.url)

    def label_config(self, project: int) -> str:
        """The project's label config (XML)."""
        answer = self._get(f"/api/projects/{int(project)}/", {})
        config = answer.get("label_config") if isinstance(answer, dict) else None
        if not isinstance(config, str):
            raise LabelStudioError(f"project {project} has no label config")
        return config

    def tasks(self, project: int, after: int = 0, unlabelled: bool = True, page_size: int = 100) -> Iterator[dict]:
        """The project's tasks with an id above `after`, by id, each once (not yet labelled ones
        only, by default), fetched a page at a time."""
        while True:
            page = self._page(project, after, page_size)
            for task in page:
                after = max(after, int(task["id"]))
                if not (unlabelled and task.get("is_labeled")):
                    yield task
            if len(page) < page_size:
                return

    def next_tasks(self, project: int, task_id: int, count: int) -> list[dict]:
        """The `count` tasks the sequential stream serves after `task_id` (by id, not yet labelled),
        as far as the first page of at most 4 x count tasks shows them."""
        page = self._page(project, task_id, max(4 * count, 8))
        return [task for task in page if not task.get("is_labeled")][:count]

    def _page(self, project: int, after: int, size: int) -> list[dict]:
        query = {
            "filters": {
                "conjunction": "and",
                "items": [{"filter": "filter:tasks:id", "operator": "greater", "type": "Number", "value": int(after)}],
            },
            "ordering": ["tasks:id"],
        }
        params = {"project": int(project), "page": 1, "page_size": int(size), "query": json.dumps(query)}
        params["resolve_uri"] = "false"  # the data as stored, as the backend resolves it (s3://..., /data/upload/...)
        answer = self._get("/api/tasks/", params)
        tasks = answer.get("tasks") if isinstance(answer, dict) else answer
        if not isinstance(tasks, list):
            raise LabelStudioError("the task list is not a list")
        return [t for t in tasks if isinstance(t, dict) and isinstance(t.get("id"), int)]

    def _get(self, path: str, params: dict) -> object:
        url = f"{self._origin.url}{path}" + (f"?{urlencode(params)}" if params else "")
        origin = self._origin
        target = Target(url, origin.host, origin.port, label_studio=True, via_label_studio=True, public_only=False)
        for renew in (False, True):
            headers = {**self.auth.header(renew), "Accept": "application/json"}
            response = self.auth.client.request("GET", target, headers)
            try:
                body = response.read(MAX_ANSWER + 1)
            finally:
                response.release_conn()
            if response.status == 401 and not renew:
                continue
            break
        if response.status != 200:
            raise LabelStudioError(f"HTTP {response.status} from {path}")
        if len(body) > MAX_ANSWER:
            raise LabelStudioError(f"an answer over {MAX_ANSWER} bytes from {path}")
        try:
            return json.loads(body)
        except ValueError:
            raise LabelStudioError(f"an answer from {path} that is not JSON") from None
