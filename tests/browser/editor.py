"""Label Studio 1.23.2's labeling editor driven as an annotator drives it, in headless Chromium.

Everything the tests do goes through the page: the bottom bar's Auto-Annotation and
Auto-Accept toggles, the Auto-Detect (smart) tool, the labels under the image, mouse clicks
and drags on the image (Alt held for a negative point), the suggestion accept button and
Submit. The editor's own state (`window.Htx`, the store the editor renders) is only read,
to see what it shows; the replies Label Studio gives the editor are read from the network.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from playwright.sync_api import Page, Response

INTERACTIVE = "/interactive-annotating"
TIMEOUT_MS = 90_000


@dataclass(frozen=True)
class Shown:
    """A region as the editor holds it: its type, label, and whether it is a prompt or a suggestion."""

    type: str
    label: str | None
    dynamic: bool


class Editor:
    """One task open in Label Studio's editor (Data Manager's labeling view) in one browser page."""

    def __init__(self, page: Page, url: str, shots: Path):
        self.page = page
        self.url = url.rstrip("/")
        self.shots = shots
        self.size = (0, 0)
        self.page_errors: list[str] = []
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))

    # -- opening a task -------------------------------------------------------------------------
    def open(self, project: int, task: int, size: tuple[int, int]) -> Editor:
        """Open `task` of `project` as the Data Manager does, and wait until its image is drawn."""
        self.size = size
        self.page.goto(f"{self.url}/projects/{project}/data?task={task}")
        self.page.wait_for_function("() => window.Htx?.annotationStore?.selected", timeout=TIMEOUT_MS)
        self.page.wait_for_function(
            "([w, h]) => [...document.querySelectorAll('img')].some(i => i.complete && i.naturalWidth === w"
            " && i.naturalHeight === h && i.getBoundingClientRect().width > 200)",
            arg=list(size),
            timeout=TIMEOUT_MS,
        )
        self.page.get_by_test_id("bottombar-auto-annotation-toggle").wait_for(timeout=TIMEOUT_MS)
        return self

    # -- the bottom bar and the toolbar ---------------------------------------------------------
    def _toggle(self, test_id: str, on: bool) -> None:
        toggle = self.page.get_by_test_id(test_id)
        if toggle.is_checked() != on:
            toggle.click()
        assert toggle.is_checked() == on, f"{test_id} did not switch {'on' if on else 'off'}"

    def auto_annotation(self, on: bool = True) -> Editor:
        """The Auto-Annotation toggle: smart tools on or off."""
        self._toggle("bottombar-auto-annotation-toggle", on)
        return self

    def auto_accept(self, on: bool) -> Editor:
        """The Auto-Accept Suggestions toggle (shown once Auto-Annotation is on)."""
        self._toggle("bottombar-auto-accept-toggle", on)
        return self

    def smart_tool(self) -> Editor:
        """Pick the toolbar's Auto-Detect tool (the smart tools appear with Auto-Annotation on)."""
        tool = self.page.locator("button.lsf-tool_smart").first
        if "lsf-tool_active" not in (tool.get_attribute("class") or ""):
            tool.click()
        return self

    def choose_label(self, label: str, control: int = 0) -> Editor:
        """Click `label` of the `control`-th labels tag under the image (the prompt tag comes first).

        Label Studio unselects labels after each new region, so an annotator picks it per prompt."""
        self.page.locator(".lsf-labels").nth(control).locator(".lsf-label", has_text=label).click()
        return self

    # -- prompts --------------------------------------------------------------------------------
    def to_screen(self, x: float, y: float) -> tuple[float, float]:
        """Where image pixel (x, y) is on the page."""
        box = self.page.evaluate(
            "([w, h]) => { const all = [...document.querySelectorAll('img')].filter(i => i.naturalWidth === w"
            " && i.naturalHeight === h).map(i => i.getBoundingClientRect());"
            " return all.sort((a, b) => b.width - a.width)[0].toJSON(); }",
            list(self.size),
        )
        width, height = self.size
        return box["x"] + x * box["width"] / width, box["y"] + y * box["height"] / height

    def pixel_size(self) -> float:
        """Image pixels per screen pixel: how precisely the mouse places a prompt."""
        left, _ = self.to_screen(0, 0)
        right, _ = self.to_screen(self.size[0], 0)
        return self.size[0] / (right - left)

    def click(self, x: float, y: float, *, negative: bool = False) -> dict:
        """Click image pixel (x, y) (Alt+click for a negative point); returns Label Studio's reply to
        the smart prompt it sent, once the editor has applied it."""
        sx, sy = self.to_screen(x, y)
        with self._reply() as reply:
            if negative:
                self.page.keyboard.down("Alt")
            self.page.mouse.click(sx, sy)
            if negative:
                self.page.keyboard.up("Alt")
        return self._applied(reply.value)

    def drag_box(self, box: tuple[float, float, float, float]) -> dict:
        """Drag a rectangle between image pixels (x0, y0) and (x1, y1); returns Label Studio's reply."""
        x0, y0 = self.to_screen(*box[:2])
        x1, y1 = self.to_screen(*box[2:])
        with self._reply() as reply:
            self.page.mouse.move(x0, y0)
            self.page.mouse.down()
            self.page.mouse.move((x0 + x1) / 2, (y0 + y1) / 2, steps=4)
            self.page.mouse.move(x1, y1, steps=4)
            self.page.mouse.up()
        return self._applied(reply.value)

    def _reply(self):
        return self.page.expect_response(
            lambda r: INTERACTIVE in r.url and r.request.method == "POST", timeout=TIMEOUT_MS
        )

    def _applied(self, response: Response) -> dict:
        assert response.ok, f"{response.url} -> {response.status}"
        body = response.json()
        self.page.wait_for_function("() => !window.Htx.awaitingSuggestions", timeout=TIMEOUT_MS)
        time.sleep(0.3)  # the editor accepts (or shows) the suggestion in the same tick; let it paint
        return body

    # -- what the editor shows ------------------------------------------------------------------
    def regions(self) -> list[Shown]:
        """The regions of the open annotation, prompts (dynamic) included."""
        rows = self.page.evaluate(
            "() => window.Htx.annotationStore.selected.regions.map(r => [r.type, r.labelName ?? null, !!r.dynamic])"
        )
        return [Shown(*row) for row in rows]

    def suggestions(self) -> int:
        """How many suggestions wait to be accepted."""
        return self.page.evaluate("() => window.Htx.annotationStore.selected.suggestions.size")

    def accept_suggestions(self) -> None:
        """Press the bottom bar's accept (✓) button."""
        self.page.get_by_test_id("bottombar-accept-suggestions-button").click()
        self.page.wait_for_function("() => window.Htx.annotationStore.selected.suggestions.size === 0")

    def submit(self, task: int) -> dict:
        """Press Submit; returns the annotation Label Studio saved (its reply to the editor)."""
        with self.page.expect_response(
            lambda r: f"/api/tasks/{task}/annotations" in r.url and r.request.method == "POST", timeout=TIMEOUT_MS
        ) as saved:
            self.page.get_by_role("button", name="Submit").click()
        assert saved.value.status == 201, f"submit -> {saved.value.status}: {saved.value.text()[:500]}"
        return saved.value.json()

    def shot(self, name: str) -> Path:
        """A screenshot of the page under the test's output folder."""
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path))
        return path
