"""SAM2Plus: the Label Studio ML backend's model class (Label Studio in, Label Studio out)."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import sam2plus
from sam2plus import artifacts as review
from sam2plus.config import ServerConfig
from sam2plus.embeddingstore import EmbeddingStore
from sam2plus.errors import RequestError, describe
from sam2plus.events import ack_region, capabilities_region, parse_event
from sam2plus.fetch import ImageFetcher, LabelStudioAuth
from sam2plus.framestore import FrameStore
from sam2plus.images import read_info
from sam2plus.labelconfig import find_output_control
from sam2plus.logtext import logtext
from sam2plus.params import ExtraParams, parse_extra_params
from sam2plus.pipeline import Pipeline
from sam2plus.preannotate import pre_annotate
from sam2plus.projects import LabelStudioProjects
from sam2plus.segmenter import Segmenter
from sam2plus.settings import open_settings
from sam2plus.warmup import Warmup

__all__ = ["MAX_PROJECT_ID", "MAX_REQUEST_BUDGET", "SAM2Plus"]

log = logging.getLogger(__name__)

MAX_REQUEST_BUDGET = 3600  # seconds a client may give one pre-annotation request (time_budget)
MAX_PROJECT_ID = 128  # characters; Label Studio's ids are "<id>.<created_at timestamp>", about 15


class SAM2Plus:
    """Interactive SAM2 segmentation with per-project extra_params."""

    def __init__(self, config: ServerConfig | None = None, segmenter=None):
        self.config = config = config or ServerConfig.from_env()
        if segmenter is None:
            segmenter = Segmenter.from_config(config)
        identity = getattr(segmenter, "identity", None)
        if identity is not None and config.embedding_store_mb > 0:
            segmenter.store = EmbeddingStore(
                config.embedding_store_path, config.embedding_store_mb << 20, identity.digest()
            )
        auth = (
            LabelStudioAuth(config.label_studio_url, config.label_studio_api_key, config.fetch_timeout)
            if config.label_studio_url
            else None
        )
        if config.label_studio_url and not config.label_studio_api_key:
            log.warning("LABEL_STUDIO_URL is set without LABEL_STUDIO_API_KEY: Label Studio will refuse its images")
        fetcher = ImageFetcher(
            config.cache_dir,
            auth,
            config.image_hosts,
            config.max_image_bytes,
            config.fetch_timeout,
            block_private=config.image_hosts_block_private,
            cache_bytes=config.download_cache_mb << 20,
            check=lambda path, field: read_info(path, config.max_image_pixels, field),  # only images are kept
        )
        frames = FrameStore(Path(config.cache_dir) / "frames", config.frame_cache_mb << 20)
        self.pipeline = Pipeline(
            segmenter, fetcher, frames, config.max_image_pixels, config.cache_dir, config.max_prompt_points
        )
        self.pipeline.decode_timeout = config.decode_timeout
        self.settings = open_settings(config.settings_url, config.model_dir, config.settings_timeout)
        self.warmup = Warmup(self.pipeline, projects=LabelStudioProjects(auth) if auth else None)
        self.model_version = f"SAM2Plus-{sam2plus.__version__}:{segmenter.name}"

    def set_extra_params(self, project: str, extra_params, schema: str | None = None) -> ExtraParams:
        """Validate and store a project's extra_params (against its label config when given);
        invalid ones leave the stored ones untouched."""
        params = parse_extra_params(extra_params)
        if schema:
            control = find_output_control(schema, params.return_format.type, "schema")
            label = params.auto_annotation.label if params.auto_annotation else None
            if label is not None and control.labels and label not in control.labels:
                raise RequestError(
                    "extra_params.auto_annotation.label",
                    f"{describe(label)} is not a label of <{control.tag} name={describe(control.from_name)}> "
                    f"(its labels: {describe(list(control.labels), 200)})",
                )
        self.settings.save(project, params)
        return params

    def setup(self, project, schema=None, extra_params=None, **_ignored) -> dict:
        """Label Studio's /setup: check the label config fits the return format, store the params."""
        project = _project_id(project)
        params = self.set_extra_params(project, extra_params, schema)
        log.info("project %s set up: %s", logtext(project), "stock" if params.is_stock else logtext(params.source))
        return {"model_version": self.model_version}

    def predict(
        self,
        tasks,
        context=None,
        project=None,
        label_config=None,
        artifacts=False,
        should_stop=None,
        time_budget=None,
        **_ignored,
    ) -> dict:
        """Label Studio's /predict: one interactive click -> {"results": [{"result": [...], "score": ...}]}.

        Without a context (Label Studio opening a task, or a batch of tasks to pre-annotate) the
        answer is no results, at once, and each task's image is warmed up in the background; a
        project with auto_annotation gets each task's automatic masks instead (`sam2plus.preannotate`).
        `artifacts`: the client asks for review artifacts (allowed only with ARTIFACTS=request);
        `should_stop`: called between stages, True stops the click (its client went away).
        `time_budget`: seconds for a pre-annotation instead of the project's (a client that waits
        longer than Label Studio, such as `python -m sam2plus.annotate_project`).
        A context with `event` follows the interactive event protocol (`sam2plus.events`).
        """
        event = parse_event(context)
        budget = _time_budget(time_budget)
        if event == "capabilities":  # task-agnostic
            return self._answer([capabilities_region(self.model_version)])
        if not isinstance(tasks, list) or not tasks:
            raise RequestError("tasks", f"must be a non-empty list of tasks, got {describe(tasks)}")
        if context is not None and not isinstance(context, dict):
            raise RequestError("context", f"must be a JSON object with a 'result' list, got {describe(context)}")
        if event in ("prewarm", "release"):
            return self._answer([self._task_event(event, tasks, project, label_config)])
        if not context or not context.get("result"):
            if context is None:
                params = self._auto_annotation_params(project)
                if params is not None:
                    if budget is not None:
                        params = replace(params, auto_annotation=replace(params.auto_annotation, time_budget=budget))
                    answers = pre_annotate(
                        self.pipeline, tasks, label_config, params, self.model_version, self.warmup.wait_for_clicks
                    )
                    return {"results": answers, "model_version": self.model_version}
                self._warm_up(tasks, project, label_config)
            return {"results": [], "model_version": self.model_version}
        write_artifacts = self._artifacts_wanted(artifacts)
        params = self._params(project)
        with self.warmup.click():
            prediction = self.pipeline.run(
                tasks[0], context, label_config, params, artifacts=write_artifacts, should_stop=should_stop
            )
        answer = {"result": prediction.regions, "score": prediction.score, "model_version": self.model_version}
        response = {"results": [answer], "model_version": self.model_version}
        if prediction.artifacts:
            review.prune(prediction.artifacts.parent, self.config.artifacts_mb << 20, keep=prediction.artifacts)
            # relative to CACHE_DIR: the answer never reveals the server's paths
            response["artifacts"] = prediction.artifacts.relative_to(self.config.cache_dir).as_posix()
        return response

    def _answer(self, regions: list[dict]) -> dict:
        return {
            "results": [{"result": regions, "model_version": self.model_version}],
            "model_version": self.model_version,
        }

    def _task_event(self, event: str, tasks: list, project, label_config) -> dict:
        """`prewarm`: queue the tasks' warm-ups; `release`: drop the stored frames and this process's
        embeddings of the tasks' images (those a click or warm-up of this process has seen)."""
        params = self._params(project)
        control = find_output_control(label_config, params.return_format.type)
        names = (control.from_name, control.to_name)
        if event == "prewarm":
            queued = self.warmup.submit(tasks, label_config, params, project)
            value = {"status": "ok", "cached": [], "pending": [0] if queued else [], "queued": queued}
            return ack_region(event, value, *names)
        frames = embeddings = 0
        for task in tasks:
            data = task.get("data") if isinstance(task, dict) else None
            value = data.get(control.image_key) if isinstance(data, dict) else None
            digest = self.pipeline.task_images.digest(value) if isinstance(value, str) else None
            if digest is not None:
                frames += self.pipeline.frames.discard(digest)
                embeddings += self.pipeline.segmenter.forget(digest)
        return ack_region(event, {"status": "released", "frames": frames, "embeddings": embeddings}, *names)

    def _artifacts_wanted(self, requested: bool) -> bool:
        """Whether this click writes review artifacts: always with ARTIFACTS=on; with
        ARTIFACTS=request when the client asks; a client asking an ARTIFACTS=off backend is refused."""
        mode = self.config.artifacts
        if requested and mode == "off":
            raise RequestError(
                "artifacts",
                "this backend writes no review artifacts (ARTIFACTS=off); "
                "its operator can allow them with ARTIFACTS=request",
            )
        return mode == "on" or (requested and mode == "request")

    def _params(self, project) -> ExtraParams:
        return self.settings.load(_project_id(project)) if project is not None else ExtraParams()

    def _auto_annotation_params(self, project) -> ExtraParams | None:
        """The project's params when they ask for pre-annotation (auto_annotation), else None (and
        None when they cannot be read: the warm-up logs that)."""
        try:
            params = self._params(project)
        except RequestError:
            return None
        return params if params.auto_annotation is not None else None

    def _warm_up(self, tasks: list, project, label_config) -> None:
        """Queue the tasks' warm-ups; a project whose settings cannot be read is logged and skipped."""
        try:
            params = self._params(project)
        except RequestError as exc:
            log.warning("no warm-up for project %s: %s", logtext(project), logtext(exc))
            return
        self.warmup.submit(tasks, label_config, params, project)


def _time_budget(value) -> float | None:
    """A request's own pre-annotation budget: None, or seconds from 1 to MAX_REQUEST_BUDGET."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 1 <= value <= MAX_REQUEST_BUDGET:
        raise RequestError("time_budget", f"must be seconds from 1 to {MAX_REQUEST_BUDGET}, got {describe(value)}")
    return float(value)


def _project_id(project) -> str:
    """Label Studio's project id (`"<id>.<created_at timestamp>"`, or an int), stripped, at most
    MAX_PROJECT_ID characters (a JSON int has at most 4300 digits, which str() allows)."""
    text = str(project).strip() if isinstance(project, (int, str)) else ""
    if not text:
        raise RequestError("project", f"must be Label Studio's project id, got {describe(project)}")
    if len(text) > MAX_PROJECT_ID:
        raise RequestError(
            "project",
            f"{len(text)} characters, longer than the {MAX_PROJECT_ID} a project id may have "
            f'(Label Studio\'s are like "12.1795599678"), got {describe(text, 40)}',
        )
    return text
